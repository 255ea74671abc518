"""Optimizer parameter groups (``optim.lr_scales``) and the per-group scaling of DeepSpeed's lr schedule."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from videolisa.errors import InvalidInputError
from videolisa.training.model import unwrap_model

# DeepSpeed schedulers whose warmup_min_lr / warmup_max_lr may be one value per optimizer group.
SCALABLE_SCHEDULERS = ("WarmupLR", "WarmupDecayLR")


@dataclass
class ParameterGroup:
    """Trainable parameters that share an lr multiplier (``prefix`` None: the parameters no prefix matches)."""

    prefix: str | None
    scale: float
    parameters: list[torch.nn.Parameter]


def _matches_prefix(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(f"{prefix}.")


def build_parameter_groups(model: torch.nn.Module, lr_scales: dict[str, float]) -> list[ParameterGroup]:
    """The trainable parameters of ``model`` split by ``optim.lr_scales``: the unmatched ones first (scale 1),
    then one group per prefix in the mapping's order; a parameter goes to its longest matching prefix.

    Names are those of the unwrapped model (``sam.image_encoder.blocks.0...``, the same with or without LoRA).
    Raises InvalidInputError naming every prefix that matches no trainable parameter. Empty groups are dropped.
    """
    named = [(name, p) for name, p in unwrap_model(model).named_parameters() if p.requires_grad]
    if not named:
        raise InvalidInputError("the model has no trainable parameter (see model.trainable and lora)")
    by_prefix: dict[str | None, list[torch.nn.Parameter]] = {None: [], **{prefix: [] for prefix in lr_scales}}
    for name, parameter in named:
        matches = [prefix for prefix in lr_scales if _matches_prefix(name, prefix)]
        by_prefix[max(matches, key=len) if matches else None].append(parameter)
    unmatched = [prefix for prefix in lr_scales if not by_prefix[prefix]]
    if unmatched:
        frozen = [
            prefix
            for prefix in unmatched
            if any(_matches_prefix(name, prefix) for name, _ in unwrap_model(model).named_parameters())
        ]
        detail = f" ({frozen} name only frozen parameters)" if frozen else ""
        raise InvalidInputError(
            f"optim.lr_scales: {unmatched} match no trainable parameter{detail}; prefixes are module paths such "
            f"as {sorted({name.split('.')[0] for name, _ in named})[:6]} or sam.image_encoder"
        )
    return [
        ParameterGroup(prefix, 1.0 if prefix is None else lr_scales[prefix], parameters)
        for prefix, parameters in by_prefix.items()
        if parameters
    ]


def optimizer_parameter_groups(groups: Sequence[ParameterGroup], lr: float) -> list[dict[str, Any]]:
    """The ``model_parameters`` argument of ``deepspeed.initialize``: one dict per group with its scaled lr."""
    return [{"params": group.parameters, "lr": lr * group.scale} for group in groups]


def scale_schedule(ds_config: dict[str, Any], scales: Sequence[float]) -> dict[str, Any]:
    """``ds_config`` with the scheduler's ``warmup_min_lr`` / ``warmup_max_lr`` as per-group lists scaled by
    ``scales`` (DeepSpeed's WarmupLR and WarmupDecayLR accept one value per optimizer group), so warm-up and
    decay apply to every group in proportion. Unchanged when every scale is 1."""
    if all(scale == 1.0 for scale in scales):
        return ds_config
    scheduler = ds_config.get("scheduler")
    if scheduler is None:
        return ds_config
    if scheduler.get("type") not in SCALABLE_SCHEDULERS:
        raise InvalidInputError(
            f"optim.lr_scales needs a scheduler with per-group lrs {list(SCALABLE_SCHEDULERS)} in the DeepSpeed "
            f"config, got {scheduler.get('type')!r}"
        )
    scaled = json.loads(json.dumps(ds_config))
    params = scaled["scheduler"]["params"]
    for key, default in (("warmup_min_lr", 0.0), ("warmup_max_lr", None)):
        value = params.get(key, default)
        if value is None:
            raise InvalidInputError(f"optim.lr_scales needs scheduler.params.{key} in the DeepSpeed config")
        if isinstance(value, list):
            raise InvalidInputError(f"scheduler.params.{key} is already a per-group list: {value}")
        params[key] = [value * scale for scale in scales]
    return scaled
