"""Evaluation end to end on the sample collection with the tiny lexical student."""

from __future__ import annotations

import json

import pytest

from convsparse.benchmark_collections import Collection, ConversationTask, Passage
from convsparse.conversation import Turn
from convsparse.evaluation.harness import (
    BM25Baseline,
    compare,
    evaluate_client,
    evaluate_term_maps,
    index_corpus,
)
from convsparse.evaluation.report import EvaluationReport


def own_collection() -> Collection:
    """A few hand-written conversations whose later turns only make sense in context."""
    corpus = {
        "k1": Passage("k1", "The kakapo is a flightless, nocturnal parrot from New Zealand.",
                      "Kakapo"),
        "k2": Passage("k2", "Fewer than 250 kakapo are alive today; every bird has a name.",
                      "Kakapo numbers"),
        "v1": Passage("v1", "Release v2.1 of the parser adds streaming input and fixes U.S. "
                            "date formats.", "Parser v2.1"),
        "v2": Passage("v2", "Version 3.0 of the parser drops Python 3.8 support.", "Parser 3.0"),
        "z1": Passage("z1", "Glaciers carve U-shaped valleys as they slide downhill.", "Glaciers"),
    }
    def U(t):
        return Turn(role="user", text=t)

    def A(t):
        return Turn(role="assistant", text=t)

    convs = [
        ConversationTask("kakapo_1", (U("What is a kakapo?"),), "What is a kakapo?", "kakapo"),
        ConversationTask("kakapo_2", (U("What is a kakapo?"), A("A flightless parrot."),
                                      U("How many are left?")),
                         "How many kakapo are left?", "kakapo"),
        ConversationTask("parser_1", (U("What changed in parser v2.1?"),),
                         "What changed in parser v2.1?", "parser"),
        ConversationTask("parser_2", (U("What changed in parser v2.1?"),
                                      U("And in the next major version?")),
                         "What changed in parser version 3.0?", "parser"),
    ]
    qrels = {"kakapo_1": {"k1": 1}, "kakapo_2": {"k2": 1}, "parser_1": {"v1": 1},
             "parser_2": {"v2": 1}}
    return Collection(corpus, convs, qrels, "own")


def test_bm25_on_rewrites_beats_context_free_last_turn():
    col = own_collection()
    bm25 = BM25Baseline(col)
    rewrite = bm25.evaluate(col, "rewrite")
    assert rewrite.metrics["mrr@10"] >= 0.75
    assert rewrite.n_queries == 4 and set(rewrite.run) == {c.id for c in col.conversations}
    # the raw view concatenates turns, so "How many are left?" still finds the kakapo passages
    raw = bm25.evaluate(col, "raw")
    assert "k2" in raw.run["kakapo_2"]


def test_compare_on_sample_with_tiny_student(sample, tiny_student, memory_backend):
    report = compare(sample, encoder=tiny_student, backend=memory_backend, index="sample")
    rows = {(r.system, r.view): r for r in report.results}
    assert set(rows) == {("BM25", "raw"), ("BM25", "rewrite"), ("student", "raw"),
                         ("student", "rewrite")}
    for r in report.results:
        assert r.n_queries == 25
        assert set(r.metrics) == {"mrr@10", "ndcg@3", "recall@10", "recall@100"}
        assert 0.0 <= r.metrics["mrr@10"] <= 1.0
        assert r.flops is not None and r.flops > 0
        assert r.avg_query_terms > 0 and r.avg_doc_terms > 0
        assert r.latency_ms["p95"] >= r.latency_ms["p50"] >= 0
    # the lexical tiny student finds the judged passage for most rewrites
    assert rows[("student", "rewrite")].metrics["recall@10"] >= 0.7
    assert rows[("BM25", "rewrite")].metrics["mrr@10"] > rows[("BM25", "raw")].metrics["mrr@10"]
    # a whole conversation activates more terms than its rewrite
    assert rows[("student", "raw")].avg_query_terms > rows[("student", "rewrite")].avg_query_terms
    md = report.to_markdown()
    assert md.count("\n| ") >= 5 and "MRR@10" in md and "FLOPS" in md
    data = json.loads(report.to_json())
    assert len(data["results"]) == 4 and "run" not in data["results"][0]


def test_report_save(tmp_path, sample, tiny_student, memory_backend):
    stats = index_corpus(sample, encoder=tiny_student, backend=memory_backend, index="s")
    assert stats.count == 60
    res = evaluate_term_maps(sample, "rewrite", encoder=tiny_student, backend=memory_backend,
                             index="s", doc_stats=stats)
    js, md = EvaluationReport("sample", 60, [res]).save(tmp_path / "out" / "eval")
    assert json.loads(js.read_text())["results"][0]["view"] == "rewrite"
    assert "| student | rewrite | 25 |" in md.read_text()


class _Result:
    def __init__(self, hits, query):
        self.hits, self.query = hits, query
        terms = len(query)
        self.timings = {"encode_ms": 1.0, "search_ms": 2.0, "total_ms": 3.0}
        self.query_terms_before = self.query_terms_after = terms


class _Client:
    """Stands in for `ConversationalSearch`: encoder + backend, the same `.search` contract."""

    def __init__(self, encoder, backend, index):
        self.encoder, self.backend, self.index, self.pruning = encoder, backend, index, None

    def search(self, conversation, k=10):
        q = self.encoder.encode_conversation(conversation)
        return _Result(self.backend.search(self.index, q, k=k), q)


def test_evaluate_client_goes_through_the_client(tiny_student, memory_backend):
    col = own_collection()
    stats = index_corpus(col, encoder=tiny_student, backend=memory_backend, index="own")
    res = evaluate_client(_Client(tiny_student, memory_backend, "own"), col, "rewrite",
                          doc_stats=stats)
    assert res.n_queries == 4 and res.latency_ms["p50"] == pytest.approx(3.0)
    assert res.metrics["recall@10"] >= 0.75
    assert res.flops is not None and res.flops > 0
    assert res.extra["search_ms_mean"] == pytest.approx(2.0)
