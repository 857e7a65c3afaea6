"""`OpenSearchBackend`: the `Backend` protocol on an OpenSearch cluster, with opensearch-py.

Why opensearch-py: it is the official, maintained client; it handles connection pooling, node
retries on dropped connections, TLS, basic auth and AWS SigV4 signing, and its
`helpers.streaming_bulk` turns a bulk response into one `(ok, item)` per document.

Writes (`upsert`, `delete_documents`) come from `bulk.BulkWriter`, shared with the
Elasticsearch backend; this module supplies opensearch-py's `streaming_bulk` and exceptions:
- Each document is validated before anything is sent (a term map with NaN, inf, zero, negative or
  subnormal weights, an empty id, non-JSON fields): it becomes a failed `DocumentResult` (status
  400) and is never sent.
- `_id` is `document_id(fingerprint, source_id)`, a hash of the encoder fingerprint and the source
  id: OpenSearch has no bulk idempotency, so a replayed batch (a retried request, a redelivered
  Celery task) overwrites instead of duplicating. The source id is kept in the `id` field.
Retries: exactly one layer, this module's. The opensearch-py transport is built with
`max_retries=0, retry_on_timeout=False` (`build_client`, which the tests use too) and
`streaming_bulk` with `max_retries=0`: streaming_bulk's own backoff has no jitter and blocks in
`time.sleep` (which tests cannot shorten), and transport retries would nest inside ours. Searches
are not retried: a chat query has a latency budget, and its caller decides whether to ask again.

- Documents go out in chunks through `streaming_bulk(max_retries=0, raise_on_error=False)`:
  * item 429 (`es_rejected_execution_exception`): only those items are resent, with capped
    exponential backoff and equal jitter, at most `max_retries` times each;
  * item 400/409 and every other item error: permanent, reported per document with the reason;
  * whole-request 429, 502/503/504 or a dropped connection/timeout: the chunk is resent (safe
    because `_id`s are deterministic) up to `max_retries` times, then every document of the chunk
    is reported failed;
  * whole-request 413 (above `http.max_content_length`): the chunk is split in halves and resent;
    a single document that is still too large is reported failed with status 413.
  One bad document never raises; results come back in input order, one per document.

Search: refuses an index whose `_meta.encoder_fingerprint` differs from the query's fingerprint
(`FingerprintMismatchError`; the meta is cached for `meta_cache_ttl_s`), checks the clause limit
(`indices.query.bool.max_clause_count`, read from the cluster once, 1024 if unreadable), and
builds a `rank_feature` or `neural_sparse` query (see `query_dsl`), with a `rescore` phase for
two-phase search.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import NotFoundError, RequestError, TransportError
from opensearchpy.helpers import streaming_bulk

from convsparse.errors import (
    BackendError,
    IndexNotFoundError,
    TooManyClausesError,
)
from convsparse.integration.backend import Hit, IndexInfo
from convsparse.integration.backends.bulk import (
    BulkStats,
    BulkWriter,
    RequestFailure,
    document_id,
)
from convsparse.integration.backends.query_dsl import (
    DEFAULT_MAX_CLAUSE_COUNT,
    QueryMode,
    build_query,
    search_body,
)
from convsparse.mappings import TERM_FIELD, bulk_load_settings, index_body, serving_settings
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


class OpenSearchBackend(BulkWriter):
    """`Backend` on an OpenSearch cluster (see the module docstring for the retry rules)."""

    _refresh_errors = (TransportError,)
    _not_found = NotFoundError
    _reachable = staticmethod(_reachable)

    def __init__(
        self,
        client: OpenSearch,
        *,
        max_clause_count: int | None = None,
        query_mode: QueryMode = "rank_feature",
        field: str = TERM_FIELD,
        shards: int = 1,
        replicas: int = 1,
        refresh_interval: str = "1s",
        chunk_size: int = 500,
        max_chunk_bytes: int = 10 * 1024 * 1024,
        max_retries: int = 5,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        refresh_after_upsert: bool = True,
        meta_cache_ttl_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        if query_mode not in ("rank_feature", "neural_sparse"):
            raise ValueError(f"query_mode must be 'rank_feature' or 'neural_sparse', not {query_mode!r}")
        self._init_bulk(chunk_size=chunk_size, max_chunk_bytes=max_chunk_bytes,
                        max_retries=max_retries, initial_backoff=initial_backoff,
                        max_backoff=max_backoff, refresh_after_upsert=refresh_after_upsert,
                        sleep=sleep, rng=rng)
        self.client = client
        self.query_mode: QueryMode = query_mode
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
          AWS_SESSION_TOKEN).
        """
        if settings is None:
            from convsparse.settings import get_settings

            settings = get_settings()
        return cls(build_client(settings), **backend_options)

    # ------------------------------------------------------------------ index management
    def create_index(
        self, name: str, *, fingerprint: str, vocabulary: str | None = None,
        exist_ok: bool = False, bulk_load: bool = False,
    ) -> IndexInfo:
        """Create `name` explicitly (never rely on auto-creation: it would map term maps as
        objects). With `exist_ok`, an existing index built by the same encoder is accepted and
        one built by another encoder raises `FingerprintMismatchError`."""
        body = index_body(
            fingerprint, vocabulary, field=self.field, shards=self.shards,
            replicas=self.replicas, refresh_interval=self.refresh_interval, bulk_load=bulk_load,
        )
        try:
            with _reachable(f"create index {name!r}"):
                self.client.indices.create(index=name, body=body)
        except RequestError as exc:
            if "resource_already_exists_exception" not in str(exc.error):
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

    # ------------------------------------------------------------------ writes (bulk.BulkWriter)
    def _bulk_round(self, actions: list[dict[str, Any]]) -> list[tuple[bool, dict[str, Any]]]:
        return list(streaming_bulk(
            self.client, actions, chunk_size=len(actions) + 1, max_chunk_bytes=2**62,
            raise_on_error=False, raise_on_exception=True, max_retries=0,
        ))

    def _request_failure(self, exc: BaseException) -> RequestFailure | None:
        if not isinstance(exc, TransportError):
            return None
        return RequestFailure(_status_of(exc), isinstance(exc, OSConnectionError))

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
    ) -> list[Hit]:
        meta = self._search_meta(name, fingerprint)
        field_name = meta.get("term_field", self.field)
        query = query if isinstance(query, TermMap) else TermMap(query)
        if not query:
            return []
        limit = self.max_clause_count
        body = search_body(
            build_query(query, field_name, mode=self.query_mode, max_clause_count=limit),
            k,
            # Backend.search: rescoring happens only with a positive window.
            rescore=None if rescore is None or not len(rescore) or rescore_window <= 0 else build_query(
                rescore, field_name, mode=self.query_mode, max_clause_count=limit),
            rescore_window=rescore_window,
            exclude_fields=(field_name,),
        )
        try:
            with _reachable(f"search {name!r}"):
                response = self.client.search(index=name, body=body)
        except NotFoundError:
            self._meta_cache.pop(name, None)
            raise IndexNotFoundError(name) from None
        except RequestError as exc:
            if "too_many" in str(exc.error) or "too_many" in str(exc.info):
                raise TooManyClausesError(max(len(query), len(rescore or ())), limit) from exc
            raise BackendError(f"search on {name!r} failed: {exc.info or exc}") from exc
        return self._hits(response)


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
        botocore = None  # type: ignore[assignment]
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
