"""Sparse-Dense Sampling frame selection: which frames the LLM sees (docs/original.md §2.2 inference, §2.3 training).

A video of ``N`` frames is read by the LLM as ``num_sparse`` frames (each pooled to one token) of which
``num_dense`` are also kept at full resolution. "Sparse indices" are video frame indices; "dense positions"
are positions *into the sparse list* (the dense frames are ``sparse[p]`` for each position ``p``).

The inference rules reproduce the original ``uniform_sample`` / ``get_sparse_indices`` /
``get_dense_indices``: split a range into equal integer bins with ``np.linspace(...).astype(int)`` and take
the middle ``(a + b - 1) // 2`` of each bin ``[a, b)``. The training rules reproduce the ReferFormer-style
sampler of the original video datasets with a :class:`numpy.random.Generator` in place of ``random``.
"""

from __future__ import annotations

import numpy as np


def _bin_middles(length: int, count: int) -> list[int]:
    """Middle of each of ``count`` equal integer bins of ``[0, length)`` (the original ``uniform_sample``).

    >>> _bin_middles(12, 8)
    [0, 1, 3, 4, 6, 7, 9, 10]
    >>> _bin_middles(31, 4)
    [3, 10, 18, 26]
    """
    edges = np.linspace(0, length, count + 1).astype(int)
    return [int((start + stop - 1) // 2) for start, stop in zip(edges[:-1], edges[1:])]


def _require_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def sample_sparse_indices(num_frames: int, num_sparse: int = 32) -> list[int]:
    """Video frame indices of the ``num_sparse`` frames the LLM sees at inference (sorted, repeats allowed).

    Long videos (``num_frames > num_sparse``): the middle frame of each of ``num_sparse`` equal bins.
    Short videos: every frame ``num_sparse // num_frames`` times plus the bin middles of
    ``num_sparse % num_frames`` bins, sorted.

    100 frames: bins [0, 3), [3, 6), [6, 9), [9, 12), [12, 15), [15, 18), ... of ``linspace(0, 100, 33)``:

    >>> sample_sparse_indices(100)[:6]
    [1, 4, 7, 10, 13, 16]
    >>> sample_sparse_indices(12)
    [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 9, 9, 9, 10, 10, 10, 11, 11]
    >>> sample_sparse_indices(1, num_sparse=4)
    [0, 0, 0, 0]

    5 frames, 8 sparse: every frame once plus the middles [0, 1, 3] of the bins [0, 1), [1, 3), [3, 5):

    >>> sample_sparse_indices(5, num_sparse=8)
    [0, 0, 1, 1, 2, 3, 3, 4]
    """
    _require_int("num_frames", num_frames, 1)
    _require_int("num_sparse", num_sparse, 1)
    if num_frames > num_sparse:
        return _bin_middles(num_frames, num_sparse)
    repeats, extra = divmod(num_sparse, num_frames)
    return sorted(list(range(num_frames)) * repeats + _bin_middles(num_frames, extra))


def sample_dense_positions(num_sparse: int = 32, num_dense: int = 4) -> list[int]:
    """Positions in the sparse list of the frames kept at full resolution at inference.

    The bin middles of ``num_dense`` equal bins of ``[0, num_sparse - 1)`` (the original splits the last
    index, not the count). Needs ``num_dense <= num_sparse - 1`` so that no bin is empty.

    >>> sample_dense_positions(32, 4)
    [3, 10, 18, 26]
    >>> sample_dense_positions(50, 4)
    [5, 17, 29, 42]
    """
    _require_int("num_sparse", num_sparse, 2)
    _require_int("num_dense", num_dense, 1)
    if num_dense > num_sparse - 1:
        raise ValueError(
            f"num_dense must be <= num_sparse - 1 = {num_sparse - 1} (one non-empty bin per dense frame), "
            f"got {num_dense}"
        )
    return _bin_middles(num_sparse - 1, num_dense)


def dense_frame_indices(sparse_indices: list[int], dense_positions: list[int]) -> list[int]:
    """Video frame indices of the dense frames: ``sparse_indices[p]`` for each dense position ``p``.

    >>> dense_frame_indices(sample_sparse_indices(100), sample_dense_positions(32, 4))
    [10, 32, 57, 82]
    >>> dense_frame_indices(sample_sparse_indices(20), sample_dense_positions(32, 4))
    [1, 6, 11, 16]
    """
    for position in dense_positions:
        if not 0 <= position < len(sparse_indices):
            raise ValueError(f"dense_positions contains {position}; expected positions in [0, {len(sparse_indices)})")
    return [sparse_indices[position] for position in dense_positions]


def sample_training_frames(num_frames: int, num_sparse: int, anchor: int, rng: np.random.Generator) -> list[int]:
    """Sorted video frame indices of the ``num_sparse`` training frames around ``anchor`` (repeats allowed).

    The original ReferFormer-style rule: the anchor; two local frames at ``anchor - U{1..3}`` and
    ``anchor + U{1..3}`` clamped to the video; then ``num_sparse - 3`` global frames drawn without
    replacement from the frames outside the local window (before its minimum, or from its maximum on: the
    maximum itself is eligible). If fewer than that are outside, draw from the whole video; if the video
    itself is shorter, take every frame ``k`` times plus a random remainder. ``num_sparse == 1`` gives just
    the anchor. Example (``num_frames=5, num_sparse=32``): every frame appears 6 or 7 times (32 in total).

    >>> sample_training_frames(1, 4, anchor=0, rng=np.random.default_rng(0))
    [0, 0, 0, 0]
    """
    _require_int("num_frames", num_frames, 1)
    _require_int("num_sparse", num_sparse, 1)
    if num_sparse == 2:
        raise ValueError("num_sparse must be 1 or >= 3 (anchor plus two local frames), got 2")
    _require_int("anchor", anchor, 0)
    if anchor >= num_frames:
        raise ValueError(f"anchor must be a frame index < num_frames = {num_frames}, got {anchor}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    indices = [int(anchor)]
    if num_sparse == 1:
        return indices
    before, after = (int(offset) for offset in rng.integers(1, 4, size=2))
    indices += [max(0, anchor - before), min(num_frames - 1, anchor + after)]
    num_global = num_sparse - len(indices)
    outside_window = list(range(0, min(indices))) + list(range(max(indices), num_frames))
    if len(outside_window) > num_global:
        chosen = rng.choice(outside_window, size=num_global, replace=False).tolist()
    elif num_frames >= num_global:
        chosen = rng.choice(num_frames, size=num_global, replace=False).tolist()
    else:
        repeats, extra = divmod(num_global, num_frames)
        chosen = rng.choice(num_frames, size=extra, replace=False).tolist() + list(range(num_frames)) * repeats
    return sorted(indices + [int(index) for index in chosen])


def sample_training_dense_positions(num_sparse: int, num_dense: int, rng: np.random.Generator) -> list[int]:
    """``num_dense`` distinct positions drawn uniformly from ``range(num_sparse)``, sorted (training rule).

    >>> positions = sample_training_dense_positions(32, 4, np.random.default_rng(0))
    >>> len(set(positions)) == 4 and positions == sorted(positions)
    True
    """
    _require_int("num_sparse", num_sparse, 1)
    _require_int("num_dense", num_dense, 1)
    if num_dense > num_sparse:
        raise ValueError(f"num_dense must be <= num_sparse = {num_sparse}, got {num_dense}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return sorted(int(position) for position in rng.choice(num_sparse, size=num_dense, replace=False))


def sample_image_pseudo_video(num_sparse: int = 32, num_dense: int = 4) -> tuple[list[int], list[int]]:
    """Frame indices and dense positions that turn one image into a training pseudo-video.

    The CLIP image is repeated ``num_sparse`` times (all sparse indices are frame 0, so all sparse tokens are
    identical) and the SAM image and its masks ``num_dense`` times, at dense positions ``0 .. num_dense - 1``.

    >>> sample_image_pseudo_video(4, 2)
    ([0, 0, 0, 0], [0, 1])
    """
    _require_int("num_sparse", num_sparse, 1)
    _require_int("num_dense", num_dense, 1)
    if num_dense > num_sparse:
        raise ValueError(f"num_dense must be <= num_sparse = {num_sparse}, got {num_dense}")
    return [0] * num_sparse, list(range(num_dense))
