"""Teacher ranking labels over the first stage's candidates, generated once and stored.

For each training turn: the first stage (the student on the raw conversation) retrieves its top
`depth` passages; the teacher (the base encoder on a better query: the annotators' search
queries, else the LLM rewrite, as in the student's distillation) scores each of them. A label
set is a JSONL file, one turn per line:
``{"task_id", "candidates": [doc ids, first-stage order], "first_stage": [...],
"teacher": [...] | null, "positives": [judged relevant doc ids], "query": {term: weight}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from convsparse.benchmark_collections import ConversationTask
from convsparse.termmap import TermMap


@dataclass
class RerankLabel:
    task_id: str
    candidates: list[str]
    first_stage: list[float]
    teacher: list[float] | None
    positives: list[str] = field(default_factory=list)
    query: dict[str, float] = field(default_factory=dict)


def term_maps_to_csr(maps: Sequence[Mapping[str, float]], vocabulary: Sequence[str]) -> sp.csr_matrix:
    """Rows of term maps over `vocabulary` (unknown terms are dropped)."""
    index = {t: i for i, t in enumerate(vocabulary)}
    rows, cols, vals = [], [], []
    for r, tm in enumerate(maps):
        for tok, w in tm.items():
            c = index.get(tok)
            if c is not None:
                rows.append(r)
                cols.append(c)
                vals.append(w)
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(maps), len(vocabulary)), dtype=np.float32)


def build_labels(
    tasks: Sequence[ConversationTask], queries: Sequence[TermMap], documents: sp.csr_matrix,
    doc_ids: Sequence[str], vocabulary: Sequence[str], *, depth: int,
    teacher_queries: sp.csr_matrix | None, qrels: Mapping[str, Mapping[str, int]],
) -> list[RerankLabel]:
    """One label per task: the first stage's `depth` best passages for `queries` (the student's
    term maps) over `documents` (CSR rows in `doc_ids` order), and the teacher's dot products
    (`teacher_queries`, one CSR row per task; an empty row means no teacher for that turn)."""
    from convsparse.training.anchored import top_candidates

    q = term_maps_to_csr(queries, vocabulary)
    top, first = top_candidates(documents, q, depth)
    out = []
    for i, task in enumerate(tasks):
        teacher = None
        if teacher_queries is not None and teacher_queries[i].nnz:
            teacher = np.asarray(documents[top[i]] @ teacher_queries[i].T.toarray()).ravel()
        judged = qrels.get(task.id, {})
        out.append(RerankLabel(
            task_id=task.id, candidates=[doc_ids[j] for j in top[i]],
            first_stage=[float(x) for x in first[i]],
            teacher=None if teacher is None else [float(x) for x in teacher],
            positives=[d for d, rel in judged.items() if rel > 0],
            query={t: float(w) for t, w in queries[i].items()}))
    return out


def write_labels(labels: Sequence[RerankLabel], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for label in labels:
            f.write(json.dumps(asdict(label), ensure_ascii=False) + "\n")
    tmp.replace(path)  # a crash never leaves half a label file behind
    return path


def read_labels(path: str | Path) -> list[RerankLabel]:
    with Path(path).open(encoding="utf-8") as f:
        return [RerankLabel(**json.loads(line)) for line in f if line.strip()]


__all__ = ["RerankLabel", "build_labels", "read_labels", "term_maps_to_csr", "write_labels"]
