"""The re-ranker's dev-side benchmarks run end to end: `rerank_cv.py` (the cross-validation the
recipe's choices cite) and `rerank_latency.py` (re-rankers' cost side by side)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

import convsparse

SAMPLE = Path(convsparse.__file__).parent / "sample_data"


def test_cross_validation_compares_variants_over_unseen_folds(tiny_model_dir, tmp_path, load_benchmark):
    rerank_cv = load_benchmark("rerank_cv")
    config = tmp_path / "rerank.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "output_dir": str(tmp_path / "run"), "collection": str(SAMPLE), "base": str(tiny_model_dir),
        "first_stage": str(tiny_model_dir), "teacher": "rewrite", "holdout_per_domain": 0,
        "semantic": str(tiny_model_dir), "semantic_window": 8, "depth": 4, "epochs": 1,
        "batch_turns": 4, "max_length": 48, "query_length": 16}))
    out = tmp_path / "cv"
    assert rerank_cv.main(["--config", str(config), "--folds", "2", "--out", str(out),
                           "--variant", "windows", "--variant", "whole:semantic_window=null"]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert [r["variant"] for r in result["rows"]] == ["windows", "whole"]
    assert result["rows"][1]["changes"] == {"semantic_window": None}
    assert result["judged_turns"] > 0 and len(result["rows"][0]["mrr@10_gain_by_fold"]) == 2
    assert 0 <= result["rows"][0]["all"]["mrr@10"] <= 1
    assert set(result["rows"][1]["p_vs_windows"]) == {"mrr@10", "ndcg@3"}
    assert "| whole |" in out.with_suffix(".md").read_text()
    assert (tmp_path / "run" / "labels.jsonl").is_file()  # generated once, as training does


def test_latency_compares_rerankers_turn_by_turn(tiny_model_dir, tmp_path, load_benchmark):
    from convsparse.reranking.config import RerankConfig
    from convsparse.reranking.training import train_reranker

    folders = []
    for name, window in (("windows", 8), ("whole", None)):
        cfg = RerankConfig(output_dir=tmp_path / name, collection=SAMPLE, base=str(tiny_model_dir),
                           first_stage=str(tiny_model_dir), teacher="rewrite",
                           holdout_per_domain=0, semantic=str(tiny_model_dir),
                           semantic_window=window, depth=4, epochs=1, batch_turns=4,
                           max_length=48, query_length=16, progress=False)
        folders.append(train_reranker(cfg, log=lambda s: None))
    out = tmp_path / "latency"
    argv = ["--labels", str(tmp_path / "windows" / "labels.jsonl"), "--collection", str(SAMPLE),
            "--depth", "4", "--runtime", "torch", "--out", str(out)]
    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    try:  # the benchmark pins its process to one core, as a serving budget
        assert load_benchmark("rerank_latency").main(
            [*argv, "--reranker", str(folders[0]), "--reranker", str(folders[1])]) == 0
    finally:  # the rest of the suite gets its cores back
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)
    result = json.loads(out.with_suffix(".json").read_text())
    assert [r["reranker"] for r in result["rows"]] == ["windows", "whole"]
    assert result["turns"] > 0 and result["rows"][0]["median_ratio_to_windows"] == 1.0
    assert result["rows"][1]["latency_ms"]["p50"] > 0
    assert "| whole |" in out.with_suffix(".md").read_text()
