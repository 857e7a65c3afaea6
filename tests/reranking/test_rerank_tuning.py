"""The tuner sweeps the re-rank depth next to the pruning knobs (issue 31 item 6)."""

from __future__ import annotations

import torch

from convsparse.benchmark_collections import sample_collection
from convsparse.evaluation.harness import index_corpus
from convsparse.evaluation.tuning import PruningTuner
from convsparse.integration.backends.embedded import EmbeddedBackend
from convsparse.reranking.reranker import new_reranker


def test_the_tuner_reports_rerank_depth_next_to_pruning(tiny_student, tiny_model_dir, tmp_path):
    col = sample_collection()
    backend = EmbeddedBackend(tmp_path / "idx")
    index_corpus(col, encoder=tiny_student, backend=backend, index="s")
    torch.manual_seed(0)
    rr = new_reranker(tiny_model_dir, cross_encoder=False, semantic=tiny_model_dir,
                      passages=[p.encoded_text for p in col.corpus.values()])
    with torch.no_grad():
        rr.model.semantic_linear.weight.normal_(0, 0.5)
    tuner = PruningTuner(backend, "s", tiny_student, col.conversations[:6], qrels=col.qrels,
                         k=5, warmup=0, repeats=1, reranker=rr, rerank_depths=[10, 5])
    result = tuner.run({"top_k": [4]}, ann=[])
    by = {p.label: p for p in result.points}
    assert [p.label for p in result.points] == ["unpruned", "top_k=4", "rerank depth 5",
                                                "rerank depth 10"]
    deep = by["rerank depth 10"]
    assert deep.ok and deep.kind == "rerank" and not deep.pareto
    assert deep.latency_ms["p50"] >= deep.rerank_ms["p50"] > 0  # search + re-rank, and the stage
    assert {"mrr@10", "ndcg@3"} <= set(deep.metrics)
    assert deep.policy_code().endswith("rerank_depth=10)")
    table = result.to_markdown()
    assert "rerank depth 10" in table and "re-rank p50 ms" in table and "nDCG@3" in table
    assert result.recommend(max_recall_drop=1.0).point.kind != "rerank"
    assert result.to_dict()["config"]["rerank_depths"] == [5, 10]
