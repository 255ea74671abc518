"""The run folder: preparing a new or resumed run, the files it holds, and checkpoint bookkeeping.

A run directory holds ``train_config.yaml`` (the resolved config), ``deepspeed_config.json``, ``model/``
(the model config and tokenizer, no weights), ``checkpoints/`` (DeepSpeed checkpoints ``step_XXXXXX``, the
``latest`` tag file, ``best.json``), ``metrics.jsonl`` (one line per step), ``tensorboard/`` and
``validation/step_XXXXXX/`` (evaluation outputs).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.training.config import TrainingConfig, flatten_config, load_resumed_config, load_training_config

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter
    from transformers import PreTrainedTokenizerBase

    from videolisa.modeling.videolisa import VideoLisaForSegmentation

RUN_CONFIG_FILE = "train_config.yaml"
RUN_DEEPSPEED_FILE = "deepspeed_config.json"
RUN_MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
BEST_FILE = "best.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
VALIDATION_DIR = "validation"
# DeepSpeed entries a resumed run may change: they follow train.micro_batch_size, a resumable key.
RESUMABLE_DEEPSPEED_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


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
    config, run_dir = load_resumed_config(
        resume_dir,
        config_path,
        overrides,
        config_file=RUN_CONFIG_FILE,
        load=load_training_config,
        latest_checkpoint=latest_tag,
        checkpoint_dir=CHECKPOINT_DIR,
    )
    return TrainingRun(config, run_dir, resume=True)


def check_resumed_deepspeed_config(run_dir: Path, ds_config: dict[str, Any], world_size: int) -> None:
    """A resumed run must train with the DeepSpeed config it started with, on as many processes.

    DeepSpeed restores the optimizer's hyperparameters from the checkpoint, so an edited template (betas, ZeRO
    stage, ...) or a ``train.precision: auto`` that resolves to another precision on this machine would be
    silently ignored or half-applied; ZeRO partitions the optimizer state per process, so the process count may
    not change either. Only the micro-batch split (``train.micro_batch_size``) may differ. Raises
    InvalidInputError naming every difference.
    """
    saved_path = run_dir / RUN_DEEPSPEED_FILE
    if not saved_path.is_file():
        raise MissingFilesError(f"--resume {run_dir}: {RUN_DEEPSPEED_FILE} not found (is it a run directory?)")
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    saved_processes = saved["train_batch_size"] // (
        saved["train_micro_batch_size_per_gpu"] * saved["gradient_accumulation_steps"]
    )
    if saved_processes != world_size:
        raise InvalidInputError(
            f"--resume {run_dir}: the run was trained on {saved_processes} processes, this launch has {world_size}; "
            f"ZeRO's optimizer state is split per process, so resume with {saved_processes} processes"
        )
    before, after = flatten_config(saved), flatten_config(ds_config)
    changed = sorted(
        key
        for key in set(before) | set(after)
        if before.get(key) != after.get(key) and key not in RESUMABLE_DEEPSPEED_KEYS
    )
    if changed:
        details = "; ".join(f"{key}: {before.get(key)!r} then, {after.get(key)!r} now" for key in changed)
        raise InvalidInputError(
            f"--resume {run_dir}: the DeepSpeed config differs from the run's {RUN_DEEPSPEED_FILE} ({details}): "
            "the train.deepspeed_config template was edited, or train.precision=auto resolves to another "
            "precision here; DeepSpeed would keep the checkpoint's optimizer settings, so restore the template "
            "or start a new run"
        )


def truncate_metrics(metrics: Path, step: int) -> None:
    """Keep the lines of a ``metrics.jsonl`` up to ``step`` (an unfinished last line, a write a kill interrupted,
    is dropped too); nothing to do when the file does not exist."""
    if not metrics.is_file():
        return
    kept = []
    lines = metrics.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise InvalidInputError(f"{metrics}: line {number} is not JSON ({error})") from error
        if entry["step"] <= step:
            kept.append(line + "\n")
    write_text_atomic(metrics, "".join(kept))


def truncate_run_logs(run_dir: Path, step: int) -> None:
    """Cut what a run logged after its checkpoint at ``step`` (the steps a killed run did past it, which the
    resumed run does again): ``metrics.jsonl`` keeps its lines up to ``step`` (an unfinished last line is
    dropped too) and the ``validation/step_XXXXXX`` folders after ``step`` are removed. TensorBoard is cut by
    :func:`tensorboard_writer`."""
    truncate_metrics(run_dir / METRICS_FILE, step)
    for folder in sorted((run_dir / VALIDATION_DIR).glob("step_*")):
        suffix = folder.name.removeprefix("step_")
        if suffix.isdigit() and int(suffix) > step:
            shutil.rmtree(folder)


def tensorboard_writer(run_dir: Path, step: int) -> SummaryWriter:
    """The run's TensorBoard writer. Resuming after the checkpoint at ``step``, it purges the events a killed
    run logged for steps after ``step`` (TensorBoard's ``purge_step``: the first step logged again)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=step + 1 if step else None)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary name in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_run_files(
    run_dir: Path,
    config: TrainingConfig,
    ds_config: dict[str, Any],
    model: VideoLisaForSegmentation,
    tokenizer: PreTrainedTokenizerBase,
) -> None:
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
