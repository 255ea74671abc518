"""Tests of videolisa.processing.sampling against the original rules (docs/original.md §2.2, §2.3) and the parity
fixture."""

from __future__ import annotations

import doctest
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from videolisa.processing import sampling
from videolisa.processing.sampling import (
    dense_frame_indices,
    sample_dense_positions,
    sample_image_pseudo_video,
    sample_sparse_indices,
    sample_training_dense_positions,
    sample_training_frames,
)

PARITY = Path(__file__).resolve().parent / "assets" / "parity"


def original_uniform_sample(total_len: int, sample_num: int) -> list[int]:
    """The original ``uniform_sample``, restated independently (explicit ranges, then their middles)."""
    intervals = np.linspace(start=0, stop=total_len, num=sample_num + 1).astype(int)
    ranges = [(intervals[i], intervals[i + 1] - 1) for i in range(sample_num)]
    return [int((low + high) // 2) for low, high in ranges]


def original_sparse_indices(total: int, num_sparse: int) -> list[int]:
    if total > num_sparse:
        return sorted(original_uniform_sample(total, num_sparse))
    frames = list(range(total)) * (num_sparse // total) + original_uniform_sample(total, num_sparse % total)
    return sorted(frames)


def test_docstring_examples_hold():
    assert doctest.testmod(sampling).failed == 0


@pytest.mark.parametrize("num_frames", [1, 5, 12, 20, 31, 32, 33, 100, 10000])
def test_sparse_indices_match_the_original_rule(num_frames):
    indices = sample_sparse_indices(num_frames)
    assert indices == original_sparse_indices(num_frames, 32)
    assert len(indices) == 32 and indices == sorted(indices)
    assert indices[0] >= 0 and indices[-1] < num_frames
    if num_frames >= 32:
        assert len(set(indices)) == 32
    else:
        assert set(indices) == set(range(num_frames))  # every frame of a short video is used


def test_sparse_indices_worked_examples():
    assert sample_sparse_indices(1) == [0] * 32
    assert sample_sparse_indices(12) == [
        0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 9, 9, 9, 10, 10, 10, 11, 11,
    ]  # fmt: skip
    assert sample_sparse_indices(32) == list(range(32))
    # 31 frames: each once, plus the middle of the single bin [0, 31) -> 15 twice.
    assert Counter(sample_sparse_indices(31))[15] == 2
    # 33 frames: bins of 33/32 frames; only the last bin [31, 33) has two frames and its middle is 31.
    assert sample_sparse_indices(33) == list(range(32))
    # 5 frames: 32 = 6 x 5 + 2; the two extra frames are the middles of bins [0, 2) and [2, 5): 0 and 3.
    counts = Counter(sample_sparse_indices(5))
    assert [counts[i] for i in range(5)] == [7, 6, 6, 7, 6]
    ten_thousand = sample_sparse_indices(10000)
    # Edges k x 312.5 -> 0, 312, 625, 937, ..., 9687, 10000; middles (a + b - 1) // 2.
    assert ten_thousand[:3] == [155, 468, 780] and ten_thousand[-1] == 9843


def test_dense_positions():
    assert sample_dense_positions() == [3, 10, 18, 26]
    assert sample_dense_positions(32, 4) == [3, 10, 18, 26]
    assert sample_dense_positions(50, 4) == [5, 17, 29, 42]
    assert sample_dense_positions(32, 1) == [15]
    assert sample_dense_positions(5, 4) == [0, 1, 2, 3]  # the densest allowed: one position per bin
    assert sample_dense_positions(32, 4) == original_uniform_sample(31, 4)


@pytest.mark.parametrize(
    ("num_frames", "expected"),
    [(100, [10, 32, 57, 82]), (20, [1, 6, 11, 16]), (1, [0, 0, 0, 0]), (12, [1, 3, 6, 9])],
)
def test_dense_video_frames_from_the_spec(num_frames, expected):
    assert dense_frame_indices(sample_sparse_indices(num_frames), sample_dense_positions()) == expected


def test_parity_fixture_indices():
    fixture = json.loads((PARITY / "sampling.json").read_text())
    sparse = sample_sparse_indices(12, fixture["num_frames_sparse"])
    dense = sample_dense_positions(fixture["num_frames_sparse"], fixture["num_frames_dense"])
    assert sparse == np.load(PARITY / "sparse_indices.npy").tolist()
    assert dense == np.load(PARITY / "dense_indices.npy").tolist()
    assert dense_frame_indices(sparse, dense) == [1, 3, 6, 9]


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: sample_sparse_indices(0), "num_frames"),
        (lambda: sample_sparse_indices(10, 0), "num_sparse"),
        (lambda: sample_sparse_indices(10.0), "num_frames"),  # type: ignore[arg-type]
        (lambda: sample_sparse_indices(True), "num_frames"),  # type: ignore[arg-type]
        (lambda: sample_dense_positions(32, 0), "num_dense"),
        (lambda: sample_dense_positions(32, 32), "num_dense"),
        (lambda: sample_dense_positions(1, 1), "num_sparse"),
        (lambda: dense_frame_indices([0, 1], [2]), "dense_positions"),
        (lambda: sample_training_frames(0, 32, 0, np.random.default_rng(0)), "num_frames"),
        (lambda: sample_training_frames(10, 2, 0, np.random.default_rng(0)), "num_sparse"),
        (lambda: sample_training_frames(10, 32, 10, np.random.default_rng(0)), "anchor"),
        (lambda: sample_training_frames(10, 32, -1, np.random.default_rng(0)), "anchor"),
        (lambda: sample_training_frames(10, 32, 0, 0), "rng"),  # type: ignore[arg-type]
        (lambda: sample_training_dense_positions(4, 5, np.random.default_rng(0)), "num_dense"),
        (lambda: sample_training_dense_positions(0, 1, np.random.default_rng(0)), "num_sparse"),
        (lambda: sample_image_pseudo_video(2, 3), "num_dense"),
    ],
)
def test_invalid_arguments_name_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


