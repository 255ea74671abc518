"""The training recipe's library side: config, model building, LoRA, DeepSpeed, the loop, resume, export.

``train/train.py`` is the DeepSpeed entry point that calls :func:`run_training`; ``train/export.py`` calls
:func:`export_checkpoint`. Everything here follows the original recipe (spec §4) by default:

* model: LLaVA-Phi-3 (``MBZUAI/LLaVA-Phi-3-mini-4k-instruct``) + SAM ViT-H ``.pth`` + CLIP, ``[SEG]`` added
  (the embeddings shrink from 32064 to 32012 rows), random prompt head; or a VideoLISA checkpoint to fine-tune
  (``model.source: pretrained``); or a preset built from scratch (``model.source: scratch``);
* frozen: everything except the token embeddings, the LM head, the SAM mask decoder and the prompt head, plus
  LoRA (r 8, alpha 16, dropout 0.05) on the fused ``qkv_proj`` of every LLM layer;
* DeepSpeed ZeRO-2, bf16 on GPU (fp32 on CPU), AdamW lr 3e-4 betas (0.9, 0.95) no weight decay,
  linear warm-up over 100 steps then linear decay to 0, gradient clipping 1.0, 6000 steps of 128 samples.

A run directory holds ``train_config.yaml`` (the resolved config), ``deepspeed_config.json``, ``model/``
(the model config and tokenizer, no weights), ``checkpoints/`` (DeepSpeed checkpoints ``step_XXXXXX``, the
``latest`` tag file, ``best.json``), ``metrics.jsonl`` (one line per step), ``tensorboard/`` and
``validation/step_XXXXXX/`` (evaluation outputs).

Determinism (what makes kill-and-resume equal an uninterrupted run): sample ``i`` depends only on
``(train.seed, i)`` (:class:`~videolisa.data.mixture.MixtureDataset`), the step-``s`` samples are fixed by
:class:`~videolisa.data.mixture.StepSampler`, and the torch RNG (LoRA dropout) is reseeded from
``(seed, step, micro-batch slot)`` before every micro-batch; the checkpoint holds weights, optimizer and scheduler
state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, Union

import numpy as np
import torch

from videolisa.constants import DEFAULT_SEG_TOKEN
from videolisa.data.mixture import DataConfig
from videolisa.errors import CheckpointError, InvalidInputError, MissingFilesError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from videolisa.config import VideoLisaConfig
    from videolisa.modeling.batch import VideoLisaBatch
    from videolisa.modeling.videolisa import VideoLisaForSegmentation

logger = logging.getLogger(__name__)

MODEL_SOURCES = ("llava_phi3", "pretrained", "scratch")
TRAINABLE_SETS = ("original", "all")
PRECISIONS = ("auto", "bf16", "fp32")
RUN_CONFIG_FILE = "train_config.yaml"
RUN_DEEPSPEED_FILE = "deepspeed_config.json"
RUN_MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
BEST_FILE = "best.json"
METRICS_FILE = "metrics.jsonl"
PEFT_PREFIX = "base_model.model."
# DeepSpeed schedulers whose warmup_min_lr / warmup_max_lr may be one value per optimizer group.
SCALABLE_SCHEDULERS = ("WarmupLR", "WarmupDecayLR")
# Config sections a resumed run may change; anything else would change the data order or the model.
RESUMABLE_KEYS = ("train.num_workers", "train.log_every", "train.save_every", "train.keep_last",
                  "train.micro_batch_size", "validation.")


# ============================================================================================ config
@dataclass
class ModelConfig:
    """``model``: where the weights come from.

    Attributes:
        source: ``llava_phi3`` (the original starting point: LLaVA-Phi-3 ``path`` + SAM ``sam_checkpoint`` +
            CLIP ``vision_tower``), ``pretrained`` (a VideoLISA checkpoint ``path``, this package's or the
            original release's format) or ``scratch`` (``preset`` + ``config_overrides``, random weights,
            optionally SAM / CLIP weights).
        tokenizer: ``tiny`` (the in-memory test tokenizer), a tokenizer folder, or None (the one in ``path``).
        gradient_checkpointing: recompute LLM activations in the backward pass (saves memory).
        trainable: ``original`` (spec §1.8: embeddings, LM head, SAM mask decoder, prompt head, + LoRA) or
            ``all`` (every parameter, for a model trained from scratch, where nothing is pretrained; no LoRA).
    """

    source: str = "llava_phi3"
    path: str | None = None
    vision_tower: str | None = None
    sam_checkpoint: str | None = None
    preset: str = "videolisa-3.8b"
    config_overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    gradient_checkpointing: bool = True
    trainable: str = "original"


@dataclass
class LoraSection:
    """``lora``: adapters on the LLM layers whose names end with one of ``target_modules`` (r = 0: none)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["qkv_proj"])


