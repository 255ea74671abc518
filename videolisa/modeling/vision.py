"""CLIP vision tower features and the ``mlp2x_gelu`` projector (docs/original.md §1.1, §1.4)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionModel


def build_projector(projector_type: str, vision_hidden_size: int, llm_hidden_size: int) -> nn.Sequential:
    """``mlp2x_gelu``: Linear(vision, llm) -> GELU (exact erf) -> Linear(llm, llm); keys ``0.*`` and ``2.*``."""
    if projector_type != "mlp2x_gelu":
        raise ValueError(f"projector_type must be one of ['mlp2x_gelu'], got {projector_type!r}")
    return nn.Sequential(
        nn.Linear(vision_hidden_size, llm_hidden_size),
        nn.GELU(),
        nn.Linear(llm_hidden_size, llm_hidden_size),
    )


def extract_clip_features(
    vision_tower: CLIPVisionModel, pixel_values: torch.Tensor, feature_layer: int = -2, select: str = "patch"
) -> torch.Tensor:
    """CLIP patch features of a batch of frames (callers disable gradients when the tower is frozen).

    Args:
        pixel_values: ``[N, 3, S, S]`` CLIP-normalised frames.
        feature_layer: index into the hidden states (-2: output of the second-to-last block).
        select: ``"patch"`` drops the CLS token.

    Returns:
        ``[N, P, C]`` with P = (S / patch)^2 (576 for ViT-L/14-336).
    """
    dtype = next(vision_tower.parameters()).dtype
    outputs = vision_tower(pixel_values.to(dtype), output_hidden_states=True)
    features = outputs.hidden_states[feature_layer]
    if select != "patch":
        raise ValueError(f"vision_feature_select must be 'patch', got {select!r}")
    return features[:, 1:]
