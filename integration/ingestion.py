"""Ingestion: one engine from a source to the backend, one result per record.

In the shape of opensearch-py's `streaming_bulk` (one generator engine, thin front doors), the
engine is two stages:

- `read_chunks(source, options)` reads and validates the source (`read_records`: the
  `SourceRecord` model is the one check) and groups the valid records into `Chunk`s of
  `Batching.chunk_size` documents and at most `max_chunk_chars` characters. Chunk ids are their
  position, so the same source always gives the same chunks. A record the reader rejects
  passes through as its `RecordError`.
- `write_chunk(chunk, ...)` encodes a chunk's records (forward passes of `batch_size`) and
  writes their term maps, never raising for one bad record: a document the encoder cannot turn
  into a valid term map is a failed `DocumentResult` with the reason, and the rest goes on.
  Backends trust the `IndexedDocument`s they get (checked when built).

`stream_ingest` runs both in this process and yields each record's result (a `DocumentResult`,
or the `RecordError`); `ingest` is its front door (`convsparse ingest --via local`,
`collection index`, the evaluation harness, `ConversationalSearch.index_documents`): it creates
the index for the encoder, shows one progress bar and returns the `IndexReport` built from the
results. Through the queue the same stages run apart: the submitter
(`workers.submit.run_ingest_job`) runs `read_chunks` and sends each chunk, a worker
(`workers.tasks.ingest_chunk`) runs `write_chunk` on it. `encode_and_upsert` is the write stage
over any iterable of records. Every write refuses another encoder's index before encoding or
writing anything (`FingerprintMismatchError`); `ensure_index` creates an index for an encoder.

Passage vectors (`convsparse.integration.vectors`): an index that records a `VectorSpec` gets,
for every document, the re-ranker's bi-encoder vectors of its passage, embedded in the same
batch as the term map (`_embed`) and written with it, all or nothing. New indices hold them
by default (``CONVSPARSE_RERANK_VECTORS``, `ensure_index(vectors=False)` opts out).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from convsparse.documents import SourceRecord
from convsparse.encoders.protocol import Encoder
from convsparse.errors import FingerprintMismatchError, IndexNotFoundError, InvalidTermMapError
from convsparse.integration.backends.base import (
    Backend,
    DocumentResult,
    IndexedDocument,
    IndexInfo,
    SupportsPassageVectors,
)
from convsparse.integration.ingest_options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CHUNK_CHARS,
    IngestOptions,
)
from convsparse.integration.ingest_report import IndexReport
from convsparse.integration.vectors import (
    DocumentVectors,
    PassageEmbedder,
    VectorSpec,
    VectorSpecMismatchError,
    default_spec,
    load_embedder,
)
from convsparse.progress import progress_bar
from convsparse.sources import RecordError, read_records

log = logging.getLogger(__name__)


def ensure_index(backend: Backend, index: str, encoder: Encoder, *,
                 vectors: VectorSpec | bool | None = None, create: bool = True) -> IndexInfo:
    """Create `index` for `encoder` if missing (fingerprint and `_meta.vocabulary`); raise
    `FingerprintMismatchError` if it was built by another encoder. A new index holds the
    re-ranker's passage vectors: `vectors` True (the shipped re-ranker's spec) or a
    `VectorSpec`, False none; None: ``Settings().rerank_vectors`` (default True). An existing
    index keeps what it holds. `create=False` only checks: a missing index raises
    `IndexNotFoundError` (a worker writing for a job that expects the index it started on)."""
    try:
        info = backend.describe_index(index)
    except IndexNotFoundError:
        if not create:
            raise
        info = _create_index(backend, index, encoder, vectors)
    if info.fingerprint and info.fingerprint != encoder.fingerprint:
        raise FingerprintMismatchError(index, info.fingerprint, encoder.fingerprint, writing=True)
    return info


def _create_index(backend: Backend, index: str, encoder: Encoder,
                  vectors: VectorSpec | bool | None) -> IndexInfo:
    info = backend.create_index(index, fingerprint=encoder.fingerprint,
                                vocabulary=encoder.vocabulary_name, exist_ok=True)
    if vectors is None:
        from convsparse.extras import rerank_unavailable
        from convsparse.settings import get_settings

        vectors = get_settings().rerank_vectors
        # the default follows the install: a core install indexes term maps alone and says
        # so once; asking for vectors explicitly without the extra fails when they are made
        if vectors and (reason := rerank_unavailable()) is not None:
            log.warning("index %r: %s", index, reason)
            vectors = False
    if vectors is not False and isinstance(backend, SupportsPassageVectors) and (
            info.fingerprint == encoder.fingerprint):
        spec = vectors if isinstance(vectors, VectorSpec) else default_spec()
        if backend.vector_spec(index) is None and info.count == 0:
            backend.enable_vectors(index, spec)
            info = backend.describe_index(index)
    return info


def index_embedder(backend: Backend, index: str, encoder: Any = None,
                   embedder: PassageEmbedder | None = None) -> PassageEmbedder | None:
    """The embedder for the vectors `index` holds (None when it holds none): `embedder` when
    given, else the built-in bi-encoder on the encoder's device. Raises
    `VectorSpecMismatchError` (nothing written) when it would make other vectors."""
    spec = backend.vector_spec(index) if isinstance(backend, SupportsPassageVectors) else None
    if spec is None:
        return None
    if embedder is None:
        device = str(getattr(encoder, "device", "cpu"))
        embedder = load_embedder(spec, device="cuda" if device.startswith("cuda") else "cpu",
                                 index=index)
    if embedder.spec != spec:
        raise VectorSpecMismatchError(index, spec, embedder.spec)
    return embedder


def _embed(embedder: PassageEmbedder, records: list[SourceRecord],
           batch_size: int) -> list[DocumentVectors | Exception]:
    """Passage vectors of `records`; a failing batch is retried record by record."""
    texts = [r.encoded_text for r in records]
    try:
        return list(embedder.embed(texts, batch_size=batch_size))
    except (ValueError, RuntimeError) as batch_error:
        if len(records) == 1:
            return [batch_error]
    out: list[DocumentVectors | Exception] = []
    for t in texts:
        try:
            out.append(embedder.embed([t], batch_size=1)[0])
        except (ValueError, RuntimeError) as e:
            out.append(e)
    return out


def _encode(encoder, records: list[SourceRecord], batch_size: int) -> list[Any]:
    """Term maps for `records`; one failing record is retried alone and gets its exception."""
    texts = [r.encoded_text for r in records]
    ids = [r.id for r in records]
    try:
        return list(encoder.encode_documents(texts, ids=ids, batch_size=batch_size).term_maps)
    except (InvalidTermMapError, ValueError, RuntimeError) as batch_error:
        if len(records) == 1:
            return [batch_error]
    out: list[Any] = []
    for r in records:  # isolate the culprit(s)
        try:
            out.append(encoder.encode_documents([r.encoded_text], ids=[r.id],
                                                batch_size=1).term_maps[0])
        except (InvalidTermMapError, ValueError, RuntimeError) as e:
            out.append(e)
    return out


@dataclass(frozen=True)
class Chunk:
    """Valid records encoded and written as one unit (one task through the queue); `id` is its
    position in the source ("0000000", "0000001", ...)."""

    id: str
    records: list[SourceRecord]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    def to_message(self) -> list[dict[str, Any]]:
        """The records as a task message carries them ([{id, text, fields}])."""
        return [{"id": r.id, "text": r.text, "fields": dict(r.fields)} for r in self.records]

    @classmethod
    def from_message(cls, chunk_id: str, records: list[dict[str, Any]]) -> Chunk:
        """The chunk a task message carries; its records were validated once, by the
        submitter's `read_records`, so they are rebuilt, not checked again."""
        return cls(chunk_id, [SourceRecord.model_construct(
            id=r["id"], text=r["text"], fields=r.get("fields") or {}) for r in records])


