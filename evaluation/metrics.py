"""Effectiveness metrics through ``ranx`` (MRR@10, nDCG@3, Recall@10, Recall@100), TREC run
files through ranx's `Run`, and latency percentiles. No metric formula is hand-written here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

DEFAULT_METRICS: tuple[str, ...] = ("mrr@10", "ndcg@3", "recall@10", "recall@100")
#: qid -> {doc_id: score}
Run = dict[str, dict[str, float]]


def compute_metrics(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = DEFAULT_METRICS, *, query_ids: Iterable[str] | None = None,
) -> dict[str, float]:
    """Mean of each metric over the judged queries (``ranx``). A judged query missing from the
    run counts as zero; run entries for unjudged queries are ignored."""
    from ranx import Qrels, evaluate
    from ranx import Run as RanxRun

    ids = set(query_ids) if query_ids is not None else set(run)
    judged = {q: {d: int(r) for d, r in rel.items()} for q, rel in qrels.items()
              if q in ids and any(r > 0 for r in rel.values())}
    if not judged:
        return {m: float("nan") for m in metrics}
    ranx_run = {q: {d: float(s) for d, s in run.get(q, {}).items()} for q in judged}
    ranx_run = {q: docs for q, docs in ranx_run.items() if docs}
    if not ranx_run:
        return {m: 0.0 for m in metrics}
    scores = evaluate(Qrels(judged), RanxRun(ranx_run), list(metrics), make_comparable=True)
    if isinstance(scores, (int, float, np.floating)):
        scores = {metrics[0]: scores}
    return {m: float(scores[m]) for m in metrics}


def per_query_metric(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], metric: str,
) -> dict[str, float]:
    """One metric per judged query in the run (``ranx``), e.g. for recall-vs-judgments plots."""
    from ranx import Qrels, evaluate
    from ranx import Run as RanxRun

    judged = {q: dict(r) for q, r in qrels.items() if q in run and any(v > 0 for v in r.values())}
    sub = {q: dict(run[q]) for q in judged if run[q]}
    if not sub:
        return {q: 0.0 for q in judged}
    rr = RanxRun(sub)
    evaluate(Qrels(judged), rr, [metric], make_comparable=True)
    per = rr.scores[metric]
    return {q: float(per.get(q, 0.0)) for q in judged}



def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    if not samples_ms:
        return {"mean": float("nan"), "p50": float("nan"), "p95": float("nan")}
    a = np.asarray(samples_ms, dtype=float)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95))}



def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | Path, *,
                   tag: str = "run") -> Path:
    """`qid Q0 docid rank score tag`, one line per (query, document), best first (ranx's
    `Run.save`). Query ids must not contain whitespace (a TREC file could not hold them)."""
    from ranx import Run as RanxRun

    path = Path(path)
    for qid in run:
        if any(c.isspace() for c in qid):
            raise ValueError(f"query id {qid!r} contains whitespace; TREC runs cannot hold it")
    path.parent.mkdir(parents=True, exist_ok=True)
    ranx_run = RanxRun({q: dict(d) for q, d in run.items() if d}, name=tag)
    ranx_run.save(str(path), kind="trec")
    return path


def read_trec_run(path: str | Path) -> Run:
    """A TREC run file (`qid Q0 docid rank score tag`) as {qid: {doc: score}} (ranx's `Run`)."""
    from ranx import Run as RanxRun

    return {q: {d: float(s) for d, s in docs.items()}
            for q, docs in RanxRun.from_file(str(path), kind="trec").to_dict().items()}


__all__ = ["DEFAULT_METRICS", "Run", "compute_metrics", "latency_summary", "per_query_metric",
           "read_trec_run", "write_trec_run"]
