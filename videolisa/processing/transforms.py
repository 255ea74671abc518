"""CLIP and SAM pre-processing of RGB frames and SAM mask post-processing, exactly as the original
(docs/original.md §3.2).

Frames are RGB everywhere. (The original ``chat.py`` read frames with OpenCV and passed them on as BGR by
mistake; every evaluation and training path used RGB, which is what the released weights expect.)

* CLIP (the sparse frames only): the ``CLIPImageProcessor`` of ``openai/clip-vit-large-patch14-336`` as run
  by transformers 4.41: resize the shortest side to 336 with PIL bicubic (long side
  ``int(336 * long / short)``), centre crop 336x336, ``x * (1/255)`` in float64 cast to float32, then
  ``(x - mean) / std`` in float32. Implemented here with PIL because transformers 5's processor resizes
  differently (it no longer reproduces these pixels).
* SAM (every frame): ``segment_anything``'s ``ResizeLongestSide(1024).apply_image`` (PIL bilinear on uint8),
  ``(x - pixel_mean) / pixel_std`` on the 0-255 scale, zero padding bottom/right to 1024x1024 *after*
  normalisation.
* Masks: ``segment_anything``'s ``Sam.postprocess_masks`` (bilinear to 1024, crop to the resized extent,
  bilinear to the original size), then ``logit > 0``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from videolisa.constants import (
    CLIP_IMAGE_SIZE,
    CLIP_MEAN,
    CLIP_STD,
    MASK_LOGIT_THRESHOLD,
    SAM_IMAGE_SIZE,
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
)
from videolisa.errors import InvalidInputError

# transformers' ``rescale_factor`` for CLIP, applied in float64 like ``image_transforms.rescale``.
_CLIP_RESCALE_FACTOR = 1 / 255


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        description = (
            f"{frames.dtype} array of shape {tuple(frames.shape)}"
            if isinstance(frames, np.ndarray)
            else type(frames).__name__
        )
        raise InvalidInputError(f"frames is a {description}; expected a uint8 RGB array [T, H, W, 3]")
    if 0 in frames.shape:
        raise InvalidInputError(f"frames has shape {tuple(frames.shape)}; expected at least one non-empty frame")
    return frames


def _check_size(name: str, size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {size!r}")


def _check_hw(name: str, hw: Sequence[int]) -> tuple[int, int]:
    if len(hw) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in hw):
        raise InvalidInputError(f"{name} must be (height, width) with positive integers, got {tuple(hw)!r}")
    return int(hw[0]), int(hw[1])


def clip_resized_hw(original_hw: Sequence[int], image_size: int = CLIP_IMAGE_SIZE) -> tuple[int, int]:
    """(height, width) after CLIP's shortest-side resize (transformers 4.41 ``get_resize_output_image_size``).

    The short side becomes ``image_size``, the long side ``int(image_size * long / short)``.
    Example: ``clip_resized_hw((240, 320)) == (336, 448)``; ``clip_resized_hw((500, 333)) == (504, 336)``.
    """
    height, width = _check_hw("original_hw", original_hw)
    _check_size("image_size", image_size)
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(image_size * long / short)
    return (new_long, image_size) if width <= height else (image_size, new_long)


def _clip_resize_and_crop(frame: np.ndarray, image_size: int) -> np.ndarray:
    """``[H, W, 3] uint8`` -> ``[S, S, 3] uint8``: PIL bicubic shortest-side resize, then HF's centre crop."""
    resized_h, resized_w = clip_resized_hw(frame.shape[:2], image_size)
    resized = np.asarray(Image.fromarray(frame).resize((resized_w, resized_h), resample=Image.Resampling.BICUBIC))
    # transformers' center_crop offsets: floor of half the excess on each axis.
    top = (resized_h - image_size) // 2
    left = (resized_w - image_size) // 2
    return resized[top : top + image_size, left : left + image_size]