def chunk_records(
    results: Iterable[SourceRecord | RecordError], *, chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS,
) -> Iterator[Chunk | RecordError]:
    """Group valid records into `Chunk`s (in source order); pass `RecordError`s through."""
    buf: list[SourceRecord] = []
    chars = n = 0
    for item in results:
        if isinstance(item, RecordError):
            yield item
            continue
        if buf and (len(buf) >= chunk_size or chars + len(item.text) > max_chunk_chars):
            yield Chunk(f"{n:07d}", buf)
            n, buf, chars = n + 1, [], 0
        buf.append(item)
        chars += len(item.text)
    if buf:
        yield Chunk(f"{n:07d}", buf)


def read_chunks(source: Any, options: IngestOptions | None = None) -> Iterator[Chunk | RecordError]:
    """The read stage: `source` (a path, or an iterable of mappings / `SourceRecord`s) read and
    validated as `options.source` says, grouped as `options.batching` says."""
    options = options or IngestOptions()
    src, batching = options.source, options.batching
    records = read_records(source, id_field=src.id_field, text_field=src.text_field,
                           fields=src.fields, max_text_chars=src.max_text_chars,
                           format=src.format)  # type: ignore[arg-type]
    yield from chunk_records(records, chunk_size=batching.chunk_size or DEFAULT_CHUNK_SIZE,
                             max_chunk_chars=batching.max_chunk_chars)


