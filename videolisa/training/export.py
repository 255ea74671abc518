"""Export a training checkpoint as a model folder: DeepSpeed ZeRO shards -> fp32 -> LoRA merged -> safetensors."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from videolisa.errors import CheckpointError, MissingFilesError
from videolisa.training.config import load_training_config
from videolisa.training.model import apply_freezing_and_lora
from videolisa.training.run import BEST_FILE, CHECKPOINT_DIR, RUN_CONFIG_FILE, RUN_MODEL_DIR, latest_tag, read_best

logger = logging.getLogger(__name__)


def resolve_export_tag(run_dir: Path, tag: str | None) -> str:
    """``best`` -> the tag in ``best.json``; ``latest`` / None -> the last checkpoint (best when None and a
    best exists); anything else is a tag name that must exist."""
    checkpoints = run_dir / CHECKPOINT_DIR
    best = read_best(run_dir)
    if tag == "best" or (tag is None and best is not None):
        if best is None:
            raise MissingFilesError(f"{checkpoints / BEST_FILE} not found: the run has no validated best checkpoint")
        tag = best["tag"]
    elif tag in (None, "latest"):
        tag = latest_tag(run_dir)
        if tag is None:
            raise MissingFilesError(f"no checkpoint in {checkpoints}")
    if not (checkpoints / tag).is_dir():
        raise MissingFilesError(f"checkpoint {checkpoints / tag} not found")
    return tag


def export_checkpoint(
    run_dir: Path, out_dir: Path, tag: str | None = None, dtype: torch.dtype = torch.bfloat16
) -> Path:
    """DeepSpeed checkpoint -> fp32 state dict -> LoRA merged -> a folder :meth:`from_pretrained` loads
    (``config.json``, safetensors, tokenizer). Returns ``out_dir``."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from videolisa.builder import build_empty_model
    from videolisa.checkpoint import load_tokenizer, save_model
    from videolisa.config import VideoLisaConfig

    run_dir = run_dir.expanduser().resolve()
    config = load_training_config(run_dir / RUN_CONFIG_FILE)
    tag = resolve_export_tag(run_dir, tag)
    state_dict = get_fp32_state_dict_from_zero_checkpoint(str(run_dir / CHECKPOINT_DIR), tag=tag)
    model = apply_freezing_and_lora(
        build_empty_model(VideoLisaConfig.from_pretrained(run_dir / RUN_MODEL_DIR)), config.lora, config.model.trainable
    )
    # The trainable weights are views into ZeRO's flat buffers: give each its own storage (safetensors needs it).
    state_dict = {name: tensor.clone() for name, tensor in state_dict.items()}
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {tag} of {run_dir} does not fit the run's model: {error}") from error
    # Frozen weights come back in the training dtype (bf16 on GPU): merge the adapters in float32.
    model = model.float()
    merged = model.merge_and_unload() if config.lora.r > 0 else model
    merged = merged.to(dtype)
    save_model(merged, out_dir, tokenizer=load_tokenizer(run_dir / RUN_MODEL_DIR))
    logger.info("exported %s of %s to %s", tag, run_dir, out_dir)
    return out_dir
