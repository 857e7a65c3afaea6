"""The Elasticsearch index body for term maps, in one of two field types.

The field type is chosen when the index is created and recorded in `_meta.field_type` (with the
encoder fingerprint), so every later write and search uses the form the index was built for:

- `rank_features` (Elasticsearch 7+): the same field as on OpenSearch, queried with one linear
  `rank_feature` clause per query term. Lucene's FeatureField stores it, so a score is
  boost x quantized(value) exactly as on OpenSearch and in `EmbeddedBackend(quantize=True)`.
- `sparse_vector` (queried with the `sparse_vector` query, Elasticsearch 8.15+): also a
  FeatureField underneath (same 9-bit storage, same linear dot product), searched with
  `query_vector`, and the server can prune query tokens (`prune` + `pruning_config`, 8.15+) or
  prune by default for the field (`index_options`, 8.19+). `index_options` is only sent when asked
  for, so an 8.15-8.18 server accepts the body.

Feature names are escaped with `escape_token` in both forms ("%" -> "%25", "." -> "%2E"): the
`rank_feature` query splits its `field` at the last dot, and the same names on both field types
keep documents portable between them.

The rest is the OpenSearch body's: `"dynamic": "strict"`, `id` keyword, `title`/`text` text,
`metadata` an object with `enabled: false`. Shards and replicas are left out when None (Elastic
Cloud Serverless rejects them).

Bodies are built one way, as plain dicts (the client's `elasticsearch.dsl` gave the same bodies
and was a second builder to keep equal); they are checked against Elastic's published
specification in the tests.
"""

from __future__ import annotations

from typing import Any, Literal

from convsparse.mappings import (
    TERM_FIELD,
    bulk_load_settings,
    index_meta,
    serving_settings,
)

__all__ = [
    "FIELD_TYPES",
    "FieldType",
    "index_body",
    "mappings_body",
    "settings_body",
    "token_pruning_config",
]

FieldType = Literal["rank_features", "sparse_vector"]
FIELD_TYPES: tuple[str, ...] = ("rank_features", "sparse_vector")
RESERVED_FIELDS = frozenset({"id", "title", "text", "metadata"})


def token_pruning_config(
    tokens_freq_ratio_threshold: int | None = None,
    tokens_weight_threshold: float | None = None,
    only_score_pruned_tokens: bool | None = None,
) -> dict[str, Any]:
    """A `TokenPruningConfig` with only the values that are set (the server's defaults are 5,
    0.4, false). Ranges as documented: ratio in [1, 100], weight threshold in [0, 1]."""
    config: dict[str, Any] = {}
    if tokens_freq_ratio_threshold is not None:
        if not 1 <= int(tokens_freq_ratio_threshold) <= 100:
            raise ValueError("tokens_freq_ratio_threshold must be in [1, 100]")
        config["tokens_freq_ratio_threshold"] = int(tokens_freq_ratio_threshold)
    if tokens_weight_threshold is not None:
        if not 0.0 <= float(tokens_weight_threshold) <= 1.0:
            raise ValueError("tokens_weight_threshold must be in [0, 1]")
        config["tokens_weight_threshold"] = float(tokens_weight_threshold)
    if only_score_pruned_tokens is not None:
        config["only_score_pruned_tokens"] = bool(only_score_pruned_tokens)
    return config


def _meta(fingerprint: str, vocabulary: str | None, field: str, field_type: str) -> dict[str, Any]:
    return index_meta(fingerprint, vocabulary, field, field_type, engine="elasticsearch")


def _term_property(field_type: str, index_options: dict[str, Any] | None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": field_type}
    if index_options is not None:
        prop["index_options"] = index_options
    return prop


def _mappings_dict(meta: dict[str, Any], field: str, term_property: dict[str, Any]) -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "_meta": meta,
        "properties": {
            "id": {"type": "keyword"},
            "title": {"type": "text"},
            "text": {"type": "text"},
            "metadata": {"type": "object", "enabled": False},
            field: term_property,
        },
    }


def mappings_body(
    fingerprint: str,
    vocabulary: str | None = None,
    *,
    field_type: FieldType = "rank_features",
    field: str = TERM_FIELD,
    index_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `mappings` of an index of term maps from encoder `fingerprint`.

    `index_options` (sparse_vector only, Elasticsearch 8.19+): `{"prune": bool,
    "pruning_config": token_pruning_config(...)}`, the field's default query-token pruning.
    """
    if not fingerprint or not isinstance(fingerprint, str):
        raise ValueError("fingerprint must be a non-empty string (the encoder's fingerprint)")
    if field_type not in FIELD_TYPES:
        raise ValueError(f"field_type must be one of {FIELD_TYPES}, not {field_type!r}")
    if not field or "." in field or field in RESERVED_FIELDS:
        raise ValueError(f"invalid term field name {field!r} (no dots, not a reserved field)")
    if index_options is not None and field_type != "sparse_vector":
        raise ValueError("index_options exist only for field_type='sparse_vector'")
    meta = _meta(fingerprint, vocabulary, field, field_type)
    return _mappings_dict(meta, field, _term_property(field_type, index_options))


def settings_body(
    *, shards: int | None = 1, replicas: int | None = 1, refresh_interval: str = "1s",
    bulk_load: bool = False,
) -> dict[str, Any]:
    """Index settings (`bulk_load`: refresh off and no replicas, see `mappings.bulk_load_settings`).
    `shards`/`replicas` None leaves them to the server (required on Serverless)."""
    if shards is not None and shards < 1:
        raise ValueError("shards must be >= 1")
    index: dict[str, Any] = {}
    if shards is not None:
        index["number_of_shards"] = shards
    if bulk_load:
        index.update(bulk_load_settings()["index"])
    else:
        index.update(serving_settings(replicas=replicas or 0, refresh_interval=refresh_interval)["index"])
    if replicas is None:
        index.pop("number_of_replicas", None)
    return {"index": index}


def index_body(
    fingerprint: str,
    vocabulary: str | None = None,
    *,
    field_type: FieldType = "rank_features",
    field: str = TERM_FIELD,
    index_options: dict[str, Any] | None = None,
    shards: int | None = 1,
    replicas: int | None = 1,
    refresh_interval: str = "1s",
    bulk_load: bool = False,
) -> dict[str, Any]:
    """The `indices.create` body: `{"settings": ..., "mappings": ...}`."""
    return {
        "settings": settings_body(shards=shards, replicas=replicas, refresh_interval=refresh_interval,
                                  bulk_load=bulk_load),
        "mappings": mappings_body(fingerprint, vocabulary, field_type=field_type, field=field,
                                  index_options=index_options),
    }
