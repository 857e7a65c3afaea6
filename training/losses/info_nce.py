"""Contrastive InfoNCE over the positive, sampled negatives and in-batch negatives.

Seed paper (arXiv 2606.04650): the KL term is mixed with InfoNCE (van den Oord et al.,
arXiv 1807.03748) with weight w = 0.1 and temperature tau = 0.08. For turn i with positive d_i+,

    L_i = -log( exp(s(q_i, d_i+) / tau) / sum_{d in C_i} exp(s(q_i, d) / tau) )

where C_i = {d_i+} + the turn's own sampled negatives + every candidate of the other turns in the
batch (in-batch negatives), averaged over turns. The caller passes one score matrix against
*all* candidate documents of the batch (batch, n_docs), the column of each turn's positive, and
a mask of columns to ignore (padding, and other turns' copies of this turn's positives).

sentence-transformers' `SparseMultipleNegativesRankingLoss` is the same formula (scale = 1/tau),
but it wraps a `SparseEncoder` and encodes texts itself; ours works on precomputed scores.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class InfoNCELoss(nn.Module):
    def __init__(self, temperature: float = 0.08):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = temperature

    def forward(
        self, scores: torch.Tensor, positive_index: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """scores: (batch, n_docs); positive_index: (batch,) long; mask: bool, True = use."""
        logits = scores / self.temperature
        if mask is not None:
            keep = mask.clone()
            keep[torch.arange(len(positive_index)), positive_index] = True
            logits = logits.masked_fill(~keep, float("-inf"))
        return F.cross_entropy(logits, positive_index)
