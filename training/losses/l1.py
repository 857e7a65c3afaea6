"""L1 regularisation of the query term maps.

Seed paper (arXiv 2606.04650) and DiSCo (arXiv 2410.14609) regularise the conversational query
side with L1 (the query is encoded once per search, so its number of terms drives latency;
SPLADE, Formal et al. arXiv 2107.05720, uses L1 or FLOPS per side):

    L1(Q) = (1 / B) * sum_i sum_j |w_ij|

for a batch of B query term maps w_i (activations are >= 0 after log(1 + ReLU), so |w| = w).
"""

from __future__ import annotations

import torch
from torch import nn


class L1Loss(nn.Module):
    def forward(self, term_maps: torch.Tensor) -> torch.Tensor:
        """term_maps: (batch, vocab) activations."""
        return term_maps.abs().sum(dim=-1).mean()
