"""PruningTuner on a small collection, its recommendation and its plot."""

from __future__ import annotations

import json

import pytest

from convsparse.evaluation.harness import index_corpus
from convsparse.evaluation.tuning import (
    PruningTuner,
    TuningPoint,
    TuningResult,
    pareto_frontier,
    policy_for,
)
from convsparse.evaluation.tuning.plot import plotted_points
from convsparse.pruning import PruningPolicy

GRID = {"top_k": [2, 8, 32], "max_ratio": [0.2, 0.5], "alpha_mass": [0.6, 0.9],
        "min_weight": [0.5, 2.0]}


@pytest.fixture(scope="module")
def backend(memory_backend_cls):
    return memory_backend_cls()


@pytest.fixture(scope="module")
def tuned(sample, tiny_student, backend):
    memory_backend = backend
    stats = index_corpus(sample, encoder=tiny_student, backend=memory_backend, index="s")
    tuner = PruningTuner(memory_backend, "s", tiny_student, sample.conversations[:12],
                         qrels=sample.qrels, k=10, warmup=1, repeats=2, doc_stats=stats)
    return tuner, tuner.run(GRID)


def test_sweep_measures_every_setting(tuned, backend):
    _, result = tuned
    assert len(result.points) == 1 + sum(len(v) for v in GRID.values())
    base = result.baseline
    assert base.label == "unpruned" and base.recall_vs_unpruned == 1.0
    assert result.n_queries == 12
    for p in result.points:
        assert p.ok and 0.0 <= p.recall_vs_unpruned <= 1.0
        assert p.latency_ms["p95"] >= p.latency_ms["p50"] > 0
        assert p.recall_vs_qrels is not None and p.flops is not None
    by = {p.label: p for p in result.points}
    assert by["top_k=2"].avg_query_terms <= 2 < by["top_k=32"].avg_query_terms
    assert by["top_k=2"].recall_vs_unpruned <= by["top_k=32"].recall_vs_unpruned
    assert by["top_k=2"].flops < base.flops
    # warm-up + repeats searches per query and setting
    assert backend.searches >= len(result.points) * 12 * 3
    assert result.frontier() and all(p.pareto for p in result.frontier())


def test_recommendations(tuned):
    _, result = tuned
    rec = result.recommend(max_recall_drop=0.0)
    assert rec and rec.point.recall_vs_unpruned == pytest.approx(1.0)
    loose = result.recommend(max_recall_drop=1.0)
    assert loose.point.latency_ms["p50"] <= rec.point.latency_ms["p50"] + 1e-9
    fast = result.recommend(budget_ms=1e9)
    assert fast.point.recall_vs_unpruned == pytest.approx(1.0)
    none = result.recommend(budget_ms=0.0)
    assert not none and "no setting meets" in none.reason
    code = rec.point.policy_code()
    assert code.startswith("PruningPolicy(")
    assert eval(code, {"PruningPolicy": PruningPolicy}) == rec.point.policy


def test_outputs_and_plot(tuned, tmp_path):
    from PIL import Image

    _, result = tuned
    rec = result.recommend(max_recall_drop=0.05)
    before = result.to_dict()
    js, md, png = result.save(tmp_path / "tune", rec)
    assert result.to_dict() == before  # the plot reads the result, never changes it
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 300
    assert len(plotted_points(result)) == len(result.points)
    assert {label for label, _, _ in plotted_points(result)} == {p.label for p in result.points}
    data = json.loads(js.read_text())
    assert len(data["points"]) == len(result.points)
    assert data["recommendation"]["point"]["policy_code"] == rec.point.policy_code()
    text = md.read_text()
    assert "recall@10 vs unpruned" in text and "PruningPolicy(" in text


def test_pareto_frontier_and_policy_for():
    def pt(lat, rec):
        return TuningPoint("top_k", 1, PruningPolicy(top_k=1), {"p50": lat, "p95": lat}, rec)

    a, b, c, d = pt(1.0, 0.5), pt(2.0, 0.9), pt(2.5, 0.8), pt(3.0, 1.0)
    assert pareto_frontier([a, b, c, d]) == [a, b, d]
    assert policy_for("top_k", 8.0) == PruningPolicy(top_k=8)
    with pytest.raises(ValueError, match="unknown pruning kind"):
        policy_for("random", 1)
    assert TuningResult([a], 10, 1, "x", "y").recommend(max_recall_drop=0.6).point is a
