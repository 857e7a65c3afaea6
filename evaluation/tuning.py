"""`PruningTuner`: sweep query pruning thresholds and trade search latency against recall.

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

>>> from convsparse.evaluation.tuning import PruningTuner            # doctest: +SKIP
>>> result = PruningTuner(backend, "docs", encoder, conversations, qrels=qrels).run()
>>> best = result.recommend(max_recall_drop=0.02); print(best.policy_code())
PruningPolicy(top_k=32)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convsparse.benchmark_collections import ConversationTask
from convsparse.errors import BackendError, TooManyClausesError
from convsparse.evaluation.flops import TermStats, flops
from convsparse.evaluation.harness import query_for
from convsparse.evaluation.metrics import compute_metrics, latency_summary
from convsparse.evaluation.report import jsonable
from convsparse.integration.backends.base import SupportsApproximateSearch
from convsparse.integration.backends.embedded import AnnQuery
from convsparse.pruning import PruningPolicy
from convsparse.termmap import TermMap
from convsparse.timing import elapsed_ms

KINDS = ("top_k", "max_ratio", "min_weight", "alpha_mass")
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


@dataclass
class TuningPoint:
    """One pruning setting and what it costs and keeps."""

    kind: str
    threshold: float | None
    policy: PruningPolicy
    latency_ms: dict[str, float]
    recall_vs_unpruned: float
    recall_vs_qrels: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    flops: float | None = None
    avg_query_terms: float = 0.0
    pareto: bool = False
    error: str | None = None
    ann: AnnQuery | None = None  # kind "ann": the approximate-search knobs measured
    recall_at: dict[int, float] = field(default_factory=dict)  # depth -> recall vs unpruned
    rerank_ms: dict[str, float] | None = None  # kind "rerank": the re-rank stage alone

    @property
    def label(self) -> str:
        if self.kind == "none":
            return "unpruned"
        if self.ann is not None:
            return self.ann.label
        if self.kind == "rerank":
            return f"rerank depth {int(self.threshold or 0)}"
        t = self.threshold
        text = f"{int(t)}" if self.kind == "top_k" else f"{t:.3g}"
        return f"{self.kind}={text}"

    @property
    def ok(self) -> bool:
        return self.error is None

    def policy_code(self) -> str:
        """The Python expression to paste into code, e.g. ``PruningPolicy(top_k=32)``, or for
        an ANN point the ``approximate=`` argument, ``AnnQuery(query_cut=20, heap_factor=0.9)``."""
        if self.ann is not None:
            return f"AnnQuery(query_cut={self.ann.query_cut}, heap_factor={self.ann.heap_factor!r})"
        if self.kind == "rerank":
            return f"ConversationalSearch(index, reranker=reranker, rerank_depth={int(self.threshold or 0)})"
        args = ", ".join(f"{k}={v!r}" for k, v in self.policy.model_dump().items() if v is not None)
        return f"PruningPolicy({args})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "threshold": self.threshold, "label": self.label,
                "policy": self.policy.model_dump(exclude_none=True),
                "policy_code": self.policy_code(), "latency_ms": self.latency_ms,
                "recall_vs_unpruned": self.recall_vs_unpruned,
                "recall_vs_qrels": self.recall_vs_qrels, "metrics": self.metrics,
                "flops": self.flops, "avg_query_terms": self.avg_query_terms,
                "pareto": self.pareto, "error": self.error,
                "ann": None if self.ann is None else {"query_cut": self.ann.query_cut,
                                                      "heap_factor": self.ann.heap_factor},
                "recall_at": {str(d): r for d, r in self.recall_at.items()},
                "rerank_ms": self.rerank_ms}


def pareto_frontier(points: Sequence[TuningPoint], *, latency: str = "p50") -> list[TuningPoint]:
    """Points no other point beats on both latency (lower) and recall vs unpruned (higher),
    sorted by latency."""
    ok = [p for p in points if p.ok]
    front = []
    for p in ok:
        lp, rp = p.latency_ms[latency], p.recall_vs_unpruned
        dominated = any(
            (q.latency_ms[latency] <= lp and q.recall_vs_unpruned >= rp)
            and (q.latency_ms[latency] < lp or q.recall_vs_unpruned > rp)
            for q in ok if q is not p)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p.latency_ms[latency], -p.recall_vs_unpruned))


@dataclass
class Recommendation:
    point: TuningPoint | None
    reason: str

    def __bool__(self) -> bool:
        return self.point is not None


@dataclass
class TuningResult:
    points: list[TuningPoint]
    k: int
    n_queries: int
    backend: str
    index: str
    latency_stat: str = "p50"
    config: dict[str, Any] = field(default_factory=dict)
    plotted_points: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def baseline(self) -> TuningPoint:
        return next(p for p in self.points if p.kind == "none")

    def frontier(self) -> list[TuningPoint]:
        return [p for p in self.points if p.pareto]

    def recommend(self, *, budget_ms: float | None = None, max_recall_drop: float | None = None,
                  target_recall: float | None = None) -> Recommendation:
        """The setting to use.

        - ``budget_ms``: the highest recall (vs unpruned) whose latency (``latency_stat``,
          p50 by default; p95 if the tuner was told so) fits the budget;
        - ``max_recall_drop``: the fastest setting that loses at most that much recall;
        - ``target_recall``: the same as ``max_recall_drop=1 - target_recall`` (0.95: the
          fastest setting, pruning or ANN, keeping recall@k vs exact unpruned >= 0.95);
        - both: the fastest setting meeting both; neither: ``max_recall_drop=0.01``.
        """
        if target_recall is not None:
            if max_recall_drop is not None:
                raise ValueError("give max_recall_drop or target_recall, not both")
            max_recall_drop = 1.0 - target_recall
        if budget_ms is None and max_recall_drop is None:
            max_recall_drop = 0.01
        stat = self.latency_stat
        ok = [p for p in self.points if p.ok and p.kind != "rerank"]
        fits = [p for p in ok
                if (budget_ms is None or p.latency_ms[stat] <= budget_ms)
                and (max_recall_drop is None or 1.0 - p.recall_vs_unpruned <= max_recall_drop + 1e-9)]
        want = []
        if budget_ms is not None:
            want.append(f"{stat} latency <= {budget_ms:g} ms")
        if max_recall_drop is not None:
            want.append(f"recall@{self.k} drop <= {max_recall_drop:g}")
        if not fits:
            fastest = min(ok, key=lambda p: p.latency_ms[stat]) if ok else None
            hint = (f"; the fastest setting is {fastest.label} at {fastest.latency_ms[stat]:.2f} ms "
                    f"with recall {fastest.recall_vs_unpruned:.3f}") if fastest else ""
            return Recommendation(None, f"no setting meets {' and '.join(want)}{hint}")
        if max_recall_drop is not None:
            # fastest; among near-ties prefer fewer query terms, then higher recall
            best = min(fits, key=lambda p: (round(p.latency_ms[stat], 3), p.avg_query_terms,
                                            -p.recall_vs_unpruned))
        else:
            best = max(fits, key=lambda p: (p.recall_vs_unpruned, -p.latency_ms[stat]))
        return Recommendation(best, f"meets {' and '.join(want)}: {best.label} "
                                    f"({stat} {best.latency_ms[stat]:.2f} ms, recall@{self.k} "
                                    f"vs unpruned {best.recall_vs_unpruned:.3f})")

    # -- output ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "n_queries": self.n_queries, "backend": self.backend,
                "index": self.index, "latency_stat": self.latency_stat, "config": self.config,
                "points": [p.to_dict() for p in self.points]}

    def to_json(self) -> str:
        return json.dumps(jsonable(self.to_dict()), indent=2)

    def rows(self) -> list[dict[str, str]]:
        k = self.k
        out = []
        for p in self.points:
            out.append({
                "setting": p.label, "query terms": f"{p.avg_query_terms:.1f}",
                "p50 ms": _f(p.latency_ms.get("p50"), 2), "p95 ms": _f(p.latency_ms.get("p95"), 2),
                **({"re-rank p50 ms": _f(p.rerank_ms.get("p50"), 2)} if p.rerank_ms else {}),
                f"recall@{k} vs unpruned": _f(p.recall_vs_unpruned, 3),
                f"recall@{k} vs qrels": _f(p.recall_vs_qrels, 3),
                **{f"recall@{d} vs unpruned": _f(r, 3) for d, r in p.recall_at.items() if d != k},
                **({"MRR@10": _f(p.metrics.get("mrr@10"), 3),
                    "nDCG@3": _f(p.metrics.get("ndcg@3"), 3)} if p.metrics else {}),
                "FLOPS": _f(p.flops, 2), "Pareto": "*" if p.pareto else "",
                **({"error": p.error} if p.error else {}),
            })
        return out

    def to_markdown(self, recommendation: Recommendation | None = None) -> str:
        rows = self.rows()
        head = list(dict.fromkeys(h for r in rows for h in r))
        title = (f"### Query pruning sweep: {self.n_queries} conversations, `{self.backend}` "
                 f"index `{self.index}`, k={self.k}")
        lines = [title, "",
                 "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        lines += ["| " + " | ".join(r.get(h, "") for h in head) + " |" for r in rows]
        if recommendation is not None:
            lines += ["", f"Recommendation: {recommendation.reason}"]
            if recommendation.point is not None:
                lines += ["", "```python", recommendation.point.policy_code(), "```"]
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """PNG of latency (x) versus recall@k vs unpruned (y); labels and Pareto frontier."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        stat = self.latency_stat
        ok = [p for p in self.points if p.ok]
        fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
        colors = {"none": "black", "top_k": "tab:blue", "max_ratio": "tab:orange",
                  "min_weight": "tab:green", "alpha_mass": "tab:purple", "ann": "tab:brown"}
        self.plotted_points = []
        for kind in ("none", *KINDS, "ann"):
            pts = [p for p in ok if p.kind == kind]
            if not pts:
                continue
            ax.scatter([p.latency_ms[stat] for p in pts], [p.recall_vs_unpruned for p in pts],
                       s=36, color=colors[kind], label=kind if kind != "none" else "unpruned",
                       zorder=3)
            for p in pts:
                x, y = p.latency_ms[stat], p.recall_vs_unpruned
                ax.annotate(_short_label(p), (x, y),
                            textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=colors[kind])
                self.plotted_points.append((p.label, float(x), float(y)))
        front = pareto_frontier(ok, latency=stat)
        if front:
            ax.step([p.latency_ms[stat] for p in front], [p.recall_vs_unpruned for p in front],
                    where="post", color="red", linewidth=1, alpha=0.7, zorder=2)
            ax.scatter([p.latency_ms[stat] for p in front], [p.recall_vs_unpruned for p in front],
                       s=140, facecolors="none", edgecolors="red", linewidths=1.2,
                       label="Pareto frontier", zorder=4)
        ax.set_xlabel(f"search latency {stat} (ms)")
        ax.set_ylabel(f"recall@{self.k} vs unpruned results")
        ax.set_title(title or f"Query pruning: latency vs recall ({self.n_queries} conversations, "
                              f"{self.backend})", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)
        return path

    def save(self, prefix: str | Path, recommendation: Recommendation | None = None
             ) -> tuple[Path, Path, Path]:
        """Write ``<prefix>.json``, ``<prefix>.md`` and ``<prefix>.png``."""
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        js, md, png = (prefix.with_suffix(s) for s in (".json", ".md", ".png"))
        data = self.to_dict()
        if recommendation is not None:
            data["recommendation"] = {"reason": recommendation.reason, "point":
                                      recommendation.point.to_dict() if recommendation.point else None}
        js.write_text(json.dumps(jsonable(data), indent=2) + "\n", encoding="utf-8")
        md.write_text(self.to_markdown(recommendation), encoding="utf-8")
        self.plot(png)
        return js, md, png


_SHORT = {"top_k": "k", "max_ratio": "ratio", "min_weight": "w", "alpha_mass": "mass"}


def _short_label(p: TuningPoint) -> str:
    if p.ann is not None:
        return f"ann {p.ann.query_cut}/{p.ann.heap_factor:g}"
    return "unpruned" if p.kind == "none" else f"{_SHORT[p.kind]}={p.label.split('=')[-1]}"


def _f(v: float | None, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


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
            progress: Callable[[str], None] | None = None) -> TuningResult:
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
        if ann is None:
            built = (isinstance(self.backend, SupportsApproximateSearch)
                     and self.backend.ann_info(self.index) is not None)
            ann = DEFAULT_ANN_GRID if built else ()
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
                                    "rerank_depths": self.rerank_depths})


__all__ = ["DEFAULT_ANN_GRID", "DEFAULT_GRID", "KINDS", "PruningTuner", "Recommendation", "TuningPoint",
           "TuningResult", "pareto_frontier", "policy_for"]
