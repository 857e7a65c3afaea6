"""EmbeddedBackend: the Backend protocol's behaviour, persistence, multi-process use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from convsparse.errors import FingerprintMismatchError, IndexExistsError, IndexNotFoundError
from convsparse.integration.backends.base import Backend, IndexedDocument
from convsparse.integration.backends.embedded import EmbeddedBackend
from convsparse.termmap import TermMap, quantize_feature_values


def doc(i, **w):
    return IndexedDocument(i, TermMap(w), {"title": i})


def ids(hits):
    return [h.id for h in hits]


def test_is_a_backend(backend):
    assert isinstance(backend, Backend)


def test_create_describe_delete(backend):
    info = backend.create_index("idx", fingerprint="fp1", vocabulary="v")
    assert (info.name, info.fingerprint, info.count, info.vocabulary) == ("idx", "fp1", 0, "v")
    with pytest.raises(IndexExistsError, match="already exists"):
        backend.create_index("idx", fingerprint="fp1")
    assert backend.create_index("idx", fingerprint="fp1", exist_ok=True).name == "idx"
    with pytest.raises(FingerprintMismatchError):
        backend.create_index("idx", fingerprint="other", exist_ok=True)
    backend.delete_index("idx")
    with pytest.raises(IndexNotFoundError, match="convsparse index create"):
        backend.describe_index("idx")
    backend.delete_index("idx", missing_ok=True)
    with pytest.raises(IndexNotFoundError):
        backend.delete_index("idx")


@pytest.mark.parametrize("call", ["count", "search", "upsert", "delete_documents"])
def test_unknown_index(backend, call):
    args = {"count": (), "search": (TermMap({"a": 1.0}),), "upsert": ([doc("x", a=1.0)],),
            "delete_documents": (["x"],)}[call]
    with pytest.raises(IndexNotFoundError):
        getattr(backend, call)("missing", *args)


def test_bad_index_name(backend):
    with pytest.raises(ValueError, match="invalid index name"):
        backend.create_index("../evil", fingerprint="fp")


def test_upsert_overwrite_delete_count(backend):
    backend.create_index("i", fingerprint="fp")
    res = list(backend.upsert("i", [doc("a", x=1.0, y=2.0), doc("b", x=3.0), doc("c", z=1.0)]))
    assert [r.ok for r in res] == [True, True, True]
    assert backend.count("i") == 3
    hits = backend.search("i", TermMap({"x": 1.0, "y": 1.0}), k=10)
    assert ids(hits) == ["a", "b"]  # tie 3.0 = 3.0: insertion order, like Lucene doc ids
    assert hits[0].score == pytest.approx(3.0) and hits[0].fields == {"title": "a"}
    list(backend.upsert("i", [doc("a", z=5.0)]))  # overwrite: "a" no longer has x/y
    assert backend.count("i") == 3
    assert ids(backend.search("i", TermMap({"x": 1.0}), k=10)) == ["b"]
    assert ids(backend.search("i", TermMap({"z": 1.0}), k=10)) == ["a", "c"]
    res = list(backend.delete_documents("i", ["a", "nope"]))
    assert [(r.ok, r.status) for r in res] == [(True, 200), (False, 404)]
    assert backend.count("i") == 2
    assert ids(backend.search("i", TermMap({"z": 1.0}), k=10)) == ["c"]
    assert backend.search("i", TermMap({"unknown": 1.0}), k=10) == []


def test_bad_documents_fail_alone(backend):
    """A caller that bypasses `IndexedDocument` (a look-alike object) is checked once by the
    backend, with the same rule; a built `IndexedDocument` is valid already."""
    backend.create_index("i", fingerprint="fp")
    loose = SimpleNamespace
    bad_fields = loose(id="f", term_map=TermMap({"a": 1.0}), fields={"obj": object()})
    no_id = loose(id="", term_map=TermMap({"a": 1.0}), fields={})
    res = list(backend.upsert("i", [doc("ok", a=1.0), no_id, bad_fields]))
    assert [r.ok for r in res] == [True, False, False]
    assert "non-empty" in res[1].error and "JSON" in res[2].error
    assert backend.count("i") == 1


def test_top_k_and_k_validation(backend):
    backend.create_index("i", fingerprint="fp")
    list(backend.upsert("i", [doc(f"d{n}", t=float(n + 1)) for n in range(50)]))
    hits = backend.search("i", TermMap({"t": 2.0}), k=5)
    assert ids(hits) == ["d49", "d48", "d47", "d46", "d45"]
    assert hits[0].score == pytest.approx(100.0)
    with pytest.raises(ValueError):
        backend.search("i", TermMap({"t": 1.0}), k=0)


def test_fingerprint_mismatch_on_search(backend):
    backend.create_index("i", fingerprint="fp-a")
    list(backend.upsert("i", [doc("a", x=1.0)]))
    assert ids(backend.search("i", TermMap({"x": 1.0}), fingerprint="fp-a")) == ["a"]
    with pytest.raises(FingerprintMismatchError, match="re-index"):
        backend.search("i", TermMap({"x": 1.0}), fingerprint="fp-b")


def test_rescore_reranks_the_window(backend):
    backend.create_index("i", fingerprint="fp")
    list(backend.upsert("i", [doc("a", x=3.0), doc("b", x=2.0, y=5.0), doc("c", x=1.0, y=10.0)]))
    pruned, full = TermMap({"x": 1.0}), TermMap({"x": 1.0, "y": 1.0})
    assert ids(backend.search("i", pruned, k=3)) == ["a", "b", "c"]
    hits = backend.search("i", pruned, k=3, rescore=full, rescore_window=3)
    assert ids(hits) == ["c", "b", "a"]
    assert [h.score for h in hits] == pytest.approx([11.0, 7.0, 3.0])
    # a window of 2 only reorders the first two; the rest keep first-phase order and scores
    hits = backend.search("i", pruned, k=3, rescore=full, rescore_window=2)
    assert ids(hits) == ["b", "a", "c"] and hits[2].score == pytest.approx(1.0)
    # k=1 with a window of 3: the rescored best comes from beyond k
    assert ids(backend.search("i", pruned, k=1, rescore=full, rescore_window=3)) == ["c"]


def test_persist_reopen_and_compaction(tmp_path):
    root = tmp_path / "data"
    be = EmbeddedBackend(root, compact_min_ops=5, compact_ratio=0.0)
    be.create_index("i", fingerprint="fp", vocabulary="bert")
    for n in range(12):
        list(be.upsert("i", [doc(f"d{n % 7}", **{f"t{n}": 1.0 + n, "common": 1.0})]))
    assert be.describe_index("i").extra["generation"] >= 1  # compacted at least once
    again = EmbeddedBackend(root)
    assert again.count("i") == 7
    assert again.describe_index("i").vocabulary == "bert"
    tm, fields = again.get_document("i", "d4")
    assert tm == TermMap({"t11": 12.0, "common": 1.0}) and fields == {"title": "d4"}
    a, b = be.search("i", TermMap({"common": 1.0}), k=10), again.search("i", TermMap({"common": 1.0}), k=10)
    assert ids(a) == ids(b) and len(a) == 7
    again.compact("i")
    assert be.count("i") == 7 and ids(be.search("i", TermMap({"common": 1.0}), k=10)) == ids(a)


def test_two_objects_see_each_others_writes(tmp_path):
    one, two = EmbeddedBackend(tmp_path), EmbeddedBackend(tmp_path)
    one.create_index("i", fingerprint="fp")
    assert two.count("i") == 0
    list(one.upsert("i", [doc("a", x=1.0)]))
    assert ids(two.search("i", TermMap({"x": 1.0}))) == ["a"]
    list(two.upsert("i", [doc("b", x=2.0)]))
    list(two.delete_documents("i", ["a"]))
    assert ids(one.search("i", TermMap({"x": 1.0}))) == ["b"]
    one.delete_index("i")
    with pytest.raises(IndexNotFoundError):
        two.count("i")


WRITER = textwrap.dedent("""
    import sys
    from convsparse.integration.backends.base import IndexedDocument
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.termmap import TermMap
    root, prefix = sys.argv[1], sys.argv[2]
    be = EmbeddedBackend(root, compact_min_ops=40)
    for n in range(30):
        list(be.upsert("i", [IndexedDocument(f"{prefix}{n}", TermMap({"x": 1.0 + n, prefix: 1.0}))]))
