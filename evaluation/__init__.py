"""Retrieval evaluation, one concept per module:

- `metrics`: MRR@10, nDCG@3, Recall@k through ranx; TREC run files through ranx's `Run`;
- `bm25`: the one BM25 (bm25s), used by the baselines and the distillation BM25 teacher;
- `flops`: SPLADE's FLOPS from activation probabilities (`TermStats`);
- `report`: `SystemResult`, `EvaluationReport` (JSON + markdown);
- `harness`: `compare`, `evaluate_client`, `index_corpus`;
- `tuning`: the query-pruning sweep, its Pareto plot and recommendation.
"""

from __future__ import annotations

from convsparse._lazy import lazy_exports

__all__ = ["BM25", "EvaluationReport", "PruningTuner", "SystemResult", "TermStats", "compare",
           "compute_metrics", "evaluate_client", "flops", "index_corpus", "temporary_backend"]

_LAZY = {
    "BM25": "convsparse.evaluation.bm25",
    "EvaluationReport": "convsparse.evaluation.report",
    "SystemResult": "convsparse.evaluation.report",
    "PruningTuner": "convsparse.evaluation.tuning",
    "TermStats": "convsparse.evaluation.flops",
    "flops": "convsparse.evaluation.flops",
    "compute_metrics": "convsparse.evaluation.metrics",
    "compare": "convsparse.evaluation.harness",
    "evaluate_client": "convsparse.evaluation.harness",
    "index_corpus": "convsparse.evaluation.harness",
    "temporary_backend": "convsparse.evaluation.harness",
}

__getattr__, __dir__ = lazy_exports("convsparse.evaluation", _LAZY, globals())
