"""Training losses of the original VideoLISA (docs/original.md §4.1): CE x 1.0 + BCE x 2.0 + DICE x 0.5."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from videolisa.constants import IGNORE_INDEX

# The original divides by (num_masks + 1e-8) twice (per sample and per batch); kept for exact losses.
_NUM_MASKS_EPS = 1e-8


def language_model_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: ``logits [B, L, V]`` at t predict ``labels [B, L]`` at t+1; the mean over
    non-ignored targets (``IGNORE_INDEX``), in float32."""
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)


def sigmoid_bce_per_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of BCE-with-logits for each mask: ``[N, H, W]`` x2 -> ``[N]``."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return loss.flatten(1).mean(1)


def dice_per_mask(
    logits: torch.Tensor, targets: torch.Tensor, scale: float = 1000.0, eps: float = 1e-6
) -> torch.Tensor:
    """Original DICE loss per mask: ``1 - (2 sum(p/s * t) + eps) / (sum(p/s) + sum(t/s) + eps)`` with
    ``p = sigmoid(logits)``; ``[N, H, W]`` x2 -> ``[N]``."""
    probs = logits.float().sigmoid().flatten(1)
    targets = targets.float().flatten(1)
    numerator = 2 * (probs / scale * targets).sum(-1)
    denominator = (probs / scale).sum(-1) + (targets / scale).sum(-1)
    return 1 - (numerator + eps) / (denominator + eps)


@dataclass
class MaskLosses:
    """Unweighted mask losses averaged over all masks of the batch, and the number of masks."""

    bce: torch.Tensor
    dice: torch.Tensor
    num_masks: int


def mask_losses(
    predictions: list[torch.Tensor], targets: list[torch.Tensor], dice_scale: float = 1000.0, dice_eps: float = 1e-6
) -> MaskLosses:
    """BCE and DICE averaged over every mask (frames x targets) of the batch, as the original does.

    Args:
        predictions: per sample, mask logits ``[N_i, H_i, W_i]`` at the ground-truth resolution.
        targets: per sample, 0/1 masks of the same shape.

    Per sample i the loss sums are divided by ``N_i + 1e-8`` and multiplied by ``N_i``; the batch total is
    divided by ``sum N_i + 1e-8``. Samples without masks contribute nothing.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"got {len(predictions)} prediction groups for {len(targets)} target groups")
    bce_total = dice_total = None
    num_masks = 0
    for prediction, target in zip(predictions, targets):
        if prediction.shape != target.shape:
            raise ValueError(f"mask logits {tuple(prediction.shape)} and targets {tuple(target.shape)} differ in shape")
        count = prediction.shape[0]
        if count == 0:
            continue
        bce = sigmoid_bce_per_mask(prediction, target).sum() / (count + _NUM_MASKS_EPS) * count
        dice = dice_per_mask(prediction, target, dice_scale, dice_eps).sum() / (count + _NUM_MASKS_EPS) * count
        bce_total = bce if bce_total is None else bce_total + bce
        dice_total = dice if dice_total is None else dice_total + dice
        num_masks += count
    if bce_total is None:
        zero = predictions[0].new_zeros(()).float() if predictions else torch.zeros(())
        return MaskLosses(bce=zero, dice=zero, num_masks=0)
    return MaskLosses(
        bce=bce_total / (num_masks + _NUM_MASKS_EPS),
        dice=dice_total / (num_masks + _NUM_MASKS_EPS),
        num_masks=num_masks,
    )
