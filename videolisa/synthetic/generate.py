"""Generating videos: a scene is drawn until every object is well visible and every kind of instruction has an
unambiguous one; deterministic per seed (numpy ``Generator``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from videolisa.errors import InvalidInputError
from videolisa.synthetic.expressions import SceneFacts, choose_expressions, choose_extra_expressions
from videolisa.synthetic.scene import (
    SyntheticConfig,
    SyntheticVideo,
    paint_frames,
    render_background,
    render_object_masks,
    sample_object,
    visible_masks,
)

_MAX_SCENE_ATTEMPTS = 500


def _is_well_visible(visible_area: np.ndarray, coverage_area: np.ndarray) -> bool:
    """Every object shows at least half of its full extent on some frame."""
    best_visible = visible_area.max(axis=1)
    return bool(np.all(best_visible >= 0.5 * coverage_area.max(axis=1)) and np.all(best_visible > 0))


def _as_generator(rng_or_seed: np.random.Generator | int | np.random.SeedSequence) -> np.random.Generator:
    """Accept a Generator (used as is), an int seed or a SeedSequence."""
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer)) and rng_or_seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {rng_or_seed}")
    return np.random.default_rng(rng_or_seed)


def generate_video(
    rng_or_seed: np.random.Generator | int | np.random.SeedSequence,
    config: SyntheticConfig | None = None,
    *,
    name: str = "synthetic-0000",
) -> SyntheticVideo:
    """Generate one video with its masks and instructions, deterministically from the seed.

    Returns a :class:`SyntheticVideo`: frames ``[T, H, W, 3]`` uint8, masks ``[N, T, H, W]`` bool of the
    visible pixels, objects in draw order, and expressions that each refer to exactly one object.
    """
    config = config or SyntheticConfig()
    rng = _as_generator(rng_or_seed)
    num_frames = int(rng.integers(config.min_frames, config.max_frames + 1))
    height, width = config.sizes[int(rng.integers(len(config.sizes)))]
    textured = bool(rng.random() < config.textured_background_probability)
    background = render_background(rng, height, width, textured)
    for _ in range(_MAX_SCENE_ATTEMPTS):
        num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
        objects = tuple(sample_object(rng, num_frames, height, width) for _ in range(num_objects))
        coverage = np.stack([render_object_masks(obj, num_frames, height, width) for obj in objects])
        visible = visible_masks(coverage)
        facts = SceneFacts(
            objects=objects,
            num_frames=num_frames,
            height=height,
            width=width,
            coverage_area=coverage.sum(axis=(2, 3)),
            visible_area=visible.sum(axis=(2, 3)),
            centers=np.stack([obj.centers(num_frames) for obj in objects]),
        )
        if not _is_well_visible(facts.visible_area, facts.coverage_area):
            continue
        expressions = choose_expressions(facts, rng, config.expressions_per_kind)
        if expressions is None:
            continue
        # Drawn last, so that videos without extra kinds consume the generator exactly as before.
        expressions += choose_extra_expressions(facts, rng, config.extra_kinds, config.expressions_per_kind)
        frames = paint_frames(background, objects, coverage)
        return SyntheticVideo(name=name, frames=frames, masks=visible, objects=objects, expressions=expressions)
    # Unreachable with the shipped sampling rules; kept as a loud failure instead of an endless loop.
    raise RuntimeError(f"no valid scene for video {name!r} after {_MAX_SCENE_ATTEMPTS} attempts")


def video_name(index: int) -> str:
    """Name of the ``index``-th video of a generated dataset."""
    return f"synthetic-{index:04d}"


def generate_videos(seed: int, num_videos: int, config: SyntheticConfig | None = None) -> Iterator[SyntheticVideo]:
    """Generate a dataset lazily. Video ``i`` depends only on (seed, i, config), not on ``num_videos``."""
    if seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed}")
    if num_videos < 1:
        raise InvalidInputError(f"number of videos must be >= 1, got {num_videos}")
    for index, child in enumerate(np.random.SeedSequence(seed).spawn(num_videos)):
        yield generate_video(np.random.default_rng(child), config, name=video_name(index))
