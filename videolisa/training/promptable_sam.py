"""Stage 1 of the built-in recipe: train a preset's SAM as a promptable segmenter (issue 19).

Only ``model.sam`` (image encoder, prompt encoder, mask decoder) of a seeded preset model is trained, on the
custom JSONL that ``videolisa synth --layout custom`` writes, with every object of a clip as a target on the
same frames. Records with one target and an answer that names it are used; those about several objects or an
absent one (``--extra-kinds``) duplicate or add nothing for a promptable segmenter and are left out (their count
is logged). Each target gets one prompt kind per sample, drawn with the ``prompts`` probabilities:

* ``point``: 1-3 positive points drawn uniformly inside the target's mask on each frame (and, with probability
  ``prompts.negative_point``, a negative point on another object), in SAM input coordinates;
* ``box``: the mask's bounding box on each frame with a small jitter (``prompts.box_jitter`` of its size);
* ``semantic``: a learned embedding of the referent's appearance (the record's answer, ``"Sure, [SEG] red small
  triangle."`` -> ``"red small triangle"``) fed as the decoder's single sparse prompt token through
  :func:`videolisa.modeling.sam.decode_low_res_logits`, exactly where the LLM's ``[SEG]`` prompt goes later.
  The embedding table is a training aid only: it is kept in the checkpoints, never in ``sam.safetensors``.

Points and boxes go through ``sam.prompt_encoder`` like stock SAM. A frame on which the target is absent gets
its semantic prompt (and an empty target). Losses: the model's sigmoid BCE and DICE at the original frame size.

The run folder (``train.output_dir``) holds ``train_config.yaml``, ``metrics.jsonl``, ``checkpoints/`` (every
``train.save_every`` steps; ``--resume`` continues bit-exactly: the step-``s`` data comes from
``SeedSequence([seed, s])``), ``sam.safetensors`` (the SAM weights in the stock ``segment_anything`` key layout,
loadable with :func:`videolisa.checkpoint.load_sam_checkpoint`) and ``heldout.json`` (held-out mean IoU per
prompt kind and the cross-object IoU of semantic prompts).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.training.config import apply_overrides, build_section, load_resumed_config

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

    from videolisa.data.custom import CustomDataset, CustomRecord
    from videolisa.data.sample import TrainingSample

logger = logging.getLogger(__name__)
TASK = "promptable_sam"
PROMPT_KINDS = ("point", "box", "semantic")
CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "metrics.jsonl"
HELDOUT_FILE = "heldout.json"
SAM_FILE = "sam.safetensors"
CHECKPOINT_DIR = "checkpoints"
# Keys a resumed run may change (they change neither the model, the data order nor the schedule).
RESUMABLE_KEYS = ("train.log_every", "train.save_every", "train.progress", "heldout.")


@dataclass
class SamModelConfig:
    """``model``: the preset whose SAM is trained, with ``VideoLisaConfig.from_preset`` overrides."""

    preset: str = "synthetic"
    config_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class SamDataConfig:
    """``data``: custom JSONL files; up to ``max_targets`` distinct referents of a clip per sample."""

    custom_files: list[str] = field(default_factory=list)
    max_targets: int = 8


@dataclass
class PromptMixConfig:
    """``prompts``: per-target probabilities of each prompt kind (normalised), and point/box details."""

    point: float = 0.25
    box: float = 0.25
    semantic: float = 0.5
    max_points: int = 3
    negative_point: float = 0.5
    box_jitter: float = 0.05


@dataclass
class SamOptimConfig:
    """``optim``: AdamW; the image encoder's lr is ``lr x encoder_lr_scale``; linear warm-up then linear decay
    to ``min_lr_ratio x lr``."""

    lr: float = 1e-3
    encoder_lr_scale: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    gradient_clipping: float = 1.0


@dataclass
class SamLossConfig:
    """``loss``: weights of the sigmoid BCE and the DICE loss."""

    bce_weight: float = 0.0
    dice_weight: float = 2.0


@dataclass
class SamTrainConfig:
    """``train``: steps (one clip each), seed, run folder, logging and checkpointing."""

    steps: int = 2000
    seed: int = 0
    output_dir: str = "runs/builtin_stage1_sam"
    log_every: int = 10
    save_every: int = 250
    progress: bool = True


@dataclass
class HeldoutConfig:
    """``heldout``: evaluate on up to ``clips`` clips (one per video) of ``custom_file`` at the end and every
    ``every`` steps (0: only at the end); None: no held-out evaluation."""

    custom_file: str | None = None
    clips: int = 40
    every: int = 0
    seed: int = 0


@dataclass
class PromptableSamConfig:
    """The whole stage-1 config (``train/configs/builtin_stage1_sam.yaml``)."""

    task: str = TASK
    model: SamModelConfig = field(default_factory=SamModelConfig)
    data: SamDataConfig = field(default_factory=SamDataConfig)
    prompts: PromptMixConfig = field(default_factory=PromptMixConfig)
    optim: SamOptimConfig = field(default_factory=SamOptimConfig)
    loss: SamLossConfig = field(default_factory=SamLossConfig)
    train: SamTrainConfig = field(default_factory=SamTrainConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)

    def validate(self) -> None:
        """Raise InvalidInputError naming the first invalid key."""
        if self.task != TASK:
            raise InvalidInputError(f"task must be {TASK!r}, got {self.task!r}")
        if not self.data.custom_files:
            raise InvalidInputError("data.custom_files is empty: give the JSONL of `videolisa synth --layout custom`")
        prompts, optim, train = self.prompts, self.optim, self.train
        weights = [getattr(prompts, kind) for kind in PROMPT_KINDS]
        if any(weight < 0 for weight in weights) or sum(weights) <= 0:
            raise InvalidInputError(f"prompts.point/box/semantic must be >= 0 with a positive sum, got {weights}")
        if prompts.max_points < 1 or not 0 <= prompts.negative_point <= 1 or not 0 <= prompts.box_jitter < 1:
            raise InvalidInputError("prompts.max_points must be >= 1, negative_point in [0, 1], box_jitter in [0, 1)")
        for key in ("steps", "log_every", "save_every"):
            if getattr(train, key) <= 0:
                raise InvalidInputError(f"train.{key} must be a positive integer, got {getattr(train, key)}")
        if self.data.max_targets < 1 or self.heldout.clips < 1 or self.heldout.every < 0:
            raise InvalidInputError("data.max_targets and heldout.clips must be >= 1, heldout.every >= 0")
        if optim.lr <= 0 or optim.encoder_lr_scale < 0 or optim.weight_decay < 0 or optim.gradient_clipping < 0:
            raise InvalidInputError("optim.lr must be > 0; encoder_lr_scale, weight_decay, gradient_clipping >= 0")
        if len(optim.betas) != 2 or not all(0 <= beta < 1 for beta in optim.betas):
            raise InvalidInputError(f"optim.betas must be two numbers in [0, 1), got {optim.betas}")
        if not 0 <= optim.warmup_steps <= train.steps or not 0 <= optim.min_lr_ratio <= 1:
            raise InvalidInputError("optim.warmup_steps must be in [0, train.steps], optim.min_lr_ratio in [0, 1]")
        if self.loss.bce_weight < 0 or self.loss.dice_weight < 0:
            raise InvalidInputError("loss.bce_weight and loss.dice_weight must be >= 0")


def config_task(path: Path) -> str | None:
    """The top-level ``task`` of a training YAML (None when absent or not a mapping)."""
    import yaml

    if not path.is_file():
        return None
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    return values.get("task") if isinstance(values, dict) else None


def load_promptable_sam_config(path: Path, overrides: Sequence[str] = ()) -> PromptableSamConfig:
    """The YAML at ``path`` with ``key=value`` overrides, checked strictly against the dataclasses."""
    import yaml

    if not path.is_file():
        raise MissingFilesError(f"training config {path} does not exist")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise InvalidInputError(f"{path} must hold a mapping of config sections")
    config = build_section(PromptableSamConfig, apply_overrides(values, overrides), "")
    config.validate()
    return config


def appearance_of(answer: str, seg_token: str) -> str:
    """``"Sure, [SEG] red small triangle."`` -> ``"red small triangle"`` (empty for ``"Sure, [SEG]."`` and
    answers without ``seg_token``)."""
    return " ".join(answer.partition(seg_token)[2].strip(" .").split())


def lr_factor(step: int, optim: SamOptimConfig, total_steps: int) -> float:
    """The lr multiplier of optimizer step ``step`` (1-based): linear warm-up, then linear decay."""
    if step <= optim.warmup_steps:
        return step / max(1, optim.warmup_steps)
    progress = (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps)
    return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * max(0.0, 1 - progress)


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The data RNG of step ``step``: independent of what ran before, so a resumed run draws the same data."""
    return np.random.default_rng(np.random.SeedSequence([seed, step]))


