"""The FLOPS regulariser (Paria et al., arXiv 2004.05665; SPLADE, Formal et al. arXiv 2107.05720):

    FLOPS(W) = sum_j ( (1 / B) * sum_i w_ij )^2

over a batch of B term maps w_i (vocabulary index j): a smooth proxy of the expected number of
posting-list multiplications, which the seed paper (arXiv 2606.04650) applies to the document side.

This is exactly sentence-transformers' `FlopsLoss.compute_loss_from_embeddings` (without its
optional l0 threshold); we call it when it is importable. `FlopsLoss.__init__` wants a
`SparseEncoder`, which we do not have (our student is a plain masked-LM + pooling), but that
method only uses the embeddings, so we construct it with `model=None`.
"""

from __future__ import annotations

import torch
from torch import nn


def _flops(term_maps: torch.Tensor) -> torch.Tensor:
    return torch.sum(torch.mean(term_maps, dim=0) ** 2)


class FlopsLoss(nn.Module):
    def __init__(self):
        super().__init__()
        try:
            from sentence_transformers.sparse_encoder.losses import FlopsLoss as _STFlops

            self._st = _STFlops(model=None)
        except Exception:  # pragma: no cover - older sentence-transformers
            self._st = None

    def forward(self, term_maps: torch.Tensor) -> torch.Tensor:
        """term_maps: (batch, vocab) activations."""
        if self._st is not None:
            return self._st.compute_loss_from_embeddings(term_maps)
        return _flops(term_maps)
