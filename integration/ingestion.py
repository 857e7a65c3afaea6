"""Ingestion: source records -> encoder -> term maps -> backend, one result per record.

- `encode_and_upsert` is the one pipeline every path runs, the Celery workers included. It never
  raises for one bad record: a document the encoder cannot turn into a valid term map becomes a
  failed `DocumentResult` with the reason, and the rest goes on. Records arrive valid (the
  `SourceRecord` model is the one check, run by `read_records`); backends trust the
  `IndexedDocument`s they get (checked when built).
- `ingest` is the one local driver on top of it (`convsparse ingest`, `collection index`,
  `quickstart`, `ConversationalSearch.index_documents`): it creates the index for the encoder,
  counts reader errors and per-document failures, shows one progress bar and returns one
  `IndexReport`.
- `ensure_index` creates an index for an encoder, or refuses one built by another encoder.

Passage vectors (`convsparse.integration.vectors`): an index that records a `VectorSpec` gets,
for every document, the re-ranker's bi-encoder vectors of its passage, embedded in the same
batch as the term map (`_embed`) and written with it, all or nothing. New indices hold them
by default (``CONVSPARSE_RERANK_VECTORS``, `ensure_index(vectors=False)` opts out).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
from convsparse.integration.vectors import (
    DocumentVectors,
    PassageEmbedder,
    VectorSpec,
    VectorSpecMismatchError,
    default_spec,
    load_embedder,
)
from convsparse.sources import RecordError

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    """Outcome of one `ingest`: how many documents were indexed, and each failure with its
    reason (reader errors as "line N" (or "row N", "item N") when the record had no id)."""

    index: str
    indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    elapsed_s: float = 0.0

    @property
    def n_failed(self) -> int:
        return len(self.failed)


def ensure_index(backend: Backend, index: str, encoder: Encoder, *,
                 vectors: VectorSpec | bool | None = None) -> IndexInfo:
    """Create `index` for `encoder` if missing (fingerprint and `_meta.vocabulary`); raise
    `FingerprintMismatchError` if it was built by another encoder. A new index holds the
    re-ranker's passage vectors: `vectors` True (the shipped re-ranker's spec) or a
    `VectorSpec`, False none; None: ``Settings().rerank_vectors`` (default True). An existing
    index keeps what it holds."""
    try:
        info = backend.describe_index(index)
    except IndexNotFoundError:
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
    if info.fingerprint and info.fingerprint != encoder.fingerprint:
        raise FingerprintMismatchError(index, info.fingerprint, encoder.fingerprint, writing=True)
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


def encode_and_upsert(
    records: Iterable[SourceRecord], *, encoder, backend: Backend, index: str, batch_size: int = 32,
    flush_size: int | None = None, embedder: PassageEmbedder | None = None,
) -> Iterator[DocumentResult]:
    """Encode (in batches of `batch_size`) and upsert `records` into `index`.

    Records are valid by construction (`SourceRecord`); a record the encoder cannot turn into
    a valid term map fails alone. Records are encoded and written `flush_size` at a time (default
    `batch_size`); a larger unit lets the encoder overlap tokenizing with the forward pass and
    sort by length across several batches (a GPU worker passes its whole chunk).
    Raises `FingerprintMismatchError` (nothing written) when `index` was built by another
    encoder. Yields one `DocumentResult` per input record, in input order. The text
    is stored with the document as field ``text`` (next to the record's own fields).
    When `index` holds passage vectors, each batch's are embedded (by `embedder`, default the
    built-in bi-encoder for the index's spec) and written with its term maps."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    flush_size = max(batch_size, int(flush_size or batch_size))
    # Every write path runs through here: refuse another encoder's index before encoding or
    # writing anything (`FingerprintMismatchError`, naming both fingerprints and the fix).
    info = backend.describe_index(index)
    if info.fingerprint and info.fingerprint != encoder.fingerprint:
        raise FingerprintMismatchError(index, info.fingerprint, encoder.fingerprint, writing=True)
    embedder = index_embedder(backend, index, encoder, embedder)

    def flush(batch: list[SourceRecord]) -> Iterator[DocumentResult]:
        docs: list[IndexedDocument] = []
        outcome: list[DocumentResult | None] = []  # a failure, or None: the backend's result
        maps = _encode(encoder, batch, batch_size)
        # the vectors step: the same batch, so a document is written with both or neither
        vecs: list[Any] = (_embed(embedder, batch, batch_size) if embedder is not None
                           else [None] * len(batch))
        for rec, tm, vec in zip(batch, maps, vecs):
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

    pending: list[SourceRecord] = []
    for record in records:
        pending.append(record)
        if len(pending) >= flush_size:
            yield from flush(pending)
            pending = []
    if pending:
        yield from flush(pending)


def ingest(
    records: Iterable[SourceRecord | RecordError], *, encoder: Encoder, backend: Backend,
    index: str, batch_size: int = 32, progress: bool = False, total: int | None = None,
    flush_size: int | None = 1024, vectors: VectorSpec | bool | None = None,
) -> IndexReport:
    """Index `records` (as `read_records` yields them: `SourceRecord`s, or `RecordError`s for
    what the reader rejected) into `index` in this process: one loop, one report. Records are
    encoded `flush_size` at a time (several batches, so tokenizing overlaps the forward pass)."""
    from tqdm.auto import tqdm

    ensure_index(backend, index, encoder, vectors=vectors)
    report = IndexReport(index)
    start = time.perf_counter()
    with tqdm(total=total, desc=f"index {index}", unit="doc", disable=not progress) as bar:

        def valid() -> Iterator[SourceRecord]:
            for item in records:
                if isinstance(item, RecordError):
                    # keep where it was with a known id too ("line N: reason")
                    where = item.where
                    reason = item.reason.removeprefix(f"{where}: ")
                    report.failed.append((where, reason) if item.id is None
                                         else (item.id, f"{where}: {reason}"))
                    bar.update(1)
                else:
                    yield item

        for res in encode_and_upsert(valid(), encoder=encoder, backend=backend, index=index,
                                     batch_size=batch_size, flush_size=flush_size):
            if res.ok:
                report.indexed += 1
            else:
                report.failed.append((res.id, res.error or f"status {res.status}"))
            bar.update(1)
    report.elapsed_s = time.perf_counter() - start
    return report


__all__ = ["IndexReport", "encode_and_upsert", "ensure_index", "index_embedder", "ingest"]