def writable_embedder(backend: Backend, index: str, encoder,
                      embedder: PassageEmbedder | None = None) -> PassageEmbedder | None:
    """Check, before encoding or writing anything, that `index` exists and was built by
    `encoder` (`FingerprintMismatchError` naming both fingerprints and the fix); return the
    embedder of the passage vectors it holds (`index_embedder`; None when it holds none)."""
    info = backend.describe_index(index)
    if info.fingerprint and info.fingerprint != encoder.fingerprint:
        raise FingerprintMismatchError(index, info.fingerprint, encoder.fingerprint, writing=True)
    return index_embedder(backend, index, encoder, embedder)


def _write(records: list[SourceRecord], *, encoder, backend: Backend, index: str,
           batch_size: int, embedder: PassageEmbedder | None) -> Iterator[DocumentResult]:
    """Encode `records` and write them with their passage vectors (when `embedder`), in one
    bulk write; one result per record, in order."""
    if not records:
        return
    docs: list[IndexedDocument] = []
    outcome: list[DocumentResult | None] = []  # a failure, or None: the backend's result
    maps = _encode(encoder, records, batch_size)
    # the vectors step: the same batch, so a document is written with both or neither
    vecs: list[Any] = (_embed(embedder, records, batch_size) if embedder is not None
                       else [None] * len(records))
    for rec, tm, vec in zip(records, maps, vecs):
        if isinstance(tm, Exception):
            outcome.append(DocumentResult(rec.id, False, 400, f"encoding failed: {tm}"))
        elif isinstance(vec, Exception):
            outcome.append(DocumentResult(rec.id, False, 400,
                                          f"embedding the passage failed: {vec}"))
        else:
            docs.append(IndexedDocument(rec.id, tm, {**rec.fields, "text": rec.text},
                                        vectors=vec))
            outcome.append(None)
    written = iter(list(backend.upsert(index, docs)) if docs else [])
    for fail in outcome:
        yield fail if fail is not None else next(written)


