"""Loss functions: weighted cross-entropy plus soft Dice, both restricted to valid pixels."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Total = Callable[[torch.Tensor], torch.Tensor] | None


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    valid: torch.Tensor,
    total: Total = None,
) -> torch.Tensor:
    """Mean over valid pixels of ``weight * CE(logits, target)``.

    Parameters
    ----------
    logits : Tensor of shape (N, K, *spatial)
    target : Tensor of int64, shape (N, *spatial)
    weight : Tensor of float, shape (N, *spatial)
    valid : Tensor of bool, shape (N, *spatial)
        Pixels where ``valid`` is False contribute nothing, whatever their logits.
    total : callable, optional
        Applied to the sums over the batch: data-parallel training sums them over the
        processes (:meth:`.ddp.Ranks.total`), so the loss is that of the global batch.
    """
    total = total or _identity
    ce = F.cross_entropy(logits, target, reduction="none")
    w = weight * valid
    return total((ce * w).sum()) / total(w.sum()).clamp_min(1e-6)


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    eps: float = 1.0,
    total: Total = None,
) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes (1..K-1), on valid pixels.

    Notes
    -----
    With softmax probabilities ``p_k`` and one-hot targets ``g_k`` over valid pixels,
    ``Dice_k = (2 * sum(p_k * g_k) + eps) / (sum(p_k) + sum(g_k) + eps)``.
    """
    k = logits.shape[1]
    probs = logits.softmax(1)
    onehot = F.one_hot(target, k).movedim(-1, 1).to(probs.dtype)
    mask = valid.unsqueeze(1).to(probs.dtype)
    dims = (0, *range(2, logits.ndim))
    total = total or _identity
    inter = total((probs * onehot * mask).sum(dims))
    denom = total((probs * mask).sum(dims) + (onehot * mask).sum(dims))
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean() if k > 1 else 1 - dice.mean()


def combined_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    valid: torch.Tensor,
    dice_weight: float = 1.0,
    total: Total = None,
) -> torch.Tensor:
    """Weighted cross-entropy + ``dice_weight`` * soft Dice loss (``total``: as above)."""
    loss = weighted_cross_entropy(logits, target, weight, valid, total)
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(logits, target, valid, total=total)
    return loss


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x
