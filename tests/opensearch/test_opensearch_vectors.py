"""Passage vectors in OpenSearch and Elasticsearch indices: the `binary` field, its mapping
update (validated against both specs by the fake server), writes that refuse a document without
vectors, searches that return them, and the backfill's scan and partial updates."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from convsparse.integration.backends.base import IndexedDocument, SupportsPassageVectors
from convsparse.integration.vectors import (
    VECTORS_FIELD,
    DocumentVectors,
    VectorSpec,
    VectorSpecMismatchError,
)
from convsparse.termmap import TermMap

from .conftest import FIELD_FORMS

SPEC = VectorSpec(model="minilm==0.1.0", dimension=4, window=8, stride=6)


def vectors(text: str, windows: int = 1) -> DocumentVectors:
    from convsparse.integration.vectors import text_key

    rng = np.random.default_rng(len(text))
    return DocumentVectors(text_key(text), rng.random((1 + windows, 4)).astype(np.float16))


def doc(i: int, **extra) -> IndexedDocument:
    text = f"passage {i}"
    return IndexedDocument(f"d{i}", TermMap({"paris": 1.0 + i}), {"text": text},
                           vectors=extra.get("vectors", vectors(text, i % 3)))


@pytest.mark.parametrize("backend_form", FIELD_FORMS + ["elasticsearch-sparse_vector"],
                         indirect=True)
def test_vectors_are_a_binary_field_written_with_the_term_map_and_returned_by_search(
        fake, make_backend, spec):
    backend = make_backend()
    assert isinstance(backend, SupportsPassageVectors)
    backend.create_index("ix", fingerprint="fp", vocabulary="v")
    assert backend.vector_spec("ix") is None
    backend.enable_vectors("ix", SPEC)  # put_mapping: checked against the spec by the fake
    mapping = fake.indices["ix"]["mappings"]
    assert mapping["properties"][VECTORS_FIELD] == {"type": "binary"}
    assert mapping["_meta"]["rerank_vectors"] == SPEC.to_dict()
    assert mapping["_meta"]["encoder_fingerprint"] == "fp"  # the rest of _meta is kept
    assert backend.vector_spec("ix") == SPEC
    backend.enable_vectors("ix", SPEC)  # the same spec again: nothing to do
    with pytest.raises(VectorSpecMismatchError, match="holds passage vectors of minilm"):
        backend.enable_vectors("ix", VectorSpec("minilm==0.1.0", 4, 16, 12))

    docs = [doc(i) for i in range(4)]
    bare = IndexedDocument("bare", TermMap({"paris": 9.0}), {"text": "no vectors"})
    short = doc(5, vectors=DocumentVectors("00" * 12, np.zeros((1, 3), np.float16)))
    results = list(backend.upsert("ix", [*docs, bare, short]))
    assert [r.ok for r in results] == [True] * 4 + [False, False]
    assert results[4].status == 400 and "no passage vectors" in results[4].error
    assert "3 dims, the index holds 4" in results[5].error
    stored = next(iter(fake.docs("ix").values()))
    assert base64.b64decode(stored[VECTORS_FIELD], validate=True)

    plain = backend.search("ix", TermMap({"paris": 1.0}), 3)
    assert all(h.vectors is None for h in plain)  # left out unless asked for
    body = [b for m, p, b in fake.requests if p.endswith("/_search")][-1]
    assert VECTORS_FIELD in body["_source"]["excludes"]
    hits = backend.search("ix", TermMap({"paris": 1.0}), 3, vectors=True)
    assert [h.id for h in hits] == ["d3", "d2", "d1"]
    for h in hits:
        want = next(d.vectors for d in docs if d.id == h.id)
        assert h.vectors.key == want.key
        np.testing.assert_array_equal(h.vectors.rows, want.rows)
    got = backend.passage_vectors("ix", ["d0", "d2", "missing"])
    assert sorted(got) == ["d0", "d2"]
    np.testing.assert_array_equal(got["d2"].rows, docs[2].vectors.rows)


@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"], indirect=True)
def test_backfill_scans_pages_and_updates_only_what_is_missing_or_stale(fake, make_backend):
    backend = make_backend()
    backend.scan_page = 2  # several search_after pages
    backend.create_index("old", fingerprint="fp")
    docs = [IndexedDocument(f"d{i}", TermMap({"paris": 1.0}), {"text": f"passage {i}"})
            for i in range(5)]
    assert all(r.ok for r in backend.upsert("old", docs))  # written before vectors existed
    assert list(backend.passages_to_embed("old")) == []  # no spec: nothing to embed
    backend.enable_vectors("old", SPEC)
    todo = list(backend.passages_to_embed("old"))
    assert todo == [(f"d{i}", f"passage {i}") for i in range(5)]
    results = list(backend.put_vectors("old", [(i, vectors(t)) for i, t in todo[:3]]
                                       + [("gone", vectors("x"))]))
    assert [r.ok for r in results] == [True, True, True, False]
    assert results[-1].status == 404
    assert [i for i, _ in backend.passages_to_embed("old")] == ["d3", "d4"]  # resumes
    # a document edited after its vectors were made is embedded again
    stale = IndexedDocument("d0", TermMap({"paris": 1.0}), {"text": "edited"},
                            vectors=vectors("passage 0"))
    assert all(r.ok for r in backend.upsert("old", [stale]))
    assert [i for i, _ in backend.passages_to_embed("old")] == ["d0", "d3", "d4"]


@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"], indirect=True)
def test_a_conversational_search_index_stores_vectors_and_re_ranks_from_them(
        fake, make_backend, tiny_student, tiny_model_dir, monkeypatch):
    """End to end on the engine: index_documents creates the index with vectors (put_mapping),
    writes them with the term maps, and a search re-ranks from the vectors its hits return."""
    import torch

    from convsparse.integration.client import ConversationalSearch
    from convsparse.reranking.reranker import new_reranker

    torch.manual_seed(3)
    rr = new_reranker(tiny_model_dir, cross_encoder=False, semantic="minilm", semantic_window=128)
    backend = make_backend()
    records = [{"id": f"p{i}", "title": f"Place {i}", "text": text} for i, text in enumerate([
        "Lisbon is the capital of Portugal.", "Rome is the capital of Italy.",
        "Lisbon has about 545,000 inhabitants.", "Octopuses have three hearts."])]
    client = ConversationalSearch("docs", encoder=tiny_student, backend=backend, reranker=rr)
    report = client.index_documents(records, progress=False, rerank_vectors=True)
    assert report.indexed == 4 and not report.failed
    assert backend.vector_spec("docs").window == 128
    assert all(VECTORS_FIELD in d for d in fake.docs("docs").values())

    def no_passage_embedding(*args, **kwargs):
        raise AssertionError("a passage was embedded at query time")

    monkeypatch.setattr(rr.semantic, "_encode", no_passage_embedding)
    result = client.search("How many people live in Lisbon?", k=3)
    assert result.rerank == "ok", result.rerank
    body = [b for m, p, b in fake.requests if p.endswith("/_search")][-1]
    assert VECTORS_FIELD not in body["_source"].get("excludes", [])  # asked for, one request


@pytest.mark.parametrize("engine", ["opensearch", "elasticsearch"], indirect=True)
def test_passage_sample_is_one_spec_valid_search_over_title_and_text(fake, make_backend):
    from convsparse.integration.backends.base import SupportsPassageSample

    backend = make_backend()
    assert isinstance(backend, SupportsPassageSample)
    backend.create_index("s", fingerprint="fp")
    docs = [IndexedDocument(f"d{i}", TermMap({"paris": 1.0}),
                            {"text": f"passage {i}", **({"title": "T"} if i == 0 else {})})
            for i in range(5)]
    assert all(r.ok for r in backend.upsert("s", docs))
    before = len(fake.requests)
    got = backend.passage_sample("s", 3)
    searches = [b for m, p, b in fake.requests[before:] if p.endswith("/_search")]
    assert len(searches) == 1  # validated against the engine's spec by the fake
    assert searches[0]["size"] == 3
    assert searches[0]["query"]["function_score"]["random_score"]["field"] == "_seq_no"
    assert len(got) == 3 and all(t.startswith(("passage", "T")) for t in got)
    assert len(backend.passage_sample("s", 50)) == 5
