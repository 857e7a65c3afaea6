"""encode_and_upsert: per-record results; one broken record never sinks the batch."""

from __future__ import annotations

import numpy as np

from convsparse.documents import SourceRecord
from convsparse.integration.ingestion import encode_and_upsert
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
    backend.create_index("i", fingerprint=FakeEncoder.fingerprint)
    records = [
        SourceRecord("a", "lisbon portugal", {"title": "A"}),
        SourceRecord("", "no id"),
        SourceRecord("b", "   "),
        SourceRecord("c", "broken NaN text"),
        "not a record",
        SourceRecord("d", "rome italy"),
    ]
    results = list(encode_and_upsert(records, encoder=FakeEncoder(), backend=backend, index="i", batch_size=4))
    assert len(results) == len(records)
    a, no_id, b, c, junk, d = results
    assert a.ok and d.ok and (a.id, d.id) == ("a", "d")
    assert not no_id.ok and "id must be" in no_id.error
    assert not b.ok and b.error == "text is empty"
    assert not c.ok and "encoding failed" in c.error and "finite" in c.error
    assert not junk.ok and "SourceRecord" in junk.error
    assert sum(not r.ok for r in results) == 4
    assert backend.count("i") == 2
    hit = backend.search("i", TermMap({"lisbon": 1.0}))[0]
    assert hit.id == "a" and hit.fields == {"title": "A", "text": "lisbon portugal"}


def test_batches_and_overwrite(backend):
    backend.create_index("i", fingerprint=FakeEncoder.fingerprint)
    enc = FakeEncoder()
    recs = [SourceRecord(f"d{n}", f"word{n} shared") for n in range(10)]
    assert all(r.ok for r in encode_and_upsert(recs, encoder=enc, backend=backend, index="i", batch_size=3))
    assert enc.calls == 4 and backend.count("i") == 10
    list(encode_and_upsert([SourceRecord("d0", "changed")], encoder=enc, backend=backend, index="i"))
    assert backend.count("i") == 10
    assert [h.id for h in backend.search("i", TermMap({"changed": 1.0}))] == ["d0"]


def test_from_mapping():
    rec = SourceRecord.from_mapping({"pid": 7, "body": "x", "title": "T"}, id_field="pid", text_field="body")
    assert rec == SourceRecord("7", "x", {"title": "T"})


def test_flush_size_encodes_larger_units(backend):
    """A worker encodes its whole chunk as one unit (batches inside it are the encoder's)."""
    backend.create_index("u", fingerprint=FakeEncoder.fingerprint)
    records = [SourceRecord(f"r{i}", f"word{i} common") for i in range(10)]
    enc = FakeEncoder()
    results = list(encode_and_upsert(records, encoder=enc, backend=backend, index="u",
                                     batch_size=2, flush_size=10))
    assert enc.calls == 1 and [r.id for r in results] == [r.id for r in records]
    assert all(r.ok for r in results) and backend.count("u") == 10
    enc = FakeEncoder()
    list(encode_and_upsert(records, encoder=enc, backend=backend, index="u", batch_size=2))
    assert enc.calls == 5  # default: one unit per batch, as before
