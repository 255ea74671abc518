"""The training config (``train/configs/*.yaml``): dataclasses, YAML loading with ``key=value`` overrides, and the
rules of what a resumed run may change."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

from videolisa.data.mixture import DataConfig
from videolisa.errors import InvalidInputError, MissingFilesError

MODEL_SOURCES = ("llava_phi3", "pretrained", "scratch")
TRAINABLE_SETS = ("original", "all")
PRECISIONS = ("auto", "bf16", "fp32")
# Config sections a resumed run may change; anything else would change the data order or the model.
RESUMABLE_KEYS = (
    "train.num_workers",
    "train.log_every",
    "train.save_every",
    "train.keep_last",
    "train.micro_batch_size",
    "train.report_to",
    "validation.",
)
# Experiment trackers train.report_to may name (videolisa.training.tracking).
TRACKERS = ("tensorboard", "wandb", "mlflow")


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
        trainable: ``original`` (docs/original.md §1.8: embeddings, LM head, SAM mask decoder, prompt head, + LoRA) or
            ``all`` (every parameter, for a model trained from scratch, where nothing is pretrained; no LoRA).
        frozen: parameter-name prefixes (module paths such as ``sam`` or ``sam.image_encoder``) frozen on top of
            ``trainable``: a stage of a staged recipe that keeps what an earlier stage trained (each prefix must
            name at least one parameter).
        sam_checkpoint: for ``llava_phi3`` the stock SAM ``.pth``; for ``scratch`` and ``pretrained`` optional SAM
            weights (stock key layout, ``.pth`` or ``.safetensors``) that replace the model's SAM after loading.
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
    frozen: list[str] = field(default_factory=list)


@dataclass
class LoraConfig:
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
class TrainConfig:
    """``train``: steps, batch sizes, precision, logging and checkpointing.

    ``global_batch_size`` is per optimizer step over all processes; the gradient accumulation is
    ``global_batch_size / (micro_batch_size x processes)``, so the same recipe runs on 1, 8 or 64 GPUs.
    ``deepspeed_config`` is relative to the YAML file's folder. ``report_to`` lists the experiment trackers
    (``tensorboard``, ``wandb``, ``mlflow``; see :mod:`videolisa.training.tracking`), ``[]`` for none.
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
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class ValidationConfig:
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
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

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
        for prefix in model.frozen:
            _require_name_prefix("model.frozen", prefix)
        if model.source == "scratch" and not model.tokenizer:
            raise InvalidInputError("model.tokenizer must be set for model.source=scratch ('tiny' or a folder)")
        _require_choice("train.precision", train.precision, PRECISIONS)
        for tracker in train.report_to:
            _require_choice("train.report_to[]", tracker, TRACKERS)
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
            _require_name_prefix("optim.lr_scales", prefix)
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


def _require_name_prefix(key: str, prefix: str) -> None:
    """A parameter-name prefix is a module path: not empty, no leading or trailing dot."""
    if not prefix or prefix.startswith(".") or prefix.endswith("."):
        raise InvalidInputError(f"{key}: {prefix!r} is not a parameter-name prefix like sam.image_encoder")


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


def load_resumed_config(
    resume_dir: Path,
    config_path: Path | None,
    overrides: Sequence[str],
    *,
    config_file: str,
    load: Callable[[Path, Sequence[str]], Any],
    latest_checkpoint: Callable[[Path], Any],
    checkpoint_dir: str,
    resumable: tuple[str, ...] = RESUMABLE_KEYS,
) -> tuple[Any, Path]:
    """``(config, run folder)`` of a resumed run: its saved ``config_file`` read with ``load`` plus ``overrides``,
    which may change only the ``resumable`` keys; the folder must hold a checkpoint (``latest_checkpoint`` not
    None) and no ``--config`` may be given too."""
    if config_path is not None:
        raise InvalidInputError(f"--resume uses the run's saved {config_file}; do not pass --config too")
    run_dir = resume_dir.expanduser().resolve()
    saved_path = run_dir / config_file
    if not saved_path.is_file():
        raise MissingFilesError(f"--resume {run_dir}: {config_file} not found (is it a run directory?)")
    if latest_checkpoint(run_dir) is None:
        raise MissingFilesError(f"--resume {run_dir}: no checkpoint in {run_dir / checkpoint_dir} to resume from")
    config = load(saved_path, overrides)
    check_resume_changes(load(saved_path, ()), config, resumable)
    return config, run_dir


def check_resume_changes(saved: Any, requested: Any, resumable: tuple[str, ...] = RESUMABLE_KEYS) -> None:
    """A resumed run may only change the keys under the ``resumable`` prefixes (for :class:`TrainingConfig`:
    logging, checkpointing, workers, micro-batch and validation); ``saved`` and ``requested`` are config
    dataclasses of one kind."""
    before, after = flatten_config(asdict(saved)), flatten_config(asdict(requested))
    changed = sorted(
        key for key in set(before) | set(after) if before.get(key) != after.get(key) and not key.startswith(resumable)
    )
    if changed:
        raise InvalidInputError(
            f"cannot change {changed} when resuming (it would change the model, the data order or the schedule); "
            f"resumable keys: {list(resumable)}"
        )