# ----------------------------------------------------------------------------------------------------------
# Training


def check_training_sample(indices: list[int], num_frames: int, num_sparse: int, anchor: int) -> None:
    """The structural guarantees of the original training sampler."""
    assert len(indices) == num_sparse and indices == sorted(indices)
    assert all(0 <= index < num_frames for index in indices)
    assert anchor in indices
    if num_sparse == 1:
        return
    # A local frame 1..3 before and after the anchor (clamped to the video).
    assert any(max(0, anchor - 3) <= index <= max(0, anchor - 1) for index in indices)
    assert any(min(num_frames - 1, anchor + 1) <= index <= min(num_frames - 1, anchor + 3) for index in indices)
    if num_frames >= num_sparse + 6:
        # Long video: the 3 local/anchor frames plus num_sparse - 3 distinct frames outside the window
        # [min, max) of the local frames.
        assert len(set(indices)) >= num_sparse - 2


@pytest.mark.parametrize("num_frames", [1, 5, 12, 20, 31, 32, 33, 100, 10000])
def test_training_frames_structure(num_frames):
    rng = np.random.default_rng(1)
    for _ in range(20):
        anchor = int(rng.integers(num_frames))
        check_training_sample(sample_training_frames(num_frames, 32, anchor, rng), num_frames, 32, anchor)


def test_training_frames_short_video_repeats_every_frame():
    rng = np.random.default_rng(0)
    # 5 frames, 29 global frames: every frame 5 times (25) plus 4 distinct random frames, plus 3 local.
    indices = sample_training_frames(5, 32, anchor=2, rng=rng)
    counts = Counter(indices)
    assert sum(counts.values()) == 32 and min(counts.values()) >= 5
    assert sample_training_frames(1, 32, anchor=0, rng=rng) == [0] * 32


def test_training_frames_long_video_globals_avoid_the_local_window():
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices = sample_training_frames(200, 32, anchor=100, rng=rng)
        # Globals lie below the "before" frame or at/after the "after" frame, so those two are the closest
        # frames to the anchor on each side.
        window_low = max(index for index in indices if index < 100)
        window_high = min(index for index in indices if index > 100)
        assert window_low >= 97 and window_high <= 103
        globals_ = list(indices)
        for used in (100, window_low, window_high):
            globals_.remove(used)
        # Globals come from [0, window_low) or [window_high, 200), without replacement.
        assert all(index < window_low or index >= window_high for index in globals_)
        assert len(set(globals_)) == len(globals_) == 29


def test_training_frames_medium_video_draws_from_the_whole_video():
    # 30 frames, anchor in the middle: fewer than 29 frames lie outside the window, so the 29 globals are
    # drawn without replacement from all 30 frames.
    rng = np.random.default_rng(0)
    indices = sample_training_frames(30, 32, anchor=15, rng=rng)
    counts = Counter(indices)
    assert max(counts.values()) <= 2 and len(counts) >= 29


def test_training_frames_edge_cases():
    rng = np.random.default_rng(0)
    assert sample_training_frames(50, 1, anchor=7, rng=rng) == [7]
    first = sample_training_frames(50, 3, anchor=0, rng=rng)
    assert first[0] == 0 and first[1] == 0 and 1 <= first[2] <= 3  # the "before" frame clamps to 0
    last = sample_training_frames(50, 3, anchor=49, rng=rng)
    assert last[-1] == 49 and last[-2] == 49 and 46 <= last[0] <= 48


def test_training_frames_are_reproducible_and_vary():
    draws = [sample_training_frames(500, 32, 250, np.random.default_rng(seed)) for seed in (3, 3, 4)]
    assert draws[0] == draws[1] and draws[0] != draws[2]


def test_training_dense_positions():
    rng = np.random.default_rng(0)
    seen = Counter()
    for _ in range(2000):
        positions = sample_training_dense_positions(32, 4, rng)
        assert len(set(positions)) == 4 and positions == sorted(positions) and 0 <= positions[0] < 32
        seen.update(positions)
    assert set(seen) == set(range(32))
    # Uniform: each position is chosen with probability 4/32 per draw -> 250 expected of 2000.
    assert all(180 < count < 320 for count in seen.values())
    assert sample_training_dense_positions(4, 4, rng) == [0, 1, 2, 3]


def test_image_pseudo_video():
    sparse, dense = sample_image_pseudo_video()
    assert sparse == [0] * 32 and dense == [0, 1, 2, 3]
    assert sample_image_pseudo_video(32, 4) == ([0] * 32, [0, 1, 2, 3])
