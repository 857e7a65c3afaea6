"""encode_and_upsert: per-record results; one broken record never sinks the batch."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from convsparse.documents import SourceRecord
from convsparse.errors import InvalidDocumentError, InvalidTermMapError
from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.ingestion import encode_and_upsert
from convsparse.sources import RecordError, read_records
from convsparse.termmap import TermMap, TermMapBatch


class FakeEncoder:
    """Encodes a text as its words (weight 1.0); the text "NaN" makes the model blow up."""

    fingerprint = "fake:1"

    def __init__(self):
        self.calls = 0

    def encode_documents(self, texts, *, ids=None, batch_size=32, progress=False):
        self.calls += 1
        maps = []
        for t, rid in zip(texts, ids or [None] * len(texts)):
            words = {w.lower(): 1.0 for w in t.split()}
            if "NaN" in t:
                words["nan"] = float(np.nan)
            maps.append(TermMap(words, record_id=rid))
        return TermMapBatch(maps, self.fingerprint, list(ids) if ids else None)


def test_bad_records_fail_alone(backend):
    """Records are checked once (the `SourceRecord` model, applied by read_records); the encoder's
    failure on one record fails that record alone."""
    backend.create_index("i", fingerprint=FakeEncoder.fingerprint)
    rows = [
        {"id": "a", "text": "lisbon portugal", "title": "A"},
        {"id": "", "text": "no id"},
        {"id": "b", "text": "   "},
        {"id": "c", "text": "broken NaN text"},
        "not a record",
        {"id": "d", "text": "rome italy"},
    ]
    checked = list(read_records(rows))
    _, no_id, b, _, junk, _ = checked
    assert isinstance(no_id, RecordError) and "empty id" in no_id.reason
    assert isinstance(b, RecordError) and b.reason == "empty text" and b.id == "b"
    assert isinstance(junk, RecordError) and "not an object" in junk.reason
    records = [r for r in checked if isinstance(r, SourceRecord)]
    results = list(encode_and_upsert(records, encoder=FakeEncoder(), backend=backend, index="i", batch_size=4))
    assert len(results) == len(records) == 3
    a, c, d = results
    assert a.ok and d.ok and (a.id, d.id) == ("a", "d")
    assert not c.ok and "encoding failed" in c.error and "finite" in c.error
    assert backend.count("i") == 2
    hit = backend.search("i", TermMap({"lisbon": 1.0}))[0]
    assert hit.id == "a" and hit.fields == {"title": "A", "text": "lisbon portugal"}


def test_invalid_records_and_documents_cannot_be_built():
    """A `SourceRecord` or `IndexedDocument` that exists is valid: backends trust them."""
    with pytest.raises(ValidationError, match="empty id field"):
        SourceRecord(id="", text="x")
    with pytest.raises(ValidationError, match="empty text"):
        SourceRecord(id="a", text="  ")
    with pytest.raises(InvalidDocumentError, match="JSON cannot carry"):
        SourceRecord.parse({"id": "a", "text": "x", "score": float("nan")})
    with pytest.raises(InvalidDocumentError, match="non-empty string"):
        IndexedDocument("", TermMap({"a": 1.0}))
    with pytest.raises(InvalidTermMapError, match="finite"):
        IndexedDocument("a", {"a": float("nan")})
    with pytest.raises(InvalidDocumentError, match="JSON-serialisable"):
        IndexedDocument("a", TermMap({"a": 1.0}), {"when": object()})
    assert IndexedDocument("a", {"x": 2.0}).term_map == TermMap({"x": 2.0})


def test_batches_and_overwrite(backend):
    backend.create_index("i", fingerprint=FakeEncoder.fingerprint)
    enc = FakeEncoder()
    recs = [SourceRecord(id=f"d{n}", text=f"word{n} shared") for n in range(10)]
    assert all(r.ok for r in encode_and_upsert(recs, encoder=enc, backend=backend, index="i", batch_size=3))
    assert enc.calls == 4 and backend.count("i") == 10
    list(encode_and_upsert([SourceRecord(id="d0", text="changed")], encoder=enc, backend=backend, index="i"))
    assert backend.count("i") == 10
    assert [h.id for h in backend.search("i", TermMap({"changed": 1.0}))] == ["d0"]


def test_parse_a_source_row():
    rec = SourceRecord.parse({"pid": 7, "body": "x", "title": "T"}, id_field="pid", text_field="body")
    assert rec == SourceRecord(id="7", text="x", fields={"title": "T"})


def test_flush_size_encodes_larger_units(backend):
    """A worker encodes its whole chunk as one unit (batches inside it are the encoder's)."""
    backend.create_index("u", fingerprint=FakeEncoder.fingerprint)
    records = [SourceRecord(id=f"r{i}", text=f"word{i} common") for i in range(10)]
    enc = FakeEncoder()
    results = list(encode_and_upsert(records, encoder=enc, backend=backend, index="u",
                                     batch_size=2, flush_size=10))
    assert enc.calls == 1 and [r.id for r in results] == [r.id for r in records]
    assert all(r.ok for r in results) and backend.count("u") == 10
    enc = FakeEncoder()
    list(encode_and_upsert(records, encoder=enc, backend=backend, index="u", batch_size=2))
    assert enc.calls == 5  # default: one unit per batch, as before
