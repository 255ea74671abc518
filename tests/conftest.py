"""Shared fixtures: offline Hugging Face access, the tiny preset (config, seeded model, tokenizer), a synthetic
training batch for it, and the location of the numerical parity fixture produced by the original code."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

# huggingface_hub reads HF_HUB_OFFLINE when it is imported, so this must be set before any test module
# imports transformers / huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Data copied into the repository (tests/assets/README.md says where each file came from).
ASSETS = Path(__file__).resolve().parent / "assets"
PARITY_DIR = ASSETS / "parity"


# The full tier: what the default run (pyproject's addopts) deselects.
FULL_TIER_MARKERS = ("slow", "browser", "launcher")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        default=False,
        help=f"run every test: the fast default tier and the {', '.join(FULL_TIER_MARKERS)} tests it deselects",
    )


def pytest_configure(config: pytest.Config) -> None:
    """``--all`` clears the marker expression that pyproject's addopts sets (the fast tier)."""
    if config.getoption("--all"):
        if any(arg.startswith("-m") for arg in config.invocation_params.args):
            raise pytest.UsageError("--all runs every test: drop -m, or drop --all to select by marker")
        config.option.markexpr = ""


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the Hugging Face Hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_config():
    """A fresh ``VideoLisaConfig`` of the ``tiny`` preset."""
    from videolisa.config import VideoLisaConfig

    return VideoLisaConfig.from_preset("tiny")


def build_tiny_model(seed: int = 0, **overrides):
    """The tiny-preset model with weights drawn after ``torch.manual_seed(seed)``, in eval mode."""
    import torch

    from videolisa.config import VideoLisaConfig
    from videolisa.modeling.videolisa import VideoLisaForSegmentation

    torch.manual_seed(seed)
    return VideoLisaForSegmentation(VideoLisaConfig.from_preset("tiny", **overrides)).eval()


@pytest.fixture(scope="module")
def tiny_model():
    """The tiny model built once per test module (seed 0). Tests must not modify it; build your own with
    ``build_tiny_model`` (the ``tiny_model_factory`` fixture) to train or change it."""
    return build_tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_model_factory() -> Callable:
    """``factory(seed=0, **preset_overrides)`` -> a fresh tiny model."""
    return build_tiny_model


@pytest.fixture
def tiny_tokenizer():
    """The in-memory tokenizer of the tiny preset (``[SEG]`` = id 480)."""
    from videolisa.tokenization import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The parity fixture written by running the original VideoLISA code (``tests/assets/parity``)."""
    return PARITY_DIR


@pytest.fixture(scope="session")
def parity_original_layout(parity_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The parity weights arranged like the original release: ``(checkpoint_dir, clip_dir)``.

    ``checkpoint_dir`` holds the original ``config.json`` (model_type llava_phi) and the merged bf16
    ``model.safetensors`` without CLIP; ``clip_dir`` is an HF ``CLIPVisionModel`` directory. Read-only for tests.
    """
    root = tmp_path_factory.mktemp("parity-original")
    checkpoint, clip = root / "videolisa-original", root / "clip-vision"
    checkpoint.mkdir()
    clip.mkdir()
    shutil.copy(parity_dir / "text_config.json", checkpoint / "config.json")
    shutil.copy(parity_dir / "videolisa_tiny_merged.safetensors", checkpoint / "model.safetensors")
    shutil.copy(parity_dir / "clip_config.json", clip / "config.json")
    shutil.copy(parity_dir / "clip_vision_tiny.safetensors", clip / "model.safetensors")
    return checkpoint, clip


