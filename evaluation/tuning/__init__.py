"""The pruning tuner: sweep query pruning thresholds and trade search latency against recall.

The conversations are encoded once; each `PruningPolicy` in the grid is applied to those term
maps and every pruned query is searched against the backend (warm-up runs first, then
``repeats`` timed runs). Per setting we report:

- search latency p50 / p95 / mean over every timed (query, repeat) pair, in ms;
- recall@k against the unpruned results: the share of the unpruned query's top-k documents the
  pruned query still returns in its top k (1.0 = pruning changed nothing that matters), and the
  same at the deeper ``recall_depths`` (default 100; one extra untimed search per query);
- recall@k against the judgments (``ranx``) when qrels are given;
- FLOPS (sum_j p_q(j) p_d(j), see `convsparse.evaluation.harness`) when document term
  statistics are given, and the average number of query terms.

Backends with an approximate-search structure built (`SupportsApproximateSearch`, e.g.
`EmbeddedBackend.build_ann`) get their query-time knobs swept too, next to the thresholds:
each `AnnQuery` in ``ann`` (default `DEFAULT_ANN_GRID`) searches the unpruned queries with
``approximate=...``, and is measured and plotted like a pruning point (kind ``ann``), its
recall against the same exact unpruned results.

With a `Reranker` (``reranker=``; the CLI's ``convsparse tune --rerank``), the re-rank depth is
swept as well (``rerank_depths``, default 10/20/50; kind ``rerank``): each unpruned query is
searched ``max(k, depth)`` deep and its first ``depth`` hits re-ranked, as
`ConversationalSearch` does; the latency is search + re-rank (the re-rank stage alone is in
``rerank_ms``), the quality is the judgments' MRR@10 / nDCG@3 / recall@k (qrels needed to read
them). Re-rank points reorder on purpose, so their recall vs the unpruned results says how much
they move, not what they lose: they are left out of the Pareto frontier and `recommend`, which
trade latency against the exact results. They are not plotted (the plot's axis is that recall).

`TuningResult.recommend(budget_ms=..., max_recall_drop=... | target_recall=...)` picks a setting;
`TuningResult.plot(path)` draws latency versus recall with every point labelled by its
threshold and the Pareto frontier (fastest for its recall) marked.

One concept per module: `sweep` (the grid and the measurement: `PruningTuner`), `result` (the
result model, the recommendation and the JSON / markdown outputs) and `plot` (the PNG; it reads
a result and never changes it).

>>> from convsparse.evaluation.tuning import PruningTuner            # doctest: +SKIP
>>> result = PruningTuner(backend, "docs", encoder, conversations, qrels=qrels).run()
>>> best = result.recommend(max_recall_drop=0.02); print(best.policy_code())
PruningPolicy(top_k=32)
"""

from convsparse.evaluation.tuning.result import (
    KINDS,
    Recommendation,
    TuningPoint,
    TuningResult,
    pareto_frontier,
)
from convsparse.evaluation.tuning.sweep import (
    DEFAULT_ANN_GRID,
    DEFAULT_GRID,
    PruningTuner,
    policy_for,
)

__all__ = ["DEFAULT_ANN_GRID", "DEFAULT_GRID", "KINDS", "PruningTuner", "Recommendation", "TuningPoint",
           "TuningResult", "pareto_frontier", "policy_for"]
