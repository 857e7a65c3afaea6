"""The FLOPS regulariser (Paria et al., arXiv 2004.05665; SPLADE, Formal et al. arXiv 2107.05720):

    FLOPS(W) = sum_j ( (1 / B) * sum_i w_ij )^2

over a batch of B term maps w_i (vocabulary index j): a smooth proxy of the expected number of
posting-list multiplications, which the seed paper (arXiv 2606.04650) applies to the document side.

This is sentence-transformers' `FlopsLoss.compute_loss_from_embeddings` (without its optional
l0 threshold), which we call. `FlopsLoss.__init__` wants a `SparseEncoder`, which we do not have
(our student is a plain masked-LM + pooling), but that method only uses the embeddings, so we
construct it with `model=None`.
"""

from __future__ import annotations

import torch
from sentence_transformers.sparse_encoder.losses import FlopsLoss as _STFlops
from torch import nn


class FlopsLoss(nn.Module):
    def __init__(self):
        super().__init__()
        self._st = _STFlops(model=None)

    def forward(self, term_maps: torch.Tensor) -> torch.Tensor:
        """term_maps: (batch, vocab) activations."""
        return self._st.compute_loss_from_embeddings(term_maps)