def make_frames(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Random RGB frames with a bright square moving to the right: ``[T, H, W, 3] uint8``."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 120, size=(num_frames, height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 3)
    for t in range(num_frames):
        left = min(width - side, 2 + 3 * t)
        frames[t, height // 3 : height // 3 + side, left : left + side] = (250, 60, 40)
    return frames


def square_masks(num_frames: int, height: int, width: int, frame_ids: list[int]) -> np.ndarray:
    """Ground truth of :func:`make_frames`' square for the given frames: ``[len(frame_ids), H, W] uint8``."""
    side = max(4, min(height, width) // 3)
    masks = np.zeros((len(frame_ids), height, width), dtype=np.uint8)
    for i, t in enumerate(frame_ids):
        left = min(width - side, 2 + 3 * t)
        masks[i, height // 3 : height // 3 + side, left : left + side] = 1
    return masks


def build_tiny_batch(
    config,
    tokenizer,
    original_hw: tuple[int, int] = (40, 56),
    seed: int = 0,
    query: str = "Please segment the red square in this scene.",
    answer: str = "Sure, [SEG].",
):
    """A one-conversation ``VideoLisaBatch`` for the tiny preset, built the way the training data does it.

    12 synthetic frames of size ``original_hw``; sparse frames and dense positions by the inference rules
    (32 / 4: frames repeated, dense positions [3, 10, 18, 26]); the prompt rendered by ``build_prompt`` and
    tokenized chunk-wise around the placeholder; labels supervise the answer after the ``<|assistant|>\\n``
    header (everything before it is ``IGNORE_INDEX``); one target mask per ``[SEG]`` on the dense frames.
    """
    import torch

    from videolisa.constants import IGNORE_INDEX
    from videolisa.modeling.batch import VideoLisaBatch
    from videolisa.processing.conversation import assistant_prefix, build_prompt
    from videolisa.processing.sampling import dense_frame_indices, sample_dense_positions, sample_sparse_indices
    from videolisa.processing.transforms import preprocess_clip, preprocess_sam
    from videolisa.tokenization import tokenize_with_video_placeholder

    height, width = original_hw
    num_video_frames = 12
    frames = make_frames(num_video_frames, height, width, seed)
    sparse = sample_sparse_indices(num_video_frames, config.num_frames_sparse)
    dense_positions = sample_dense_positions(config.num_frames_sparse, config.num_frames_dense)
    dense_frames = dense_frame_indices(sparse, dense_positions)

    prompt = build_prompt(query, answer)
    input_ids = tokenize_with_video_placeholder(tokenizer, prompt, config.image_token_index)
    # Supervise what follows the assistant header: the header's last token is the "\n" after <|assistant|>.
    header_ids = tokenizer(assistant_prefix(), add_special_tokens=False).input_ids
    header_end = _find_subsequence(input_ids, header_ids) + len(header_ids)
    labels = [IGNORE_INDEX] * header_end + input_ids[header_end:]
    num_seg = input_ids.count(config.seg_token_id)

    pixel_values_sam, resized_hw = preprocess_sam(frames[dense_frames], image_size=config.sam.image_size)
    targets = torch.from_numpy(square_masks(num_video_frames, height, width, dense_frames)).float()
    return VideoLisaBatch(
        pixel_values_clip=preprocess_clip(frames[sparse], image_size=config.clip_image_size)[None],
        pixel_values_sam=pixel_values_sam[None],
        input_ids=torch.tensor([input_ids]),
        attention_mask=torch.ones(1, len(input_ids), dtype=torch.long),
        labels=torch.tensor([labels]),
        dense_positions=torch.tensor([dense_positions]),
        target_masks=[targets[None].expand(num_seg, -1, -1, -1).clone()],
        resized_sizes=[resized_hw],
        original_sizes=[original_hw],
    )


def _find_subsequence(sequence: list[int], pattern: list[int]) -> int:
    for start in range(len(sequence) - len(pattern) + 1):
        if sequence[start : start + len(pattern)] == pattern:
            return start
    raise AssertionError(f"{pattern} not found in {sequence}")


@pytest.fixture(scope="session")
def tiny_batch_factory() -> Callable:
    """``factory(config, tokenizer, original_hw=(40, 56), seed=0, query=..., answer=...)`` -> VideoLisaBatch."""
    return build_tiny_batch


@pytest.fixture(scope="session")
def frames_factory() -> Callable:
    """``factory(num_frames, height, width, seed)`` -> ``[T, H, W, 3] uint8`` frames with a moving square."""
    return make_frames


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed-0 tiny model saved with its tokenizer (``save_pretrained``), for tests that load a model
    directory the way the CLI does (``VideoLisaPredictor.from_pretrained``, ``videolisa eval``)."""
    from videolisa.tokenization import build_tiny_tokenizer

    model_dir = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(seed=0).save_pretrained(model_dir, tokenizer=build_tiny_tokenizer())
    return model_dir


@pytest.fixture(params=["extension", "numpy"])
def scoring_kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Each scoring kernel implementation in turn as :data:`videolisa.metrics.kernels.active`: the C extension
    (skipped when this install has none) and its pure-NumPy fallback. Scoring in this process uses it."""
    from videolisa.metrics import kernels

    try:
        module = kernels.load(request.param)
    except ImportError:
        pytest.skip("the C extension videolisa.metrics._kernels is not built in this install")
    monkeypatch.setattr(kernels, "active", module)
    return module
