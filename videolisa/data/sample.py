"""One training sample: a (pseudo-)video, a conversation about it, and the target masks of its dense frames.

Every dataset reader returns a :class:`TrainingSample`; :class:`~videolisa.data.collate.VideoLisaCollator`
turns a list of them into the model's :class:`~videolisa.modeling.batch.VideoLisaBatch`.

Images are pseudo-videos (docs/original.md §2.3): the CLIP image is repeated ``T_s`` times, the SAM image and the masks
``T_d`` times, and the dense positions are ``0 .. T_d - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from videolisa.constants import (
    CLIP_IMAGE_SIZE,
    DEFAULT_SEG_TOKEN,
    NUM_FRAMES_DENSE,
    NUM_FRAMES_SPARSE,
    SAM_IMAGE_SIZE,
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
)
from videolisa.errors import InvalidInputError
from videolisa.processing.sampling import (
    sample_image_pseudo_video,
    sample_training_dense_positions,
    sample_training_frames,
)
from videolisa.processing.transforms import preprocess_clip, preprocess_sam, resized_hw_for

if TYPE_CHECKING:
    from videolisa.config import VideoLisaConfig

# A conversation: (role, message) turns with role "user" or "assistant"; the first user message starts with
# the video placeholder "<image>\n".
Conversation = list[tuple[str, str]]


@dataclass(frozen=True)
class SampleConfig:
    """Sizes a training sample is built with; all of them come from the model config
    (:meth:`from_model_config`), so data and model cannot disagree."""

    num_frames_sparse: int = NUM_FRAMES_SPARSE
    num_frames_dense: int = NUM_FRAMES_DENSE
    clip_image_size: int = CLIP_IMAGE_SIZE
    sam_image_size: int = SAM_IMAGE_SIZE
    sam_pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    sam_pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    seg_token: str = DEFAULT_SEG_TOKEN

    @classmethod
    def from_model_config(cls, config: VideoLisaConfig) -> SampleConfig:
        """The settings of a model config (frame counts, CLIP and SAM input sizes, SAM normalisation, token)."""
        sam = config.sam
        return cls(
            num_frames_sparse=config.num_frames_sparse,
            num_frames_dense=config.num_frames_dense,
            clip_image_size=config.clip_image_size,
            sam_image_size=sam.image_size,
            sam_pixel_mean=tuple(sam.pixel_mean),
            sam_pixel_std=tuple(sam.pixel_std),
            seg_token=config.seg_token,
        )


@dataclass
class TrainingSample:
    """A conversation about one (pseudo-)video, ready for collation.

    Attributes:
        pixel_values_clip: ``[T_s, 3, S, S]`` float32 CLIP inputs of the sparse frames.
        pixel_values_sam: ``[T_d, 3, S', S']`` float32 SAM inputs of the dense frames (zeros when the sample
            has no target, e.g. VQA: the model never encodes them).
        dense_positions: ``T_d`` sorted positions of the dense frames among the sparse ones.
        conversation: the (role, message) turns; the assistant answers hold one segmentation token per target.
        target_masks: ``[K, T_d, H, W]`` uint8 0/1 masks of the dense frames, one per segmentation token.
        resized_hw: frame size inside the SAM input before padding; original_hw: ``(H, W)``.
        metadata: where the sample comes from (dataset, item, frames), for error messages and debugging.
    """

    pixel_values_clip: torch.Tensor
    pixel_values_sam: torch.Tensor
    dense_positions: list[int]
    conversation: Conversation
    target_masks: torch.Tensor
    resized_hw: tuple[int, int]
    original_hw: tuple[int, int]
    metadata: dict[str, Any] = field(default_factory=dict)


class NoTargetError(Exception):
    """The drawn item has nothing to segment (e.g. an ADE20K image labelled only "other"); the mixture
    draws another item and logs it."""


def read_rgb_image(path: Path) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 RGB (grayscale, palette and RGBA images are converted)."""
    from videolisa.processing.video_io import open_video

    with open_video(path) as reader:
        return reader.get_frames([0])[0]


def read_rgb_frames(paths: Sequence[Path]) -> np.ndarray:
    """Image files of one video as ``[K, H, W, 3]`` uint8 RGB; all frames must have the same size."""
    frames = [read_rgb_image(path) for path in paths]
    sizes = {frame.shape for frame in frames}
    if len(sizes) != 1:
        raise InvalidInputError(f"frames {paths[0]} ... {paths[-1]} have different sizes {sorted(sizes)}")
    return np.stack(frames)


