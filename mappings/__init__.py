"""The OpenSearch index body for term maps, built from the `index.json` template.

One index holds documents from one encoder. Its mapping is strict (`"dynamic": "strict"`), so a
document with an unexpected field is a 400 for that document instead of a silently auto-mapped
field (an auto-created index would map a term map as an object and hit the 1,000-field limit):

- `terms` (`rank_features`): the term map, feature names escaped with `escape_token`
  ("%" -> "%25", "." -> "%2E") so that `rank_feature` queries on "terms.<name>" can match dotted
  tokens. `positive_score_impact` is left at its default (true): the API specification does not
  list it, and a term weight always raises the score.
- `id` (keyword): the source record's id (the OpenSearch `_id` is a hash, see `document_id`).
- `title`, `text` (text): stored for display and for BM25 if someone wants it.
- `metadata` (object, `enabled: false`): any other stored fields, kept in `_source` but neither
  parsed nor indexed, so arbitrary metadata cannot blow up the mapping under strict dynamic
  mapping (it also works on every OpenSearch version, unlike `flat_object`).
- `_meta`: encoder fingerprint, vocabulary, term field, field type, convsparse version and the
  escaping scheme. `OpenSearchBackend.search` reads it to refuse queries from another encoder
  and to build the query form the field needs.

Field type (`field_type`, chosen here once, recorded in `_meta.field_type`):
- `rank_features` (default): the body above.
- `sparse_vector` (OpenSearch 3.3+, neural sparse ANN with SEISMIC; see
  `convsparse.mappings.sparse_vector`): the term field becomes `sparse_vector` with a `seismic`
  method, the settings get `index.sparse: true`, and `_meta` records the method parameters
  (`seismic`) and the token-id table (`token_ids`) that maps term strings to the integer keys the
  field requires. An index without `_meta.field_type` is `rank_features`.

Passage vectors (`convsparse.integration.vectors`; the re-ranker's bi-encoder vectors of each
document, written with its term map): an index starts holding them with one
`indices.put_mapping` (`vectors_mapping`) that adds the field `rerank_vectors` and records the
`VectorSpec` in `_meta.rerank_vectors`. The field is `binary`: base64 of a 12-byte text digest
and float16 rows (the whole passage, then its windows), kept in `_source` and returned with
the hits the re-ranker reads. Why `binary` and not `dense_vector`/`knn_vector` with
``index: false``: a passage has a variable number of vectors (one per window), which one
vector field cannot hold (it would take `nested` documents or a field per window); `binary` is
never indexed or searchable, has no doc values unless asked (so it costs only `_source`
bytes), is mapped the same way by both engines and every version of both specs, and is half
the size of a float array in JSON (about 1 kB per vector against 2-3 kB). The cost: the engine
cannot search them (no kNN), which the re-ranker does not need.

Bulk loads: create the index with `bulk_load=True` (refresh off, no replicas), load, then apply
`serving_settings()` with `indices.put_settings` (the backend's `end_bulk_load` does this).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from convsparse.mappings.sparse_vector import (
    SPARSE_INDEX_SETTINGS,
    SeismicParameters,
    TokenIds,
    sparse_vector_property,
)

__all__ = [
    "ESCAPING_SCHEME",
    "FIELD_TYPES",
    "TERM_FIELD",
    "TOKEN_ID_KEYS",
    "VECTORS_PROPERTY",
    "FieldType",
    "bulk_load_settings",
    "convsparse_version",
    "index_body",
    "index_meta",
    "serving_settings",
    "template",
    "vectors_mapping",
]

#: Default name of the `rank_features` field holding the term map.
TERM_FIELD = "terms"
#: How token strings become feature names (see convsparse.termmap.escape_token).
ESCAPING_SCHEME = "percent: '%' -> '%25', '.' -> '%2E'"
#: How a `sparse_vector` index keys its tokens (recorded instead of `ESCAPING_SCHEME`).
TOKEN_ID_KEYS = "token id (decimal string) from _meta.token_ids"

FieldType = Literal["rank_features", "sparse_vector"]
FIELD_TYPES: tuple[str, ...] = ("rank_features", "sparse_vector")


@cache
def _template_text() -> str:
    return resources.files(__package__).joinpath("index.json").read_text(encoding="utf-8")


def template() -> dict[str, Any]:
    """A fresh copy of `index.json` (placeholders in `_meta` are null)."""
    return json.loads(_template_text())


def convsparse_version() -> str:
    try:
        return version("convsparse")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def bulk_load_settings() -> dict[str, Any]:
    """Index settings while bulk loading: no periodic refresh, no replicas to copy to."""
    return {"index": {"refresh_interval": "-1", "number_of_replicas": 0}}


def serving_settings(*, replicas: int = 1, refresh_interval: str = "1s") -> dict[str, Any]:
    """Index settings to apply (with `indices.put_settings`) once a bulk load is finished."""
    if replicas < 0:
        raise ValueError("replicas must be >= 0")
    return {"index": {"refresh_interval": refresh_interval, "number_of_replicas": replicas}}


def index_meta(fingerprint: str, vocabulary: str | None, field: str, field_type: str,
               **extra: Any) -> dict[str, Any]:
    """The index `_meta` every engine records: who wrote it, the encoder fingerprint that
    search and writes check, the vocabulary, where and how the term maps are stored."""
    meta: dict[str, Any] = {
        "convsparse_version": convsparse_version(),
        "encoder_fingerprint": fingerprint,
        "vocabulary": vocabulary,
        "term_field": field,
        "field_type": field_type,
        "feature_name_escaping": ESCAPING_SCHEME,
        **extra,
    }
    if vocabulary is None:
        del meta["vocabulary"]
    return meta


#: the mapping of the passage vectors' field: base64 bytes, not indexed, no doc values
VECTORS_PROPERTY: dict[str, Any] = {"type": "binary"}


def vectors_mapping(meta: dict[str, Any], spec: dict[str, Any], field: str) -> dict[str, Any]:
    """The `indices.put_mapping` body that makes an index hold passage vectors: the `binary`
    field `field` and `meta` (the index's whole `_meta`: a put replaces it) with the spec
    under ``rerank_vectors``."""
    return {"_meta": {**meta, "rerank_vectors": dict(spec)},
            "properties": {field: dict(VECTORS_PROPERTY)}}


def index_body(
    fingerprint: str,
    vocabulary: str | None = None,
    *,
    field: str = TERM_FIELD,
    shards: int = 1,
    replicas: int = 1,
    refresh_interval: str = "1s",
    bulk_load: bool = False,
    field_type: FieldType = "rank_features",
    seismic: SeismicParameters | None = None,
    token_ids: TokenIds | None = None,
) -> dict[str, Any]:
    """The `indices.create` body for an index of term maps from encoder `fingerprint`.

    `bulk_load=True` starts the index with `bulk_load_settings()`; switch to
    `serving_settings(replicas=..., refresh_interval=...)` after loading.
    `field_type="sparse_vector"` needs `token_ids` (the encoder's vocabulary, id order) and
    takes `seismic` (the method parameters; documented defaults when None).
    """
    if not fingerprint or not isinstance(fingerprint, str):
        raise ValueError("fingerprint must be a non-empty string (the encoder's fingerprint)")
    if field_type not in FIELD_TYPES:
        raise ValueError(f"field_type must be one of {FIELD_TYPES}, not {field_type!r}")
    if field_type == "sparse_vector" and token_ids is None:
        raise ValueError("a sparse_vector index needs token_ids (the encoder's vocabulary): its "
                         "keys are integer token ids")
    if field_type == "rank_features" and (seismic is not None or token_ids is not None):
        raise ValueError("seismic and token_ids exist only for field_type='sparse_vector'")
    if not field or "." in field or field in {"id", "title", "text", "metadata"}:
        raise ValueError(f"invalid term field name {field!r} (no dots, not a reserved field)")
    if shards < 1:
        raise ValueError("shards must be >= 1")
    body = template()
    settings = body["settings"]["index"]
    settings["number_of_shards"] = shards
    if bulk_load:
        settings.update(bulk_load_settings()["index"])
    else:
        settings.update(serving_settings(replicas=replicas, refresh_interval=refresh_interval)["index"])
    mappings = body["mappings"]
    props = mappings["properties"]
    props[field] = props.pop(TERM_FIELD)
    meta = mappings["_meta"] = index_meta(fingerprint, vocabulary, field, field_type)
    if field_type == "sparse_vector":
        assert token_ids is not None
        seismic = seismic or SeismicParameters()
        settings.update(SPARSE_INDEX_SETTINGS)
        props[field] = sparse_vector_property(seismic)
        del meta["feature_name_escaping"]
        meta.update(token_keys=TOKEN_ID_KEYS, seismic=seismic.to_dict(), token_ids=token_ids.record())
    return copy.deepcopy(body)
