"""The DeepSpeed config of a run: the JSON template with every ``"auto"`` filled from the training YAML."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.training.config import TrainConfig, TrainingConfig


def deepspeed_values(config: TrainingConfig, world_size: int, precision: str) -> dict[tuple[str, ...], Any]:
    """The DeepSpeed config entries that come from the YAML (each must be ``"auto"`` in the JSON)."""
    train, optim = config.train, config.optim
    return {
        ("train_batch_size",): train.global_batch_size,
        ("train_micro_batch_size_per_gpu",): train.micro_batch_size,
        ("gradient_accumulation_steps",): gradient_accumulation_steps(train, world_size),
        ("gradient_clipping",): optim.gradient_clipping,
        ("optimizer", "params", "lr"): optim.lr,
        ("optimizer", "params", "betas"): list(optim.betas),
        ("optimizer", "params", "weight_decay"): optim.weight_decay,
        ("scheduler", "params", "total_num_steps"): train.total_steps,
        ("scheduler", "params", "warmup_max_lr"): optim.lr,
        ("scheduler", "params", "warmup_num_steps"): optim.warmup_steps,
        ("bf16", "enabled"): precision == "bf16",
    }


def gradient_accumulation_steps(train: TrainConfig, world_size: int) -> int:
    """``global_batch_size / (micro_batch_size x world_size)``, which must be a whole number."""
    per_step = train.micro_batch_size * world_size
    if train.global_batch_size % per_step:
        raise InvalidInputError(
            f"train.global_batch_size ({train.global_batch_size}) must be a multiple of train.micro_batch_size x "
            f"processes ({train.micro_batch_size} x {world_size})"
        )
    return train.global_batch_size // per_step


def _auto_paths(values: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(values, dict):
        for key, value in values.items():
            yield from _auto_paths(value, (*path, key))
    elif values == "auto":
        yield path


def build_deepspeed_config(
    template_path: Path, config: TrainingConfig, world_size: int, precision: str
) -> dict[str, Any]:
    """The DeepSpeed config: the JSON template with every ``"auto"`` filled from the YAML.

    Every value the YAML owns (batch sizes, lr, betas, weight decay, clipping, schedule, bf16) must be
    ``"auto"`` in the template, and every ``"auto"`` must be one of them, so no number is stated twice.
    """
    if not template_path.is_file():
        raise MissingFilesError(f"train.deepspeed_config={template_path} does not exist")
    try:
        template = json.loads(template_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{template_path} is not valid JSON: {error}") from error
    values = deepspeed_values(config, world_size, precision)
    unknown = [".".join(path) for path in _auto_paths(template) if path not in values]
    if unknown:
        raise InvalidInputError(f"{template_path}: 'auto' at {unknown}, which the training config does not set")
    filled = json.loads(json.dumps(template))
    for path, value in values.items():
        node = filled
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or node.get(path[-1]) != "auto":
            raise InvalidInputError(
                f'{template_path}: {".".join(path)} must be "auto" (its value comes from the training YAML)'
            )
        node[path[-1]] = value
    return filled