@dataclass
class OptimConfig:
    """``optim``: AdamW and the warm-up / linear-decay schedule.

    ``lr_scales`` maps a parameter-name prefix (a module path of the model, e.g. ``sam.image_encoder``) to a
    multiplier of ``lr``: the parameters under it form their own optimizer group whose whole schedule (warm-up
    peak, decay, floor) is scaled; the longest matching prefix wins, and unmatched parameters keep ``lr``.
    """

    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 100
    gradient_clipping: float = 1.0
    lr_scales: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainSection:
    """``train``: steps, batch sizes, precision, logging and checkpointing.

    ``global_batch_size`` is per optimizer step over all processes; the gradient accumulation is
    ``global_batch_size / (micro_batch_size x processes)``, so the same recipe runs on 1, 8 or 64 GPUs.
    ``deepspeed_config`` is relative to the YAML file's folder.
    """

    output_dir: str = "runs/videolisa"
    total_steps: int = 6000
    global_batch_size: int = 128
    micro_batch_size: int = 2
    precision: str = "auto"
    seed: int = 42
    num_workers: int = 4
    log_every: int = 10
    save_every: int = 300
    keep_last: int = 2
    deepspeed_config: str = "ds_zero2.json"
    max_text_tokens: int | None = None


@dataclass
class ValidationSection:
    """``validation``: evaluate on a benchmark every ``every`` steps and keep the best checkpoint.

    ``metric`` defaults to ``gIoU`` for image benchmarks and ``JF`` for video benchmarks; ``limit`` caps the
    number of items (None: all).
    """

    benchmark: str | None = None
    root: str | None = None
    split: str | None = None
    every: int = 300
    limit: int | None = None
    metric: str | None = None
    chunk_size: int = 8


