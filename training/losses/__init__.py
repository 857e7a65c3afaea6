"""Distillation losses, one file each (formulas and citations in each module's docstring)."""

from convsparse.training.losses.distillation import DistillationLoss, LossParts
from convsparse.training.losses.flops import FlopsLoss
from convsparse.training.losses.info_nce import InfoNCELoss
from convsparse.training.losses.kl_divergence import KLDivergenceLoss
from convsparse.training.losses.l1 import L1Loss
from convsparse.training.losses.term_space import TermSpaceLoss
from convsparse.training.losses.warmup import quadratic_warmup

__all__ = ["DistillationLoss", "FlopsLoss", "InfoNCELoss", "KLDivergenceLoss", "L1Loss",
           "LossParts", "TermSpaceLoss", "quadratic_warmup"]
