"""Candidate documents per turn and the typed batch the trainer feeds the losses.

Candidates per turn (`sample_candidates`): the positive passage (from qrels, or the teacher's
top-1 when a turn has no judgement) plus N negatives drawn from the teacher's ranking within a
rank window (default ranks 10-960, N = 16); in-batch negatives are added by the trainer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


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


@dataclass(frozen=True)
class CandidateBatch:
    """One training batch of B turns, laid out for the losses.

    The columns are every candidate of the batch concatenated (so the other turns' candidates
    are in-batch negatives); turn i's candidates are columns ``candidate_columns[i]``, its
    positive is column ``positive_index[i]`` (its first candidate).

    - ``documents``: column -> document id;
    - ``candidate_columns`` (B, n) long, ``candidate_mask`` (B, n) bool (False = padding);
    - ``teacher_scores`` (B, n): the teacher's score of each candidate (KL target);
    - ``positive_index`` (B,) long;
    - ``batch_mask`` (B, columns) bool: the columns InfoNCE may use for turn i (not other copies
      of its positives; only its own candidates without in-batch negatives).
    """

    documents: list[str]
    candidate_columns: torch.Tensor
    candidate_mask: torch.Tensor
    teacher_scores: torch.Tensor
    positive_index: torch.Tensor
    batch_mask: torch.Tensor

    @classmethod
    def build(
        cls, positives: Sequence[Sequence[str]], candidates: Sequence[Sequence[str]],
        teacher_scores: Sequence[Sequence[float]], *, in_batch_negatives: bool = True,
    ) -> CandidateBatch:
        """`positives[i]`: turn i's judged positives; `candidates[i]`: its positive, then its
        negatives; `teacher_scores[i]`: one score per candidate."""
        n = max(len(c) for c in candidates)
        cols = [d for c in candidates for d in c]
        b = len(candidates)
        cand_cols = torch.zeros(b, n, dtype=torch.long)
        cand_mask = torch.zeros(b, n, dtype=torch.bool)
        teacher = torch.zeros(b, n)
        pos_index = torch.zeros(b, dtype=torch.long)
        batch_mask = torch.ones(b, len(cols), dtype=torch.bool)
        off = 0
        for i, (pos, c, ts) in enumerate(zip(positives, candidates, teacher_scores)):
            cand_cols[i, : len(c)] = torch.arange(off, off + len(c))
            cand_mask[i, : len(c)] = True
            teacher[i, : len(ts)] = torch.tensor(ts)
            pos_index[i] = off
            banned = set(pos) | {c[0]}
            for j, d in enumerate(cols):  # other copies of this turn's positives are not negatives
                if d in banned and j != off:
                    batch_mask[i, j] = False
            if not in_batch_negatives:
                batch_mask[i, :off] = False
                batch_mask[i, off + len(c):] = False
            off += len(c)
        return cls(cols, cand_cols, cand_mask, teacher, pos_index, batch_mask)


__all__ = ["CandidateBatch", "sample_candidates", "teacher_score"]
