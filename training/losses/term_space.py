"""Term-space loss: pull the student's query term map towards the teacher's term map of the
rewrite, in the vocabulary space itself (no corpus, no candidates needed):

    L_term = (1 / B) * sum_i || q_i - t_i ||_2^2

where q_i is the student's term map of conversation i and t_i the frozen base's term map of its
rewrite (or of the annotators' search queries). It is the term-level counterpart of the KL over
candidate scores (seed paper, arXiv 2606.04650; DiSCo, arXiv 2410.14609, which distils the
rewrite's representation directly), and the only signal a conversation without judgments or a
local corpus (TREC CAsT) can give.
"""

from __future__ import annotations

import torch
from torch import nn


class TermSpaceLoss(nn.Module):
    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """student, teacher: (batch, vocab) term maps."""
        return ((student - teacher.to(student.dtype)) ** 2).sum(-1).mean()


__all__ = ["TermSpaceLoss"]
