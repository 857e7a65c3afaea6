"""The student teacher: the (sparse) student itself on each rewrite (dot products of term
maps)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from convsparse.training.teachers.base import Run, TeacherInputs, top_k_scores


def student_run(student, queries: Mapping[str, str], corpus: Mapping[str, str], *, k: int = 1000,
                doc_matrix: np.ndarray | None = None) -> Run:
    """`doc_matrix` (n_docs, vocab) reuses precomputed document activations."""
    doc_ids = list(corpus)
    if doc_matrix is None:
        doc_matrix = student.activations_for_ids(
            student.tokenize_documents([corpus[i] for i in doc_ids]))
    qids = list(queries)
    q = student.activations_for_ids(student.tokenize_documents([queries[i] for i in qids]))
    scores = q @ doc_matrix.T
    return {qid: top_k_scores(scores[i], doc_ids, k) for i, qid in enumerate(qids)}


def student_teacher(inputs: TeacherInputs) -> Run:
    if inputs.student is None:
        raise ValueError("the student teacher needs the student")
    return student_run(inputs.student, inputs.queries, inputs.corpus, k=inputs.k,
                       doc_matrix=inputs.doc_matrix)


__all__ = ["student_run", "student_teacher"]
