"""Bulk writes shared by the Lucene-based engines (OpenSearch, Elasticsearch): one retry layer.

Both engines answer `_bulk` the same documented way (HTTP 200 with `errors: true` and per-item
`status`/`error`; a whole-request 429, 413 above `http.max_content_length`, 5xx or a dropped
connection) and both official clients have a `helpers.streaming_bulk` that yields one
`(ok, item)` per action. `EngineBackendBase` is the engine-neutral part: validation before sending,
deterministic `_id`s, chunking by count and bytes, the retry rules, per-document results in
input order. An engine supplies two hooks:

- `_bulk_round(lines)`: one `_bulk` request of the documents' pre-serialised NDJSON lines
  (`bulk_body`) with its own client, answered as `streaming_bulk` would: a list of `(ok, item)`;
  a whole-request failure raises the client's exception;
- `_request_failure(exc)`: `RequestFailure(status, connection)` when `exc` is its client's
  whole-request failure (an HTTP error status, or no response at all), None to let it raise.

Retry rules (the only retries: each engine's transport is built with `max_retries=0`, so
nothing nests):
- item 429 (`es_rejected_execution_exception`): only those items are resent, with capped
  exponential backoff and equal jitter (`convsparse.backoff.Backoff`), at most
  `backoff.max_retries` times each;
- item 400/409 and every other item error: permanent, reported per document with the reason;
- whole-request 429, 502/503/504 or a dropped connection/timeout: the chunk is resent (safe
  because `_id`s are deterministic) up to `backoff.max_retries` times, then every document of the chunk
  is reported failed;
- whole-request 413: the chunk is split in halves and resent; a single document that is still
  too large is reported failed with status 413.
One bad document never raises; results come back in input order, one per document.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, cast

from convsparse.backoff import Backoff
from convsparse.errors import (
    BackendError,
    FingerprintMismatchError,
    IndexExistsError,
    IndexNotFoundError,
    InvalidTermMapError,
)
from convsparse.integration.backends.base import (
    MAX_K,
    DocumentResult,
    Hit,
    IndexedDocument,
    IndexInfo,
    indexed_document,
)
from convsparse.integration.backends.bulk_body import (
    delete_line,
    dumps,
    index_lines,
    rank_features_json,
)
from convsparse.integration.vectors import (
    META_KEY,
    VECTORS_FIELD,
    DocumentVectors,
    VectorSpec,
    VectorSpecMismatchError,
)
from convsparse.termmap import TermMap

__all__ = ["TOP_LEVEL_FIELDS", "TRANSIENT_REQUEST_STATUSES", "BulkStats", "EngineBackendBase",
           "RequestFailure", "document_id", "response_body"]

log = logging.getLogger(__name__)

#: A term map as a `rank_features` object, JSON bytes already (`bulk_body.rank_features_json`).
_rank_features: Callable[[TermMap], dict[str, Any] | bytes] = rank_features_json

#: Whole-request statuses worth resending (besides connection errors and timeouts).
TRANSIENT_REQUEST_STATUSES = frozenset({429, 502, 503, 504})
#: Five retries with waits capped from 0.5 s up to 30 s: time for a loaded cluster to recover.
DEFAULT_BACKOFF = Backoff(max_retries=5, initial_s=0.5, max_s=30.0)
#: Fields stored at the top level of the document; all others go into `metadata`.
TOP_LEVEL_FIELDS = ("title", "text")


def response_body(response: Any) -> Any:
    """The parsed body of a client response (elasticsearch-py wraps it in `.body`;
    opensearch-py returns it as it is)."""
    return getattr(response, "body", response)


def document_id(fingerprint: str, source_id: str) -> str:
    """Deterministic `_id`: a hash of the encoder fingerprint and the source id
    (bounded length, no character restrictions, same input -> same `_id`)."""
    # JSON-encode the pair so that no choice of strings makes two pairs collide. These are the
    # bytes of json.dumps([fingerprint, source_id], ensure_ascii=False) (an `_id` must never
    # change), without building a JSONEncoder per call.
    key = f"[{encode_basestring(fingerprint)}, {encode_basestring(source_id)}]".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


@dataclass
class BulkStats:
    """Counters for the writes of one backend (cumulative; `reset()` to start again)."""

    requests: int = 0
    documents_sent: int = 0
    item_retries: int = 0
    request_retries: int = 0
    splits: int = 0
    backoff_s: float = 0.0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


@dataclass
class _Entry:
    pos: int
    source_id: str
    lines: bytes  # its NDJSON lines, as sent
    attempts: int = 0

    @property
    def size(self) -> int:
        return len(self.lines)


def _error_reason(info: Mapping[str, Any]) -> str:
    """'type: reason (caused by: type: reason)' from a bulk item's `error`."""
    error = info.get("error")
    if error is None:
        return f"status {info.get('status')}"
    if isinstance(error, str):
        return error
    parts = [f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")]
    cause = error.get("caused_by")
    while isinstance(cause, Mapping):
        parts.append(f"caused by {cause.get('type', 'error')}: {cause.get('reason', '')}")
        cause = cause.get("caused_by")
    return "; ".join(parts)


def _decoded(source: Mapping[str, Any], spec: VectorSpec | None) -> DocumentVectors | None:
    """The passage vectors in a document's `_source` (None: none, or unreadable)."""
    if spec is None:
        return None
    text = source.get(VECTORS_FIELD)
    if not isinstance(text, str):
        return None
    try:
        return DocumentVectors.from_base64(text, spec.dimension)
    except ValueError as e:
        log.warning("document %r: stored passage vectors unreadable (%s); embedded again",
                    source.get("id"), e)
        return None


@dataclass(frozen=True)
class RequestFailure:
    """A whole bulk request failed: the HTTP status (None: no response) and whether the
    connection itself failed (refused, dropped, timed out)."""

    status: int | None
    connection: bool = False


class EngineBackendBase:
    """The shared base of `OpenSearchBackend` and `ElasticsearchBackend`: `upsert` and
    `delete_documents` for an engine with `_bulk` (see the module docstring).

    The engine class sets `chunk_size`, `max_chunk_bytes`, `backoff` (a `Backoff`),
    `refresh_after_upsert`, `field`, `stats`, `_sleep`, `_rng` (see
    `_init_bulk`), `client`, `meta_cache_ttl_s`, `_meta_cache` and `_not_found`, and
    implements `_reachable`, `_bulk_round` and `_request_failure`. The index bookkeeping both
    engines share (`describe_index`, `delete_index`, `count`, `refresh`, the cached `_meta`,
    what `create_index` returns for an index that already exists, turning hits into `Hit`s)
    lives here too.
    """

    chunk_size: int
    max_chunk_bytes: int
    backoff: Backoff
    refresh_after_upsert: bool
    field: str
    stats: BulkStats
    _sleep: Callable[[float], None]
    _rng: random.Random
    client: Any
    meta_cache_ttl_s: float
    _meta_cache: dict[str, tuple[float, dict[str, Any]]]
    #: Exceptions of the engine's client that a failed refresh after a write may raise.
    _refresh_errors: tuple[type[BaseException], ...] = ()
    #: The engine client's "index not found" exception.
    _not_found: type[BaseException] = LookupError
    #: Values for `_meta` keys that indices written by older versions lack.
    _meta_defaults: Mapping[str, Any] = {}

    def _init_bulk(
        self, *, chunk_size: int, max_chunk_bytes: int, backoff: Backoff | None,
        refresh_after_upsert: bool, sleep: Callable[[float], None], rng: random.Random | None,
    ) -> None:
        if chunk_size < 1 or max_chunk_bytes < 1:
            raise ValueError("chunk_size and max_chunk_bytes must be >= 1")
        self.chunk_size = chunk_size
        self.max_chunk_bytes = max_chunk_bytes
        self.backoff = backoff or DEFAULT_BACKOFF
        self.refresh_after_upsert = refresh_after_upsert
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.stats = BulkStats()

    # hooks -------------------------------------------------------------------------------
    def _reachable(self, what: str) -> AbstractContextManager[None]:
        """A context that turns "cannot connect" into a `BackendError` naming `what`."""
        raise NotImplementedError

    def _bulk_round(self, lines: list[bytes]) -> list[tuple[bool, dict[str, Any]]]:
        raise NotImplementedError

    def _request_failure(self, exc: BaseException) -> RequestFailure | None:
        raise NotImplementedError

    # index bookkeeping shared by both engines ---------------------------------------------
    def delete_index(self, name: str, *, missing_ok: bool = False) -> None:
        self._meta_cache.pop(name, None)
        try:
            with self._reachable(f"delete index {name!r}"):
                self.client.indices.delete(index=name)
        except self._not_found:
            if not missing_ok:
                raise IndexNotFoundError(name) from None

    def count(self, name: str) -> int:
        try:
            with self._reachable(f"count {name!r}"):
                return int(response_body(self.client.count(index=name))["count"])
        except self._not_found:
            raise IndexNotFoundError(name) from None

    def refresh(self, name: str) -> None:
        """Make every write so far visible to search and count."""
        try:
            with self._reachable(f"refresh {name!r}"):
                self.client.indices.refresh(index=name)
        except self._not_found:
            raise IndexNotFoundError(name) from None

    def _meta(self, name: str, *, fresh: bool = False) -> dict[str, Any]:
        """The index's `_meta` (encoder fingerprint, vocabulary, term field...), cached for
        `meta_cache_ttl_s`; an index convsparse did not create is refused."""
        cached = self._meta_cache.get(name)
        now = time.monotonic()
        if cached is not None and not fresh and now - cached[0] < self.meta_cache_ttl_s:
            return cached[1]
        try:
            with self._reachable(f"read the mapping of {name!r}"):
                response = response_body(self.client.indices.get_mapping(index=name))
        except self._not_found:
            self._meta_cache.pop(name, None)
            raise IndexNotFoundError(name) from None
        if not response:
            raise IndexNotFoundError(name)
        # The key is the concrete index name (it differs when `name` is an alias).
        mapping = next(iter(response.values())).get("mappings", {})
        meta = {**self._meta_defaults, **(mapping.get("_meta") or {})}
        if not meta.get("encoder_fingerprint"):
            raise BackendError(
                f"index {name!r} has no encoder fingerprint in its _meta: it was not created by "
                "convsparse; create it with `convsparse index create`"
            )
        self._meta_cache[name] = (now, meta)
        return meta

    def _search_meta(self, name: str, fingerprint: str | None) -> dict[str, Any]:
        """The `_meta` a search needs, after refusing a query from another encoder."""
        meta = self._meta(name)
        if fingerprint is not None and fingerprint != meta["encoder_fingerprint"]:
            raise FingerprintMismatchError(name, meta["encoder_fingerprint"], fingerprint)
        return meta

    @staticmethod
    def _hits(response: Mapping[str, Any], spec: VectorSpec | None = None) -> list[Hit]:
        """Hits of a search response: the source id, the score, the stored fields (top-level
        ones and `metadata`, flattened back) and, with `spec`, the passage vectors."""
        hits = []
        for hit in response["hits"]["hits"]:
            source = hit.get("_source") or {}
            fields = {key: source[key] for key in TOP_LEVEL_FIELDS if key in source}
            fields.update(source.get("metadata") or {})
            hits.append(Hit(id=source.get("id", hit.get("_id")), score=float(hit["_score"]),
                            fields=fields, vectors=_decoded(source, spec)))
        return hits

    # passage vectors (`SupportsPassageVectors`) ------------------------------------------
    #: `search(..., vectors=True)` returns the hits' stored vectors (`Hit.vectors`)
    search_returns_vectors = True
    #: documents read per request when scanning an index (the backfill)
    scan_page = 500

    def _put_mapping(self, name: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def vector_spec(self, name: str) -> VectorSpec | None:
        return VectorSpec.from_dict(self._meta(name).get(META_KEY))

    def _vector_exclusion(self, meta: Mapping[str, Any], vectors: bool) -> tuple[str, ...]:
        """`_source` fields a search leaves out: the vectors unless asked for."""
        return () if vectors or META_KEY not in meta else (VECTORS_FIELD,)

    def enable_vectors(self, name: str, spec: VectorSpec, *, replace: bool = False) -> None:
        """Add the `binary` vectors field and record `spec` in `_meta` (one put_mapping,
        `mappings.vectors_mapping`). Another spec cannot be replaced in place here (the old
        vectors would stay in `_source`): ingest into a new index."""
        from convsparse.mappings import vectors_mapping

        meta = self._meta(name, fresh=True)
        held = VectorSpec.from_dict(meta.get(META_KEY))
        if held == spec:
            return
        if held is not None:
            if not replace:
                raise VectorSpecMismatchError(name, held, spec)
            raise BackendError(f"index {name!r} holds {held.describe()}; they cannot be replaced "
                               "in place: ingest into a new index with the new re-ranker")
        with self._reachable(f"add passage vectors to {name!r}"):
            self._put_mapping(name, vectors_mapping(dict(meta), spec.to_dict(), VECTORS_FIELD))
        self._meta_cache.pop(name, None)

    def _vector_search(self, name: str, body: dict[str, Any],
                       what: str = "read passage vectors of") -> list[dict[str, Any]]:
        try:
            with self._reachable(f"{what} {name!r}"):
                response = response_body(self.client.search(index=name, body=body))
        except self._not_found:
            raise IndexNotFoundError(name) from None
        hits: list[dict[str, Any]] = response["hits"]["hits"]
        return hits

    def passage_vectors(self, name: str, ids: Iterable[str]) -> dict[str, DocumentVectors]:
        """The stored vectors of `ids` (one `ids` query on their `_id`s)."""
        meta = self._meta(name)
        spec = VectorSpec.from_dict(meta.get(META_KEY))
        ids = list(ids)
        if spec is None or not ids:
            return {}
        fingerprint = meta["encoder_fingerprint"]
        body = {"size": len(ids), "track_total_hits": False,
                "query": {"ids": {"values": [document_id(fingerprint, i) for i in ids]}},
                "_source": {"includes": ["id", VECTORS_FIELD]}}
        out: dict[str, DocumentVectors] = {}
        for hit in self._vector_search(name, body):
            source = hit.get("_source") or {}
            vecs = _decoded(source, spec)
            if vecs is not None:  # the JSON's ids: our documents' `id`, else the hit's `_id`
                out[cast(str, source.get("id", hit.get("_id")))] = vecs
        return out

    def passages_to_embed(self, name: str) -> Iterator[tuple[str, str]]:
        """Every document (sorted by `id`, `search_after` pages) whose vectors are missing or
        were made from another text."""
        from convsparse.documents import document_text
        from convsparse.integration.vectors import text_key

        spec = self.vector_spec(name)
        if spec is None:
            return
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": self.scan_page, "track_total_hits": False, "query": {"match_all": {}},
                "sort": ["id"],  # ascending; the bare name is one form in both specs
                "_source": {"includes": ["id", "title", "text", VECTORS_FIELD]}}
            if after is not None:
                body["search_after"] = after
            hits = self._vector_search(name, body)
            for hit in hits:
                source = hit.get("_source") or {}
                text = source.get("text")
                passage = document_text(source.get("title"), text) if isinstance(text, str) else ""
                vecs = _decoded(source, spec)
                if vecs is None or vecs.key != text_key(passage):
                    yield str(source.get("id", hit.get("_id"))), passage
            if len(hits) < self.scan_page:
                return
            after = hits[-1]["sort"]

    def passage_sample(self, name: str, limit: int) -> list[str]:
        """Up to `limit` passages in one search, in a seeded random order (`random_score` on
        `_seq_no`, the form both engines document), so the sample spreads over the whole index
        rather than its first segment."""
        from convsparse.documents import document_text

        body = {"size": max(0, min(int(limit), MAX_K)), "track_total_hits": False,
                "query": {"function_score": {"query": {"match_all": {}},
                                             "random_score": {"seed": 13, "field": "_seq_no"},
                                             "boost_mode": "replace"}},
                "_source": {"includes": ["title", "text"]}}
        out = []
        for hit in self._vector_search(name, body, "sample the passages of"):
            source = hit.get("_source") or {}
            text = source.get("text")
            if isinstance(text, str):
                out.append(document_text(source.get("title"), text))
        return out

    def put_vectors(self, name: str, items: Iterable[tuple[str, DocumentVectors]]
                    ) -> Iterator[DocumentResult]:
        """Partial updates (`update` actions) that set the vectors field of existing documents;
        a missing document fails alone (404)."""
        meta = self._meta(name)
        spec = VectorSpec.from_dict(meta.get(META_KEY))
        if spec is None:
            raise VectorSpecMismatchError(name, None, None)
        fingerprint = meta["encoder_fingerprint"]

        def entries() -> Iterator[_Entry | DocumentResult]:
            for pos, (source_id, vecs) in enumerate(items):
                if vecs.dimension != spec.dimension:
                    yield DocumentResult(source_id, False, 400, (
                        f"vectors of {vecs.dimension} dims, the index holds {spec.dimension}"))
                    continue
                action = b'{"update":{"_index":%b,"_id":%b}}\n' % (
                    dumps(name), dumps(document_id(fingerprint, source_id)))
                doc = b'{"doc":{%b:%b}}\n' % (dumps(VECTORS_FIELD), dumps(vecs.to_base64()))
                yield _Entry(pos, source_id, action + doc)

        yield from self._write(name, entries())

    def describe_index(self, name: str) -> IndexInfo:
        meta = self._meta(name, fresh=True)
        return IndexInfo(
            name=name,
            fingerprint=meta["encoder_fingerprint"],
            count=self.count(name),
            vocabulary=meta.get("vocabulary"),
            extra=self._describe_meta(
                {k: v for k, v in meta.items() if k not in ("encoder_fingerprint", "vocabulary")}),
        )

    def _describe_meta(self, extra: dict[str, Any]) -> dict[str, Any]:
        """The `_meta` entries `describe_index` reports (an engine may shorten large ones)."""
        return extra

    def _field_value(
        self, name: str, meta: Mapping[str, Any]
    ) -> Callable[[TermMap], dict[str, Any] | bytes]:
        """How a term map is written into the index's term field (`meta` is its `_meta`): a
        JSON-able object, or its JSON bytes; escaped feature names at FeatureField precision by
        default. May raise `InvalidTermMapError` for one document."""
        return _rank_features

    def _existing_index(self, name: str, fingerprint: str, exist_ok: bool) -> IndexInfo:
        """`create_index`'s answer when the engine says `name` exists: an error unless
        `exist_ok`, and then only an index built by the same encoder is accepted."""
        if not exist_ok:
            raise IndexExistsError(name) from None
        info = self.describe_index(name)
        if info.fingerprint != fingerprint:
            raise FingerprintMismatchError(name, info.fingerprint, fingerprint) from None
        return info

    # writes ------------------------------------------------------------------------------
    def upsert(self, name: str, documents: Iterable[IndexedDocument], *,
               fingerprint: str | None = None) -> Iterator[DocumentResult]:
        """Index documents (same source id overwrites); one result per document, input order.
        `fingerprint` (the encoder of the term maps), when given, must be the index's, else
        `FingerprintMismatchError` before anything is sent."""
        meta = self._meta(name)
        index_fp = meta["encoder_fingerprint"]
        if fingerprint is not None and fingerprint != index_fp:
            from convsparse.errors import FingerprintMismatchError

            raise FingerprintMismatchError(name, index_fp, fingerprint, writing=True)
        fingerprint = index_fp
        field_name = meta.get("term_field", self.field)
        field_value = self._field_value(name, meta)
        spec = VectorSpec.from_dict(meta.get(META_KEY))

        def entries() -> Iterator[_Entry | DocumentResult]:
            for pos, doc in enumerate(documents):
                yield self._prepare_index(name, pos, doc, fingerprint, field_name, field_value,
                                          spec)

        yield from self._write(name, entries())

    def delete_documents(self, name: str, ids: Iterable[str]) -> Iterator[DocumentResult]:
        """Delete by source id. A missing document is a failed result with status 404 and
        error "not found" (as in the embedded backend); nothing raises for one id."""
        fingerprint = self._meta(name)["encoder_fingerprint"]

        def entries() -> Iterator[_Entry | DocumentResult]:
            for pos, source_id in enumerate(ids):
                if not isinstance(source_id, str) or not source_id:
                    yield DocumentResult(str(source_id), False, 400, "id must be a non-empty string")
                    continue
                yield _Entry(pos, source_id, delete_line(name, document_id(fingerprint, source_id)))

        yield from self._write(name, entries())

    def _prepare_index(
        self, name: str, pos: int, doc: IndexedDocument, fingerprint: str, field_name: str,
        field_value: Callable[[TermMap], dict[str, Any] | bytes] = _rank_features,
        spec: VectorSpec | None = None,
    ) -> _Entry | DocumentResult:
        checked = indexed_document(doc)
        if isinstance(checked, DocumentResult):
            return checked
        doc = checked
        source_id, term_map = doc.id, doc.term_map
        source: dict[str, Any] = {"id": source_id}
        if spec is not None:  # an index that holds vectors: never a document without
            if doc.vectors is None or doc.vectors.dimension != spec.dimension:
                return DocumentResult(source_id, False, 400, (
                    f"no passage vectors: index holds {spec.describe()} for every document"
                    if doc.vectors is None else f"passage vectors of {doc.vectors.dimension} "
                    f"dims, the index holds {spec.dimension}"))
            source[VECTORS_FIELD] = doc.vectors.to_base64()
        metadata: dict[str, Any] = {}
        for key, value in (doc.fields or {}).items():
            if key in TOP_LEVEL_FIELDS and (value is None or isinstance(value, str)):
                source[key] = value
            else:
                metadata[str(key)] = value
        if metadata:
            source["metadata"] = metadata
        try:
            value = field_value(term_map)
        except InvalidTermMapError as exc:  # e.g. a token outside a sparse_vector index's vocabulary
            return DocumentResult(source_id, False, 400, str(InvalidTermMapError(
                exc.reason, record_id=source_id, token=exc.token)))
        raw = None
        if isinstance(value, bytes):
            raw = (field_name, value)
        else:
            source[field_name] = value
        return _Entry(pos, source_id, index_lines(name, document_id(fingerprint, source_id), source, raw))

    def _write(
        self, name: str, items: Iterator[_Entry | DocumentResult]
    ) -> Iterator[DocumentResult]:
        """Chunk, send, yield results in input order; refresh before the last results."""
        chunk: list[_Entry | DocumentResult] = []
        chunk_bytes = 0
        sent_any = False

        def flush(last: bool) -> list[DocumentResult]:
            nonlocal sent_any
            entries = [e for e in chunk if isinstance(e, _Entry)]
            results: dict[int, DocumentResult] = {}
            if entries:
                sent_any = True
                results = self._send(entries)
            if last and sent_any and self.refresh_after_upsert:
                errors: tuple[type[BaseException], ...] = (*self._refresh_errors, IndexNotFoundError)
                try:
                    self.refresh(name)
                except errors as exc:
                    log.warning("refresh of %r after bulk write failed: %s", name, exc)
            return [e if isinstance(e, DocumentResult) else results[e.pos] for e in chunk]

        for item in items:
            size = item.size if isinstance(item, _Entry) else 0
            # Invalid documents (already DocumentResults) count towards chunk_size too, so
            # their results are not held back behind a long run of them.
            if chunk and (len(chunk) >= self.chunk_size or chunk_bytes + size > self.max_chunk_bytes):
                yield from flush(last=False)
                chunk, chunk_bytes = [], 0
            chunk.append(item)
            chunk_bytes += size
        yield from flush(last=True)

    def _backoff(self, attempt: int) -> float:
        delay = self.backoff.delay(attempt, self._rng)
        self.stats.backoff_s += delay
        return delay

    def _send(self, entries: list[_Entry]) -> dict[int, DocumentResult]:
        results: dict[int, DocumentResult] = {}
        pending = entries
        request_failures = 0
        item_round = 0
        while pending:
            self.stats.requests += 1
            self.stats.documents_sent += len(pending)
            try:
                outcome = self._bulk_round([e.lines for e in pending])
            except Exception as exc:
                failure = self._request_failure(exc)
                if failure is None:
                    raise
                status = failure.status
                if status == 413:
                    if len(pending) == 1:
                        e = pending[0]
                        results[e.pos] = DocumentResult(
                            e.source_id, False, 413,
                            "document is larger than the cluster's http.max_content_length",
                        )
                        return results
                    self.stats.splits += 1
                    half = len(pending) // 2
                    results.update(self._send(pending[:half]))
                    results.update(self._send(pending[half:]))
                    return results
                transient = failure.connection or status in TRANSIENT_REQUEST_STATUSES
                if transient and request_failures < self.backoff.max_retries:
                    request_failures += 1
                    self.stats.request_retries += 1
                    log.info("bulk request failed (%s), retry %d/%d",
                             status or type(exc).__name__, request_failures, self.backoff.max_retries)
                    self._sleep(self._backoff(request_failures))
                    continue
                reason = (f"bulk request failed after {request_failures + 1} attempt(s): "
                          f"{type(exc).__name__}({status or 'no response'}): {getattr(exc, 'error', None) or exc}")
                for e in pending:
                    results[e.pos] = DocumentResult(e.source_id, False, status or 503, reason)
                return results

            retry: list[_Entry] = []
            for e, (ok, item) in zip(pending, outcome):
                info = next(iter(item.values())) if item else {}
                status = int(info.get("status", 500))
                if ok:
                    results[e.pos] = DocumentResult(e.source_id, True, status)
                elif status == 404 and info.get("result") == "not_found":
                    results[e.pos] = DocumentResult(e.source_id, False, 404, "not found")
                elif status == 429 and e.attempts < self.backoff.max_retries:
                    e.attempts += 1
                    retry.append(e)
                else:
                    results[e.pos] = DocumentResult(e.source_id, False, status, _error_reason(info))
            for e in pending[len(outcome):]:
                results[e.pos] = DocumentResult(
                    e.source_id, False, 500, "the bulk response has no item for this document")
            if not retry:
                break
            item_round += 1
            self.stats.item_retries += len(retry)
            log.info("%d bulk item(s) rejected with 429, retry round %d", len(retry), item_round)
            self._sleep(self._backoff(item_round))
            pending = retry
        return results