@dataclass
class TrainingConfig:
    """The whole training config (``train/configs/*.yaml``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSection = field(default_factory=LoraSection)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)
    validation: ValidationSection = field(default_factory=ValidationSection)

    def validate(self) -> None:
        """Raise InvalidInputError naming the first invalid key."""
        model, train, optim, lora, validation = self.model, self.train, self.optim, self.lora, self.validation
        _require_choice("model.source", model.source, MODEL_SOURCES)
        if model.source in ("llava_phi3", "pretrained") and not model.path:
            raise InvalidInputError(f"model.path must be set for model.source={model.source}")
        if model.source == "llava_phi3" and not model.sam_checkpoint:
            raise InvalidInputError(
                "model.sam_checkpoint (e.g. sam_vit_h_4b8939.pth) must be set for model.source=llava_phi3"
            )
        _require_choice("model.trainable", model.trainable, TRAINABLE_SETS)
        if model.trainable == "all" and self.lora.r > 0:
            raise InvalidInputError("model.trainable=all trains every weight: set lora.r=0 (LoRA would be redundant)")
        if model.source == "scratch" and not model.tokenizer:
            raise InvalidInputError("model.tokenizer must be set for model.source=scratch ('tiny' or a folder)")
        _require_choice("train.precision", train.precision, PRECISIONS)
        for key in ("total_steps", "global_batch_size", "micro_batch_size", "log_every", "save_every", "keep_last"):
            _require_positive(f"train.{key}", getattr(train, key))
        if train.num_workers < 0:
            raise InvalidInputError(f"train.num_workers must be >= 0, got {train.num_workers}")
        if train.global_batch_size % train.micro_batch_size:
            raise InvalidInputError(
                f"train.global_batch_size ({train.global_batch_size}) must be a multiple of train.micro_batch_size "
                f"({train.micro_batch_size})"
            )
        if optim.lr <= 0 or optim.weight_decay < 0 or optim.gradient_clipping < 0:
            raise InvalidInputError("optim.lr must be > 0; optim.weight_decay and optim.gradient_clipping >= 0")
        if len(optim.betas) != 2 or not all(0 <= beta < 1 for beta in optim.betas):
            raise InvalidInputError(f"optim.betas must be two numbers in [0, 1), got {optim.betas}")
        for prefix, scale in optim.lr_scales.items():
            if not prefix or prefix.startswith(".") or prefix.endswith("."):
                raise InvalidInputError(
                    f"optim.lr_scales: {prefix!r} is not a parameter-name prefix like sam.image_encoder"
                )
            if not 0 < scale < float("inf"):
                raise InvalidInputError(f"optim.lr_scales.{prefix} must be a finite number > 0, got {scale}")
        if not 0 <= optim.warmup_steps <= train.total_steps:
            raise InvalidInputError(
                f"optim.warmup_steps ({optim.warmup_steps}) must be in [0, train.total_steps={train.total_steps}]"
            )
        if lora.r < 0 or (lora.r > 0 and (lora.alpha <= 0 or not lora.target_modules)):
            raise InvalidInputError("lora.r must be >= 0; with r > 0, lora.alpha > 0 and lora.target_modules non-empty")
        if not 0 <= lora.dropout < 1:
            raise InvalidInputError(f"lora.dropout must be in [0, 1), got {lora.dropout}")
        if validation.benchmark is not None:
            if not validation.root:
                raise InvalidInputError("validation.root must be set when validation.benchmark is set")
            _require_positive("validation.every", validation.every)
        self.data.validate()


def _require_choice(key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise InvalidInputError(f"{key} must be one of {list(allowed)}, got {value!r}")


def _require_positive(key: str, value: int) -> None:
    if value <= 0:
        raise InvalidInputError(f"{key} must be a positive integer, got {value}")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a type annotation (dataclass, list, dict, Optional, scalars)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner, key)
    if dataclasses.is_dataclass(annotation):
        return build_section(annotation, value, key)
    if annotation is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise InvalidInputError(f"{key} must be a list, got {value!r}")
        return [_coerce(item, args[0], f"{key}[{index}]") for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidInputError(f"{key} must be a mapping, got {value!r}")
        return {str(name): _coerce(item, args[1], f"{key}.{name}") for name, item in value.items()}
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" as a string
            return float(value)
        except ValueError:
            pass
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
        return value
    raise InvalidInputError(f"{key} must be {_type_name(annotation)}, got {value!r}")


def build_section(cls: type, values: Any, prefix: str) -> Any:
    """A config dataclass from a mapping; unknown keys are errors, dict fields merge onto their defaults."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise InvalidInputError(f"{prefix or 'the config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [item.name for item in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = prefix or "the config"
        raise InvalidInputError(f"{where} has unknown keys {unknown}; allowed: {names}")
    defaults = cls()
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        key = f"{prefix}.{name}" if prefix else name
        value = _coerce(values[name], hints[name], key)
        default = getattr(defaults, name)
        kwargs[name] = {**default, **value} if isinstance(default, dict) and isinstance(value, dict) else value
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (``["a", "b", "c"]``, YAML value); e.g. ``train.total_steps=10``,
    ``data.mevis_splits=[train]``, ``validation.benchmark=null``."""
    import yaml

    key, separator, raw = text.partition("=")
    if not separator or not key.strip() or any(not part for part in key.strip().split(".")):
        raise InvalidInputError(f"override {text!r} must look like section.key=value")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set each ``key.path=value`` in a nested dict (creating intermediate mappings)."""
    for text in overrides:
        path, value = parse_override(text)
        node = values
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidInputError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return values


def load_training_config(path: Path | None, overrides: Sequence[str] = ()) -> TrainingConfig:
    """The YAML at ``path`` (None: defaults) with ``key=value`` overrides, checked against the dataclasses.

    ``train.deepspeed_config`` is resolved against the YAML's folder.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise MissingFilesError(f"training config {path} does not exist")
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise InvalidInputError(f"{path} must hold a mapping of config sections")
    config = build_section(TrainingConfig, apply_overrides(values, overrides), "")
    ds_path = Path(config.train.deepspeed_config).expanduser()
    if not ds_path.is_absolute() and path is not None:
        ds_path = path.parent / ds_path
    config.train.deepspeed_config = str(ds_path.resolve())
    config.validate()
    return config


def flatten_config(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and non-section values are leaves)."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def check_resume_changes(saved: TrainingConfig, requested: TrainingConfig) -> None:
    """A resumed run may only change logging, checkpointing, workers, micro-batch and validation keys."""
    before, after = flatten_config(asdict(saved)), flatten_config(asdict(requested))
    changed = sorted(
        key for key in set(before) | set(after)
        if before.get(key) != after.get(key) and not key.startswith(RESUMABLE_KEYS)
    )
    if changed:
        raise InvalidInputError(
            f"cannot change {changed} when resuming (it would change the model, the data order or the schedule); "
            f"resumable keys: {list(RESUMABLE_KEYS)}"
        )


# ============================================================================================ precision
def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` with CUDA, ``fp32`` without."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


def precision_dtype(precision: str) -> torch.dtype:
    """The parameter dtype of a resolved precision."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Floating parameters in ``dtype``, floating buffers in float32: the layout DeepSpeed's bf16 mode
    trains (it casts parameters only). Stock ``segment_anything`` needs it: its positional encoding
    multiplies a float32 grid with its Gaussian-matrix buffer."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            parameter.data = parameter.data.to(dtype)
    for buffer in model.buffers():
        if buffer.is_floating_point():
            buffer.data = buffer.data.float()
    return model


def autocast_context(device: torch.device, precision: str) -> Any:
    """``torch.autocast`` in bf16 runs (mixes the float32 buffers' outputs, e.g. SAM's positional encoding,
    with bf16 weights); a no-op context in fp32 runs."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# ============================================================================================ model
def load_tokenizer_source(source: str, seg_token: str) -> "PreTrainedTokenizerBase":
    """``"tiny"`` -> the in-memory test tokenizer; otherwise a tokenizer folder."""
    from videolisa.checkpoint import load_tokenizer, resolve_model_dir
    from videolisa.tokenization import build_tiny_tokenizer

    if source == "tiny":
        return build_tiny_tokenizer(seg_token)
    tokenizer = load_tokenizer(resolve_model_dir(source))
    if tokenizer is None:
        raise MissingFilesError(f"model.tokenizer={source} has no tokenizer files")
    return tokenizer


def _ensure_pad_token(tokenizer: "PreTrainedTokenizerBase") -> None:
    """Pad with ``<unk>`` (id 0 for Phi-3) as the original does (spec §4.7, §7.4)."""
    if tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token
    elif tokenizer.pad_token is None:
        raise InvalidInputError("the tokenizer has neither an unk nor a pad token to pad batches with")


def allocate_meta_parameters(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Give every parameter still on the meta device real (uninitialised) storage; shared parameters stay
    shared. For models whose weights are loaded right after (DeepSpeed checkpoints)."""
    allocated: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is None or not parameter.is_meta:
                continue
            if id(parameter) not in allocated:
                allocated[id(parameter)] = torch.nn.Parameter(
                    torch.empty(parameter.shape, dtype=dtype), requires_grad=parameter.requires_grad
                )
            module._parameters[name] = allocated[id(parameter)]


def initialise_prompt_head(model: "VideoLisaForSegmentation") -> None:
    """Random prompt head (PyTorch's Linear init, as the original), also when it was built on meta."""
    model.prompt_head.to_empty(device="cpu")
    for layer in model.prompt_head:
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()


def is_llava_phi3_config(config_dict: dict[str, Any]) -> bool:
    """LLaVA-Phi-3 (``model_type: llava_phi``, ``LlavaPhiForCausalLM``) or an original VideoLISA config."""
    from videolisa.checkpoint import is_original_config

    return is_original_config(config_dict) or "LlavaPhiForCausalLM" in (config_dict.get("architectures") or ())


def load_llava_phi3_base(
    path: str | Path, sam_checkpoint: str | Path, vision_tower: str | Path | None, dtype: torch.dtype
) -> tuple["VideoLisaForSegmentation", "PreTrainedTokenizerBase"]:
    """The original starting point: LLaVA-Phi-3 (LLM + projector) + SAM ``.pth`` + CLIP + ``[SEG]``.

    The LLaVA-Phi-3 keys (``model.embed_tokens``, ``model.layers.*``, ``model.norm``, ``lm_head``,
    ``model.mm_projector.*``) load strictly through :data:`videolisa.checkpoint.ORIGINAL_KEY_MAP`; CLIP comes
    from ``vision_tower`` (default: the config's ``mm_vision_tower``) unless the checkpoint has it; SAM's
    dimensions are read off the ``.pth`` shapes; the prompt head is random; ``[SEG]`` is added and the
    embeddings resized to the tokenizer (spec §4.2).
    """
    from videolisa.checkpoint import (
        ORIGINAL_KEY_MAP,
        SAM_CHECKPOINT_KEY_MAP,
        build_empty_model,
        convert_original_config,
        infer_sam_config,
        iter_checkpoint_tensors,
        load_clip_weights,
        load_sam_checkpoint,
        load_state_dict_strict,
        load_tokenizer,
        load_vision_config,
        map_key,
        prepare_tokenizer_and_embeddings,
        read_config_json,
        resolve_model_dir,
        weight_files,
    )

    model_dir = resolve_model_dir(path)
    config_dict = read_config_json(model_dir)
    if not is_llava_phi3_config(config_dict):
        raise CheckpointError(
            f"{model_dir}/config.json is not a LLaVA-Phi-3 config (model_type 'llava_phi', LlavaPhiForCausalLM)"
        )
    sam_path = Path(sam_checkpoint)
    if not sam_path.is_file():
        raise MissingFilesError(f"model.sam_checkpoint={sam_path} does not exist")
    sam_shapes = {
        map_key(name, SAM_CHECKPOINT_KEY_MAP): tuple(tensor.shape)
        for name, tensor in iter_checkpoint_tensors([sam_path])
    }
    clip_source = vision_tower or config_dict.get("mm_vision_tower") or config_dict.get("vision_tower")
    if not clip_source:
        raise CheckpointError(f"{model_dir}/config.json names no vision tower; set model.vision_tower")
    tokenizer = load_tokenizer(model_dir)
    if tokenizer is None:
        raise MissingFilesError(f"{model_dir} has no tokenizer files")
    # The id [SEG] has (or will get when prepare_tokenizer_and_embeddings adds it): 32011 for Phi-3.
    seg_id = tokenizer.get_vocab().get(DEFAULT_SEG_TOKEN, len(tokenizer))
    config = convert_original_config(
        config_dict, load_vision_config(clip_source), infer_sam_config(sam_shapes), str(clip_source), seg_id
    )
    model = build_empty_model(config)
    paths = weight_files(model_dir)
    names = [name for name, _ in iter_checkpoint_tensors(paths)]
    has_clip = any((map_key(name, ORIGINAL_KEY_MAP) or "").startswith("vision_tower.") for name in names)
    scope_prefixes = ("llm.", "projector.", "vision_tower.") if has_clip else ("llm.", "projector.")
    load_state_dict_strict(
        model, iter_checkpoint_tensors(paths), ORIGINAL_KEY_MAP, dtype, source=f"LLaVA-Phi-3 checkpoint {model_dir}",
        scope=lambda name: name.startswith(scope_prefixes),
    )
    if not has_clip:
        load_clip_weights(model, clip_source, dtype)
    load_sam_checkpoint(model, sam_path)
    initialise_prompt_head(model)
    cast_parameters(model, dtype)
    prepare_tokenizer_and_embeddings(model, tokenizer)
    return model, tokenizer


def build_model_and_tokenizer(
    config: ModelConfig, dtype: torch.dtype
) -> tuple["VideoLisaForSegmentation", "PreTrainedTokenizerBase"]:
    """The model to train and its tokenizer, from ``model.source`` (weights in ``dtype``)."""
    from videolisa.checkpoint import (
        load_clip_weights,
        load_model,
        load_sam_checkpoint,
        prepare_tokenizer_and_embeddings,
    )
    from videolisa.config import VideoLisaConfig
    from videolisa.modeling.videolisa import VideoLisaForSegmentation

    if config.source == "llava_phi3":
        model, tokenizer = load_llava_phi3_base(config.path, config.sam_checkpoint, config.vision_tower, dtype)
    elif config.source == "pretrained":
        from videolisa.predictor import resolve_model_source

        path = resolve_model_source(config.path)  # also "builtin:<name>"
        model = load_model(path, dtype=dtype, vision_tower=config.vision_tower)
        tokenizer = load_tokenizer_source(config.tokenizer or str(path), model.config.seg_token)
        prepare_tokenizer_and_embeddings(model, tokenizer)
    else:
        model_config = VideoLisaConfig.from_preset(config.preset, **config.config_overrides)
        model = VideoLisaForSegmentation(model_config)
        if config.sam_checkpoint:
            load_sam_checkpoint(model, config.sam_checkpoint)
        if config.vision_tower:
            load_clip_weights(model, config.vision_tower)
        tokenizer = load_tokenizer_source(config.tokenizer, model_config.seg_token)
        prepare_tokenizer_and_embeddings(model, tokenizer)
    _ensure_pad_token(tokenizer)
    return cast_parameters(model, dtype).train(), tokenizer


def build_model_skeleton(model_dir: Path, dtype: torch.dtype) -> "VideoLisaForSegmentation":
    """A model with the architecture saved in a run's ``model/`` folder and uninitialised weights (to be
    filled from a DeepSpeed checkpoint)."""
    from videolisa.checkpoint import build_empty_model
    from videolisa.config import VideoLisaConfig

    model = build_empty_model(VideoLisaConfig.from_pretrained(model_dir))
    allocate_meta_parameters(model, dtype)
    return cast_parameters(model, dtype)


# ============================================================================================ LoRA
def lora_target_pattern(target_modules: Sequence[str]) -> str:
    """peft regex matching the LLM modules whose last name is one of ``target_modules`` (never CLIP or SAM,
    whose attention also has ``q_proj``/``v_proj``). ``["qkv_proj"]`` -> the fused attention of every layer."""
    names = "|".join(re.escape(name) for name in target_modules)
    return rf"llm\.(?:.*\.)?(?:{names})"


def apply_freezing_and_lora(
    model: "VideoLisaForSegmentation", lora: LoraSection, trainable: str = "original"
) -> torch.nn.Module:
    """The original's trainable set (spec §4.2): LoRA adapters (when ``lora.r > 0``) plus the fully trained
    embeddings, LM head, SAM mask decoder and prompt head; or, with ``trainable="all"``, every parameter.
    Returns the (peft-wrapped) model."""
    from peft import LoraConfig, get_peft_model

    from videolisa.modeling.videolisa import TRAINABLE_PREFIXES

    if trainable == "all":
        model.requires_grad_(True)
        return model
    model.apply_freezing_policy()
    if lora.r == 0:
        return model
    lora_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
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


def unwrap_model(model: torch.nn.Module) -> "VideoLisaForSegmentation":
    """The :class:`VideoLisaForSegmentation` inside a peft wrapper (LoRA layers still injected)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def trainable_parameter_count(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# ============================================================================================ parameter groups
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
        frozen = [prefix for prefix in unmatched
                  if any(_matches_prefix(name, prefix) for name, _ in unwrap_model(model).named_parameters())]
        detail = f" ({frozen} name only frozen parameters)" if frozen else ""
        raise InvalidInputError(
            f"optim.lr_scales: {unmatched} match no trainable parameter{detail}; prefixes are module paths such "
            f"as {sorted({name.split('.')[0] for name, _ in named})[:6]} or sam.image_encoder"
        )
    return [ParameterGroup(prefix, 1.0 if prefix is None else lr_scales[prefix], parameters)
            for prefix, parameters in by_prefix.items() if parameters]


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


# ============================================================================================ DeepSpeed
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


def gradient_accumulation_steps(train: TrainSection, world_size: int) -> int:
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
                f"{template_path}: {'.'.join(path)} must be \"auto\" (its value comes from the training YAML)"
            )
        node[path[-1]] = value
    return filled


def _skip_cpu_shm_kernel() -> None:
    """DeepSpeed's CPU communication backend JIT-compiles a shared-memory all-reduce kernel when it starts
    (75 s or more on a fresh machine); only its inference all-reduce uses it, training all-reduces go through
    torch.distributed (gloo). Skip building it when training on CPU."""
    import importlib

    # importlib, not "import deepspeed.comm.torch as ...": deepspeed.comm has an attribute "torch" (the library).
    deepspeed_torch_comm = importlib.import_module("deepspeed.comm.torch")
    if hasattr(deepspeed_torch_comm, "build_shm_op"):
        deepspeed_torch_comm.build_shm_op = lambda: None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def init_distributed() -> tuple[int, int]:
    """Join the launcher's process group (a single local process when started without a launcher);
    NCCL on GPU, gloo on CPU. Returns (rank, world size)."""
    import deepspeed
    import torch.distributed as dist

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        backend = "nccl"
    else:
        _skip_cpu_shm_kernel()
        backend = "gloo"
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend)
    return dist.get_rank(), dist.get_world_size()


# ============================================================================================ run files
def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary name in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_run_files(run_dir: Path, config: TrainingConfig, ds_config: dict[str, Any], model: "VideoLisaForSegmentation",
                   tokenizer: "PreTrainedTokenizerBase") -> None:
    """``train_config.yaml``, ``deepspeed_config.json`` and ``model/`` (config + tokenizer, no weights)."""
    import yaml

    write_text_atomic(run_dir / RUN_CONFIG_FILE, yaml.safe_dump(asdict(config), sort_keys=False))
    write_text_atomic(run_dir / RUN_DEEPSPEED_FILE, json.dumps(ds_config, indent=2))
    model_dir = run_dir / RUN_MODEL_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


def checkpoint_tag(step: int) -> str:
    """DeepSpeed tag of the checkpoint after ``step`` optimizer steps: ``step_000300``."""
    return f"step_{step:06d}"


def latest_tag(run_dir: Path) -> str | None:
    """The tag in ``checkpoints/latest`` (DeepSpeed's pointer to the last complete checkpoint), or None."""
    latest = run_dir / CHECKPOINT_DIR / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def read_best(run_dir: Path) -> dict[str, Any] | None:
    """``checkpoints/best.json`` (``{"tag", "step", "metric", "score"}``), or None."""
    path = run_dir / CHECKPOINT_DIR / BEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def remove_old_checkpoints(run_dir: Path, keep_last: int) -> list[str]:
    """Delete ``step_*`` checkpoints except the ``keep_last`` newest and the best; returns the removed tags."""
    checkpoints = run_dir / CHECKPOINT_DIR
    best = read_best(run_dir)
    protected = {best["tag"]} if best else set()
    tags = sorted(path.name for path in checkpoints.glob("step_*") if path.is_dir())
    removed = [tag for tag in tags[:-keep_last] if tag not in protected]
    for tag in removed:
        shutil.rmtree(checkpoints / tag)
    return removed


# ============================================================================================ validation
def default_metric(benchmark_name: str) -> str:
    """``gIoU`` for image benchmarks, ``JF`` for video benchmarks."""
    from videolisa.benchmarks import BENCHMARKS, ImageBenchmark

    return "gIoU" if issubclass(BENCHMARKS[benchmark_name], ImageBenchmark) else "JF"


def check_validation_data(section: ValidationSection) -> None:
    """Check the validation benchmark's layout before training starts."""
    from videolisa.benchmarks import get_benchmark

    if section.benchmark is None:
        return
    root = Path(section.root).expanduser()
    if not root.exists():
        raise MissingFilesError(f"validation.root={root} does not exist")
    get_benchmark(section.benchmark, root, section.split).validate()


def validate(
    model: "VideoLisaForSegmentation",
    tokenizer: "PreTrainedTokenizerBase",
    section: ValidationSection,
    out_dir: Path,
    device: torch.device,
    dtype: torch.dtype,
) -> float | None:
    """Evaluate the model on ``section.benchmark`` with the batch-evaluation code (all ranks share the
    videos); returns ``section.metric`` on rank 0, None on the other ranks.

    The model under training is evaluated in place and left exactly as it was: the predictor runs the stock
    SAM modules (its fast path re-classes the SAM encoder and, in bf16, casts SAM to float32, which would
    detach the parameters from DeepSpeed's flat buffers), the buffers it casts are restored, and the
    parameters are checked to still be the tensors the optimizer updates. Training mode is restored.
    """
    from videolisa.evaluation import EvaluationSettings, run_evaluation
    from videolisa.predictor import VideoLisaPredictor

    buffers = {(module, name): buffer for module in model.modules() for name, buffer in module._buffers.items()}
    storage = {name: (parameter.data_ptr(), parameter.dtype) for name, parameter in model.named_parameters()}
    was_training = model.training
    try:
        predictor = VideoLisaPredictor(model, tokenizer, device=device, dtype=dtype, chunk_size=section.chunk_size,
                                       fast_sam=False)
        settings = EvaluationSettings(
            benchmark=section.benchmark, data_root=Path(section.root).expanduser(), model="in-training model",
            out=out_dir, split=section.split, limit=section.limit, chunk_size=section.chunk_size,
        )
        result = run_evaluation(settings, predictor)
    finally:
        for (module, name), buffer in buffers.items():
            module._buffers[name] = buffer
        model.train(was_training)
    moved = [name for name, parameter in model.named_parameters()
             if (parameter.data_ptr(), parameter.dtype) != storage[name]]
    if moved:
        raise RuntimeError(f"validation replaced the storage of trained parameters {moved[:5]}")
    if not result:
        return None
    metric = section.metric or default_metric(section.benchmark)
    overall = result.get("score", {}).get("overall", {})
    if metric not in overall:
        raise InvalidInputError(f"validation.metric={metric!r} is not among the scores {sorted(overall)}")
    return float(overall[metric])


# ============================================================================================ training loop
@dataclass
class StepMetrics:
    """Losses of one optimizer step (averaged over micro-batches and processes), lr and throughput."""

    step: int
    loss: float
    ce_loss: float
    bce_loss: float
    dice_loss: float
    lr: float
    samples_per_second: float
    seconds_per_step: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict (metrics.jsonl, TensorBoard)."""
        return asdict(self)


def micro_batch_seed(seed: int, step: int, slot: int) -> int:
    """The torch seed of micro-batch ``slot`` (``micro_step x processes + rank``) of optimizer step ``step``:
    dropout masks depend neither on where a run resumed nor on how the global batch is split over processes."""
    return int(np.random.SeedSequence([seed, step, slot]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@dataclass
class TrainingRun:
    """Everything a run needs, prepared by :func:`prepare_run` (config, directories, resume state)."""

    config: TrainingConfig
    run_dir: Path
    resume: bool


def prepare_run(config_path: Path | None, resume_dir: Path | None, overrides: Sequence[str]) -> TrainingRun:
    """A new run from ``config_path`` + overrides, or a resumed one from ``resume_dir``'s saved config +
    overrides (only logging, checkpointing, workers, micro-batch and validation may change)."""
    if resume_dir is None:
        if config_path is None:
            raise InvalidInputError("give --config CONFIG.yaml for a new run, or --resume RUN_DIR")
        config = load_training_config(config_path, overrides)
        run_dir = Path(config.train.output_dir).expanduser().resolve()
        if (run_dir / RUN_CONFIG_FILE).exists():
            raise InvalidInputError(
                f"train.output_dir={run_dir} already holds a run; continue it with --resume {run_dir} or choose "
                "another train.output_dir"
            )
        return TrainingRun(config, run_dir, resume=False)
    if config_path is not None:
        raise InvalidInputError("--resume uses the run's saved train_config.yaml; do not pass --config too")
    resume_dir = resume_dir.expanduser().resolve()
    saved_path = resume_dir / RUN_CONFIG_FILE
    if not saved_path.is_file():
        raise MissingFilesError(f"--resume {resume_dir}: {RUN_CONFIG_FILE} not found (is it a run directory?)")
    if latest_tag(resume_dir) is None:
        raise MissingFilesError(f"--resume {resume_dir}: no checkpoint in {resume_dir / CHECKPOINT_DIR} to resume from")
    saved = load_training_config(saved_path)
    config = load_training_config(saved_path, overrides)
    check_resume_changes(saved, config)
    return TrainingRun(config, resume_dir, resume=True)


class Trainer:
    """The DeepSpeed training loop of one process (see :func:`run_training`)."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.config = run.config
        self.run_dir = run.run_dir
        self.rank, self.world_size = init_distributed()
        self.precision = resolve_precision(self.config.train.precision)
        self.dtype = precision_dtype(self.precision)
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if cuda else "cpu")
        self.accumulation = gradient_accumulation_steps(self.config.train, self.world_size)
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.writer = None
        self.lr_scale_of_first_group = 1.0

    # ------------------------------------------------------------------ setup
    def _build_model(self) -> tuple[torch.nn.Module, "PreTrainedTokenizerBase"]:
        seed_everything(self.config.train.seed)
        if self.run.resume:
            from videolisa.checkpoint import load_tokenizer

            model_dir = self.run_dir / RUN_MODEL_DIR
            model = build_model_skeleton(model_dir, self.dtype)
            tokenizer = load_tokenizer(model_dir)
        else:
            model, tokenizer = build_model_and_tokenizer(self.config.model, self.dtype)
        if self.config.model.gradient_checkpointing:
            model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return apply_freezing_and_lora(model, self.config.lora, self.config.model.trainable), tokenizer

    def _build_data(self, model_config: "VideoLisaConfig") -> None:
        from videolisa.data import MixtureDataset, SampleSettings, VideoLisaCollator, build_dataset_groups

        train, data = self.config.train, self.config.data
        groups = build_dataset_groups(data, SampleSettings.from_model_config(model_config))
        self.dataset = MixtureDataset(groups, data.rates, train.seed, train.total_steps * train.global_batch_size)
        self.collator = VideoLisaCollator(self.tokenizer, model_config, train.max_text_tokens)

    def _data_loader(self) -> torch.utils.data.DataLoader:
        from videolisa.data import StepSampler

        train = self.config.train
        sampler = StepSampler(self.step, train.total_steps, train.micro_batch_size, self.accumulation,
                              self.world_size, self.rank)
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=train.micro_batch_size, sampler=sampler, collate_fn=self.collator,
            num_workers=train.num_workers,
        )

    def setup(self) -> None:
        """Build model, data and engine; save the run files (new run) or load the checkpoint (resume)."""
        import deepspeed

        config = self.config
        check_validation_data(config.validation)
        model, self.tokenizer = self._build_model()
        self.model_config = unwrap_model(model).config
        self._build_data(self.model_config)
        groups = build_parameter_groups(model, config.optim.lr_scales)
        self.lr_scale_of_first_group = groups[0].scale
        ds_config = scale_schedule(
            build_deepspeed_config(Path(config.train.deepspeed_config), config, self.world_size, self.precision),
            [group.scale for group in groups],
        )
        trainable, total = trainable_parameter_count(model)
        logger.info("parameters: %d trainable of %d; precision %s; %d processes x %d micro-batch x %d accumulation",
                    trainable, total, self.precision, self.world_size, config.train.micro_batch_size, self.accumulation)
        for group in groups:
            if group.prefix is not None:
                logger.info("lr x%g for %s (%d parameters)", group.scale, group.prefix,
                            sum(p.numel() for p in group.parameters))
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, model_parameters=optimizer_parameter_groups(groups, config.optim.lr), config=ds_config,
        )
        if self.run.resume:
            self._load_checkpoint()
        elif self.rank == 0:
            save_run_files(self.run_dir, config, ds_config, unwrap_model(model), self.tokenizer)
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step or None)

    def _load_checkpoint(self) -> None:
        load_path, client_state = self.engine.load_checkpoint(str(self.run_dir / CHECKPOINT_DIR))
        if load_path is None:
            raise CheckpointError(f"could not load the latest checkpoint of {self.run_dir / CHECKPOINT_DIR}")
        self.step = int(client_state["step"])
        self.best = read_best(self.run_dir)
        logger.info("resumed from %s at step %d", load_path, self.step)

    # ------------------------------------------------------------------ steps
    def _train_step(self, batches: Iterator["VideoLisaBatch"]) -> StepMetrics:
        start = time.perf_counter()
        totals = torch.zeros(4, dtype=torch.float64)
        for micro_step in range(self.accumulation):
            slot = micro_step * self.world_size + self.rank
            torch.manual_seed(micro_batch_seed(self.config.train.seed, self.step, slot))
            batch = next(batches).to(self.device, dtype=self.dtype)
            with autocast_context(self.device, self.precision):
                output = self.engine(batch)
            self.engine.backward(output.loss)
            self.engine.step()
            losses = (output.loss, output.ce_loss, output.bce_loss, output.dice_loss)
            totals += torch.stack([loss.detach().double().cpu() for loss in losses])
        self.step += 1
        losses = self._average_over_processes(totals / self.accumulation)
        seconds = time.perf_counter() - start
        # The logged lr is the recipe's schedule (optim.lr's), whatever the scale of the first group.
        lr = float(self.scheduler.get_last_lr()[0]) / self.lr_scale_of_first_group
        return StepMetrics(self.step, *losses.tolist(), lr=lr,
                           samples_per_second=self.config.train.global_batch_size / seconds, seconds_per_step=seconds)

    def _average_over_processes(self, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        values = values.to(self.device)
        dist.all_reduce(values)
        return (values / self.world_size).cpu()

    def _log(self, metrics: StepMetrics, progress: Any) -> None:
        if self.rank != 0:
            return
        values = metrics.as_dict()
        with (self.run_dir / METRICS_FILE).open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(values) + "\n")
        for name in ("loss", "ce_loss", "bce_loss", "dice_loss"):
            self.writer.add_scalar(f"loss/{name}", values[name], metrics.step)
        self.writer.add_scalar("lr", metrics.lr, metrics.step)
        self.writer.add_scalar("throughput/samples_per_second", metrics.samples_per_second, metrics.step)
        progress.set_postfix(loss=f"{metrics.loss:.4f}", lr=f"{metrics.lr:.2e}", refresh=False)
        progress.update(1)
        if metrics.step % self.config.train.log_every == 0 or metrics.step == self.config.train.total_steps:
            logger.info("step %d/%d loss %.4f (ce %.4f bce %.4f dice %.4f) lr %.3e %.2f samples/s",
                        metrics.step, self.config.train.total_steps, metrics.loss, metrics.ce_loss, metrics.bce_loss,
                        metrics.dice_loss, metrics.lr, metrics.samples_per_second)

    # ------------------------------------------------------------------ checkpoints and validation
    def save_checkpoint(self) -> None:
        """DeepSpeed checkpoint ``step_XXXXXX`` (all processes), then rotation of old ones (rank 0)."""
        import torch.distributed as dist

        tag = checkpoint_tag(self.step)
        self.engine.save_checkpoint(str(self.run_dir / CHECKPOINT_DIR), tag=tag, client_state={"step": self.step})
        dist.barrier()
        if self.rank == 0:
            # best.json only ever names a complete checkpoint, and the rotation below spares it.
            if self.best is not None and self.best["step"] == self.step:
                write_text_atomic(self.run_dir / CHECKPOINT_DIR / BEST_FILE, json.dumps(self.best, indent=2))
            removed = remove_old_checkpoints(self.run_dir, self.config.train.keep_last)
            logger.info("saved checkpoint %s%s", tag, f"; removed {removed}" if removed else "")
        dist.barrier()

    def run_validation(self) -> None:
        """Validate and remember the best score (written with the checkpoint of this step)."""
        import torch.distributed as dist

        section = self.config.validation
        out_dir = self.run_dir / "validation" / checkpoint_tag(self.step)
        with autocast_context(self.device, self.precision):
            model = unwrap_model(self.engine.module)
            score = validate(model, self.tokenizer, section, out_dir, self.device, self.dtype)
        shared = [score]
        dist.broadcast_object_list(shared, src=0)
        score = shared[0]
        metric = section.metric or default_metric(section.benchmark)
        if self.rank == 0:
            self.writer.add_scalar(f"validation/{metric}", score, self.step)
            logger.info("validation step %d: %s %.4f", self.step, metric, score)
        if self.best is None or score > self.best["score"]:
            self.best = {"tag": checkpoint_tag(self.step), "step": self.step, "metric": metric, "score": score}

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run the remaining steps; returns the final step, the last metrics and the best checkpoint."""
        from tqdm.auto import tqdm

        train, validation = self.config.train, self.config.validation
        batches = iter(self._data_loader())
        progress = tqdm(total=train.total_steps, initial=self.step, desc="train", unit="step", disable=self.rank != 0)
        metrics = None
        while self.step < train.total_steps:
            metrics = self._train_step(batches)
            self._log(metrics, progress)
            validate_now = validation.benchmark is not None and self.step % validation.every == 0
            if validate_now or self.step % train.save_every == 0 or self.step == train.total_steps:
                if validate_now:
                    self.run_validation()
                self.save_checkpoint()
        progress.close()
        if self.writer is not None:
            self.writer.close()
        return {"step": self.step, "last": metrics.as_dict() if metrics else None, "best": self.best}


def run_training(run: TrainingRun) -> dict[str, Any]:
    """Train (or continue training) the run on this process; call it from every process of the launcher."""
    trainer = Trainer(run)
    trainer.setup()
    return trainer.train()


# ============================================================================================ export
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

    from videolisa.checkpoint import build_empty_model, load_tokenizer, save_model
    from videolisa.config import VideoLisaConfig

    run_dir = run_dir.expanduser().resolve()
    config = load_training_config(run_dir / RUN_CONFIG_FILE)
    tag = resolve_export_tag(run_dir, tag)
    state_dict = get_fp32_state_dict_from_zero_checkpoint(str(run_dir / CHECKPOINT_DIR), tag=tag)
    model = apply_freezing_and_lora(build_empty_model(VideoLisaConfig.from_pretrained(run_dir / RUN_MODEL_DIR)),
                                    config.lora, config.model.trainable)
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
