"""Quadratic warm-up of the regularisation weights (SPLADE, Formal et al. arXiv 2107.05720,
as used by DiSCo arXiv 2410.14609 and the seed paper arXiv 2606.04650):

    lambda(t) = lambda * min(1, t / T_warmup)^2

so the sparsity pressure starts at 0 and reaches its full value after T_warmup steps.
"""

from __future__ import annotations


def quadratic_warmup(weight: float, step: int, warmup_steps: int) -> float:
    if warmup_steps <= 0:
        return float(weight)
    return float(weight) * min(1.0, step / warmup_steps) ** 2
