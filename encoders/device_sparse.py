"""Sparsification on the device: a batch's (batch, vocab) SPLADE activations -> CSR arrays.

Only the entries that can survive reach the host: weights >= Float.MIN_NORMAL (the zeros of
log(1 + ReLU) never leave the device) and, when ingest-time pruning is set, the entries that
pass its top-k / min_weight / max_ratio criteria. The device filters are *supersets* of the
exact ones (top-k keeps every tie of the k-th weight, thresholds are rounded down in float32);
the host then applies `PruningPolicy.apply_csr`, whose float64 comparisons and token tie-break
are exactly `PruningPolicy.apply`'s, so term maps equal the dense path's bit for bit in fp32.
`alpha_mass` needs the whole row's total, so with it only the zeros are dropped on the device.
Non-finite activations are always transferred, so the host raises `InvalidTermMapError` naming
the record and token.
"""

from __future__ import annotations

import numpy as np
import torch

from convsparse.pruning import PruningPolicy
from convsparse.termmap import FLOAT_MIN_NORMAL, CsrRows


def float32_at_most(x: float) -> float:
    """The largest float32 <= x (a threshold that can only keep more on the device)."""
    f = np.float32(x)
    if float(f) > x:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def keep_mask(activations: torch.Tensor, pruning: PruningPolicy | None = None) -> torch.Tensor:
    """Which entries of `activations` (batch, vocab; float32) leave the device."""
    keep = activations >= FLOAT_MIN_NORMAL
    if pruning is not None and pruning.alpha_mass is None:
        vocab = activations.shape[-1]
        if pruning.top_k is not None and pruning.top_k < vocab and activations.shape[0]:
            kth = activations.topk(pruning.top_k, dim=-1, sorted=True).values[:, -1:]
            keep &= activations >= kth
        if pruning.min_weight is not None:
            keep &= activations >= float32_at_most(pruning.min_weight)
        if pruning.max_ratio is not None:
            ratio = float32_at_most(pruning.max_ratio) * (1.0 - 2.0**-20)
            keep &= activations >= activations.amax(dim=-1, keepdim=True) * ratio
    return keep | ~torch.isfinite(activations)


def sparsify(activations: torch.Tensor, pruning: PruningPolicy | None = None) -> CsrRows:
    """CSR arrays (on the host) of the entries `keep_mask` selects; token ids ascend per row."""
    keep = keep_mask(activations, pruning)
    counts = keep.sum(dim=-1)
    cols = keep.nonzero()[:, 1].to(torch.int32)  # row-major, like the boolean gather below
    values = activations[keep]
    return CsrRows.from_counts(counts.cpu().numpy(), cols.cpu().numpy(), values.cpu().numpy())
