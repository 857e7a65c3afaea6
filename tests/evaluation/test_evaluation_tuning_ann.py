"""PruningTuner sweeps the embedded backend's ANN knobs next to the pruning thresholds."""

from __future__ import annotations

import json

import pytest

from convsparse.evaluation.harness import index_corpus
from convsparse.evaluation.tuning import DEFAULT_ANN_GRID, PruningTuner
from convsparse.evaluation.tuning.plot import plotted_points
from convsparse.integration.backends.embedded import AnnQuery, EmbeddedBackend

ANN = [AnnQuery(2, 0.9), AnnQuery(20, 0.5)]


@pytest.fixture(scope="module")
def tuned(sample, tiny_student, tmp_path_factory):
    be = EmbeddedBackend(tmp_path_factory.mktemp("tune-ann"), durable=False)
    stats = index_corpus(sample, encoder=tiny_student, backend=be, index="s")
    tuner = PruningTuner(be, "s", tiny_student, sample.conversations[:8], qrels=sample.qrels,
                         k=10, warmup=0, repeats=1, doc_stats=stats)
    no_ann = tuner.run({"top_k": [8]})  # nothing built yet: no ANN points
    be.build_ann("s", threads=1)
    return tuner, no_ann, tuner.run({"top_k": [8]}, ann=ANN), tuner.run({"top_k": [8]})


def test_ann_points_next_to_pruning(tuned):
    _, no_ann, result, default = tuned
    assert [p.kind for p in no_ann.points] == ["none", "top_k"]
    assert [p.kind for p in result.points] == ["none", "top_k", "ann", "ann"]
    assert [p.ann for p in default.points if p.kind == "ann"] == list(DEFAULT_ANN_GRID)
    for p in result.points:
        assert p.ok and p.latency_ms["p95"] >= p.latency_ms["p50"] > 0
        assert set(p.recall_at) == {10, 100} and p.recall_at[10] == p.recall_vs_unpruned
        assert 0.0 <= p.recall_at[100] <= 1.0 and "mrr@10" in p.metrics
    # a generous ANN setting on a tiny index finds what exact search finds
    assert result.points[-1].recall_vs_unpruned >= 0.9


def test_ann_recommendation_plot_and_outputs(tuned, tmp_path):
    _, _, result, _ = tuned
    rec = result.recommend(target_recall=0.0)  # the fastest point of all
    assert rec.point.latency_ms["p50"] == min(p.latency_ms["p50"] for p in result.points)
    ann_point = result.points[-1]
    assert ann_point.label == "ann cut=20 hf=0.5"
    assert eval(ann_point.policy_code(), {"AnnQuery": AnnQuery}) == ann_point.ann
    js, md, png = result.save(tmp_path / "tune", rec)
    assert {label for label, _, _ in plotted_points(result)} == {p.label for p in result.points}
    data = json.loads(js.read_text())
    assert data["points"][-1]["ann"] == {"query_cut": 20, "heap_factor": 0.5}
    text = md.read_text()
    assert "ann cut=20 hf=0.5" in text and "recall@100 vs unpruned" in text and "MRR@10" in text
    with pytest.raises(ValueError, match="not both"):
        result.recommend(target_recall=0.9, max_recall_drop=0.1)


def test_damaged_ann_json_is_reported_and_the_sweep_goes_on_exact(sample, tiny_student, tmp_path):
    be = EmbeddedBackend(tmp_path, durable=False)
    index_corpus(sample, encoder=tiny_student, backend=be, index="s")
    be.build_ann("s", threads=1)
    (tmp_path / "s" / "ann.json").write_bytes(b"\x00garbage{\xff")
    said: list[str] = []
    tuner = PruningTuner(be, "s", tiny_student, sample.conversations[:4], k=10, warmup=0, repeats=1)
    result = tuner.run({"top_k": [8]}, progress=said.append)
    assert [p.kind for p in result.points] == ["none", "top_k"] and all(p.ok for p in result.points)
    assert any(s.startswith("ANN unusable: ") and "build-ann" in s for s in said)
    assert "build-ann" in result.config["ann_unusable"]
    assert "ANN unusable: " in result.to_markdown()
