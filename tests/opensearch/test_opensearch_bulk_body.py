"""The bulk body built from arrays (issue 15) indexes what the old path's body indexed: for
random CSR batches, with feature names that need escaping and ids that need JSON escaping, the
NDJSON lines `EngineBackendBase` sends equal, line by line, the action and source that `streaming_bulk`
serialised from the old action dicts (same keys, same key order in the term field), except
that each weight is spelt as the shortest number FeatureField stores as the same value; they
validate against the OpenSearch API spec. (Java's own parsing of every spelling is checked
against Lucene in tests/integration/test_integration_lucene.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.bulk import EngineBackendBase, document_id
from convsparse.integration.backends.bulk_body import rank_features_json, stored_value_text
from convsparse.termmap import CsrRows, TermMap, TermMapBatch, Vocabulary, _CsrLists


def stored_codes(weights) -> list[int]:
    """What FeatureField indexes for each weight (a float parsed from JSON, rounded to float32
    the way a double-first parser does): the float32's bits >>> 15."""
    return (np.asarray(list(weights), dtype=np.float32).view(np.uint32) >> 15).tolist()


def assert_same_stored_terms(new: dict, old: dict) -> None:
    assert list(new) == list(old)  # same names, same order
    assert stored_codes(new.values()) == stored_codes(old.values())
    # every value is the shortest spelling of its stored value, never longer than 11 characters
    assert all(len(json.dumps(v)) <= 11 for v in new.values())


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
def test_bulk_lines_index_what_the_old_bodies_did(seed, spec_or_none, random_csr_batch):
    batch, old, ids = random_csr_batch(seed)
    fields = {"title": "T \"1\"", "text": "x\ny", "extra": [1, 2.5e-7, {"k": None}], "big": 2**70}
    writer = EngineBackendBase()
    for i, (tm, old_tm) in enumerate(zip(batch, old)):
        assert tm == old_tm and list(tm.to_rank_features().items()) == list(
            old_tm.to_rank_features().items())
        doc = IndexedDocument(ids[i], tm, fields if i % 2 else {})
        entry = writer._prepare_index("idx", i, doc, "fp", "terms")
        raw = entry.lines.decode("utf-8").split("\n")
        assert raw[-1] == "" and len(raw) == 3 and entry.size == len(entry.lines)
        new = [json.loads(line) for line in raw[:-1]]
        want = old_lines("idx", IndexedDocument(ids[i], old_tm, fields if i % 2 else {}))
        assert_same_stored_terms(new[1].pop("terms"), want[1].pop("terms"))
        assert new == want
        # a plain TermMap's object is the same bytes as the CSR view's
        assert entry.lines.endswith(b',"terms":%b}\n' % rank_features_json(old_tm))
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


def test_every_stored_value_has_a_shortest_spelling_that_parses_back_to_it():
    """Every code of a normal finite float32 (>= Float.MIN_NORMAL, as validation ensures): the
    text parses (as a double, then float32) to a float32 of the same code; dropping one
    significant digit, rounded either way, leaves the code (so no shorter number would do)."""
    from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal

    last = 0x7F7FFFFF >> 15  # Float.MAX_VALUE's code
    for code in range(1 << 8, last + 1):
        text = stored_value_text(code)
        assert stored_codes([float(text)]) == [code], (code, text)
        digits = len(Decimal(text.decode()).normalize().as_tuple().digits)
        if digits > 1:
            low = np.array([code << 15], dtype=np.uint32).view(np.float32)[0]
            for rounding in (ROUND_CEILING, ROUND_FLOOR):
                shorter = Context(prec=digits - 1, rounding=rounding).plus(Decimal(float(low)))
                high = np.array([(code << 15) | 0x7FFF], dtype=np.uint32).view(np.float32)[0]
                assert not Decimal(float(low)) <= shorter <= Decimal(float(high)), (code, text)


def test_blocks_of_a_large_batch_give_each_row_its_own_object(monkeypatch, random_csr_batch):
    """Rows are served from blocks of `_CsrLists.ROWS_PER_BLOCK` rows; with tiny blocks, runs
    of empty rows (whole empty blocks among them) and rows read out of order, every row's
    object is the one a plain TermMap of it gives."""
    monkeypatch.setattr(_CsrLists, "ROWS_PER_BLOCK", 3)
    rng = np.random.default_rng(7)
    vocab = Vocabulary(["u.s", "100%", 'q"uote', "ünï", *[f"t{i}" for i in range(50)]])
    counts = rng.integers(1, 9, 60)
    counts[[0, 1, 2, 3, 4, 5, 9, 10, 30, 59]] = 0
    indices = np.concatenate([np.sort(rng.choice(len(vocab), c, replace=False)) for c in counts])
    values = rng.lognormal(-0.5, 1.0, len(indices)).astype(np.float32)
    rows = CsrRows.from_counts(counts, indices.astype(np.int32), values)
    batch = TermMapBatch.from_csr(rows, vocab, "fp")
    order = rng.permutation(len(counts)).tolist()
    for i in order + list(range(len(counts))):
        tm = batch[i]
        plain = TermMap(dict(tm))
        assert rank_features_json(tm) == rank_features_json(plain), i
        assert_same_stored_terms(json.loads(rank_features_json(tm)), plain.to_rank_features())
    assert rank_features_json(batch[0]) == b"{}"