def preprocess_clip(
    frames: np.ndarray,
    image_size: int = CLIP_IMAGE_SIZE,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """CLIP pixel values of RGB frames: ``[T, H, W, 3] uint8`` -> ``[T, 3, S, S] float32`` (S = ``image_size``).

    Bit-for-bit the output of transformers 4.41's ``CLIPImageProcessor`` configured as
    ``openai/clip-vit-large-patch14-336`` (see the module docstring for the steps).
    """
    _check_frames(frames)
    _check_size("image_size", image_size)
    cropped = np.stack([_clip_resize_and_crop(frame, image_size) for frame in frames])  # [T, S, S, 3] uint8
    scaled = (cropped.astype(np.float64) * _CLIP_RESCALE_FACTOR).astype(np.float32)
    normalized = (scaled - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(normalized.transpose(0, 3, 1, 2)))


def resized_hw_for(original_hw: Sequence[int], image_size: int = SAM_IMAGE_SIZE) -> tuple[int, int]:
    """(height, width) of a frame after SAM's longest-side resize, before padding.

    The long side becomes ``image_size``, the short side ``int(s * image_size / long + 0.5)``
    (``ResizeLongestSide.get_preprocess_shape``). Example: ``resized_hw_for((240, 320)) == (768, 1024)``;
    ``resized_hw_for((1080, 1920)) == (576, 1024)``.
    """
    from segment_anything.utils.transforms import ResizeLongestSide

    height, width = _check_hw("original_hw", original_hw)
    _check_size("image_size", image_size)
    return ResizeLongestSide.get_preprocess_shape(height, width, image_size)


def preprocess_sam(
    frames: np.ndarray,
    image_size: int = SAM_IMAGE_SIZE,
    pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
    pixel_std: Sequence[float] = SAM_PIXEL_STD,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """SAM inputs of RGB frames: ``[T, H, W, 3] uint8`` -> (``[T, 3, S, S] float32``, resized (h, w)).

    Each frame is resized on the CPU with ``ResizeLongestSide(S).apply_image`` (PIL bilinear on uint8); the
    uint8 batch is then moved to ``device`` (4x less to copy than float32), converted into the un-padded
    region of the output and normalised there in place; only the padding is zeroed. This equals the
    original per-frame ``(x - mean) / std`` then ``F.pad`` bit for bit, about 5x faster than that on a
    batch. Does not track gradients.
    """
    from segment_anything.utils.transforms import ResizeLongestSide

    _check_frames(frames)
    _check_size("image_size", image_size)
    resize = ResizeLongestSide(image_size)
    resized = np.stack([resize.apply_image(frame) for frame in frames])  # [T, h, w, 3] uint8
    num_frames, height, width = resized.shape[:3]
    target = torch.device("cpu") if device is None else torch.device(device)
    with torch.no_grad():
        pixels = torch.from_numpy(resized).to(target).permute(0, 3, 1, 2)  # [T, 3, h, w] uint8
        mean = torch.tensor(pixel_mean, dtype=torch.float32, device=target).view(1, 3, 1, 1)
        std = torch.tensor(pixel_std, dtype=torch.float32, device=target).view(1, 3, 1, 1)
        padded = torch.empty((num_frames, 3, image_size, image_size), dtype=torch.float32, device=target)
        padded[:, :, height:, :] = 0
        padded[:, :, :height, width:] = 0
        valid = padded[:, :, :height, :width]
        valid.copy_(pixels)  # exact uint8 -> float32, as the original's ``x - pixel_mean`` promotion
        valid.sub_(mean).div_(std)
    return padded, (height, width)


def postprocess_mask_logits(
    low_res_logits: torch.Tensor,
    sam_image_size: int,
    resized_hw: Sequence[int],
    original_hw: Sequence[int],
) -> torch.Tensor:
    """Mask-decoder logits ``[N, C, h, w]`` -> logits at the original frame size ``[N, C, H, W]``.

    Mirrors ``segment_anything.modeling.Sam.postprocess_masks`` (which needs a whole ``Sam`` for its
    ``image_encoder.img_size``): bilinear (align_corners=False) to ``sam_image_size`` squared, crop to the
    un-padded ``resized_hw``, bilinear to ``original_hw``. Keeps the input dtype and device.
    """
    if not isinstance(low_res_logits, torch.Tensor) or low_res_logits.ndim != 4:
        shape = tuple(low_res_logits.shape) if isinstance(low_res_logits, torch.Tensor) else type(low_res_logits)
        raise InvalidInputError(f"low_res_logits has shape {shape}; expected a tensor [N, C, h, w]")
    _check_size("sam_image_size", sam_image_size)
    resized_h, resized_w = _check_hw("resized_hw", resized_hw)
    if resized_h > sam_image_size or resized_w > sam_image_size:
        raise InvalidInputError(f"resized_hw {tuple(resized_hw)} exceeds sam_image_size {sam_image_size}")
    original = _check_hw("original_hw", original_hw)
    masks = F.interpolate(low_res_logits, (sam_image_size, sam_image_size), mode="bilinear", align_corners=False)
    masks = masks[..., :resized_h, :resized_w]
    return F.interpolate(masks, original, mode="bilinear", align_corners=False)


def binarize_mask_logits(logits: torch.Tensor, threshold: float = MASK_LOGIT_THRESHOLD) -> torch.Tensor:
    """Boolean masks from mask logits (any shape): strictly ``logit > threshold``, 0 for the original."""
    return logits > threshold
