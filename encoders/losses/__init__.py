"""Distillation losses, one file each (formulas and citations in each module's docstring)."""

from convsparse.encoders.losses.distillation import DistillationLoss, LossParts
from convsparse.encoders.losses.flops import FlopsLoss
from convsparse.encoders.losses.info_nce import InfoNCELoss
from convsparse.encoders.losses.kl_divergence import KLDivergenceLoss
from convsparse.encoders.losses.l1 import L1Loss
from convsparse.encoders.losses.warmup import quadratic_warmup

__all__ = ["DistillationLoss", "FlopsLoss", "InfoNCELoss", "KLDivergenceLoss", "L1Loss",
           "LossParts", "quadratic_warmup"]
