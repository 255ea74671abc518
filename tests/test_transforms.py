"""Tests of videolisa.processing.transforms against the parity fixture and segment_anything's own code."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from videolisa.constants import CLIP_MEAN, CLIP_STD, SAM_PIXEL_MEAN, SAM_PIXEL_STD
from videolisa.errors import InvalidInputError
from videolisa.processing.transforms import (
    binarize_mask_logits,
    clip_resized_hw,
    postprocess_mask_logits,
    preprocess_clip,
    preprocess_sam,
    resized_hw_for,
)

PARITY = Path(__file__).resolve().parent / "assets" / "parity"


@pytest.fixture(scope="module")
def case() -> dict:
    return json.loads((PARITY / "case.json").read_text())


@pytest.fixture(scope="module")
def parity_frames() -> np.ndarray:
    return np.load(PARITY / "frames.npy")


def random_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------
# CLIP


def test_clip_matches_the_fixture_statistics(case, parity_frames):
    """The fixture's statistics of the original CLIPImageProcessor output (transformers 4.41.2)."""
    stats = case["clip_pixel_values_stats"]
    sparse = np.load(PARITY / "sparse_indices.npy")
    pixels = preprocess_clip(parity_frames[sparse])
    assert pixels.dtype == torch.float32 and list(pixels.shape) == stats["shape"][1:]
    values = pixels.double()
    # Sums of 3.6M float32 values agree to the last float64 bits only if every value is the same float32.
    assert values.mean().item() == pytest.approx(stats["mean"], rel=1e-12, abs=1e-12)
    # torch's std reduces in a thread-count-dependent order: agreement to ~1e-11 is the float64 noise floor.
    assert values.std().item() == pytest.approx(stats["std"], rel=1e-9)
    assert values[0].sum().item() == pytest.approx(stats["frame0_sum"], rel=1e-13)
    np.testing.assert_allclose(values[0].mean(dim=(1, 2)).numpy(), stats["frame0_channel_means"], rtol=1e-12)


def test_clip_resize_rule():
    assert clip_resized_hw((240, 320)) == (336, 448)
    assert clip_resized_hw((320, 240)) == (448, 336)
    assert clip_resized_hw((500, 333)) == (504, 336)  # int(336 * 500 / 333) = int(504.5)
    assert clip_resized_hw((100, 100)) == (336, 336)
    assert clip_resized_hw((1080, 1920)) == (336, 597)  # int(597.33)
    with pytest.raises(InvalidInputError, match="original_hw"):
        clip_resized_hw((0, 10))


def independent_clip(frame: np.ndarray) -> np.ndarray:
    """transformers 4.41's steps written out differently: resize, crop by box, divide in float64."""
    height, width = frame.shape[:2]
    scale = 336 / min(height, width)
    new_w, new_h = (336, int(336 * height / width)) if width <= height else (int(336 * width / height), 336)
    assert min(new_w, new_h) == 336 and scale > 0
    image = Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - 336) // 2, (new_h - 336) // 2
    crop = np.asarray(image.crop((left, top, left + 336, top + 336)))
    scaled = (crop / 255.0).astype(np.float32)
    return ((scaled - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)).transpose(2, 0, 1)


@pytest.mark.parametrize(("height", "width"), [(240, 320), (240, 321), (361, 200), (336, 336), (50, 70)])
def test_clip_equals_an_independent_implementation(height, width):
    frames = random_frames(2, height, width)
    pixels = preprocess_clip(frames)
    assert pixels.shape == (2, 3, 336, 336)
    for index in range(2):
        np.testing.assert_allclose(pixels[index].numpy(), independent_clip(frames[index]), rtol=0, atol=1e-6)


