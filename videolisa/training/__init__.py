"""The training recipe's library side: config, LoRA, DeepSpeed, the loop, resume, export.

``train/train.py`` is the DeepSpeed entry point that calls :func:`run_training`; ``train/export.py`` calls
:func:`export_checkpoint`. Everything here follows the original recipe (docs/original.md, "Training") by default:

* model: LLaVA-Phi-3 (``MBZUAI/LLaVA-Phi-3-mini-4k-instruct``) + SAM ViT-H ``.pth`` + CLIP, ``[SEG]`` added
  (the embeddings shrink from 32064 to 32012 rows), random prompt head; or a VideoLISA checkpoint to fine-tune
  (``model.source: pretrained``); or a preset built from scratch (``model.source: scratch``); built by
  :mod:`videolisa.builder`;
* frozen: everything except the token embeddings, the LM head, the SAM mask decoder and the prompt head, plus
  LoRA (r 8, alpha 16, dropout 0.05) on the fused ``qkv_proj`` of every LLM layer;
* DeepSpeed ZeRO-2, bf16 on GPU (fp32 on CPU), AdamW lr 3e-4 betas (0.9, 0.95) no weight decay,
  linear warm-up over 100 steps then linear decay to 0, gradient clipping 1.0, 6000 steps of 128 samples.

Modules: :mod:`~videolisa.training.config` (the YAML), :mod:`~videolisa.training.model` (precision, LoRA,
trainable set), :mod:`~videolisa.training.optim` (parameter groups), :mod:`~videolisa.training.engine` (the
DeepSpeed config), :mod:`~videolisa.training.run` (the run folder), :mod:`~videolisa.training.validation`,
:mod:`~videolisa.training.loop` and :mod:`~videolisa.training.export`.
"""

from videolisa.training.config import (
    LoraConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    TrainingConfig,
    ValidationConfig,
    load_training_config,
)
from videolisa.training.export import export_checkpoint
from videolisa.training.loop import run_training
from videolisa.training.run import TrainingRun, prepare_run

__all__ = [
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainingConfig",
    "TrainingRun",
    "ValidationConfig",
    "export_checkpoint",
    "load_training_config",
    "prepare_run",
    "run_training",
]
