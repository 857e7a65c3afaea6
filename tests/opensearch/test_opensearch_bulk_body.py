"""The bulk body built from arrays (issue 15) is the body the old path sent: for random CSR
batches, with feature names that need escaping and ids that need JSON escaping, the NDJSON lines
`BulkWriter` sends equal, line by line, the action and source that `streaming_bulk` serialised
from the old action dicts (same keys, same key order in the term field, the same float64
weights), and validate against the OpenSearch API spec."""

from __future__ import annotations

import json

import pytest

from convsparse.integration.backend import IndexedDocument
from convsparse.integration.backends.bulk import BulkWriter, document_id


def old_lines(name: str, doc: IndexedDocument) -> list[dict]:
    """What the writer's action dict became on the wire before (streaming_bulk's
    expand_action: the action line, then `_source`), parsed."""
    source = {"id": doc.id, **{k: v for k, v in doc.fields.items() if k in ("title", "text")}}
    metadata = {k: v for k, v in doc.fields.items() if k not in ("title", "text")}
    if metadata:
        source["metadata"] = metadata
    source["terms"] = doc.term_map.to_rank_features()
    action = {"index": {"_index": name, "_id": document_id("fp", doc.id)}}
    return [json.loads(json.dumps(action)), json.loads(json.dumps(source, ensure_ascii=False))]


@pytest.mark.parametrize("seed", range(5))
def test_bulk_lines_equal_the_old_bodies(seed, spec_or_none, random_csr_batch):
    batch, old, ids = random_csr_batch(seed)
    fields = {"title": "T \"1\"", "text": "x\ny", "extra": [1, 2.5e-7, {"k": None}], "big": 2**70}
    writer = BulkWriter()
    for i, (tm, old_tm) in enumerate(zip(batch, old)):
        assert tm == old_tm and list(tm.to_rank_features().items()) == list(
            old_tm.to_rank_features().items())
        doc = IndexedDocument(ids[i], tm, fields if i % 2 else {})
        entry = writer._prepare_index("idx", i, doc, "fp", "terms")
        raw = entry.lines.decode("utf-8").split("\n")
        assert raw[-1] == "" and len(raw) == 3 and entry.size == len(entry.lines)
        new = [json.loads(line) for line in raw[:-1]]
        want = old_lines("idx", IndexedDocument(ids[i], old_tm, fields if i % 2 else {}))
        assert new == want
        assert list(new[1]["terms"].items()) == list(want[1]["terms"].items())  # same order, floats
        if spec_or_none is not None:
            spec_or_none.validate_bulk_lines(new)
    assert batch.rank_features() == [tm.to_rank_features() for tm in old]


def test_document_id_is_unchanged(random_csr_batch):
    """`_id`s of documents indexed before must not move: the hash input is byte for byte
    `json.dumps([fingerprint, source_id], ensure_ascii=False)`."""
    import hashlib

    _, _, ids = random_csr_batch(0, n=8)
    for source_id in [*ids, "", "a" * 1000, "\x00", "\\u0000", "é\u0301"]:
        for fingerprint in ("fp", 'f"p\\', "ü"):
            key = json.dumps([fingerprint, source_id], ensure_ascii=False).encode("utf-8")
            assert document_id(fingerprint, source_id) == hashlib.blake2b(key, digest_size=16).hexdigest()
