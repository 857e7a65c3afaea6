"""`benchmarks/rerank_cv.py`: the dev cross-validation the recipe's choices cite runs end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import convsparse

SAMPLE = Path(convsparse.__file__).parent / "sample_data"
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "rerank_cv.py"


def test_cross_validation_compares_variants_over_unseen_folds(tiny_model_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("rerank_cv", SCRIPT)
    rerank_cv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rerank_cv)
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
