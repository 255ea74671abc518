"""Validation during training: the batch-evaluation code run on the model under training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.training.config import ValidationConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from videolisa.modeling.videolisa import VideoLisaForSegmentation


def default_metric(benchmark_name: str) -> str:
    """``gIoU`` for image benchmarks, ``JF`` for video benchmarks."""
    from videolisa.benchmarks import BENCHMARKS, ImageBenchmark

    return "gIoU" if issubclass(BENCHMARKS[benchmark_name], ImageBenchmark) else "JF"


def check_validation_data(section: ValidationConfig) -> None:
    """Check the validation benchmark's layout before training starts."""
    from videolisa.benchmarks import get_benchmark

    if section.benchmark is None:
        return
    root = Path(section.root).expanduser()
    if not root.exists():
        raise MissingFilesError(f"validation.root={root} does not exist")
    get_benchmark(section.benchmark, root, section.split).validate()


def validate(
    model: VideoLisaForSegmentation,
    tokenizer: PreTrainedTokenizerBase,
    section: ValidationConfig,
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
    from videolisa.evaluation import EvaluationConfig, run_evaluation
    from videolisa.predictor import VideoLisaPredictor

    buffers = {(module, name): buffer for module in model.modules() for name, buffer in module._buffers.items()}
    storage = {name: (parameter.data_ptr(), parameter.dtype) for name, parameter in model.named_parameters()}
    was_training = model.training
    try:
        predictor = VideoLisaPredictor(
            model, tokenizer, device=device, dtype=dtype, chunk_size=section.chunk_size, fast_sam=False
        )
        settings = EvaluationConfig(
            benchmark=section.benchmark,
            data_root=Path(section.root).expanduser(),
            model="in-training model",
            out=out_dir,
            split=section.split,
            limit=section.limit,
            chunk_size=section.chunk_size,
        )
        result = run_evaluation(settings, predictor)
    finally:
        for (module, name), buffer in buffers.items():
            module._buffers[name] = buffer
        model.train(was_training)
    moved = [
        name for name, parameter in model.named_parameters() if (parameter.data_ptr(), parameter.dtype) != storage[name]
    ]
    if moved:
        raise RuntimeError(f"validation replaced the storage of trained parameters {moved[:5]}")
    if not result:
        return None
    metric = section.metric or default_metric(section.benchmark)
    overall = result.get("score", {}).get("overall", {})
    if metric not in overall:
        raise InvalidInputError(f"validation.metric={metric!r} is not among the scores {sorted(overall)}")
    return float(overall[metric])
