"""SPLADE pooling: masked-LM logits -> log(1 + ReLU) -> max over the attended tokens.

Formal, Lassance, Piwowarski, Clinchant, "SPLADE v2" (arXiv 2109.10086), eq. 2 with max pooling.
"""

from __future__ import annotations

import torch
from torch import nn

POOLING_NAME = "splade-max-log1p-relu"


class SpladeMaxPooling(nn.Module):
    """(batch, tokens, vocab) logits + (batch, tokens) mask -> (batch, vocab) activations."""

    def forward(self, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # log1p(relu(x)) is non-decreasing, so it commutes with the max over tokens: taking the
        # max first gives bit-identical activations (and the same gradients) while the
        # transcendental runs on (batch, vocab), not (batch, tokens, vocab). A padded position
        # becomes 0, which relu would have made of any non-positive logit anyway.
        pooled = logits.masked_fill(attention_mask.unsqueeze(-1) == 0, 0).amax(dim=1)
        return torch.log1p(torch.relu(pooled))


class SpladeModel(nn.Module):
    """A masked-LM with SPLADE pooling on top: the graph we run and export, so a runtime
    returns one vocabulary-sized vector per input, never tokens x vocabulary logits."""

    def __init__(self, mlm: nn.Module):
        super().__init__()
        self.mlm = mlm
        self.pooling = SpladeMaxPooling()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
        return self.pooling(logits, attention_mask)
