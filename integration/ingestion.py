"""Ingestion: source records -> encoder -> term maps -> backend, one result per record.

- `encode_and_upsert` is the one pipeline every path runs, the Celery workers included. It never
  raises for one bad record: an empty text, a bad id or a document the encoder cannot turn into
  a valid term map becomes a failed `DocumentResult` with the reason, and the rest goes on.
  Records are checked once here (`check_record`); backends trust the `IndexedDocument`s they get.
- `ingest` is the one local driver on top of it (`convsparse ingest`, `collection index`,
  `quickstart`, `ConversationalSearch.index_documents`): it creates the index for the encoder,
  counts reader errors and per-document failures, shows one progress bar and returns one
  `IndexReport`.
- `ensure_index` creates an index for an encoder, or refuses one built by another encoder.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from convsparse.documents import SourceRecord
from convsparse.encoders.protocol import Encoder
from convsparse.errors import FingerprintMismatchError, IndexNotFoundError, InvalidTermMapError
from convsparse.integration.backend import Backend, DocumentResult, IndexedDocument, IndexInfo
from convsparse.integration.sources import RecordError


@dataclass
class IndexReport:
    """Outcome of one `ingest`: how many documents were indexed, and each failure with its
    reason (reader errors as "line N" when the record had no id)."""

    index: str
    indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    elapsed_s: float = 0.0

    @property
    def n_failed(self) -> int:
        return len(self.failed)


def ensure_index(backend: Backend, index: str, encoder: Encoder) -> IndexInfo:
    """Create `index` for `encoder` if missing (fingerprint and `_meta.vocabulary`); raise
    `FingerprintMismatchError` if it was built by another encoder."""
    try:
        info = backend.describe_index(index)
    except IndexNotFoundError:
        info = backend.create_index(index, fingerprint=encoder.fingerprint,
                                    vocabulary=encoder.vocabulary_name, exist_ok=True)
    if info.fingerprint and info.fingerprint != encoder.fingerprint:
        raise FingerprintMismatchError(index, info.fingerprint, encoder.fingerprint, writing=True)
    return info


def check_record(record: Any) -> str | None:
    """Why `record` cannot be indexed, or None when it can."""
    if not isinstance(record, SourceRecord):
        return f"expected a SourceRecord, got {type(record).__name__}"
    if not isinstance(record.id, str) or not record.id.strip():
        return f"id must be a non-empty string, got {record.id!r}"
    if not isinstance(record.text, str):
        return f"text must be a string, got {type(record.text).__name__}"
    if not record.text.strip():
        return "text is empty"
    if record.fields is not None and not isinstance(record.fields, Mapping):
        return "fields must be a mapping"
    return None


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
    flush_size: int | None = None,
) -> Iterator[DocumentResult]:
    """Validate, encode (in batches of `batch_size`) and upsert `records` into `index`.

    Records are encoded and written `flush_size` valid records at a time (default
    `batch_size`); a larger unit lets the encoder overlap tokenizing with the forward pass and
    sort by length across several batches (a GPU worker passes its whole chunk).
    Raises `FingerprintMismatchError` (nothing written) when `index` was built by another
    encoder. Yields one `DocumentResult` per input record, in input order. The text
    is stored with the document as field ``text`` (next to the record's own fields)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    flush_size = max(batch_size, int(flush_size or batch_size))
    # Every write path runs through here: refuse another encoder's index before encoding or
    # writing anything (`FingerprintMismatchError`, naming both fingerprints and the fix).
    info = backend.describe_index(index)
    if info.fingerprint and info.fingerprint != encoder.fingerprint:
        raise FingerprintMismatchError(index, info.fingerprint, encoder.fingerprint, writing=True)
    pending: list[tuple[Any, DocumentResult | None]] = []  # (record, failure) in input order

    def flush(pending: list[tuple[Any, DocumentResult | None]]) -> Iterator[DocumentResult]:
        valid = [rec for rec, fail in pending if fail is None]
        encoded = iter(_encode(encoder, valid, batch_size) if valid else [])
        docs: list[IndexedDocument] = []
        outcome: list[DocumentResult | None] = []
        for rec, fail in pending:
            if fail is None:
                tm = next(encoded)
                if isinstance(tm, Exception):
                    fail = DocumentResult(rec.id, False, 400, f"encoding failed: {tm}")
                else:
                    docs.append(IndexedDocument(rec.id, tm, {**dict(rec.fields or {}), "text": rec.text}))
            outcome.append(fail)
        written = iter(list(backend.upsert(index, docs)) if docs else [])
        for fail in outcome:
            yield fail if fail is not None else next(written)

    n_valid = 0
    for record in records:
        reason = check_record(record)
        if reason is not None:
            rid = getattr(record, "id", None)
            pending.append((record, DocumentResult(str(rid) if rid is not None else "", False, 400, reason)))
        else:
            pending.append((record, None))
            n_valid += 1
        if n_valid >= flush_size or len(pending) >= 4 * flush_size:
            yield from flush(pending)
            pending, n_valid = [], 0
    if pending:
        yield from flush(pending)


def ingest(
    records: Iterable[SourceRecord | RecordError], *, encoder: Encoder, backend: Backend,
    index: str, batch_size: int = 32, progress: bool = False, total: int | None = None,
    flush_size: int | None = 1024,
) -> IndexReport:
    """Index `records` (as `read_records` yields them: `SourceRecord`s, or `RecordError`s for
    what the reader rejected) into `index` in this process: one loop, one report. Records are
    encoded `flush_size` at a time (several batches, so tokenizing overlaps the forward pass)."""
    from tqdm.auto import tqdm

    ensure_index(backend, index, encoder)
    report = IndexReport(index)
    start = time.perf_counter()
    with tqdm(total=total, desc=f"index {index}", unit="doc", disable=not progress) as bar:

        def valid() -> Iterator[SourceRecord]:
            for item in records:
                if isinstance(item, RecordError):
                    # keep the line number with a known id too ("line N: reason")
                    where = f"line {item.position}"
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


__all__ = ["IndexReport", "check_record", "encode_and_upsert", "ensure_index", "ingest"]
