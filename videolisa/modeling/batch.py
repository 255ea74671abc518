"""Typed training batch and model outputs."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch


@dataclass
class VideoLisaBatch:
    """One training batch: B conversations, each about one video (or a pseudo-video image).

    Attributes:
        pixel_values_clip: ``[B, T_s, 3, S_clip, S_clip]`` CLIP inputs of the sparse frames.
        pixel_values_sam: ``[B, T_d, 3, S_sam, S_sam]`` SAM inputs of the dense frames.
        input_ids: ``[B, L]`` ids with one video placeholder per row, right-padded.
        attention_mask: ``[B, L]`` 1 for real tokens.
        labels: ``[B, L]`` target ids, ``IGNORE_INDEX`` except the supervised answer.
        dense_positions: ``[B, T_d]`` positions of the dense frames among the T_s sparse frames.
        target_masks: per row, ``[K_b, T_d, H_b, W_b]`` 0/1 ground truth, one per ``[SEG]`` of the row
            (``K_b = 0`` for rows without a mask, e.g. VQA).
        resized_sizes: per row, ``(h, w)`` of the frames inside the SAM input before padding.
        original_sizes: per row, ``(H, W)`` of the original frames (= ground-truth size).
    """

    pixel_values_clip: torch.Tensor
    pixel_values_sam: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    dense_positions: torch.Tensor
    target_masks: list[torch.Tensor]
    resized_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    metadata: list[dict] = field(default_factory=list)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> VideoLisaBatch:
        """Move tensors to ``device``; floating-point pixel tensors are cast to ``dtype`` when given."""
        moved = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, torch.Tensor):
                cast = dtype if (dtype is not None and value.is_floating_point()) else None
                moved[item.name] = value.to(device=device, dtype=cast)
            elif item.name == "target_masks":
                moved[item.name] = [mask.to(device) for mask in value]
            else:
                moved[item.name] = value
        return VideoLisaBatch(**moved)


@dataclass
class VideoLisaOutput:
    """Losses of a training forward (weighted as the original returns them) and the decoded masks.

    ``bce_loss`` and ``dice_loss`` are already multiplied by their weights; ``*_unweighted`` are not.
    ``mask_logits`` holds, per row, ``[K_b, T_d, H_b, W_b]`` logits of the dense frames.
    """

    loss: torch.Tensor
    ce_loss: torch.Tensor
    bce_loss: torch.Tensor
    dice_loss: torch.Tensor
    mask_loss: torch.Tensor
    bce_loss_unweighted: torch.Tensor
    dice_loss_unweighted: torch.Tensor
    mask_logits: list[torch.Tensor]


@dataclass
class PromptOutput:
    """Segmentation prompts of a batch of conversations.

    ``prompt_embeddings [K, C]`` (one per ``[SEG]``), ``seg_hidden_states [K, D]`` (final normed LLM
    hidden states at the read positions), ``batch_index [K]`` (the row of each), and ``logits [B, L', V]``
    when the LM head was applied (training), else None.
    """

    prompt_embeddings: torch.Tensor
    seg_hidden_states: torch.Tensor
    batch_index: torch.Tensor
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None
