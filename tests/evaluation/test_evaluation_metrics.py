"""Metrics (ranx), FLOPS and latency summaries on hand-made runs."""

from __future__ import annotations

import math

import pytest

from convsparse.evaluation.flops import TermStats, flops
from convsparse.evaluation.metrics import compute_metrics, latency_summary, per_query_metric
from convsparse.termmap import TermMap

QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d9": 0}}


def test_perfect_run_scores_one():
    run = {"q1": {"d1": 3.0, "d5": 1.0}, "q2": {"d2": 2.0, "d3": 1.5}}
    m = compute_metrics(QRELS, run)
    assert m == pytest.approx({"mrr@10": 1.0, "ndcg@3": 1.0, "recall@10": 1.0, "recall@100": 1.0})


def test_second_rank_and_missing_queries():
    run = {"q1": {"d5": 3.0, "d1": 1.0}, "q2": {"d7": 1.0}}
    m = compute_metrics(QRELS, run)
    # q1 MRR 1/2, q2 nothing relevant -> mean 0.25; q3 has no relevant passage: not counted
    assert m["mrr@10"] == pytest.approx(0.25)
    assert m["recall@10"] == pytest.approx(0.5)
    # a judged query absent from the run counts as zero when asked for explicitly
    m2 = compute_metrics(QRELS, {"q1": {"d1": 1.0}}, query_ids=["q1", "q2"])
    assert m2["mrr@10"] == pytest.approx(0.5)
    per = per_query_metric(QRELS, run, "recall@10")
    assert per == pytest.approx({"q1": 1.0, "q2": 0.0})


def test_flops_is_sum_of_activation_probability_products():
    queries = TermStats.from_term_maps([TermMap({"a": 1.0, "b": 2.0}), TermMap({"a": 0.5})])
    docs = TermStats.from_term_maps([TermMap({"a": 1.0}), TermMap({"b": 1.0, "c": 1.0}),
                                     TermMap({"c": 3.0}), TermMap({"a": 2.0, "c": 1.0})])
    # p_q = {a: 1, b: .5}; p_d = {a: .5, b: .25, c: .75}; FLOPS = 1*.5 + .5*.25
    assert flops(queries, docs) == pytest.approx(0.625)
    # it is the mean number of shared terms over all (query, document) pairs
    pairs = [len(set(q) & set(d)) for q in ({"a", "b"}, {"a"})
             for d in ({"a"}, {"b", "c"}, {"c"}, {"a", "c"})]
    assert flops(queries, docs) == pytest.approx(sum(pairs) / len(pairs))
    assert queries.average_terms == 1.5 and docs.average_terms == 1.5
    assert math.isnan(flops(TermStats.from_term_maps([]), docs))


def test_latency_summary():
    s = latency_summary([1.0] * 19 + [21.0])
    assert s["p50"] == 1.0 and s["mean"] == pytest.approx(2.0) and s["p95"] == pytest.approx(2.0)
    assert math.isnan(latency_summary([])["p50"])
