"""KL divergence between the teacher's and the student's distributions over candidates.

Seed paper (arXiv 2606.04650) and DiSCo (Lupart et al., arXiv 2410.14609, eq. 3): for one turn
with candidates d_1..d_n,

    p_t(i) = softmax_i(s_t(q, d_i) / T)        (teacher scores, e.g. on the rewrite)
    p_s(i) = softmax_i(s_s(q, d_i) / T)        (student scores q . d on the conversation)
    KL(p_t || p_s) = sum_i p_t(i) * (log p_t(i) - log p_s(i))

averaged over the batch, temperature T = 1 by default. Candidates that are padding carry
`mask = False` and get probability 0 on both sides.

sentence-transformers has `SparseDistillKLDivLoss`, but it wraps a `SparseEncoder` and encodes
(query, positive, negatives) texts itself in `forward`; here documents are precomputed and frozen
(the seed's setting) and candidate lists vary per turn, so the module takes score matrices. Its
math is the same KL; unlike sentence-transformers we do not multiply by T^2 (T = 1 by default).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class KLDivergenceLoss(nn.Module):
    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = temperature

    def forward(
        self, student_scores: torch.Tensor, teacher_scores: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """student_scores, teacher_scores: (batch, n_candidates); mask: bool, True = real."""
        s = student_scores / self.temperature
        t = teacher_scores.to(s.dtype) / self.temperature
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
            t = t.masked_fill(~mask, float("-inf"))
        log_p_s = F.log_softmax(s, dim=-1)
        log_p_t = F.log_softmax(t, dim=-1)
        p_t = log_p_t.exp()
        terms = p_t * (log_p_t - log_p_s)
        terms = torch.where(p_t > 0, terms, torch.zeros_like(terms))  # 0 * log 0 = 0
        return terms.sum(dim=-1).mean()