""")


def test_concurrent_writer_processes(tmp_path):
    reader = EmbeddedBackend(tmp_path)
    reader.create_index("i", fingerprint="fp")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), p]) for p in ("p", "q")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert reader.count("i") == 60
    assert len(reader.search("i", TermMap({"q": 1.0}), k=100)) == 30
    assert ids(reader.search("i", TermMap({"x": 1.0}), k=2)) in (["p29", "q29"], ["q29", "p29"])


def test_quantization_matches_featurefield():
    v = np.array([0.1, 1.0, 3.14159, 1e-20, 65504.0], dtype=np.float32)
    q = quantize_feature_values(v)
    assert q[1] == 1.0 and q[0] == pytest.approx(0.09985352, abs=1e-8)
    assert np.all(q <= v) and np.all((v - q) / v < 2.0 ** -8)


def test_quantized_scores(tmp_path):
    be = EmbeddedBackend(tmp_path, quantize=True)
    be.create_index("i", fingerprint="fp")
    list(be.upsert("i", [doc("a", x=0.1)]))
    assert be.search("i", TermMap({"x": 2.0}))[0].score == pytest.approx(2 * 0.09985352, rel=1e-6)
    assert EmbeddedBackend(tmp_path).search("i", TermMap({"x": 2.0}))[0].score == pytest.approx(0.2)


def test_document_frequencies(backend):
    backend.create_index("i", fingerprint="fp")
    list(backend.upsert("i", [doc("a", x=1.0, y=1.0), doc("b", x=1.0), doc("c", z=1.0), doc("d", z=1.0)]))
    assert backend.document_frequencies("i", ["x", "y", "nope"]) == {"x": 0.5, "y": 0.25, "nope": 0.0}


def test_document_frequencies_follow_deletes_overwrites_and_new_writes(backend):
    # the counts are kept between searches: every write must drop them
    backend.create_index("i", fingerprint="fp")
    list(backend.upsert("i", [doc("a", x=1.0), doc("b", x=1.0), doc("c", y=1.0), doc("d", y=1.0)]))
    assert backend.document_frequencies("i", ["x", "y"]) == {"x": 0.5, "y": 0.5}
    list(backend.delete_documents("i", ["a"]))
    assert backend.document_frequencies("i", ["x", "y"]) == {"x": 1 / 3, "y": 2 / 3}
    list(backend.upsert("i", [doc("b", y=1.0)]))  # b's x is overwritten away
    assert backend.document_frequencies("i", ["x", "y"]) == {"x": 0.0, "y": 1.0}
    list(backend.upsert("i", [doc("e", x=1.0, w=1.0)]))
    assert backend.document_frequencies("i", ["x", "w", "y"]) == {"x": 0.25, "w": 0.25, "y": 0.75}


def test_csr_backed_term_maps_index_like_dict_ones(backend):
    """Term maps from the bulk (CSR) path are written straight from their arrays."""
    from convsparse.termmap import CsrRows, TermMapBatch

    vocab = ["[PAD]", "lisbon", "u.s", "50%", "rome"]
    dense = np.array([[0, 1.5, 0.25, 0, 0], [0, 0, 0, 2.0, 1.0]], dtype=np.float32)
    batch = TermMapBatch.from_csr(CsrRows.from_dense(dense), vocab, "fp:csr", ["a", "b"])
    backend.create_index("csr", fingerprint="fp:csr")
    results = list(backend.upsert("csr", [IndexedDocument(i, tm, {}) for i, tm in zip(batch.ids, batch)]))
    assert all(r.ok for r in results)
    assert backend.get_document("csr", "a")[0] == TermMap({"lisbon": 1.5, "u.s": 0.25})
    assert ids(backend.search("csr", TermMap({"50%": 1.0}))) == ["b"]




def test_passage_sample_spreads_over_live_documents(tmp_path):
    from convsparse.integration.backends.base import IndexedDocument, SupportsPassageSample
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.termmap import TermMap

    backend = EmbeddedBackend(tmp_path)
    assert isinstance(backend, SupportsPassageSample)
    backend.create_index("s", fingerprint="fp")
    list(backend.upsert("s", [IndexedDocument(f"d{i}", TermMap({"t": 1.0}),
                                              {"text": f"passage {i}", "title": f"T{i}"})
                              for i in range(100)]))
    list(backend.delete_documents("s", ["d0"]))
    assert backend.passage_sample("s", 0) == []
    assert len(backend.passage_sample("s", 1000)) == 99
    sample = backend.passage_sample("s", 5)
    assert sample == ["T1\npassage 1", "T25\npassage 25", "T50\npassage 50", "T75\npassage 75",
                      "T99\npassage 99"]