def write_chunk(chunk: Chunk, *, encoder, backend: Backend, index: str,
                batch_size: int = DEFAULT_BATCH_SIZE,
                embedder: PassageEmbedder | None = None) -> list[DocumentResult]:
    """The write stage on one chunk (what a worker runs): encode its records in forward passes
    of `batch_size` and write them, with the passage vectors of an index that holds them; one
    `DocumentResult` per record, in order. Raises `FingerprintMismatchError` (nothing written)
    when `index` was built by another encoder."""
    embedder = writable_embedder(backend, index, encoder, embedder)
    return list(_write(chunk.records, encoder=encoder, backend=backend, index=index,
                       batch_size=batch_size, embedder=embedder))


def encode_and_upsert(
    records: Iterable[SourceRecord], *, encoder, backend: Backend, index: str, batch_size: int = 32,
    flush_size: int | None = None, embedder: PassageEmbedder | None = None,
) -> Iterator[DocumentResult]:
    """Encode (in batches of `batch_size`) and upsert `records` into `index`: the write stage
    over any iterable of valid records.

    Records are encoded and written `flush_size` at a time (default `batch_size`); a larger
    unit lets the encoder overlap tokenizing with the forward pass and sort by length across
    several batches. Raises `FingerprintMismatchError` (nothing written) when `index` was built
    by another encoder. Yields one `DocumentResult` per input record, in input order. The text
    is stored with the document as field ``text`` (next to the record's own fields).
    When `index` holds passage vectors, each batch's are embedded (by `embedder`, default the
    built-in bi-encoder for the index's spec) and written with its term maps."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    flush_size = max(batch_size, int(flush_size or batch_size))
    embedder = writable_embedder(backend, index, encoder, embedder)
    pending: list[SourceRecord] = []
    for record in records:
        pending.append(record)
        if len(pending) >= flush_size:
            yield from _write(pending, encoder=encoder, backend=backend, index=index,
                              batch_size=batch_size, embedder=embedder)
            pending = []
    if pending:
        yield from _write(pending, encoder=encoder, backend=backend, index=index,
                          batch_size=batch_size, embedder=embedder)


def stream_ingest(
    source: Any, *, encoder, backend: Backend, index: str, options: IngestOptions | None = None,
    embedder: PassageEmbedder | None = None,
) -> Iterator[DocumentResult | RecordError]:
    """The engine in this process: read `source` (`read_chunks`), encode and write each chunk
    (`write_chunk`'s stage) and yield one result per record: the backend's `DocumentResult`, a
    failed one with the reason, or the reader's `RecordError`. Raises
    `FingerprintMismatchError` (nothing written) when `index` was built by another encoder."""
    options = options or IngestOptions()
    batch_size = options.batching.batch_size or DEFAULT_BATCH_SIZE
    embedder = writable_embedder(backend, index, encoder, embedder)
    for item in read_chunks(source, options):
        if isinstance(item, RecordError):
            yield item
        else:
            yield from _write(item.records, encoder=encoder, backend=backend, index=index,
                              batch_size=batch_size, embedder=embedder)


def ingest(
    source: Any, *, encoder: Encoder, backend: Backend, index: str,
    options: IngestOptions | None = None, progress: bool = False, total: int | None = None,
    vectors: VectorSpec | bool | None = None,
) -> IndexReport:
    """Index `source` (a path, or an iterable of mappings / `SourceRecord`s, read as
    `options.source` says) into `index` in this process, creating the index for `encoder`
    when missing (`vectors`: see `ensure_index`); one progress bar, one `IndexReport`."""
    ensure_index(backend, index, encoder, vectors=vectors)
    report = IndexReport(index)
    start = time.perf_counter()
    with progress_bar(total=total, desc=f"index {index}", unit="doc", enabled=progress) as bar:
        for result in stream_ingest(source, encoder=encoder, backend=backend, index=index,
                                    options=options):
            report.add(result)
            bar.update(1)
    report.elapsed_s = time.perf_counter() - start
    return report


__all__ = ["Chunk", "chunk_records", "encode_and_upsert", "ensure_index",
           "index_embedder", "ingest", "read_chunks", "stream_ingest", "writable_embedder",
           "write_chunk"]