def test_clip_custom_size_and_normalisation():
    frames = random_frames(1, 40, 60)
    pixels = preprocess_clip(frames, image_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    resized = np.asarray(Image.fromarray(frames[0]).resize((48, 32), Image.Resampling.BICUBIC))
    expected = (resized[:, 8:40].astype(np.float64) / 255).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(pixels[0].numpy(), expected)


# ----------------------------------------------------------------------------------------------------------
# SAM


def original_sam_preprocess(frame: np.ndarray, image_size: int = 1024) -> tuple[torch.Tensor, tuple[int, int]]:
    """The original per-frame path (``inference_reason_vos.py``): apply_image, normalise, then F.pad."""
    resized = ResizeLongestSide(image_size).apply_image(frame)
    x = torch.from_numpy(resized).permute(2, 0, 1).contiguous()
    x = (x - torch.tensor(SAM_PIXEL_MEAN).view(-1, 1, 1)) / torch.tensor(SAM_PIXEL_STD).view(-1, 1, 1)
    height, width = x.shape[-2:]
    return F.pad(x, (0, image_size - width, 0, image_size - height)), resized.shape[:2]


def test_sam_matches_the_fixture_statistics(case, parity_frames):
    stats = case["sam_pixel_values_f0_stats"]
    pixels, resized_hw = preprocess_sam(parity_frames)
    assert resized_hw == tuple(case["sam_resized_hw"]) == (768, 1024)
    assert pixels.shape == (12, 3, 1024, 1024) and pixels.dtype == torch.float32
    first = pixels[0].double()
    assert first.sum().item() == pytest.approx(stats["sum"], rel=1e-13)
    assert first[:, :768, :1024].mean().item() == pytest.approx(stats["mean_valid_region"], rel=1e-12)
    assert torch.count_nonzero(pixels[:, :, 768:, :]) == 0  # padding is exactly 0 after normalisation


@pytest.mark.parametrize(("height", "width"), [(240, 320), (321, 123), (1024, 1024), (30, 2000)])
def test_sam_batched_equals_the_original_per_frame_path(height, width):
    frames = random_frames(3, height, width, seed=height)
    pixels, resized_hw = preprocess_sam(frames)
    for index in range(3):
        expected, expected_hw = original_sam_preprocess(frames[index])
        assert resized_hw == expected_hw
        assert torch.equal(pixels[index], expected)


def test_sam_small_image_size():
    frames = random_frames(2, 20, 10)
    pixels, resized_hw = preprocess_sam(frames, image_size=64)
    assert resized_hw == (64, 32) and pixels.shape == (2, 3, 64, 64)
    assert torch.equal(pixels[1], original_sam_preprocess(frames[1], 64)[0])
    assert torch.count_nonzero(pixels[:, :, :, 32:]) == 0
    on_device, _ = preprocess_sam(frames, image_size=64, device="cpu")
    assert on_device.device.type == "cpu" and torch.equal(on_device, pixels)


def test_resized_hw_rule():
    assert resized_hw_for((240, 320)) == (768, 1024)
    assert resized_hw_for((1080, 1920)) == (576, 1024)
    assert resized_hw_for((720, 1280)) == (576, 1024)
    assert resized_hw_for((481, 854)) == (577, 1024)  # 481 * 1024 / 854 = 576.75 -> 577
    assert resized_hw_for((100, 3)) == (1024, 31)  # 30.72 + 0.5 -> 31
    assert resized_hw_for((500, 500), image_size=64) == (64, 64)


def test_frames_must_be_uint8_rgb():
    for bad in (np.zeros((2, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8), np.zeros((0, 8, 8, 3), np.uint8)):
        with pytest.raises(InvalidInputError, match="frames"):
            preprocess_sam(bad)
        with pytest.raises(InvalidInputError, match="frames"):
            preprocess_clip(bad)
    with pytest.raises(InvalidInputError, match="image_size"):
        preprocess_sam(random_frames(1, 8, 8), image_size=0)


# ----------------------------------------------------------------------------------------------------------
# Masks


def test_postprocess_equals_segment_anything():
    low_res = torch.randn(3, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    sam_like = SimpleNamespace(image_encoder=SimpleNamespace(img_size=1024))
    for resized_hw, original_hw in [((768, 1024), (240, 320)), ((1024, 577), (1080, 608)), ((1024, 1024), (5, 5))]:
        expected = Sam.postprocess_masks(sam_like, low_res, resized_hw, original_hw)
        result = postprocess_mask_logits(low_res, 1024, resized_hw, original_hw)
        assert result.shape == (3, 1, *original_hw)
        assert torch.equal(result, expected)


def test_postprocess_reproduces_the_fixture_logits(case):
    low_res = torch.from_numpy(np.load(PARITY / "low_res_logits_f0.npy"))
    reference = np.load(PARITY / "mask_logits.npy")[0]
    result = postprocess_mask_logits(low_res, 1024, case["sam_resized_hw"], case["original_hw"])
    np.testing.assert_allclose(result[0, 0].numpy(), reference, rtol=0, atol=1e-6)
    masks = binarize_mask_logits(result[0, 0])
    assert masks.dtype == torch.bool
    assert torch.equal(masks, torch.from_numpy(np.load(PARITY / "masks.npy")[0]))


def test_binarize_is_strictly_greater_than_zero():
    logits = torch.tensor([-1.0, 0.0, 1e-7, 2.0])
    assert binarize_mask_logits(logits).tolist() == [False, False, True, True]
    assert binarize_mask_logits(logits, threshold=1.0).tolist() == [False, False, False, True]


def test_postprocess_rejects_bad_shapes():
    with pytest.raises(InvalidInputError, match="low_res_logits"):
        postprocess_mask_logits(torch.zeros(256, 256), 1024, (768, 1024), (240, 320))
    with pytest.raises(InvalidInputError, match="resized_hw"):
        postprocess_mask_logits(torch.zeros(1, 1, 256, 256), 1024, (768, 2048), (240, 320))
    with pytest.raises(InvalidInputError, match="original_hw"):
        postprocess_mask_logits(torch.zeros(1, 1, 256, 256), 1024, (768, 1024), (240,))
