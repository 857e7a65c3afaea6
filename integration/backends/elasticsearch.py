"""`ElasticsearchBackend`: the `Backend` protocol on Elasticsearch, with the official client.

elasticsearch-py 8.x or 9.x (`pip install 'convsparse[elasticsearch]'`): use the client major
that matches the server (a 9.x client sends `compatible-with=9`, which an 8.x server refuses;
`BackendError` says so). The client handles connection pooling, TLS, API keys, basic auth and
Elastic Cloud ids, and checks that the server is Elasticsearch (`X-Elastic-Product`).

Field type (`field_type`, `CONVSPARSE_ELASTICSEARCH_FIELD_TYPE`), chosen at index creation and
recorded in `_meta` beside the encoder fingerprint (`convsparse.mappings.elasticsearch`); every
search reads it from the index, not from the backend's options:
- `rank_features`: linear `rank_feature` clauses, the same body and the same scores as the
  OpenSearch backend (boost x FeatureField-quantized value);
- `sparse_vector` (8.15+): the `sparse_vector` query with `query_vector`; `token_pruning`
  (a `token_pruning_config(...)` dict, `{}` for the server's defaults) turns on the server's
  query-token pruning for the first phase; `index_options` (8.19+) records a default in the
  mapping. Without `token_pruning` the query states `prune: false`, so scores are exact.
Pruning policy and two-phase search: the client prunes the query with its `PruningPolicy` before
it gets here (both field types); with a rescore term map and a positive window, the top window
is rescored with the full query (`query_weight: 0`, so a rescored hit's score is the full dot
product) and, on `sparse_vector`, the rescore query never prunes.

Writes are `bulk.EngineBackendBase`'s (shared with OpenSearch): validation before sending,
deterministic `_id`s, per-document results, exactly one retry layer (the transport is built with
`max_retries=0`, `retry_on_status=()`, `retry_on_timeout=False`; chunks go out pre-serialised
through `client.bulk`, see `bulk_body`), item-429 backoff, whole-request 429/5xx/connection replay, 413 splitting.
Fingerprints: `upsert`, `delete_documents` and `search` read `_meta` (cached for
`meta_cache_ttl_s`) and a query from another encoder raises `FingerprintMismatchError`.
Clause limit: Elasticsearch 8+ sizes it from the heap (at least 1024), so `max_clause_count`
defaults to 1024; a server's `too_many_clauses` answer becomes `TooManyClausesError` too.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from convsparse.backoff import Backoff
from convsparse.errors import (
    BackendError,
    IndexNotFoundError,
    TooManyClausesError,
)
from convsparse.integration.backends.base import Hit, IndexInfo
from convsparse.integration.backends.bulk import (
    BulkStats,
    EngineBackendBase,
    RequestFailure,
    document_id,
    response_body,
)
from convsparse.integration.backends.bulk_body import items_outcome
from convsparse.integration.backends.elasticsearch_query import DEFAULT_MAX_CLAUSE_COUNT, build_query
from convsparse.integration.backends.opensearch_query import search_body
from convsparse.mappings import TERM_FIELD, bulk_load_settings, serving_settings
from convsparse.mappings.elasticsearch import FIELD_TYPES, FieldType, index_body
from convsparse.termmap import TermMap

try:
    from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the Elasticsearch backend needs the official client: pip install 'convsparse[elasticsearch]'"
    ) from exc

__all__ = ["BulkStats", "ElasticsearchBackend", "build_client", "document_id"]

log = logging.getLogger(__name__)

#: Server versions that first accept what the sparse_vector form sends (the spec's @availability).
SPARSE_VECTOR_QUERY_SINCE = (8, 15, 0)
SPARSE_VECTOR_INDEX_OPTIONS_SINCE = (8, 19, 0)


def _version_tuple(text: str) -> tuple[int, int, int]:
    parts = []
    for piece in str(text).split("-")[0].split(".")[:3]:
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple((parts + [0, 0, 0])[:3])  # type: ignore[return-value]


def _api_text(exc: ApiError) -> str:
    return f"{exc.status_code} {exc.error}: {exc.info if hasattr(exc, 'info') else exc.body}"


@contextmanager
def _reachable(what: str) -> Iterator[None]:
    """"Cannot connect" (refused, TLS failure, timeout) and "wrong client major" as a clear
    `BackendError`."""
    try:
        yield
    except TransportError as exc:
        raise BackendError(f"{what}: cannot reach Elasticsearch ({exc})") from exc
    except ApiError as exc:
        if "media_type_header_exception" in str(exc.error) or "compatible-with" in str(exc.body):
            raise BackendError(
                f"{what}: the server refused this client's compatibility header ({exc}); install "
                "the elasticsearch client of the server's major version, e.g. "
                "pip install 'elasticsearch>=8.13,<9' for an 8.x server"
            ) from exc
        raise


class ElasticsearchBackend(EngineBackendBase):
    """`Backend` on Elasticsearch (see the module docstring)."""

    _refresh_errors = (TransportError, ApiError)
    _not_found = NotFoundError
    _reachable = staticmethod(_reachable)
    _meta_defaults = {"field_type": "rank_features"}  # indices written before sparse_vector

    def __init__(
        self,
        client: Elasticsearch,
        *,
        field_type: FieldType = "rank_features",
        token_pruning: dict[str, Any] | None = None,
        index_options: dict[str, Any] | None = None,
        max_clause_count: int = DEFAULT_MAX_CLAUSE_COUNT,
        field: str = TERM_FIELD,
        shards: int | None = 1,
        replicas: int | None = 1,
        refresh_interval: str = "1s",
        chunk_size: int = 500,
        max_chunk_bytes: int = 10 * 1024 * 1024,
        backoff: Backoff | None = None,
        refresh_after_upsert: bool = True,
        meta_cache_ttl_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        if field_type not in FIELD_TYPES:
            raise ValueError(f"field_type must be one of {FIELD_TYPES}, not {field_type!r}")
        if max_clause_count < 1:
            raise ValueError("max_clause_count must be >= 1")
        self._init_bulk(chunk_size=chunk_size, max_chunk_bytes=max_chunk_bytes,
                        backoff=backoff, refresh_after_upsert=refresh_after_upsert,
                        sleep=sleep, rng=rng)
        self.client = client
        self.field_type: FieldType = field_type
        self.token_pruning = token_pruning
        self.index_options = index_options
        self.max_clause_count = max_clause_count
        self.field = field
        self.shards = shards
        self.replicas = replicas
        self.refresh_interval = refresh_interval
        self.meta_cache_ttl_s = meta_cache_ttl_s
        self._meta_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._server_version: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(cls, settings: Any = None, **backend_options: Any) -> ElasticsearchBackend:
        """Build the client from `Settings` (`CONVSPARSE_ELASTICSEARCH_*`):

        - `elasticsearch_url` (several nodes separated by commas) or `elasticsearch_cloud_id`
          (Elastic Cloud), `elasticsearch_timeout_s`;
        - `elasticsearch_api_key` (the encoded key, or "id:api_key"), or basic auth with
          `elasticsearch_user` + `elasticsearch_password`;
        - TLS: `elasticsearch_ca_certs` (CA bundle path), `elasticsearch_verify_certs`;
        - `elasticsearch_field_type` (rank_features | sparse_vector) for indices it creates.
        """
        if settings is None:
            from convsparse.settings import get_settings

            settings = get_settings()
        backend_options.setdefault("field_type", settings.elasticsearch_field_type)
        return cls(build_client(settings), **backend_options)

    @property
    def server_version(self) -> tuple[int, int, int] | None:
        """The server's version (read once with `info()`; None if it cannot be read)."""
        if self._server_version is None:
            try:
                with _reachable("read the server version"):
                    number = response_body(self.client.info())["version"]["number"]
            except (ApiError, KeyError, TypeError) as exc:
                log.info("cannot read the Elasticsearch version (%s)", exc)
                return None
            self._server_version = _version_tuple(number)
        return self._server_version

    def _require(self, since: tuple[int, int, int], what: str) -> None:
        version = self.server_version
        if version is not None and version < since:
            raise BackendError(
                f"{what} needs Elasticsearch {'.'.join(map(str, since))} or later; the server is "
                f"{'.'.join(map(str, version))} (use field_type='rank_features' there)"
            )

    # ------------------------------------------------------------------ index management
    def create_index(
        self, name: str, *, fingerprint: str, vocabulary: str | None = None,
        exist_ok: bool = False, bulk_load: bool = False,
    ) -> IndexInfo:
        """Create `name` explicitly, with this backend's `field_type`. With `exist_ok`, an
        existing index from the same encoder is accepted (whatever its field type) and one from
        another encoder raises `FingerprintMismatchError`."""
        body = index_body(
            fingerprint, vocabulary, field_type=self.field_type, field=self.field,
            index_options=self.index_options, shards=self.shards, replicas=self.replicas,
            refresh_interval=self.refresh_interval, bulk_load=bulk_load,
        )
        # renewed by every delete + create: a job's done markers name the index they wrote into
        body["mappings"]["_meta"]["creation_id"] = uuid.uuid4().hex
        if self.field_type == "sparse_vector":
            self._require(SPARSE_VECTOR_QUERY_SINCE, "the sparse_vector query")
            if self.index_options is not None:
                self._require(SPARSE_VECTOR_INDEX_OPTIONS_SINCE, "sparse_vector index_options")
        try:
            with _reachable(f"create index {name!r}"):
                self.client.indices.create(index=name, settings=body["settings"],
                                           mappings=body["mappings"])
        except ApiError as exc:
            if "resource_already_exists_exception" not in str(exc.error) + str(exc.body):
                raise BackendError(f"cannot create index {name!r}: {_api_text(exc)}") from exc
            return self._existing_index(name, fingerprint, exist_ok)
        self._meta_cache.pop(name, None)
        return self.describe_index(name)

    def begin_bulk_load(self, name: str) -> None:
        """Refresh off and no replicas while loading (`mappings.bulk_load_settings`)."""
        self.client.indices.put_settings(index=name, settings=self._without_unset(bulk_load_settings()))

    def end_bulk_load(self, name: str) -> None:
        """Back to serving settings (replicas, refresh interval), then refresh."""
        self.client.indices.put_settings(index=name, settings=self._without_unset(
            serving_settings(replicas=self.replicas or 0, refresh_interval=self.refresh_interval)))
        self.refresh(name)

    def list_indices(self) -> list[str]:
        """The indices convsparse created (those with an encoder fingerprint in `_meta`)."""
        with _reachable("list indices"):
            response = response_body(self.client.indices.get_mapping(index="*"))
        return sorted(name for name, entry in (response or {}).items()
                      if ((entry.get("mappings") or {}).get("_meta") or {}).get("encoder_fingerprint"))

    def _without_unset(self, settings: dict[str, Any]) -> dict[str, Any]:
        """`replicas=None` (e.g. Serverless, which manages them): never send number_of_replicas."""
        if self.replicas is None:
            settings["index"].pop("number_of_replicas", None)
        return settings

    # ------------------------------------------------------------------ writes (bulk.EngineBackendBase)
    def _bulk_round(self, lines: list[bytes]) -> list[tuple[bool, dict[str, Any]]]:
        return items_outcome(response_body(self.client.bulk(operations=b"".join(lines))))

    def _request_failure(self, exc: BaseException) -> RequestFailure | None:
        if isinstance(exc, ApiError):
            return RequestFailure(exc.status_code if isinstance(exc.status_code, int) else None)
        if isinstance(exc, TransportError):  # no response: refused, dropped, timed out, TLS
            return RequestFailure(None, connection=True)
        return None

    def _put_mapping(self, name: str, body: dict[str, Any]) -> None:
        self.client.indices.put_mapping(index=name, meta=body["_meta"],
                                        properties=body["properties"])

    # ------------------------------------------------------------------ search
    def search(
        self, name: str, query: TermMap, k: int = 10, *,
        fingerprint: str | None = None, rescore: TermMap | None = None, rescore_window: int = 0,
        vectors: bool = False,
    ) -> list[Hit]:
        """`Backend.search`; with `vectors`, each hit carries its stored passage vectors."""
        meta = self._search_meta(name, fingerprint)
        field_name = meta.get("term_field", self.field)
        field_type = meta["field_type"]
        query = query if isinstance(query, TermMap) else TermMap(query)
        if not query:
            return []
        prune = field_type == "sparse_vector" and self.token_pruning is not None
        first = build_query(query, field_name, field_type=field_type, prune=prune,
                            pruning_config=self.token_pruning if prune else None,
                            max_clause_count=self.max_clause_count)
        second = None
        if rescore is not None and len(rescore) and rescore_window > 0:
            second = build_query(rescore, field_name, field_type=field_type,
                                 max_clause_count=self.max_clause_count)
        body = search_body(first, k, rescore=second, rescore_window=rescore_window,
                           exclude_fields=(field_name, *self._vector_exclusion(meta, vectors)))
        try:
            with _reachable(f"search {name!r}"):
                response = response_body(self.client.search(index=name, body=body))
        except NotFoundError:
            self._meta_cache.pop(name, None)
            raise IndexNotFoundError(name) from None
        except ApiError as exc:
            if "too_many" in str(exc.error) + str(exc.body):
                raise TooManyClausesError(max(len(query), len(rescore or ())),
                                          self.max_clause_count) from exc
            raise BackendError(f"search on {name!r} failed: {_api_text(exc)}") from exc
        return self._hits(response, self.vector_spec(name) if vectors else None)