class PromptableSamTrainer:
    """The model, the data, the prompt sampling, the optimizer and the held-out evaluation of stage 1."""

    def __init__(self, config: PromptableSamConfig) -> None:
        from videolisa.builder import build_model
        from videolisa.config import VideoLisaConfig
        from videolisa.data.sample import SampleConfig

        self.config = config
        # Seeded exactly like the package trainer (videolisa.training.loop.seed_everything + build_model).
        random.seed(config.train.seed)
        np.random.seed(config.train.seed)
        torch.manual_seed(config.train.seed)
        try:
            model_config = VideoLisaConfig.from_preset(config.model.preset, **config.model.config_overrides)
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"model: {error}") from error
        self.model_config = model_config
        self.model = build_model(model_config)
        self.sam: Sam = self.model.sam
        self.sam.train()
        self.seg_token = model_config.seg_token
        self.sample_config = SampleConfig.from_model_config(model_config)
        self.dataset = self._single_referent_dataset(config.data.custom_files)
        self.appearance = self._appearances(self.dataset)
        names = sorted(set(self.appearance.values()))
        self.prompt_index = {name: index for index, name in enumerate(names)}
        generator = torch.Generator().manual_seed(config.train.seed + 1)  # leaves the model's torch RNG alone
        self.semantic = torch.nn.Embedding(len(names), model_config.sam.prompt_embed_dim)
        with torch.no_grad():
            self.semantic.weight.copy_(torch.randn(self.semantic.weight.shape, generator=generator))
        encoder = list(self.sam.image_encoder.parameters())
        rest = [*self.sam.prompt_encoder.parameters(), *self.sam.mask_decoder.parameters()]
        rest += list(self.semantic.parameters())
        self.parameters = [*encoder, *rest]
        optim = config.optim
        self.base_lrs = [optim.lr, optim.lr * optim.encoder_lr_scale]
        self.optimizer = torch.optim.AdamW(
            [{"params": rest, "lr": self.base_lrs[0]}, {"params": encoder, "lr": self.base_lrs[1]}],
            lr=optim.lr,
            betas=tuple(optim.betas),
            weight_decay=optim.weight_decay,
        )
        self.step = 0
        self.heldout_dataset = None
        if config.heldout.custom_file:
            self.heldout_dataset = self._single_referent_dataset([config.heldout.custom_file])
            self.heldout_appearance = self._appearances(self.heldout_dataset)

    def _single_referent_dataset(self, files: Sequence[str]) -> CustomDataset:
        """The records of ``files`` about one object: those with several masks (``multi``) or whose answer names
        nothing (``absent``, ``"Sure, [SEG]."``) are left out, and their count logged."""
        from videolisa.data.custom import CustomDataset

        def about_one_object(record: CustomRecord) -> bool:
            names_nothing = record.answer is not None and not appearance_of(record.answer, self.seg_token)
            return len(record.targets) == 1 and not names_nothing

        dataset = CustomDataset(self.sample_config, files, self.config.data.max_targets * 4, keep=about_one_object)
        if dataset.num_left_out:
            logger.info("%s: %d records about several objects or none left out", ", ".join(files), dataset.num_left_out)
        return dataset

    def _appearances(self, dataset) -> dict[str, str]:
        appearance = {}
        for record in dataset.records:
            if record.answer is None or self.seg_token not in record.answer:
                raise InvalidInputError(
                    f"{record.where}: every record needs the answer that names its referent after {self.seg_token} "
                    "(write the data with `videolisa synth --layout custom`)"
                )
            appearance[record.where] = appearance_of(record.answer, self.seg_token)
        return appearance

    # ----------------------------------------------------------------------------------------------- data

    def build_clip(self, dataset, index: int, rng: np.random.Generator) -> tuple[TrainingSample, list[str]]:
        """A sample of record ``index`` with every other referent of its clip (one target per distinct
        appearance, at most ``data.max_targets``) and the targets' appearances."""
        sample = dataset.build_sample(index, rng)
        appearance = self.appearance if dataset is self.dataset else self.heldout_appearance
        keep, names = [], []
        for row, where in enumerate(sample.metadata["records"]):
            name = appearance[where]
            if name not in names and len(names) < self.config.data.max_targets:
                keep.append(row)
                names.append(name)
        sample.target_masks = sample.target_masks[keep]
        return sample, names

    def _scale(self, sample: TrainingSample) -> tuple[float, float]:
        """(x, y) factors from original pixel coordinates to SAM input coordinates (ResizeLongestSide)."""
        (height, width), (resized_h, resized_w) = sample.original_hw, sample.resized_hw
        return resized_w / width, resized_h / height

    def sample_prompts(
        self, sample: TrainingSample, kinds: Sequence[str], rng: np.random.Generator
    ) -> list[list[tuple[str, Any]]]:
        """Per frame and target: ``("semantic", None)``, ``("point", (coords [N, 2], labels [N]))`` or
        ``("box", [4])`` in SAM input coordinates. A target absent from a frame gets its semantic prompt."""
        masks = sample.target_masks.numpy().astype(bool)  # [K, T, H, W]
        scale_x, scale_y = self._scale(sample)
        resized_h, resized_w = sample.resized_hw
        prompts = self.config.prompts
        per_frame = []
        for frame in range(masks.shape[1]):
            row = []
            for target, kind in enumerate(kinds):
                mask = masks[target, frame]
                ys, xs = np.nonzero(mask)
                if kind == "semantic" or len(xs) == 0:
                    row.append(("semantic", None))
                    continue
                if kind == "point":
                    count = int(rng.integers(1, prompts.max_points + 1))
                    picks = rng.integers(len(xs), size=count)
                    coords = [[xs[i] + rng.random(), ys[i] + rng.random()] for i in picks]
                    labels = [1] * count
                    others = masks[:, frame].any(axis=0) & ~mask
                    if rng.random() < prompts.negative_point and others.any():
                        oy, ox = np.nonzero(others)
                        pick = int(rng.integers(len(ox)))
                        coords.append([ox[pick] + rng.random(), oy[pick] + rng.random()])
                        labels.append(0)
                    points = np.asarray(coords, dtype=np.float32) * np.array([scale_x, scale_y], dtype=np.float32)
                    row.append(("point", (points, np.asarray(labels, dtype=np.int64))))
                else:
                    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
                    size = np.array([box[2] - box[0], box[3] - box[1]] * 2, dtype=np.float32)
                    noise = np.clip(
                        rng.normal(0, prompts.box_jitter, 4), -2 * prompts.box_jitter, 2 * prompts.box_jitter
                    )
                    box = (box + noise * size) * np.array([scale_x, scale_y] * 2, dtype=np.float32)
                    box = np.clip(box, 0, [resized_w, resized_h, resized_w, resized_h]).astype(np.float32)
                    row.append(("box", box))
            per_frame.append(row)
        return per_frame

    # -------------------------------------------------------------------------------------------- decoding

    def decode(self, embeddings: torch.Tensor, prompts: list[list[tuple[str, Any]]], names: Sequence[str]):
        """``[T, K, h, w]`` low-res logits: semantic prompts through ``decode_low_res_logits`` (the [SEG] path),
        points and boxes through the stock prompt encoder, one decoder call per frame and kind."""
        from videolisa.modeling.sam import decode_low_res_logits

        num_frames, num_targets = len(prompts), len(names)
        semantic_targets = sorted({k for row in prompts for k, (kind, _) in enumerate(row) if kind == "semantic"})
        columns: list[list[torch.Tensor | None]] = [[None] * num_targets for _ in range(num_frames)]
        if semantic_targets:
            ids = torch.tensor([self.prompt_index[names[k]] for k in semantic_targets])
            semantic = decode_low_res_logits(self.sam, embeddings, self.semantic(ids))  # [T, S, h, w]
            for frame, row in enumerate(prompts):
                for column, target in enumerate(semantic_targets):
                    if row[target][0] == "semantic":
                        columns[frame][target] = semantic[frame, column]
        image_pe = self.sam.prompt_encoder.get_dense_pe()
        for frame, row in enumerate(prompts):
            for kind in ("point", "box"):
                targets = [k for k, (prompt_kind, _) in enumerate(row) if prompt_kind == kind]
                if not targets:
                    continue
                if kind == "point":
                    width = max(len(row[k][1][1]) for k in targets)
                    coords = torch.zeros(len(targets), width, 2)
                    labels = torch.full((len(targets), width), -1, dtype=torch.int64)  # -1: padding
                    for slot, k in enumerate(targets):
                        points, point_labels = row[k][1]
                        coords[slot, : len(point_labels)] = torch.from_numpy(points)
                        labels[slot, : len(point_labels)] = torch.from_numpy(point_labels)
                    sparse, dense = self.sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
                else:
                    boxes = torch.from_numpy(np.stack([row[k][1] for k in targets]))
                    sparse, dense = self.sam.prompt_encoder(points=None, boxes=boxes, masks=None)
                low_res, _ = self.sam.mask_decoder(
                    image_embeddings=embeddings[frame : frame + 1],
                    image_pe=image_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=False,
                )
                for slot, k in enumerate(targets):
                    columns[frame][k] = low_res[slot, 0]
        return torch.stack([torch.stack(row) for row in columns])

    def predict(self, sample: TrainingSample, prompts, names, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """``[K, T, H, W]`` mask logits at the original frame size."""
        from videolisa.modeling.sam import upscale_mask_logits

        if embeddings is None:
            embeddings = self.sam.image_encoder(sample.pixel_values_sam)
        low_res = self.decode(embeddings, prompts, names)
        return upscale_mask_logits(self.sam, low_res, sample.resized_hw, sample.original_hw).transpose(0, 1)

    # -------------------------------------------------------------------------------------------- training

    def draw_kinds(self, count: int, rng: np.random.Generator) -> list[str]:
        weights = np.array([getattr(self.config.prompts, kind) for kind in PROMPT_KINDS], dtype=np.float64)
        return [PROMPT_KINDS[i] for i in rng.choice(len(PROMPT_KINDS), size=count, p=weights / weights.sum())]

    def train_step(self) -> dict[str, float]:
        """One optimizer step on the step's clip; returns the losses and the lr."""
        from videolisa.losses import mask_losses

        step = self.step + 1
        rng = step_rng(self.config.train.seed, step)
        sample, names = self.build_clip(self.dataset, int(rng.integers(len(self.dataset))), rng)
        kinds = self.draw_kinds(len(names), rng)
        prompts = self.sample_prompts(sample, kinds, rng)
        factor = lr_factor(step, self.config.optim, self.config.train.steps)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        logits = self.predict(sample, prompts, names)
        losses = mask_losses(
            [logits.flatten(0, 1)],
            [sample.target_masks.float().flatten(0, 1)],
            self.model_config.dice_scale,
            self.model_config.dice_eps,
        )
        weights = self.config.loss
        loss = weights.bce_weight * losses.bce + weights.dice_weight * losses.dice
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.gradient_clipping > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.optim.gradient_clipping)
        self.optimizer.step()
        self.step = step
        return {
            "loss": loss.item(),
            "bce": losses.bce.item(),
            "dice": losses.dice.item(),
            "lr": self.base_lrs[0] * factor,
        }

    # ------------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Held-out mean IoU per prompt kind (over frames where the target is present; referents whose
        appearance has no trained embedding are left out) and the mean cross-object IoU of semantic prompts:
        IoU(mask of A's prompt, ground truth of B) over pairs of distinct referents A, B of a clip (frames where
        B is present). One clip per video (its first record's), drawn with ``heldout.seed``."""
        dataset = self.heldout_dataset
        first_of_video: dict[Path, int] = {}
        for index, record in enumerate(dataset.records):
            first_of_video.setdefault(record.video, index)
        indices = list(first_of_video.values())[: self.config.heldout.clips]
        rng = np.random.default_rng(self.config.heldout.seed)
        was_training = self.sam.training
        self.sam.eval()
        ious: dict[str, list[float]] = {kind: [] for kind in PROMPT_KINDS}
        cross: list[float] = []
        for index in indices:
            sample, names = self.build_clip(dataset, index, rng)
            known = [k for k, name in enumerate(names) if name in self.prompt_index]  # with a trained embedding
            if not known:
                continue
            sample.target_masks, names = sample.target_masks[known], [names[k] for k in known]
            embeddings = self.sam.image_encoder(sample.pixel_values_sam)
            target = sample.target_masks.numpy().astype(bool)  # [K, T, H, W]
            present = target.reshape(*target.shape[:2], -1).any(-1)  # [K, T]
            for kind in PROMPT_KINDS:
                prompts = self.sample_prompts(sample, [kind] * len(names), rng)
                predicted = (self.predict(sample, prompts, names, embeddings) > 0).numpy()
                for k, t in zip(*np.nonzero(present)):
                    ious[kind].append(_iou(predicted[k, t], target[k, t]))
                if kind == "semantic":
                    for a in range(len(names)):
                        for b in range(len(names)):
                            if a != b:
                                cross += [_iou(predicted[a, t], target[b, t]) for t in np.nonzero(present[b])[0]]
        self.sam.train(was_training)
        result = {f"{kind}_iou": float(np.mean(values)) if values else None for kind, values in ious.items()}
        result["semantic_cross_object_iou"] = float(np.mean(cross)) if cross else None
        result["clips"] = len(indices)
        result["step"] = self.step
        return result

    # ------------------------------------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sam": self.sam.state_dict(),
            "semantic": self.semantic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "prompt_names": sorted(self.prompt_index, key=self.prompt_index.get),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state["prompt_names"] != sorted(self.prompt_index, key=self.prompt_index.get):
            raise InvalidInputError("the checkpoint's semantic prompts differ from the data's appearances")
        self.sam.load_state_dict(state["sam"])
        self.semantic.load_state_dict(state["semantic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])


def _iou(predicted: np.ndarray, target: np.ndarray) -> float:
    union = np.logical_or(predicted, target).sum()
    return float(np.logical_and(predicted, target).sum() / union) if union else 1.0


def save_sam_safetensors(sam: torch.nn.Module, path: Path) -> None:
    """The SAM weights in the stock ``segment_anything`` key layout, written atomically."""
    from safetensors.torch import save

    from videolisa.atomic import write_atomically

    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in sam.state_dict().items()}
    write_atomically(path, save(tensors))  # the umask's permissions, like every writer of the package


def _write_json(path: Path, value: Any) -> None:
    from videolisa.atomic import write_atomically

    write_atomically(path, (json.dumps(value, indent=2) + "\n").encode())


def _checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"step_{step:06d}.pt"


def _latest_checkpoint(run_dir: Path) -> Path | None:
    latest = run_dir / CHECKPOINT_DIR / "latest"
    if not latest.is_file():
        return None
    return run_dir / CHECKPOINT_DIR / latest.read_text().strip()


def _save_checkpoint(trainer: PromptableSamTrainer, run_dir: Path) -> None:
    from videolisa.atomic import atomic_path, write_atomically

    path = _checkpoint_path(run_dir, trainer.step)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp_path:
        torch.save(trainer.state(), temp_path)
    write_atomically(run_dir / CHECKPOINT_DIR / "latest", path.name.encode())
    for old in (run_dir / CHECKPOINT_DIR).glob("step_*.pt"):
        if old != path:
            old.unlink()


def prepare_promptable_sam_run(
    config_path: Path | None, resume_dir: Path | None, overrides: Sequence[str] = ()
) -> tuple[PromptableSamConfig, Path, bool]:
    """(config, run folder, resume): a new run refuses a non-empty ``train.output_dir``; a resumed run reads its
    saved config (+ overrides of logging, checkpointing and held-out keys only)."""
    if resume_dir is None:
        if config_path is None:
            raise InvalidInputError("give --config CONFIG.yaml for a new run, or --resume RUN_DIR")
        config = load_promptable_sam_config(config_path, overrides)
        run_dir = Path(config.train.output_dir).expanduser().resolve()
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise InvalidInputError(
                f"train.output_dir={run_dir} exists and is not empty; continue its run with --resume {run_dir} or "
                "choose another train.output_dir"
            )
        return config, run_dir, False
    config, run_dir = load_resumed_config(
        resume_dir,
        config_path,
        overrides,
        config_file=CONFIG_FILE,
        load=load_promptable_sam_config,
        latest_checkpoint=_latest_checkpoint,
        checkpoint_dir=CHECKPOINT_DIR,
        resumable=RESUMABLE_KEYS,
    )
    config.train.output_dir = str(run_dir)
    return config, run_dir, True


def run_promptable_sam(
    config_path: Path | None, resume_dir: Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Train (or continue) a stage-1 run; returns ``{"step", "run_dir", "heldout"}``."""
    import yaml
    from tqdm import tqdm

    from videolisa.atomic import write_atomically
    from videolisa.training.run import truncate_metrics

    config, run_dir, resume = prepare_promptable_sam_run(config_path, resume_dir, overrides)
    trainer = PromptableSamTrainer(config)
    metrics_path = run_dir / METRICS_FILE
    if resume:
        checkpoint = _latest_checkpoint(run_dir)
        trainer.load_state(torch.load(checkpoint, map_location="cpu", weights_only=True))
        truncate_metrics(metrics_path, trainer.step)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(run_dir / CONFIG_FILE, yaml.safe_dump(asdict(config), sort_keys=False).encode())
    train, heldout = config.train, config.heldout
    evaluations = []
    start = time.perf_counter()
    window: list[dict[str, float]] = []
    with (
        metrics_path.open("a", encoding="utf-8") as metrics,
        tqdm(total=train.steps, initial=trainer.step, desc="stage 1 SAM", disable=not train.progress) as bar,
    ):
        while trainer.step < train.steps:
            window.append(trainer.train_step())
            bar.update(1)
            if trainer.step % train.log_every == 0 or trainer.step == train.steps:
                entry = {key: float(np.mean([item[key] for item in window])) for key in window[0]}
                entry = {"step": trainer.step, **entry, "seconds": round(time.perf_counter() - start, 2)}
                window = []
                if trainer.heldout_dataset is not None and heldout.every and trainer.step % heldout.every == 0:
                    result = trainer.evaluate()
                    evaluations.append(result)
                    entry["heldout"] = result
                metrics.write(json.dumps(entry) + "\n")
                metrics.flush()
                bar.set_postfix(dice=f"{entry['dice']:.3f}")
            if trainer.step % train.save_every == 0 and trainer.step < train.steps:
                _save_checkpoint(trainer, run_dir)
    save_sam_safetensors(trainer.sam, run_dir / SAM_FILE)
    _save_checkpoint(trainer, run_dir)
    result = None
    if trainer.heldout_dataset is not None:
        result = evaluations[-1] if evaluations and evaluations[-1]["step"] == trainer.step else trainer.evaluate()
        _write_json(run_dir / HELDOUT_FILE, result)
    return {"step": trainer.step, "run_dir": str(run_dir), "heldout": result, "seconds": time.perf_counter() - start}


def parameter_count(sam: torch.nn.Module) -> int:
    """Number of SAM parameters."""
    return sum(parameter.numel() for parameter in sam.parameters())


__all__ = [
    "PromptableSamConfig",
    "PromptableSamTrainer",
    "config_task",
    "load_promptable_sam_config",
    "run_promptable_sam",
    "save_sam_safetensors",
]