def _check_masks(masks: np.ndarray, frame_hw: tuple[int, int], where: str) -> np.ndarray:
    if masks.ndim < 3 or tuple(masks.shape[-2:]) != tuple(frame_hw):
        raise InvalidInputError(
            f"{where}: target masks have shape {tuple(masks.shape)}; expected [..., {frame_hw[0]}, {frame_hw[1]}] "
            "(the frame size)"
        )
    return (masks > 0).astype(np.uint8)


def _sam_inputs(frames: np.ndarray, settings: SampleConfig) -> tuple[torch.Tensor, tuple[int, int]]:
    return preprocess_sam(frames, settings.sam_image_size, settings.sam_pixel_mean, settings.sam_pixel_std)


def _blank_sam_inputs(original_hw: tuple[int, int], settings: SampleConfig) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zeros in place of SAM inputs for a sample without targets (the model skips its SAM branch)."""
    size = settings.sam_image_size
    pixels = torch.zeros((settings.num_frames_dense, 3, size, size), dtype=torch.float32)
    return pixels, resized_hw_for(original_hw, size)


def draw_clip_frames(
    num_frames: int, anchor: int, settings: SampleConfig, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """The training frames of a clip (docs/original.md §2.3): ``T_s`` sorted frame indices around ``anchor`` and
    ``T_d`` random dense positions among them. The dense frames are ``sparse[p]`` for each position ``p``."""
    sparse = sample_training_frames(num_frames, settings.num_frames_sparse, anchor, rng)
    dense_positions = sample_training_dense_positions(settings.num_frames_sparse, settings.num_frames_dense, rng)
    return sparse, dense_positions


def build_image_sample(
    image: np.ndarray,
    masks: np.ndarray,
    conversation: Conversation,
    settings: SampleConfig,
    metadata: dict[str, Any],
) -> TrainingSample:
    """A pseudo-video sample from one image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        masks: ``[K, H, W]`` targets (non-zero = object), one per segmentation token of the conversation;
            ``K = 0`` for text-only answers.
    """
    original_hw = (int(image.shape[0]), int(image.shape[1]))
    masks = _check_masks(masks, original_hw, str(metadata))
    sparse, dense_positions = sample_image_pseudo_video(settings.num_frames_sparse, settings.num_frames_dense)
    clip = preprocess_clip(image[None], settings.clip_image_size).expand(len(sparse), -1, -1, -1)
    if masks.shape[0]:
        sam, resized_hw = _sam_inputs(image[None], settings)
        sam = sam.expand(settings.num_frames_dense, -1, -1, -1)
    else:
        sam, resized_hw = _blank_sam_inputs(original_hw, settings)
    targets = torch.from_numpy(masks)[:, None].expand(-1, settings.num_frames_dense, -1, -1)
    return TrainingSample(
        pixel_values_clip=clip.contiguous(),
        pixel_values_sam=sam.contiguous(),
        dense_positions=dense_positions,
        conversation=conversation,
        target_masks=targets.contiguous(),
        resized_hw=resized_hw,
        original_hw=original_hw,
        metadata=metadata,
    )


def build_video_sample(
    frames: dict[int, np.ndarray],
    sparse_indices: Sequence[int],
    dense_positions: Sequence[int],
    masks: np.ndarray,
    conversation: Conversation,
    settings: SampleConfig,
    metadata: dict[str, Any],
) -> TrainingSample:
    """A sample from decoded video frames.

    Args:
        frames: video frame index -> ``[H, W, 3]`` uint8 RGB, for every index in ``sparse_indices``.
        sparse_indices: the ``T_s`` training frames (sorted, repeats allowed).
        dense_positions: ``T_d`` positions into ``sparse_indices``.
        masks: ``[K, T_d, H, W]`` targets of the dense frames (non-zero = object).
    """
    first = frames[sparse_indices[0]]
    original_hw = (int(first.shape[0]), int(first.shape[1]))
    masks = _check_masks(masks, original_hw, str(metadata))
    unique = sorted(set(sparse_indices))
    clip_unique = preprocess_clip(np.stack([frames[index] for index in unique]), settings.clip_image_size)
    row_of = {index: row for row, index in enumerate(unique)}
    clip = clip_unique[[row_of[index] for index in sparse_indices]]
    if masks.shape[0]:
        dense_frames = np.stack([frames[sparse_indices[position]] for position in dense_positions])
        sam, resized_hw = _sam_inputs(dense_frames, settings)
    else:
        sam, resized_hw = _blank_sam_inputs(original_hw, settings)
    return TrainingSample(
        pixel_values_clip=clip,
        pixel_values_sam=sam,
        dense_positions=[int(position) for position in dense_positions],
        conversation=conversation,
        target_masks=torch.from_numpy(masks),
        resized_hw=resized_hw,
        original_hw=original_hw,
        metadata=metadata,
    )