def build_client(settings: Any) -> Elasticsearch:
    """An `Elasticsearch` client from `Settings` (see `ElasticsearchBackend.from_settings`)."""
    options: dict[str, Any] = {
        "request_timeout": float(settings.elasticsearch_timeout_s),
        "http_compress": True,
        # One retry layer: the backend's (bulk.EngineBackendBase). The transport never resends.
        "max_retries": 0,
        "retry_on_status": (),
        "retry_on_timeout": False,
    }
    if settings.elasticsearch_cloud_id:
        options["cloud_id"] = settings.elasticsearch_cloud_id
    else:
        url = str(settings.elasticsearch_url)
        # "https://a:9200,https://b:9200"; a node listed twice once (the client refuses duplicates)
        hosts = list(dict.fromkeys(u.strip().rstrip("/") for u in url.split(",") if u.strip()))
        if not hosts:
            raise ValueError("elasticsearch_url is empty (or set elasticsearch_cloud_id)")
        options["hosts"] = hosts
    if settings.elasticsearch_api_key and settings.elasticsearch_user:
        raise ValueError("set either elasticsearch_api_key or elasticsearch_user/password, not both")
    if settings.elasticsearch_api_key:
        key = settings.elasticsearch_api_key
        options["api_key"] = tuple(key.split(":", 1)) if ":" in key else key
    elif settings.elasticsearch_user:
        if settings.elasticsearch_password is None:
            raise ValueError("elasticsearch_user is set but elasticsearch_password is not")
        options["basic_auth"] = (settings.elasticsearch_user, settings.elasticsearch_password)
    if settings.elasticsearch_ca_certs:
        options["ca_certs"] = str(settings.elasticsearch_ca_certs)
    if not settings.elasticsearch_verify_certs:
        options["verify_certs"] = False
        options["ssl_show_warn"] = False
    return Elasticsearch(**options)
