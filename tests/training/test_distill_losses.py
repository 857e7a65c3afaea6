"""Each loss against values computed by hand."""

import math

import pytest
import torch

from convsparse.training.losses import (
    DistillationLoss,
    FlopsLoss,
    InfoNCELoss,
    KLDivergenceLoss,
    L1Loss,
    quadratic_warmup,
)


def test_kl_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 0.0]])  # uniform teacher
    # KL(u || softmax(s)) = sum 0.5 (log 0.5 - log p_i)
    p1 = math.exp(1) / (math.exp(1) + 1)
    expected = 0.5 * (math.log(0.5) - math.log(p1)) + 0.5 * (math.log(0.5) - math.log(1 - p1))
    assert KLDivergenceLoss()(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert KLDivergenceLoss()(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_temperature_and_mask():
    s = torch.tensor([[2.0, 0.0, 99.0]])
    t = torch.tensor([[0.0, 0.0, -5.0]])
    mask = torch.tensor([[True, True, False]])
    # masked third column is ignored; T = 2 halves the student logits -> [1, 0]
    p1 = math.exp(1) / (math.exp(1) + 1)
    expected = 0.5 * (math.log(0.5) - math.log(p1)) + 0.5 * (math.log(0.5) - math.log(1 - p1))
    assert KLDivergenceLoss(2.0)(s, t, mask).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_matches_hand_computation():
    scores = torch.tensor([[0.08, 0.0, 0.0], [0.0, 0.0, 0.16]])
    pos = torch.tensor([0, 2])
    # row 0: logits [1, 0, 0] -> -log(e / (e + 2)); row 1: [0, 0, 2] -> -log(e^2 / (e^2 + 2))
    e = math.e
    expected = (-math.log(e / (e + 2)) - math.log(e**2 / (e**2 + 2))) / 2
    assert InfoNCELoss()(scores, pos).item() == pytest.approx(expected, rel=1e-5)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    expected_masked = (-math.log(e / (e + 1)) - math.log(e**2 / (e**2 + 2))) / 2
    assert InfoNCELoss()(scores, pos, mask).item() == pytest.approx(expected_masked, rel=1e-5)


def test_l1_and_flops():
    w = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert L1Loss()(w).item() == pytest.approx((3 + 3) / 2)
    # column means [2, 0, 1] -> 4 + 0 + 1
    assert FlopsLoss()(w).item() == pytest.approx(5.0)


def test_quadratic_warmup():
    assert quadratic_warmup(1.0, 0, 10) == 0.0
    assert quadratic_warmup(1.0, 5, 10) == pytest.approx(0.25)
    assert quadratic_warmup(2.0, 20, 10) == 2.0
    assert quadratic_warmup(2.0, 3, 0) == 2.0


def test_combined_loss_weights():
    q = torch.tensor([[1.0, 1.0]], requires_grad=True)
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scores = q @ d.T
    loss = DistillationLoss(infonce_weight=0.1, lambda_q=0.5, warmup_steps=0)
    parts = loss(step=1, query_maps=q, doc_maps=d, candidate_scores=scores,
                 teacher_scores=torch.tensor([[0.0, 0.0]]), candidate_mask=torch.ones(1, 2, dtype=torch.bool),
                 batch_scores=scores, positive_index=torch.tensor([0]),
                 batch_mask=torch.ones(1, 2, dtype=torch.bool))
    expected = 0.9 * 0.0 + 0.1 * math.log(2) + 0.5 * 2.0
    assert parts.total.item() == pytest.approx(expected, rel=1e-5)
    assert parts.flops == pytest.approx(0.5)
    with pytest.raises(ValueError):
        DistillationLoss(infonce_weight=1.5)
