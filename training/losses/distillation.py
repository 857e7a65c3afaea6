"""The combined distillation objective of the seed paper (arXiv 2606.04650):

    Loss = (1 - w) * KL(p_teacher || p_student) + w * InfoNCE
           + lambda_q(t) * L1(query term maps) + lambda_d(t) * FLOPS(document term maps)

w = 0.1 by default; lambda_q(t), lambda_d(t) follow the quadratic warm-up in `warmup.py`.
With a frozen document encoder the FLOPS term has no gradient and is only reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convsparse.training.losses.flops import FlopsLoss
from convsparse.training.losses.info_nce import InfoNCELoss
from convsparse.training.losses.kl_divergence import KLDivergenceLoss
from convsparse.training.losses.l1 import L1Loss
from convsparse.training.losses.warmup import quadratic_warmup


@dataclass
class LossParts:
    total: torch.Tensor
    kl: float
    info_nce: float
    l1: float
    flops: float


class DistillationLoss(nn.Module):
    def __init__(
        self, *, infonce_weight: float = 0.1, kl_temperature: float = 1.0,
        infonce_temperature: float = 0.08, lambda_q: float = 0.0, lambda_d: float = 0.0,
        warmup_steps: int = 0,
    ):
        super().__init__()
        if not 0.0 <= infonce_weight <= 1.0:
            raise ValueError("infonce_weight must be in [0, 1]")
        self.w = infonce_weight
        self.kl = KLDivergenceLoss(kl_temperature)
        self.info_nce = InfoNCELoss(infonce_temperature)
        self.l1 = L1Loss()
        self.flops = FlopsLoss()
        self.lambda_q, self.lambda_d, self.warmup_steps = lambda_q, lambda_d, warmup_steps

    def forward(
        self, *, step: int, query_maps: torch.Tensor, doc_maps: torch.Tensor,
        candidate_scores: torch.Tensor, teacher_scores: torch.Tensor, candidate_mask: torch.Tensor,
        batch_scores: torch.Tensor, positive_index: torch.Tensor, batch_mask: torch.Tensor,
    ) -> LossParts:
        kl = self.kl(candidate_scores, teacher_scores, candidate_mask)
        total = (1 - self.w) * kl
        nce = torch.zeros((), device=kl.device)
        if self.w > 0:
            nce = self.info_nce(batch_scores, positive_index, batch_mask)
            total = total + self.w * nce
        l1 = self.l1(query_maps)
        lq = quadratic_warmup(self.lambda_q, step, self.warmup_steps)
        if lq > 0:
            total = total + lq * l1
        fl = self.flops(doc_maps)
        ld = quadratic_warmup(self.lambda_d, step, self.warmup_steps)
        if ld > 0 and doc_maps.requires_grad:
            total = total + ld * fl
        return LossParts(total, kl.item(), nce.item(), l1.item(), fl.item())
