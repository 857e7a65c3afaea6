"""The BM25 teacher: `convsparse.evaluation.bm25.BM25` (the evaluation baseline's BM25) on each
rewrite."""

from __future__ import annotations

from collections.abc import Mapping

from convsparse.evaluation.bm25 import BM25
from convsparse.training.teachers.base import Run, TeacherInputs


def bm25_run(queries: Mapping[str, str], corpus: Mapping[str, str], *, k: int = 1000) -> Run:
    """BM25 of each query text over the corpus; a query sharing no term with any document gets
    the first `k` documents at score 0 (a teacher run is never empty)."""
    bm25 = BM25(corpus)
    fallback = dict.fromkeys(list(corpus)[:k], 0.0)
    return {qid: bm25.search(text, k) or dict(fallback) for qid, text in queries.items()}


def bm25_teacher(inputs: TeacherInputs) -> Run:
    return bm25_run(inputs.queries, inputs.corpus, k=inputs.k)


__all__ = ["bm25_run", "bm25_teacher"]
