"""Precision, LoRA adapters and the trainable set of the model under training (the model itself comes from
:mod:`videolisa.builder`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from videolisa.errors import InvalidInputError

if TYPE_CHECKING:
    from videolisa.modeling.videolisa import VideoLisaForSegmentation
    from videolisa.training.config import LoraConfig

PEFT_PREFIX = "base_model.model."


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` with CUDA, ``fp32`` without."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


def precision_dtype(precision: str) -> torch.dtype:
    """The parameter dtype of a resolved precision."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def autocast_context(device: torch.device, precision: str) -> Any:
    """``torch.autocast`` in bf16 runs (mixes the float32 buffers' outputs, e.g. SAM's positional encoding,
    with bf16 weights); a no-op context in fp32 runs."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def lora_target_pattern(target_modules: Sequence[str]) -> str:
    """peft regex matching the LLM modules whose last name is one of ``target_modules`` (never CLIP or SAM,
    whose attention also has ``q_proj``/``v_proj``). ``["qkv_proj"]`` -> the fused attention of every layer."""
    names = "|".join(re.escape(name) for name in target_modules)
    return rf"llm\.(?:.*\.)?(?:{names})"


def apply_freezing_and_lora(
    model: VideoLisaForSegmentation, lora: LoraConfig, trainable: str = "original", frozen: Sequence[str] = ()
) -> torch.nn.Module:
    """The original's trainable set (docs/original.md §4.2): LoRA adapters (when ``lora.r > 0``) plus the fully trained
    embeddings, LM head, SAM mask decoder and prompt head; or, with ``trainable="all"``, every parameter. Then
    the parameters under each of the ``frozen`` name prefixes (``sam``, ``sam.image_encoder``...) are frozen.
    Returns the (peft-wrapped) model."""
    if trainable == "all":
        model.requires_grad_(True)
    else:
        model.apply_freezing_policy()
    if trainable == "original" and lora.r > 0:
        model = _add_lora(model, lora)
    freeze_prefixes(model, frozen)
    return model


def freeze_prefixes(model: torch.nn.Module, prefixes: Sequence[str]) -> None:
    """Freeze every parameter whose name (without peft's wrapper prefix) is ``prefix`` or lies under it; a
    prefix that names no parameter is an error (a typo would otherwise train what was meant to stay)."""
    names = [(name.removeprefix(PEFT_PREFIX), parameter) for name, parameter in model.named_parameters()]
    for prefix in prefixes:
        matched = [parameter for name, parameter in names if name == prefix or name.startswith(f"{prefix}.")]
        if not matched:
            raise InvalidInputError(f"model.frozen: {prefix!r} names no parameter of the model")
        for parameter in matched:
            parameter.requires_grad_(False)


def _add_lora(model: VideoLisaForSegmentation, lora: LoraConfig) -> torch.nn.Module:
    """LoRA adapters on the LLM, with the original's fully trained modules re-opened."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    from videolisa.modeling.videolisa import TRAINABLE_PREFIXES

    lora_config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias="none",
        target_modules=lora_target_pattern(lora.target_modules),
    )
    try:
        wrapped = get_peft_model(model, lora_config)
    except ValueError as error:
        raise InvalidInputError(f"lora.target_modules={lora.target_modules} matches no LLM module: {error}") from error
    # peft freezes everything but the adapters; re-open the fully trained modules.
    for name, parameter in wrapped.named_parameters():
        if name.removeprefix(PEFT_PREFIX).startswith(TRAINABLE_PREFIXES):
            parameter.requires_grad_(True)
    return wrapped


def unwrap_model(model: torch.nn.Module) -> VideoLisaForSegmentation:
    """The :class:`VideoLisaForSegmentation` inside a peft wrapper (LoRA layers still injected)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def trainable_parameter_count(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
