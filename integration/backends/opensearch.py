"""`OpenSearchBackend`: the `Backend` protocol on an OpenSearch cluster, with opensearch-py.

Why opensearch-py: it is the official, maintained client; it handles connection pooling, node
retries on dropped connections, TLS, basic auth and AWS SigV4 signing.

Writes (`upsert`, `delete_documents`) come from `bulk.EngineBackendBase`, shared with the
Elasticsearch backend; this module supplies opensearch-py's `bulk` call and exceptions:
- Each document is validated before anything is sent (a term map with NaN, inf, zero, negative or
  subnormal weights, an empty id, non-JSON fields): it becomes a failed `DocumentResult` (status
  400) and is never sent.
- `_id` is `document_id(fingerprint, source_id)`, a hash of the encoder fingerprint and the source
  id: OpenSearch has no bulk idempotency, so a replayed batch (a retried request, a redelivered
  Celery task) overwrites instead of duplicating. The source id is kept in the `id` field.
Retries: exactly one layer, this module's. The opensearch-py transport is built with
`max_retries=0, retry_on_timeout=False` (`build_client`, which the tests use too), and bodies go
out through `client.bulk`, pre-serialised (`bulk_body`), not `helpers.streaming_bulk`: its
backoff has no jitter and blocks in `time.sleep` (which tests cannot shorten), and transport
retries would nest inside ours. Searches
are not retried: a chat query has a latency budget, and its caller decides whether to ask again.

- Documents go out in chunks, one `_bulk` request each:
  * item 429 (`es_rejected_execution_exception`): only those items are resent, with capped
    exponential backoff and equal jitter (`convsparse.backoff.Backoff`), at most
  `backoff.max_retries` times each;
  * item 400/409 and every other item error: permanent, reported per document with the reason;
  * whole-request 429, 502/503/504 or a dropped connection/timeout: the chunk is resent (safe
    because `_id`s are deterministic) up to `backoff.max_retries` times, then every document of the chunk
    is reported failed;
  * whole-request 413 (above `http.max_content_length`): the chunk is split in halves and resent;
    a single document that is still too large is reported failed with status 413.
  One bad document never raises; results come back in input order, one per document.

Search: refuses an index whose `_meta.encoder_fingerprint` differs from the query's fingerprint
(`FingerprintMismatchError`; the meta is cached for `meta_cache_ttl_s`), checks the clause limit
(`indices.query.bool.max_clause_count`, read from the cluster once, 1024 if unreadable), and
builds a `rank_feature` or `neural_sparse` query (see `opensearch_query`), with a `rescore` phase for
two-phase search.

ML Commons ingest (`create_index(..., ingest=MLCommonsIngest(...))`, issue 33): the cluster
encodes documents with the deployed document encoder through the index's default ingest
pipeline, so the index holds raw token names. Its `_meta.ingest` makes `search` send
`neural_sparse` with raw `query_tokens` whatever `query_mode` says, refuse escaped names and a
`rescore_window` on top of a two-phase search pipeline, and `upsert` refuse client-side term
maps; `search_text` sends `query_text` + `model_id` for one-turn clients.

Field type (`field_type`, `CONVSPARSE_OPENSEARCH_FIELD_TYPE`), chosen when an index is created
and recorded in its `_meta.field_type` (an index without one is `rank_features`); writes and
searches follow the index's field type, not the backend's option:
- `rank_features` (default): queried with `query_mode` ("rank_feature" or "neural_sparse").
- `sparse_vector` (neural sparse ANN with SEISMIC, `convsparse.mappings.sparse_vector`):
  OpenSearch 3.3+ with the neural-search plugin. Creating one needs `token_vocabulary` (the
  encoder's vocabulary in id order, `encoder.vocabulary`), recorded in the index so term strings
  map to the integer token ids the field requires; `seismic` sets the method parameters.
  Searches send `neural_sparse` with token ids and `method_parameters` (`seismic_query`); the
  client's pruning policy has already pruned the query, and SEISMIC's `top_n` defaults to the
  query's length so it prunes nothing more, and its `k` to the larger of `k` and the rescore
  window. A rescore runs the full query without `method_parameters`, which the plugin turns
  into the exact FeatureField dot product over every document of the window (an approximate
  rescore would give 0 to window documents its own top k misses). Query tokens outside the
  vocabulary cannot match any document and are left out; a document token outside it fails
  that document (400).
  Version gate: this backend does not read the server version; a server older than 3.3 (or one
  without the neural-search plugin) refuses the mapping, and `create_index` turns that answer
  into a `BackendError` that says so.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import NotFoundError, RequestError, TransportError

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
from convsparse.integration.backends.mlcommons_pipeline import MLCommonsIngest, with_mlcommons_ingest
from convsparse.integration.backends.opensearch_query import (
    DEFAULT_MAX_CLAUSE_COUNT,
    QueryMode,
    build_query,
    check_server_encoded_query,
    neural_sparse_ann_query,
    neural_sparse_query,
    neural_sparse_text_query,
    search_body,
)
from convsparse.integration.vectors import VectorSpec
from convsparse.mappings import (
    FIELD_TYPES,
    TERM_FIELD,
    FieldType,
    bulk_load_settings,
    index_body,
    serving_settings,
)
from convsparse.mappings.sparse_vector import (
    SPARSE_ANN_SINCE,
    SeismicParameters,
    SeismicQueryOptions,
    TokenIds,
)
from convsparse.termmap import TermMap

__all__ = ["BulkStats", "OpenSearchBackend", "document_id"]

log = logging.getLogger(__name__)

MAX_CLAUSE_COUNT_SETTING = "indices.query.bool.max_clause_count"


@contextmanager
def _reachable(what: str) -> Iterator[None]:
    """Turn "cannot connect" (refused, TLS failure, timeout) into a `BackendError` that says so."""
    try:
        yield
    except OSConnectionError as exc:
        raise BackendError(f"{what}: cannot reach OpenSearch ({exc})") from exc


def _status_of(exc: TransportError) -> int | None:
    status = exc.status_code
    return status if isinstance(status, int) else None


class OpenSearchBackend(EngineBackendBase):
    """`Backend` on an OpenSearch cluster (see the module docstring for the retry rules)."""

    _refresh_errors = (TransportError,)
    _not_found = NotFoundError
    _reachable = staticmethod(_reachable)
    _meta_defaults = {"field_type": "rank_features"}  # indices written before sparse_vector

    def __init__(
        self,
        client: OpenSearch,
        *,
        max_clause_count: int | None = None,
        query_mode: QueryMode = "rank_feature",
        field_type: FieldType = "rank_features",
        seismic: SeismicParameters | Mapping[str, Any] | None = None,
        seismic_query: SeismicQueryOptions | Mapping[str, Any] | None = None,
        token_vocabulary: Sequence[str] | TokenIds | None = None,
        field: str = TERM_FIELD,
        shards: int = 1,
        replicas: int = 1,
        refresh_interval: str = "1s",
        chunk_size: int = 500,
        max_chunk_bytes: int = 10 * 1024 * 1024,
        backoff: Backoff | None = None,
        refresh_after_upsert: bool = True,
        meta_cache_ttl_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        if query_mode not in ("rank_feature", "neural_sparse"):
            raise ValueError(f"query_mode must be 'rank_feature' or 'neural_sparse', not {query_mode!r}")
        if field_type not in FIELD_TYPES:
            raise ValueError(f"field_type must be one of {FIELD_TYPES}, not {field_type!r}")
        self._init_bulk(chunk_size=chunk_size, max_chunk_bytes=max_chunk_bytes,
                        backoff=backoff, refresh_after_upsert=refresh_after_upsert,
                        sleep=sleep, rng=rng)
        self.client = client
        self.query_mode: QueryMode = query_mode
        self.field_type: FieldType = field_type
        self.seismic = seismic if isinstance(seismic, SeismicParameters) or seismic is None \
            else SeismicParameters.from_mapping(seismic)
        self.seismic_query = seismic_query if isinstance(seismic_query, SeismicQueryOptions) \
            else SeismicQueryOptions(**(seismic_query or {}))
        self.token_vocabulary = token_vocabulary if isinstance(token_vocabulary, TokenIds) \
            or token_vocabulary is None else TokenIds(token_vocabulary)
        self._token_id_tables: dict[str, TokenIds] = {}  # by digest: built once per vocabulary
        self.field = field
        self.shards = shards
        self.replicas = replicas
        self.refresh_interval = refresh_interval
        self.meta_cache_ttl_s = meta_cache_ttl_s
        self._max_clause_count = max_clause_count
        self._meta_cache: dict[str, tuple[float, dict[str, Any]]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_settings(cls, settings: Any = None, **backend_options: Any) -> OpenSearchBackend:
        """Build the client from `Settings` (`CONVSPARSE_OPENSEARCH_*`):

        - `opensearch_url` (http or https; the scheme decides TLS; several nodes separated by
          commas), `opensearch_timeout_s`;
        - basic auth: `opensearch_user` + `opensearch_password`;
        - TLS: `opensearch_ca_certs` (CA bundle path), `opensearch_verify_certs`;
        - AWS SigV4: `opensearch_aws_region` (service "es", or "aoss" for a serverless URL);
          needs botocore (credentials from the usual AWS chain) or the `aws` extra
          (requests-aws4auth, credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
          AWS_SESSION_TOKEN);
        - `opensearch_field_type` (rank_features | sparse_vector) for indices it creates.
        """
        if settings is None:
            from convsparse.settings import get_settings

            settings = get_settings()
        backend_options.setdefault("field_type", settings.opensearch_field_type)
        return cls(build_client(settings), **backend_options)

    # ------------------------------------------------------------------ index management
    def create_index(
        self, name: str, *, fingerprint: str, vocabulary: str | None = None,
        exist_ok: bool = False, bulk_load: bool = False, ingest: MLCommonsIngest | None = None,
    ) -> IndexInfo:
        """Create `name` explicitly (never rely on auto-creation: it would map term maps as
        objects), with this backend's `field_type`. With `exist_ok`, an existing index built by
        the same encoder is accepted (whatever its field type) and one built by another encoder
        raises `FingerprintMismatchError`. With `ingest`, the index is filled by an ML Commons
        model through its `index.default_pipeline` (`mlcommons_pipeline.with_mlcommons_ingest`)."""
        sparse = self.field_type == "sparse_vector"
        if sparse and self.token_vocabulary is None:
            raise ValueError(
                "field_type='sparse_vector' needs token_vocabulary (the encoder's vocabulary in "
                "id order, e.g. OpenSearchBackend(..., token_vocabulary=encoder.vocabulary)): "
                "the field's keys are integer token ids")
        body = index_body(
            fingerprint, vocabulary, field=self.field, shards=self.shards,
            replicas=self.replicas, refresh_interval=self.refresh_interval, bulk_load=bulk_load,
            field_type=self.field_type, seismic=self.seismic if sparse else None,
            token_ids=self.token_vocabulary if sparse else None,
        )
        # renewed by every delete + create: a job's done markers name the index they wrote into
        body["mappings"]["_meta"]["creation_id"] = uuid.uuid4().hex
        if ingest is not None:  # filled by ML Commons through its default pipeline
            body = with_mlcommons_ingest(body, ingest)
        try:
            with _reachable(f"create index {name!r}"):
                self.client.indices.create(index=name, body=body)
        except RequestError as exc:
            if "resource_already_exists_exception" not in str(exc.error):
                if sparse and _predates_sparse_ann(exc):
                    raise BackendError(
                        f"cannot create index {name!r}: the server does not know the "
                        f"sparse_vector field; it needs OpenSearch "
                        f"{'.'.join(map(str, SPARSE_ANN_SINCE))} or later with the neural-search "
                        f"plugin (use field_type='rank_features' there). Server said: "
                        f"{exc.info or exc}") from exc
                raise BackendError(f"cannot create index {name!r}: {exc.info or exc}") from exc
            return self._existing_index(name, fingerprint, exist_ok)
        self._meta_cache.pop(name, None)
        return self.describe_index(name)

    def begin_bulk_load(self, name: str) -> None:
        """Refresh off and no replicas while loading (`mappings.bulk_load_settings`)."""
        self.client.indices.put_settings(index=name, body=bulk_load_settings())

    def end_bulk_load(self, name: str) -> None:
        """Back to serving settings (replicas, refresh interval), then refresh."""
        self.client.indices.put_settings(
            index=name,
            body=serving_settings(replicas=self.replicas, refresh_interval=self.refresh_interval),
        )
        self.refresh(name)

    # ------------------------------------------------------------------ writes (bulk.EngineBackendBase)
    def _bulk_round(self, lines: list[bytes]) -> list[tuple[bool, dict[str, Any]]]:
        return items_outcome(response_body(self.client.bulk(body=b"".join(lines))))

    def _request_failure(self, exc: BaseException) -> RequestFailure | None:
        if not isinstance(exc, TransportError):
            return None
        return RequestFailure(_status_of(exc), isinstance(exc, OSConnectionError))

    def _field_value(self, name: str, meta: Mapping[str, Any]) -> Callable[[TermMap], dict[str, Any] | bytes]:
        if MLCommonsIngest.from_meta(meta) is not None:
            raise BackendError(
                f"index {name!r} is encoded in the cluster by ML Commons model "
                f"{meta['ingest'].get('model_id')} (ingest pipeline {meta['ingest'].get('pipeline')!r}): "
                "send its documents as {id, title, text} with _bulk, and the default pipeline "
                "encodes them; convsparse does not write client-side term maps into it")
        if meta["field_type"] == "sparse_vector":
            return self._token_ids(name, meta).document_vector
        return super()._field_value(name, meta)

    # ------------------------------------------------------------------ sparse_vector helpers
    def _token_ids(self, name: str, meta: Mapping[str, Any]) -> TokenIds:
        """The token-id table recorded in a sparse_vector index (built once per vocabulary)."""
        record = meta.get("token_ids")
        if not isinstance(record, Mapping):
            raise BackendError(f"index {name!r} is a sparse_vector index without _meta.token_ids; "
                               "recreate it with `convsparse index create --field-type sparse_vector`")
        table = self._token_id_tables.get(str(record.get("digest")))
        if table is None:
            try:
                table = TokenIds.from_record(record, index=name)
            except ValueError as exc:
                raise BackendError(str(exc)) from None
            self._token_id_tables[table.digest] = table
        return table

    def _describe_meta(self, extra: dict[str, Any]) -> dict[str, Any]:
        if isinstance(extra.get("token_ids"), Mapping):  # the size and digest, not 30k tokens
            extra["token_ids"] = {k: v for k, v in extra["token_ids"].items() if k != "tokens"}
        return extra

    def _put_mapping(self, name: str, body: dict[str, Any]) -> None:
        self.client.indices.put_mapping(index=name, body=body)

    # ------------------------------------------------------------------ search
    @property
    def max_clause_count(self) -> int:
        """`indices.query.bool.max_clause_count` of the cluster (read once; 1024 if unreadable)."""
        if self._max_clause_count is None:
            self._max_clause_count = self._read_max_clause_count()
        return self._max_clause_count

    def _read_max_clause_count(self) -> int:
        try:
            response = self.client.cluster.get_settings(include_defaults=True, flat_settings=True)
        except TransportError as exc:  # e.g. no cluster:monitor permission on a managed domain
            log.info("cannot read cluster settings (%s); assuming max_clause_count=%d",
                     exc, DEFAULT_MAX_CLAUSE_COUNT)
            return DEFAULT_MAX_CLAUSE_COUNT
        for section in ("transient", "persistent", "defaults"):
            value = (response.get(section) or {}).get(MAX_CLAUSE_COUNT_SETTING)
            if value is not None:
                try:
                    return int(value)
                except (TypeError, ValueError):
                    break
        return DEFAULT_MAX_CLAUSE_COUNT

    def search(
        self, name: str, query: TermMap, k: int = 10, *,
        fingerprint: str | None = None, rescore: TermMap | None = None, rescore_window: int = 0,
        vectors: bool = False,
    ) -> list[Hit]:
        """`Backend.search`; with `vectors`, each hit carries its stored passage vectors."""
        meta = self._search_meta(name, fingerprint)
        field_name = meta.get("term_field", self.field)
        query = query if isinstance(query, TermMap) else TermMap(query)
        if not query:
            return []
        # Backend.search: rescoring happens only with a positive window.
        full = rescore if rescore is not None and len(rescore) > 0 and rescore_window > 0 else None
        limit = self.max_clause_count
        ingest = MLCommonsIngest.from_meta(meta)
        first: dict[str, Any] | None
        if ingest is not None:
            first, second = self._server_encoded_queries(name, ingest, query, full, field_name,
                                                         rescore_window)
        elif meta["field_type"] == "sparse_vector":
            table = self._token_ids(name, meta)
            first = self._ann_query(table.query_vector(query), field_name,
                                    k=max(k, rescore_window if full is not None else 0))
            if first is None:  # no query token is in the index's vocabulary: nothing can match
                return []
            second = None if full is None else self._ann_query(table.query_vector(full), field_name, k=None)
        else:
            first = build_query(query, field_name, mode=self.query_mode, max_clause_count=limit)
            second = None if full is None else build_query(full, field_name, mode=self.query_mode,
                                                           max_clause_count=limit)
        body = search_body(first, k, rescore=second, rescore_window=rescore_window,
                           exclude_fields=(field_name, *self._vector_exclusion(meta, vectors)))
        return self._send_search(name, body, limit, max(len(query), len(rescore or ())),
                                 self.vector_spec(name) if vectors else None)

    def _send_search(self, name: str, body: dict[str, Any], limit: int, n_terms: int,
                     spec: VectorSpec | None = None) -> list[Hit]:
        try:
            with _reachable(f"search {name!r}"):
                response = self.client.search(index=name, body=body)
        except NotFoundError:
            self._meta_cache.pop(name, None)
            raise IndexNotFoundError(name) from None
        except RequestError as exc:
            if "too_many" in str(exc.error) or "too_many" in str(exc.info):
                raise TooManyClausesError(n_terms, limit) from exc
            raise BackendError(f"search on {name!r} failed: {exc.info or exc}") from exc
        return self._hits(response, spec)

    # ------------------------------------------------------------------ ML Commons indices
    def _server_encoded_queries(
        self, name: str, ingest: MLCommonsIngest, query: TermMap, full: TermMap | None,
        field_name: str, rescore_window: int,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """`neural_sparse` with raw token names for an index ML Commons fills (its names are
        the server's, unescaped), whatever `query_mode` says; refused: escaped names, and a
        rescore window on an index whose search pipeline already adds the two-phase rescorer."""
        if ingest.two_phase_pipeline and rescore_window > 0:
            raise BackendError(
                f"index {name!r} is searched through the two-phase search pipeline "
                f"{ingest.two_phase_pipeline!r}, which adds its own rescorer; search it with "
                "rescore_window=0 (two rescorers would stack)")
        limit = self.max_clause_count
        first = neural_sparse_query(query, field_name, max_clause_count=limit, raw_names=True)
        second = None if full is None else neural_sparse_query(
            full, field_name, max_clause_count=limit, raw_names=True)
        try:
            check_server_encoded_query({"query": first, "rescore": second}, index=name)
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        return first, second

    def search_text(self, name: str, text: str, k: int = 10, *, model_id: str | None = None,
                    fingerprint: str | None = None) -> list[Hit]:
        """One-turn search of an ML-Commons-filled index: the cluster's model encodes `text`
        (`neural_sparse` `query_text` + `model_id`, by default the index's own model). A
        conversation needs the client's student and `search`."""
        meta = self._search_meta(name, fingerprint)
        ingest = MLCommonsIngest.from_meta(meta)
        if model_id:
            model = model_id
        elif ingest is not None:
            model = ingest.model_id
        else:
            raise BackendError(f"index {name!r} is not encoded by an ML Commons model; pass "
                               "model_id, or search it with a term map")
        field_name = meta.get("term_field", self.field)
        query = neural_sparse_text_query(text, model, field_name)
        body = search_body(query, k, exclude_fields=(field_name,))
        return self._send_search(name, body, self.max_clause_count, 1)

    def _ann_query(self, tokens: dict[str, float], field_name: str, *,
                   k: int | None) -> dict[str, Any] | None:
        """`neural_sparse` on a sparse_vector field (None when no token is left): approximate,
        returning `k` hits, or exact (every token, every document) when `k` is None."""
        if not tokens:
            return None
        params = None if k is None else self.seismic_query.method_parameters(n_tokens=len(tokens), k=k)
        return neural_sparse_ann_query(tokens, field_name, method_parameters=params,
                                       max_clause_count=self.max_clause_count)


def _predates_sparse_ann(exc: RequestError) -> bool:
    """The server's 400 for a mapping or setting it does not know (before 3.3, or no plugin)."""
    text = f"{exc.error} {exc.info}".lower()
    return "sparse_vector" in text or "index.sparse" in text


def build_client(settings: Any) -> OpenSearch:
    """An `OpenSearch` client from `Settings` (see `OpenSearchBackend.from_settings`)."""
    url = str(settings.opensearch_url)
    hosts = [u.strip() for u in url.split(",") if u.strip()]  # "https://a:9200,https://b:9200"
    if not hosts:
        raise ValueError("opensearch_url is empty")
    options: dict[str, Any] = {
        "hosts": hosts,
        "timeout": float(settings.opensearch_timeout_s),
        "http_compress": True,
        # One retry layer: OpenSearchBackend's own (see the module docstring). The transport
        # never resends, or its retries would nest inside the backend's (up to 24 sends of a
        # chunk for one 503, the inner ones without backoff).
        "retry_on_timeout": False,
        "max_retries": 0,
        "verify_certs": bool(settings.opensearch_verify_certs),
    }
    if settings.opensearch_ca_certs:
        options["ca_certs"] = str(settings.opensearch_ca_certs)
    if not settings.opensearch_verify_certs:
        options["ssl_show_warn"] = False
    if settings.opensearch_aws_region:
        if settings.opensearch_user:
            raise ValueError("set either opensearch_user/password or opensearch_aws_region, not both")
        options.update(_sigv4_options(url, settings.opensearch_aws_region))
        # Gzipped bodies and SigV4 have a history of signature mismatches (403) across
        # clients (opensearch-py#176); send uncompressed bodies when signing.
        options["http_compress"] = False
    elif settings.opensearch_user:
        if settings.opensearch_password is None:
            raise ValueError("opensearch_user is set but opensearch_password is not")
        options["http_auth"] = (settings.opensearch_user, settings.opensearch_password)
    return OpenSearch(**options)


def _sigv4_options(url: str, region: str) -> dict[str, Any]:
    """Client options for AWS SigV4 (Amazon OpenSearch Service "es", Serverless "aoss")."""
    service = "aoss" if ".aoss." in url else "es"
    try:
        import botocore.session
    except ImportError:
        botocore = None
    if botocore is not None:
        from opensearchpy import Urllib3AWSV4SignerAuth

        credentials = botocore.session.Session().get_credentials()
        if credentials is None:
            raise BackendError("AWS SigV4: no AWS credentials found (environment, profile or role)")
        return {"http_auth": Urllib3AWSV4SignerAuth(credentials, region, service)}
    try:
        from opensearchpy import RequestsHttpConnection
        from requests_aws4auth import AWS4Auth
    except ImportError:
        raise BackendError(
            "AWS SigV4 needs botocore or the optional extra: pip install 'convsparse[aws]'"
        ) from None
    import os

    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise BackendError("AWS SigV4: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    auth = AWS4Auth(key, secret, region, service, session_token=os.environ.get("AWS_SESSION_TOKEN"))
    return {"http_auth": auth, "connection_class": RequestsHttpConnection}
