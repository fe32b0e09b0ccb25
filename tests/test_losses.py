"""Losses: weighted cross-entropy + soft Dice, with ignored pixels that truly do not count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_unet.training.losses import combined_loss, soft_dice_loss, weighted_cross_entropy


def _batch(ndim: int = 2, k: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    spatial = (12, 10) if ndim == 2 else (4, 6, 5)
    logits = torch.randn(2, k, *spatial, generator=g)
    target = torch.randint(0, k, (2, *spatial), generator=g)
    weight = torch.rand(2, *spatial, generator=g) + 0.5
    valid = torch.rand(2, *spatial, generator=g) < 0.6
    return logits, target, weight, valid


LOSSES = {
    "weighted_cross_entropy": lambda lo, t, w, v: weighted_cross_entropy(lo, t, w, v),
    "soft_dice_loss": lambda lo, t, w, v: soft_dice_loss(lo, t, v),
    "combined_loss": lambda lo, t, w, v: combined_loss(lo, t, w, v, dice_weight=0.7),
}


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("name", list(LOSSES))
def test_ignored_pixels_do_not_change_the_loss_nor_get_gradient(name, ndim):
    loss_fn = LOSSES[name]
    logits, target, weight, valid = _batch(ndim)
    logits.requires_grad_(True)
    loss = loss_fn(logits, target, weight, valid)
    loss.backward()
    invalid = ~valid.unsqueeze(1).expand_as(logits)
    assert logits.grad[invalid].abs().max() == 0
    assert logits.grad[~invalid].abs().max() > 0

    g = torch.Generator().manual_seed(1)
    other_logits = torch.where(invalid, 50 * torch.randn(logits.shape, generator=g), logits)
    other_target = torch.where(valid, target, (target + 1) % logits.shape[1])
    other_weight = torch.where(valid, weight, 100.0)
    changed = loss_fn(other_logits.detach(), other_target, other_weight, valid)
    torch.testing.assert_close(changed, loss.detach(), rtol=1e-6, atol=1e-7)


def test_weighted_cross_entropy_matches_torch_on_valid_pixels():
    logits, target, weight, valid = _batch()
    ones = torch.ones_like(weight)
    all_valid = torch.ones_like(valid)
    torch.testing.assert_close(
        weighted_cross_entropy(logits, target, ones, all_valid), F.cross_entropy(logits, target)
    )
    ce = F.cross_entropy(logits, target, reduction="none")
    expected = (ce * weight)[valid].sum() / weight[valid].sum()
    torch.testing.assert_close(weighted_cross_entropy(logits, target, weight, valid), expected)


def test_soft_dice_matches_a_hand_computed_value():
    # two pixels, two classes, both valid; probabilities of class 1: 0.5 and 0.5
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    # Dice_1 = (2 * 0.5 + eps) / (1.0 + 1 + eps) with eps = 1 -> 2 / 3
    torch.testing.assert_close(soft_dice_loss(logits, target, valid), torch.tensor(1 / 3))
    torch.testing.assert_close(soft_dice_loss(logits, target, valid, eps=0.0), torch.tensor(0.5))


@pytest.mark.parametrize("ndim", [2, 3])
def test_perfect_prediction_gives_zero_loss(ndim):
    _, target, weight, valid = _batch(ndim)
    logits = 40.0 * F.one_hot(target, 3).movedim(-1, 1).float()
    assert float(soft_dice_loss(logits, target, valid)) == pytest.approx(0.0, abs=1e-6)
    assert float(weighted_cross_entropy(logits, target, weight, valid)) == pytest.approx(
        0.0, abs=1e-6
    )
    assert float(combined_loss(logits, target, weight, valid)) == pytest.approx(0.0, abs=1e-6)
    # and the wrong prediction is far from zero
    wrong = 40.0 * F.one_hot((target + 1) % 3, 3).movedim(-1, 1).float()
    assert float(soft_dice_loss(wrong, target, valid)) > 0.9


def test_nothing_valid_gives_a_finite_zero_loss():
    logits, target, weight, valid = _batch()
    none = torch.zeros_like(valid)
    logits.requires_grad_(True)
    loss = combined_loss(logits, target, weight, none)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) == 0.0
    assert logits.grad.abs().max() == 0
