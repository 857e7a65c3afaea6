"""What a teacher is: a function from `TeacherInputs` to a run ({qid: {doc_id: score}})."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convsparse.evaluation.metrics import Run


@dataclass(frozen=True)
class TeacherInputs:
    """`queries` ({task id: rewrite}) and `corpus` ({doc id: `document_text`}); `k` hits per
    query. `student` / `doc_matrix` ((n_docs, vocab) activations) for the student teacher;
    `conversations` ({task id: turns}) and `generator` (a `training.generators.Generator`; None =
    built from `CONVSPARSE_LLM_*`) for the `llm` teacher."""

    queries: Mapping[str, str]
    corpus: Mapping[str, str]
    k: int = 1000
    student: Any = None
    doc_matrix: np.ndarray | None = None
    conversations: Mapping[str, Sequence[Any]] | None = None
    generator: Any = None


Teacher = Callable[[TeacherInputs], Run]


def top_k_scores(scores: np.ndarray, doc_ids: Sequence[str], k: int) -> dict[str, float]:
    """The `k` best-scoring documents, best first (ties in input order)."""
    k = min(k, len(doc_ids))
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return {doc_ids[i]: float(scores[i]) for i in idx}


__all__ = ["Run", "Teacher", "TeacherInputs", "top_k_scores"]
