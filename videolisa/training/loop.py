"""The training loop of one process: model, data, DeepSpeed engine, steps, logging, checkpoints, validation.

Determinism (what makes kill-and-resume equal an uninterrupted run): sample ``i`` depends only on
``(train.seed, i)`` (:class:`~videolisa.data.mixture.MixtureDataset`), the step-``s`` samples are fixed by
:class:`~videolisa.data.mixture.StepSampler`, and the torch RNG (LoRA dropout) is reseeded from
``(seed, step, micro-batch slot)`` before every micro-batch; the checkpoint holds weights, optimizer and scheduler
state.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from videolisa.builder import build_model_and_tokenizer, build_model_skeleton
from videolisa.distributed import init_distributed
from videolisa.errors import CheckpointError
from videolisa.training.engine import build_deepspeed_config, gradient_accumulation_steps
from videolisa.training.model import (
    apply_freezing_and_lora,
    autocast_context,
    precision_dtype,
    resolve_precision,
    trainable_parameter_count,
    unwrap_model,
)
from videolisa.training.optim import build_parameter_groups, optimizer_parameter_groups, scale_schedule
from videolisa.training.run import (
    BEST_FILE,
    CHECKPOINT_DIR,
    METRICS_FILE,
    RUN_MODEL_DIR,
    VALIDATION_DIR,
    TrainingRun,
    check_resumed_deepspeed_config,
    checkpoint_tag,
    read_best,
    remove_old_checkpoints,
    save_run_files,
    truncate_run_logs,
    write_text_atomic,
)
from videolisa.training.tracking import Trackers, check_trackers
from videolisa.training.validation import check_validation_data, default_metric, validate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from videolisa.config import VideoLisaConfig
    from videolisa.modeling.batch import VideoLisaBatch

logger = logging.getLogger(__name__)


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
        self.trackers: Trackers | None = None  # rank 0 only
        self.lr_scale_of_first_group = 1.0

    # ------------------------------------------------------------------ setup
    def _build_model(self) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
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
        model_config = self.config.model
        return apply_freezing_and_lora(model, self.config.lora, model_config.trainable, model_config.frozen), tokenizer

    def _build_data(self, model_config: VideoLisaConfig) -> None:
        from videolisa.data import MixtureDataset, SampleConfig, VideoLisaCollator, build_dataset_groups

        train, data = self.config.train, self.config.data
        groups = build_dataset_groups(data, SampleConfig.from_model_config(model_config))
        self.dataset = MixtureDataset(groups, data.rates, train.seed, train.total_steps * train.global_batch_size)
        self.collator = VideoLisaCollator(self.tokenizer, model_config, train.max_text_tokens)

    def _data_loader(self) -> torch.utils.data.DataLoader:
        from videolisa.data import StepSampler

        train = self.config.train
        sampler = StepSampler(
            self.step, train.total_steps, train.micro_batch_size, self.accumulation, self.world_size, self.rank
        )
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_size=train.micro_batch_size,
            sampler=sampler,
            collate_fn=self.collator,
            num_workers=train.num_workers,
        )

    def setup(self) -> None:
        """Build model, data and engine; save the run files (new run) or load the checkpoint (resume)."""
        import deepspeed

        config = self.config
        check_validation_data(config.validation)
        check_trackers(config.train.report_to)  # before building anything: a missing tracker fails fast
        model, self.tokenizer = self._build_model()
        self.model_config = unwrap_model(model).config
        self._build_data(self.model_config)
        groups = build_parameter_groups(model, config.optim.lr_scales)
        self.lr_scale_of_first_group = groups[0].scale
        ds_config = scale_schedule(
            build_deepspeed_config(Path(config.train.deepspeed_config), config, self.world_size, self.precision),
            [group.scale for group in groups],
        )
        if self.run.resume:
            check_resumed_deepspeed_config(self.run_dir, ds_config, self.world_size)
        trainable, total = trainable_parameter_count(model)
        logger.info(
            "parameters: %d trainable of %d; precision %s; %d processes x %d micro-batch x %d accumulation",
            trainable,
            total,
            self.precision,
            self.world_size,
            config.train.micro_batch_size,
            self.accumulation,
        )
        for group in groups:
            if group.prefix is not None:
                logger.info(
                    "lr x%g for %s (%d parameters)", group.scale, group.prefix, sum(p.numel() for p in group.parameters)
                )
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=optimizer_parameter_groups(groups, config.optim.lr),
            config=ds_config,
        )
        if self.run.resume:
            self._load_checkpoint()
        elif self.rank == 0:
            save_run_files(self.run_dir, config, ds_config, unwrap_model(model), self.tokenizer)
        if self.rank == 0:
            if self.run.resume:  # no step is logged twice: cut what a killed run logged after its checkpoint
                truncate_run_logs(self.run_dir, self.step)
            self.trackers = Trackers(self.run_dir, config, self.step)

    def _load_checkpoint(self) -> None:
        load_path, client_state = self.engine.load_checkpoint(str(self.run_dir / CHECKPOINT_DIR))
        if load_path is None:
            raise CheckpointError(f"could not load the latest checkpoint of {self.run_dir / CHECKPOINT_DIR}")
        self.step = int(client_state["step"])
        self.best = read_best(self.run_dir)
        logger.info("resumed from %s at step %d", load_path, self.step)

    # ------------------------------------------------------------------ steps
    def _train_step(self, batches: Iterator[VideoLisaBatch]) -> StepMetrics:
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
        return StepMetrics(
            self.step,
            *losses.tolist(),
            lr=lr,
            samples_per_second=self.config.train.global_batch_size / seconds,
            seconds_per_step=seconds,
        )

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
        scalars = {f"loss/{name}": values[name] for name in ("loss", "ce_loss", "bce_loss", "dice_loss")}
        scalars.update({"lr": metrics.lr, "throughput/samples_per_second": metrics.samples_per_second})
        self.trackers.log_scalars(scalars, metrics.step)
        progress.set_postfix(loss=f"{metrics.loss:.4f}", lr=f"{metrics.lr:.2e}", refresh=False)
        progress.update(1)
        if metrics.step % self.config.train.log_every == 0 or metrics.step == self.config.train.total_steps:
            logger.info(
                "step %d/%d loss %.4f (ce %.4f bce %.4f dice %.4f) lr %.3e %.2f samples/s",
                metrics.step,
                self.config.train.total_steps,
                metrics.loss,
                metrics.ce_loss,
                metrics.bce_loss,
                metrics.dice_loss,
                metrics.lr,
                metrics.samples_per_second,
            )

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
        out_dir = self.run_dir / VALIDATION_DIR / checkpoint_tag(self.step)
        with autocast_context(self.device, self.precision):
            model = unwrap_model(self.engine.module)
            score = validate(model, self.tokenizer, section, out_dir, self.device, self.dtype)
        shared = [score]
        dist.broadcast_object_list(shared, src=0)
        score = shared[0]
        metric = section.metric or default_metric(section.benchmark)
        if self.rank == 0:
            self.trackers.log_scalars({f"validation/{metric}": score}, self.step)
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
        if self.trackers is not None:
            self.trackers.close()
        return {"step": self.step, "last": metrics.as_dict() if metrics else None, "best": self.best}


def run_training(run: TrainingRun) -> dict[str, Any]:
    """Train (or continue training) the run on this process; call it from every process of the launcher."""
    trainer = Trainer(run)
    trainer.setup()
    return trainer.train()
