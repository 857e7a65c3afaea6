"""EmbeddedBackend approximate search (issue 18): build, recall, persistence, writes since the
build, read-only opening, compaction fallback."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from convsparse.integration.backends.base import IndexedDocument, SupportsApproximateSearch
from convsparse.integration.backends.embedded import (
    AnnNotBuiltError,
    AnnQuery,
    EmbeddedBackend,
    IndexWriteError,
)
from convsparse.termmap import TermMap

N_DOCS, VOCAB = 3000, 400


def synthetic_docs(n: int, seed: int = 0, prefix: str = "d") -> list[IndexedDocument]:
    """SPLADE-like: ~30 Zipfian terms per document, log-normal weights."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB + 1)
    p /= p.sum()
    out = []
    for i in range(n):
        terms = np.unique(rng.choice(VOCAB, size=40, p=p))
        w = rng.lognormal(-0.3, 0.6, size=len(terms)) + 1e-3
        out.append(IndexedDocument(f"{prefix}{i}", TermMap({f"t{t}": float(x) for t, x in zip(terms, w)})))
    return out


def queries(n: int, seed: int = 1) -> list[TermMap]:
    rng = np.random.default_rng(seed)
    return [TermMap({f"t{t}": float(w) for t, w in zip(rng.choice(VOCAB, 12, replace=False),
                                                         rng.lognormal(0, 1, 12))}) for _ in range(n)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ann")
    be = EmbeddedBackend(root, durable=False)
    be.create_index("i", fingerprint="fp")
    list(be.upsert("i", synthetic_docs(N_DOCS)))
    info = be.build_ann("i", threads=1)
    return root, be, info


def fresh_copy(root: Path, tmp_path: Path) -> EmbeddedBackend:
    """A private copy of the built index, for tests that write to it."""
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return EmbeddedBackend(dst, durable=False)


def recall_at(be, qs, k, q: AnnQuery | None = None) -> float:
    q = q or AnnQuery()
    got = [len({h.id for h in be.search("i", x, k=k, approximate=q)}
               & {h.id for h in be.search("i", x, k=k)}) / k for x in qs]
    return float(np.mean(got))


def test_build_describes_and_is_a_capability(built):
    _, be, info = built
    assert isinstance(be, SupportsApproximateSearch)
    assert (info.n_docs, info.n_rows, info.generation) == (N_DOCS, N_DOCS, 0)
    assert be.ann_info("i") == info
    assert be.describe_index("i").extra["ann"] == {**info.to_dict(), "status": "ready"}
    files = sorted(p.name for p in (Path(built[0]) / "i").iterdir() if p.name.startswith("ann"))
    assert files == sorted(["ann.json", "ann.lock", info.file])


def test_recall_and_exact_scores(built):
    _, be, _ = built
    qs = queries(30)
    default = recall_at(be, qs, 10)
    assert default >= 0.95
    # a lower heap factor skips fewer blocks: recall does not go down
    assert recall_at(be, qs, 10, AnnQuery(query_cut=12, heap_factor=0.5)) >= default
    # candidates are rescored from the stored term maps: same scores as the exact search
    exact = {h.id: h.score for h in be.search("i", qs[0], k=50)}
    for h in be.search("i", qs[0], k=10, approximate=True):
        assert h.score == pytest.approx(exact[h.id], rel=1e-6)


def test_rescore_works_on_ann_candidates(built):
    _, be, _ = built
    q = queries(1, seed=5)[0]
    pruned = TermMap(dict(sorted(q.items(), key=lambda kv: -kv[1])[:4]))
    hits = be.search("i", pruned, k=10, rescore=q, rescore_window=100, approximate=True)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(hits) == 10


def test_survives_reopen(built):
    root, be, info = built
    again = EmbeddedBackend(root)
    q = queries(1, seed=7)[0]
    assert again.ann_info("i") == info
    assert [h.id for h in again.search("i", q, k=10, approximate=True)] == \
        [h.id for h in be.search("i", q, k=10, approximate=True)]


def test_document_added_after_build_is_found(built, tmp_path):
    be = fresh_copy(built[0], tmp_path)
    list(be.upsert("i", [IndexedDocument("new", TermMap({"t3": 50.0, "unseen-term": 9.0}))]))
    assert be.search("i", TermMap({"t3": 1.0}), k=1, approximate=True)[0].id == "new"
    # a term the build never saw is matched too (only the new rows can hold it)
    assert [h.id for h in be.search("i", TermMap({"unseen-term": 1.0}), k=5, approximate=True)] == ["new"]


def test_overwritten_document_uses_its_new_term_map(built, tmp_path):
    be = fresh_copy(built[0], tmp_path)
    q = queries(1, seed=11)[0]
    top = be.search("i", q, k=1, approximate=True)[0].id
    list(be.upsert("i", [IndexedDocument(top, TermMap({"t-other": 1.0}))]))
    hits = be.search("i", q, k=10, approximate=True)
    assert top not in [h.id for h in hits]
    assert be.search("i", TermMap({"t-other": 1.0}), k=1, approximate=True)[0].id == top


def test_deleted_document_is_not_returned(built, tmp_path):
    be = fresh_copy(built[0], tmp_path)
    q = queries(1, seed=13)[0]
    before = [h.id for h in be.search("i", q, k=10, approximate=True)]
    list(be.delete_documents("i", before[:3]))
    after = [h.id for h in be.search("i", q, k=10, approximate=True)]
    assert not set(before[:3]) & set(after)
    assert len(after) == 10 and after[:7] == before[3:]


def test_rebuild_covers_new_rows_and_other_process_sees_it(built, tmp_path):
    be = fresh_copy(built[0], tmp_path)
    reader = EmbeddedBackend(be.root)
    q = queries(1, seed=17)[0]
    reader.search("i", q, k=5, approximate=True)  # loads the first build
    list(be.upsert("i", synthetic_docs(50, seed=3, prefix="x")))
    old = be.ann_info("i")
    info = be.build_ann("i", threads=1)
    assert info.n_rows == N_DOCS + 50 and info.file != old.file
    assert not (be.root / "i" / old.file).exists()
    assert reader.search("i", q, k=10, approximate=True) == be.search("i", q, k=10, approximate=True)
    assert reader._anns.loaded("i").info == info


def test_not_built_raises_naming_the_fix(tmp_path):
    be = EmbeddedBackend(tmp_path)
    be.create_index("i", fingerprint="fp")
    list(be.upsert("i", synthetic_docs(5)))
    assert be.ann_info("i") is None and be.describe_index("i").extra["ann"] is None
    with pytest.raises(AnnNotBuiltError, match=r"build_ann\('i'\)"):
        be.search("i", TermMap({"t1": 1.0}), approximate=True)
    assert be.search("i", TermMap({"t0": 1.0}), k=1)  # exact is untouched


def test_compaction_falls_back_to_exact_with_a_warning(built, tmp_path, caplog):
    be = fresh_copy(built[0], tmp_path)
    list(be.delete_documents("i", [f"d{i}" for i in range(10)]))
    be.compact("i")
    q = queries(1, seed=19)[0]
    with caplog.at_level(logging.WARNING):
        hits = be.search("i", q, k=10, approximate=True)
    assert hits == be.search("i", q, k=10)
    assert "build_ann('i')" in caplog.text


def test_invalid_knobs():
    with pytest.raises(ValueError, match="query_cut"):
        AnnQuery(query_cut=0)
    with pytest.raises(ValueError, match="heap_factor"):
        AnnQuery(heap_factor=1.5)


def test_read_only_open_searches_and_refuses_to_build(built, tmp_path, read_only_view):
    root, be, _ = built
    be.close()
    q = queries(1, seed=23)[0]
    with read_only_view(root) as view:
        ro = EmbeddedBackend(view)
        assert [h.id for h in ro.search("i", q, k=10, approximate=True)] == \
            [h.id for h in be.search("i", q, k=10, approximate=True)]
        with pytest.raises(IndexWriteError, match="read-only"):
            ro.build_ann("i")
        ro.close()


def test_cli_build_ann(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from convsparse.cli import app

    be = EmbeddedBackend(tmp_path / "data")
    be.create_index("docs", fingerprint="fp")
    list(be.upsert("docs", synthetic_docs(50)))
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["index", "build-ann", "docs", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["n_docs"] == 50
    assert be.search("docs", TermMap({"t1": 1.0}), k=3, approximate=True)
    result = CliRunner().invoke(app, ["index", "describe", "docs"])
    assert '"ann"' in result.output and '"n_rows": 50' in result.output
