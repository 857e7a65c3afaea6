"""Evaluation results: one `SystemResult` per system and query view, an `EvaluationReport`
that writes JSON and a markdown table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convsparse.evaluation.metrics import DEFAULT_METRICS, Run
from convsparse.termmap import TermMap


@dataclass
class SystemResult:
    """One system (retriever x query view) evaluated on one set of conversation turns."""

    system: str
    view: str
    n_queries: int
    metrics: dict[str, float]
    latency_ms: dict[str, float]
    flops: float | None = None
    avg_query_terms: float | None = None
    avg_doc_terms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    run: Run = field(default_factory=dict, repr=False)

    def to_dict(self, *, include_run: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not include_run:
            d.pop("run")
        return d


@dataclass
class EvaluationReport:
    collection: str
    n_passages: int
    results: list[SystemResult]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    #: unpruned student query term maps by view and task id (not serialised), for reuse
    query_maps: dict[str, dict[str, TermMap]] = field(default_factory=dict, repr=False)

    def result(self, system: str, view: str) -> SystemResult:
        for r in self.results:
            if r.system == system and r.view == view:
                return r
        raise KeyError(f"no result for {system!r} on the {view!r} view")

    def to_dict(self, *, include_runs: bool = False) -> dict[str, Any]:
        return {
            "collection": self.collection, "n_passages": self.n_passages,
            "metrics": list(self.metrics), "config": self.config, "notes": self.notes,
            "results": [r.to_dict(include_run=include_runs) for r in self.results],
        }

    def to_json(self, *, include_runs: bool = False) -> str:
        return json.dumps(jsonable(self.to_dict(include_runs=include_runs)), indent=2)

    def to_markdown(self) -> str:
        head = ["System", "Query view", "Turns", *[metric_label(m) for m in self.metrics],
                "FLOPS", "Query terms", "Doc terms", "Latency p50 ms", "Latency p95 ms"]
        lines = [f"### Retrieval on `{self.collection}` ({self.n_passages} passages)", "",
                 "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        for r in self.results:
            cells = [r.system, r.view, str(r.n_queries),
                     *[fmt(r.metrics.get(m), 3) for m in self.metrics],
                     fmt(r.flops, 2), fmt(r.avg_query_terms, 1), fmt(r.avg_doc_terms, 1),
                     fmt(r.latency_ms.get("p50"), 2), fmt(r.latency_ms.get("p95"), 2)]
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def save(self, prefix: str | Path) -> tuple[Path, Path]:
        """Write ``<prefix>.json`` and ``<prefix>.md``; returns both paths."""
        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        js, md = prefix.with_suffix(".json"), prefix.with_suffix(".md")
        js.write_text(self.to_json() + "\n", encoding="utf-8")
        md.write_text(self.to_markdown(), encoding="utf-8")
        return js, md


def metric_label(m: str) -> str:
    name, _, k = m.partition("@")
    pretty = {"mrr": "MRR", "ndcg": "nDCG", "recall": "Recall", "precision": "P", "map": "MAP"}
    return f"{pretty.get(name, name)}@{k}" if k else pretty.get(name, name)


def fmt(v: float | None, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj



__all__ = ["EvaluationReport", "SystemResult", "fmt", "jsonable", "metric_label"]
