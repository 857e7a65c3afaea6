"""The tuner's result: `TuningPoint` (one measured setting), `TuningResult` (every point, the
Pareto frontier, `recommend`) and its outputs (JSON, markdown table, the PNG of `.plot`).

A point is a pruning setting (kind ``top_k``, ``max_ratio``, ``min_weight``, ``alpha_mass``), the
unpruned baseline (``none``), an ANN setting (``ann``) or a re-rank depth (``rerank``). Re-rank
points reorder on purpose, so their recall vs the unpruned results says how much they move, not
what they lose: they are left out of the Pareto frontier and `recommend`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convsparse.evaluation.report import jsonable
from convsparse.pruning import PruningPolicy

if TYPE_CHECKING:
    from convsparse.integration.backends.embedded import AnnQuery

#: the pruning kinds a sweep can vary (`PruningPolicy`'s fields)
KINDS = ("top_k", "max_ratio", "min_weight", "alpha_mass")


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
        if self.config.get("ann_unusable"):
            lines += ["", f"ANN unusable: {self.config['ann_unusable']}"]
        if recommendation is not None:
            lines += ["", f"Recommendation: {recommendation.reason}"]
            if recommendation.point is not None:
                lines += ["", "```python", recommendation.point.policy_code(), "```"]
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """PNG of latency (x) versus recall@k vs unpruned (y); labels and Pareto frontier
        (`convsparse.evaluation.tuning.plot.plot_tuning`)."""
        from convsparse.evaluation.tuning.plot import plot_tuning

        return plot_tuning(self, path, title=title)

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


def _f(v: float | None, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"



__all__ = ["KINDS", "Recommendation", "TuningPoint", "TuningResult", "pareto_frontier"]
