"""The tuner's sweep: the grid of settings (`DEFAULT_GRID`, `DEFAULT_ANN_GRID`, `policy_for`) and
`PruningTuner`, which measures each setting against a backend and returns a `TuningResult`
(see the package docstring for what is measured).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from convsparse.benchmark_collections import ConversationTask
from convsparse.errors import BackendError, TooManyClausesError
from convsparse.evaluation.flops import TermStats, flops
from convsparse.evaluation.harness import query_for
from convsparse.evaluation.metrics import compute_metrics, latency_summary
from convsparse.evaluation.tuning.result import KINDS, TuningPoint, TuningResult, pareto_frontier
from convsparse.integration.backends.base import SupportsApproximateSearch
from convsparse.integration.backends.embedded import AnnQuery
from convsparse.progress import Say
from convsparse.pruning import PruningPolicy
from convsparse.termmap import TermMap
from convsparse.timing import elapsed_ms

logger = logging.getLogger(__name__)

DEFAULT_GRID: dict[str, list[float]] = {
    "top_k": [8, 16, 32, 64, 128],
    "max_ratio": [0.05, 0.1, 0.2, 0.3, 0.5],
    "alpha_mass": [0.5, 0.7, 0.8, 0.9, 0.95],
    # min_weight: picked from the quantiles of the observed query weights (scale is model-specific)
}
MIN_WEIGHT_QUANTILES = (0.25, 0.5, 0.75, 0.9)
# around the defaults that reached recall@10 >= 0.95 in benchmarks/ann_search.py
DEFAULT_ANN_GRID: tuple[AnnQuery, ...] = (
    AnnQuery(5, 0.9), AnnQuery(10, 0.9), AnnQuery(20, 0.9), AnnQuery(20, 0.7), AnnQuery(40, 0.9))


def policy_for(kind: str, threshold: float) -> PruningPolicy:
    if kind not in KINDS:
        raise ValueError(f"unknown pruning kind {kind!r}; choose from {', '.join(KINDS)}")
    return PruningPolicy(**{kind: int(threshold) if kind == "top_k" else float(threshold)})


class PruningTuner:
    """Sweep `PruningPolicy` settings for a set of conversations against one index.

    `conversations`: `ConversationTask`s (from `load_collection`) or anything the encoder's
    `encode_conversations` accepts (then pass `ids` for qrels to line up). `encoder` needs
    `encode_conversations(convs, ids=)` (a student) and `.fingerprint`; `backend` is any
    `Backend` (embedded or OpenSearch). `query_maps` (id -> unpruned term map, e.g.
    ``EvaluationReport.query_maps["raw"]``) skips encoding the conversations again.
    """

    def __init__(
        self, backend, index: str, encoder, conversations: Sequence[Any], *,
        qrels: Mapping[str, Mapping[str, int]] | None = None, ids: Sequence[str] | None = None,
        k: int = 10, warmup: int = 1, repeats: int = 3, view: str = "raw",
        doc_stats: TermStats | None = None, latency_stat: str = "p50",
        baseline: PruningPolicy | None = None, batch_size: int = 32,
        query_maps: Mapping[str, TermMap] | None = None, recall_depths: Sequence[int] = (100,),
        reranker: Any = None, rerank_depths: Sequence[int] = (10, 20, 50),
    ):
        if latency_stat not in ("p50", "p95", "mean"):
            raise ValueError("latency_stat must be p50, p95 or mean")
        self.backend, self.index, self.encoder = backend, index, encoder
        self.qrels = qrels
        self.k, self.warmup, self.repeats = k, max(0, warmup), max(1, repeats)
        self.doc_stats, self.latency_stat = doc_stats, latency_stat
        self.baseline = baseline or PruningPolicy()
        self.reranker = reranker
        if any(int(d) < 1 for d in rerank_depths):
            raise ValueError("rerank_depths must be positive")
        self.rerank_depths = sorted({int(d) for d in rerank_depths}) if reranker is not None else []
        self.recall_depths = sorted({int(d) for d in (k, *recall_depths) if d >= 1})
        convs = list(conversations)
        if convs and isinstance(convs[0], ConversationTask):
            self.ids = [c.id for c in convs]
            inputs = [query_for(c, view) for c in convs]
        else:
            self.ids = list(ids) if ids is not None else [str(i) for i in range(len(convs))]
            inputs = convs
        #: what each query's re-ranker reads: the conversation the system sees
        self.conversations = inputs
        self.queries: list[TermMap]
        if query_maps is not None and all(i in query_maps for i in self.ids):
            self.queries = [query_maps[i] for i in self.ids]  # encoded already (same view)
        else:
            batch = encoder.encode_conversations(inputs, ids=self.ids, batch_size=batch_size)
            self.queries = list(batch.term_maps)

    def default_grid(self) -> dict[str, list[float]]:
        weights = np.concatenate([np.fromiter(q.values(), float) for q in self.queries if len(q)]
                                 or [np.zeros(1)])
        grid = {k: list(v) for k, v in DEFAULT_GRID.items()}
        mins = sorted({float(f"{np.quantile(weights, q):.3g}") for q in MIN_WEIGHT_QUANTILES})
        grid["min_weight"] = [m for m in mins if m > 0]
        return grid

    def _measure(self, policy: PruningPolicy, ann: AnnQuery | None = None):
        fp = self.encoder.fingerprint
        kw = {"fingerprint": fp} if ann is None else {"fingerprint": fp, "approximate": ann}
        pruned = [self.baseline.apply(policy.apply(q)) for q in self.queries]
        deepest = self.recall_depths[-1]
        run: dict[str, dict[str, float]] = {}
        deep: dict[str, list[str]] = {}  # ids at the deepest recall depth, best first
        samples: list[float] = []
        for qid, q in zip(self.ids, pruned):
            if not len(q):
                run[qid], deep[qid] = {}, []
                continue
            for _ in range(self.warmup):
                self.backend.search(self.index, q, k=self.k, **kw)
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                hits = self.backend.search(self.index, q, k=self.k, **kw)
                samples.append(elapsed_ms(t0))
            run[qid] = {h.id: float(h.score) for h in hits}
            # untimed: the latency above is the one at k
            deep[qid] = ([h.id for h in self.backend.search(self.index, q, k=deepest, **kw)]
                         if deepest > self.k else list(run[qid]))
        return pruned, run, deep, samples

    def _reranked(self, conversation: Any, query: TermMap, depth: int, k: int) -> tuple[list, float]:
        """The first `k` hits with the first `depth` re-ranked, and the re-rank's ms."""
        hits = self.backend.search(self.index, query, k=max(k, depth),
                                   fingerprint=self.encoder.fingerprint)
        t0 = time.perf_counter()
        head = self.reranker.rerank(conversation, query, hits[:depth])
        return [*head, *hits[depth:]][:k], elapsed_ms(t0)

    def _measure_rerank(self, depth: int):
        """`_measure` for re-ranking the unpruned query's first `depth` hits; the run's scores
        are ranks (re-ranked and first-stage scores are not on one scale)."""
        queries = [self.baseline.apply(q) for q in self.queries]
        deepest = self.recall_depths[-1]
        run: dict[str, dict[str, float]] = {}
        deep: dict[str, list[str]] = {}
        samples: list[float] = []
        stage: list[float] = []
        for qid, conv, q in zip(self.ids, self.conversations, queries):
            if not len(q):
                run[qid], deep[qid] = {}, []
                continue
            for _ in range(self.warmup):
                self._reranked(conv, q, depth, self.k)
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                hits, ms = self._reranked(conv, q, depth, self.k)
                samples.append(elapsed_ms(t0))
                stage.append(ms)
            run[qid] = {h.id: float(len(hits) - i) for i, h in enumerate(hits)}
            deep[qid] = ([h.id for h in self._reranked(conv, q, depth, deepest)[0]]
                         if deepest > self.k else list(run[qid]))
        return queries, run, deep, samples, latency_summary(stage)

    def _point(self, kind: str, threshold: float | None, policy: PruningPolicy,
               reference: tuple[dict, dict] | None, ann: AnnQuery | None = None
               ) -> tuple[TuningPoint, tuple[dict, dict]]:
        rerank_ms = None
        try:
            if kind == "rerank":
                pruned, run, deep, samples, rerank_ms = self._measure_rerank(int(threshold or 0))
            else:
                pruned, run, deep, samples = self._measure(policy, ann)
        except (TooManyClausesError, ValueError) as e:
            if isinstance(e, ValueError) and kind != "rerank":  # only a hit it cannot read
                raise
            return TuningPoint(kind, threshold, policy, latency_summary([]), float("nan"),
                               error=str(e), ann=ann), ({}, {})
        ref, ref_deep = reference if reference is not None else (run, deep)
        overlaps = [len(set(run.get(q, {})) & set(docs)) / len(docs)
                    for q, docs in ref.items() if docs]
        recall_at = {}
        for d in self.recall_depths:  # depths up to k from the timed run, deeper from the extra one
            mine, theirs = ((run, ref) if d <= self.k else (deep, ref_deep))
            got = [len(set(list(mine.get(q, []))[:d]) & set(list(docs)[:d])) / len(list(docs)[:d])
                   for q, docs in theirs.items() if docs]
            recall_at[d] = float(np.mean(got)) if got else 1.0
        qstats = TermStats.from_term_maps(pruned)
        metrics = {}
        rq = None
        if self.qrels:
            metrics = compute_metrics(self.qrels, run, (f"recall@{self.k}", "ndcg@3", "mrr@10"),
                                      query_ids=self.ids)
            rq = metrics.get(f"recall@{self.k}")
        return TuningPoint(
            kind, threshold, policy, latency_summary(samples),
            float(np.mean(overlaps)) if overlaps else 1.0, rq, metrics,
            flops(qstats, self.doc_stats) if self.doc_stats is not None else None,
            qstats.average_terms, ann=ann, recall_at=recall_at, rerank_ms=rerank_ms,
        ), (run, deep)

    def run(self, grid: Mapping[str, Sequence[float]] | None = None, *,
            kinds: Sequence[str] | None = None, ann: Sequence[AnnQuery] | None = None,
            progress: Say | None = None) -> TuningResult:
        """Measure the unpruned baseline, then every (kind, threshold) in `grid`, then every
        `AnnQuery` in `ann` (default: `DEFAULT_ANN_GRID` when the backend has an ANN built for
        the index, none otherwise; ``[]`` skips them)."""
        grid = dict(grid) if grid is not None else self.default_grid()
        if kinds is not None:
            unknown = set(kinds) - set(KINDS)
            if unknown:
                raise ValueError(f"unknown pruning kinds {sorted(unknown)}; choose from {KINDS}")
            grid = {k: v for k, v in grid.items() if k in kinds}
        base, reference = self._point("none", None, PruningPolicy(), None)
        if not base.ok:
            raise BackendError(
                f"the unpruned queries fail on this backend ({base.error}); pass "
                f"baseline=PruningPolicy(top_k=<clause limit>) to cap every query")
        points = [base]
        if progress:
            progress(base.label)
        for kind, thresholds in grid.items():
            for t in thresholds:
                pt, _ = self._point(kind, t, policy_for(kind, t), reference)
                points.append(pt)
                if progress:
                    progress(pt.label)
        ann_unusable = None
        if ann is None:
            built, ann_unusable = self._ann_built()
            ann = DEFAULT_ANN_GRID if built else ()
            if ann_unusable is not None:
                logger.warning("ANN unusable: %s", ann_unusable)
                if progress:
                    progress(f"ANN unusable: {ann_unusable}")
        for a in ann:
            pt, _ = self._point("ann", None, PruningPolicy(), reference, ann=a)
            points.append(pt)
            if progress:
                progress(pt.label)
        for depth in self.rerank_depths:
            pt, _ = self._point("rerank", float(depth), PruningPolicy(), reference)
            points.append(pt)
            if progress:
                progress(pt.label)
        for p in pareto_frontier([p for p in points if p.kind != "rerank"],
                                 latency=self.latency_stat):
            p.pareto = True
        name = type(self.backend).__name__
        return TuningResult(points, self.k, len(self.ids), name, self.index, self.latency_stat,
                            config={"warmup": self.warmup, "repeats": self.repeats,
                                    "baseline": self.baseline.describe(),
                                    "grid": {k: list(v) for k, v in grid.items()},
                                    "ann": [a.label for a in ann],
                                    "recall_depths": self.recall_depths,
                                    "rerank_depths": self.rerank_depths,
                                    **({"ann_unusable": ann_unusable} if ann_unusable else {})})

    def _ann_built(self) -> tuple[bool, str | None]:
        """Whether the backend has an ANN build of the index to sweep, and why not when the one
        it has cannot be used (e.g. a damaged ``ann.json``): the files are derived, so the sweep
        goes on with exact search instead of failing."""
        if not isinstance(self.backend, SupportsApproximateSearch):
            return False, None
        try:
            return self.backend.ann_info(self.index) is not None, None
        except BackendError as e:
            return False, str(e)


__all__ = ["DEFAULT_ANN_GRID", "DEFAULT_GRID", "MIN_WEIGHT_QUANTILES", "PruningTuner", "policy_for"]
