"""Procedural referring-VOS videos with exact ground truth.

Each video shows 2-5 flat-coloured shapes (circle, square, triangle, star, diamond) moving over a plain or
lightly textured grey background: linear motion, shapes that stop halfway, shapes that enter or leave the
frame, occlusion by draw order. Every object's coverage is rasterised once per frame (OpenCV, no
anti-aliasing) and the frame is painted from those coverages in draw order, so the masks of each object's
VISIBLE pixels (its coverage minus what the objects drawn after it cover) agree with the pixels exactly.

Instructions come in four kinds -- ``attribute`` ("red triangle"), ``motion`` ("shape moving to the left"),
``temporal`` ("object that appears last") and ``reasoning`` sentences ("Which shape travels the longest
distance during the video? Segment it") -- and each one is checked to refer to exactly one object of its
video; a scene where some kind has no such instruction is drawn again. Phrases carry no leading article so
that the benchmark templates ("Please segment the {phrase} in this scene.") read naturally.

Generation is deterministic per seed (numpy ``Generator``). Writers produce the MeViS layout, the ReasonVOS
layout, a custom-data JSONL (:mod:`videolisa.data.custom`, with answers that name the referent) and H.264 mp4
files with PNG masks; :func:`write_synthetic_dataset` writes any of them atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from videolisa.constants import DEFAULT_SEG_TOKEN
from videolisa.errors import InvalidInputError
from videolisa.processing.video_io import default_frame_names

SHAPES = ("circle", "square", "triangle", "star", "diamond")
# Saturated colours, far from the grey background (whose pixels always have R = G = B).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "cyan": (40, 195, 215),
}
OBJECT_SIZES = ("small", "large")
MOTIONS = ("static", "linear", "stops", "enters", "leaves")
EXPRESSION_KINDS = ("attribute", "motion", "temporal", "reasoning")
LAYOUTS = ("mevis", "reasonvos", "custom", "mp4")
# ReasonVOS names an object's mask folder "<source>_<video>_<obj_id>"; this is the source of synthetic videos.
SYNTHETIC_SOURCE = "synthetic"
DEFAULT_SIZES = ((128, 128), (160, 224), (192, 256))
# Written into every dataset folder; an existing folder is replaced (overwrite) only if it holds this file.
SYNTH_MARKER = ".videolisa-synth.json"

# Circumradius as a fraction of the shorter frame side.
_RADIUS_FRACTIONS = {"small": (0.07, 0.09), "large": (0.14, 0.17)}
_MOTION_PROBABILITIES = (0.15, 0.3, 0.2, 0.175, 0.175)
# Sub-pixel precision of the rasteriser (OpenCV fixed point: coordinates scaled by 2**bits).
_SUBPIXEL_BITS = 4
# A shape whose centre is this far beyond an edge (in pixels, on top of its radius) covers no pixel.
_OUTSIDE_MARGIN = 1.5
_JPEG_QUALITY = 95
_MAX_SCENE_ATTEMPTS = 500


@dataclass(frozen=True)
class SyntheticConfig:
    """What the generator may draw.

    ``sizes`` are (height, width) pairs; frame counts are inclusive bounds; ``expressions_per_kind`` caps the
    number of instructions of each kind per video (at least one of each kind is always present).
    """

    min_frames: int = 16
    max_frames: int = 48
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    min_objects: int = 2
    max_objects: int = 5
    expressions_per_kind: int = 2
    textured_background_probability: float = 0.5

    def __post_init__(self) -> None:
        # Entering and leaving shapes need a few frames on each side of the middle.
        if not 8 <= self.min_frames <= self.max_frames:
            raise InvalidInputError(
                f"frame counts must satisfy 8 <= min_frames <= max_frames, got {self.min_frames}..{self.max_frames}"
            )
        if not self.sizes:
            raise InvalidInputError("sizes must list at least one (height, width) pair")
        for height, width in self.sizes:
            if min(height, width) < 48:
                raise InvalidInputError(f"frame size {height}x{width} is too small: both sides must be >= 48 pixels")
        if not 2 <= self.min_objects <= self.max_objects <= 8:
            raise InvalidInputError(
                f"object counts must satisfy 2 <= min_objects <= max_objects <= 8, "
                f"got {self.min_objects}..{self.max_objects}"
            )
        if self.expressions_per_kind < 1:
            raise InvalidInputError(f"expressions_per_kind must be >= 1, got {self.expressions_per_kind}")
        if not 0.0 <= self.textured_background_probability <= 1.0:
            raise InvalidInputError(
                f"textured_background_probability must be in [0, 1], got {self.textured_background_probability}"
            )


@dataclass(frozen=True)
class SyntheticObject:
    """One moving shape. Coordinates are (x, y) in pixels, pixel centres at integers, y pointing down.

    The centre at frame ``t`` is ``start + velocity * min(t, stop_frame)`` (``stop_frame`` None: never stops).
    """

    shape: str
    color: str
    size: str
    radius: float
    motion: str
    start: tuple[float, float]
    velocity: tuple[float, float]
    stop_frame: int | None = None

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The object's colour as (R, G, B) uint8 values."""
        return COLORS[self.color]

    @property
    def speed(self) -> float:
        """Pixels per frame while moving."""
        return float(np.hypot(*self.velocity))

    def centers(self, num_frames: int) -> np.ndarray:
        """Centre of the object at each frame: ``[T, 2]`` float64 (x, y)."""
        times = np.arange(num_frames, dtype=np.float64)
        if self.stop_frame is not None:
            times = np.minimum(times, self.stop_frame)
        return np.asarray(self.start)[None, :] + times[:, None] * np.asarray(self.velocity)[None, :]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready description (metadata files of the writers)."""
        return {
            "shape": self.shape,
            "color": self.color,
            "rgb": list(self.rgb),
            "size": self.size,
            "radius": self.radius,
            "motion": self.motion,
            "start": list(self.start),
            "velocity": list(self.velocity),
            "stop_frame": self.stop_frame,
        }


class SyntheticExpression(NamedTuple):
    """An instruction that refers to exactly one object of its video."""

    text: str
    kind: str  # one of EXPRESSION_KINDS
    object_index: int  # index into SyntheticVideo.objects (and the first axis of SyntheticVideo.masks)
    is_sentence: bool  # reasoning sentences vs. referring phrases


@dataclass(frozen=True, eq=False)
class SyntheticVideo:
    """A generated video: frames ``[T, H, W, 3]`` uint8 RGB and visible-pixel masks ``[N, T, H, W]`` bool.

    ``objects`` are listed in draw order (later objects occlude earlier ones). Compare videos field by field
    (``np.array_equal`` for the arrays); ``==`` is identity.
    """

    name: str
    frames: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)
    objects: tuple[SyntheticObject, ...]
    expressions: tuple[SyntheticExpression, ...]

    @property
    def num_frames(self) -> int:
        """T."""
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        """H."""
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        """W."""
        return int(self.frames.shape[2])

    @property
    def frame_names(self) -> tuple[str, ...]:
        """File stems of the frames in every layout: ``00000``, ``00001``, ..."""
        return tuple(default_frame_names(self.num_frames))


# ----------------------------------------------------------------------------------------------- rendering


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices ``[K, 2]`` (x, y) of a shape with circumradius 1 centred at the origin, y pointing down."""
    if shape == "square":
        return np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])
    if shape == "diamond":
        return np.array([[0.0, -1.0], [0.7, 0.0], [0.0, 1.0], [-0.7, 0.0]])
    if shape == "triangle":
        angles = np.deg2rad([-90.0, 30.0, 150.0])
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == "star":
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _rasterise(shape: str, center: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
    """Pixels covered by one shape: ``[H, W]`` bool. Parts outside the frame are clipped."""
    import cv2

    canvas = np.zeros((height, width), dtype=np.uint8)
    scale = 1 << _SUBPIXEL_BITS
    if shape == "circle":
        fixed_center = (int(round(center[0] * scale)), int(round(center[1] * scale)))
        cv2.circle(canvas, fixed_center, int(round(radius * scale)), 1, -1, cv2.LINE_8, _SUBPIXEL_BITS)
    else:
        vertices = np.round((center[None, :] + radius * _unit_polygon(shape)) * scale).astype(np.int32)
        cv2.fillPoly(canvas, [vertices], 1, cv2.LINE_8, _SUBPIXEL_BITS)
    return canvas.astype(bool)


def render_object_masks(obj: SyntheticObject, num_frames: int, height: int, width: int) -> np.ndarray:
    """Pixels the object covers at each frame, ignoring occlusion: ``[T, H, W]`` bool.

    This is the rasteriser that paints the frames, so an object drawn alone on a uniform background covers
    exactly these pixels.
    """
    return np.stack(
        [_rasterise(obj.shape, center, obj.radius, height, width) for center in obj.centers(num_frames)]
    )


def _paint_frames(background: np.ndarray, objects: Sequence[SyntheticObject], coverage: np.ndarray) -> np.ndarray:
    """Painter's algorithm: ``[H, W, 3]`` background + coverages ``[N, T, H, W]`` -> frames ``[T, H, W, 3]``."""
    frames = np.repeat(background[None], coverage.shape[1], axis=0)
    for obj, covered in zip(objects, coverage):
        frames[covered] = obj.rgb
    return frames


def _visible_masks(coverage: np.ndarray) -> np.ndarray:
    """Visible pixels of each object: ``[N, T, H, W]`` coverage -> ``[N, T, H, W]`` bool.

    An object is hidden wherever an object drawn after it (a later index) covers the pixel.
    """
    visible = np.empty_like(coverage)
    covered_above = np.zeros(coverage.shape[1:], dtype=bool)
    for index in reversed(range(coverage.shape[0])):
        visible[index] = coverage[index] & ~covered_above
        covered_above |= coverage[index]
    return visible


def _render_background(rng: np.random.Generator, height: int, width: int, textured: bool) -> np.ndarray:
    """A grey background ``[H, W, 3]`` uint8 with R = G = B everywhere (so no pixel has an object colour)."""
    import cv2

    level = float(rng.integers(70, 171))
    plane = np.full((height, width), level)
    if textured:
        coarse = rng.normal(0.0, 6.0, size=(height // 16 + 2, width // 16 + 2)).astype(np.float32)
        blotches = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        grain = rng.normal(0.0, 2.0, size=(height, width))
        slope = rng.uniform(-10.0, 10.0, size=2)
        ramp = slope[0] * np.linspace(-1.0, 1.0, width)[None, :] + slope[1] * np.linspace(-1.0, 1.0, height)[:, None]
        plane = plane + blotches + grain + ramp
    grey = np.clip(np.rint(plane), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


# ------------------------------------------------------------------------------------------ scene sampling

_AXIS_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def _sample_direction(rng: np.random.Generator) -> np.ndarray:
    """A unit vector: one of the 4 axis directions (70 %) or the 4 diagonals (30 %)."""
    if rng.random() < 0.7:
        return np.array(list(_AXIS_DIRECTIONS.values())[rng.integers(4)])
    signs = rng.choice([-1.0, 1.0], size=2)
    return signs / np.sqrt(2.0)


def _plan_inside_path(
    rng: np.random.Generator, num_frames: int, height: int, width: int, radius: float, stops: bool
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Straight motion that keeps the shape inside the frame; with ``stops`` it halts at the middle frame."""
    direction = _sample_direction(rng)
    low = np.array([radius, radius])
    high = np.array([width - radius, height - radius])
    room = float(np.min((high - low)[np.abs(direction) > 0] / np.abs(direction)[np.abs(direction) > 0]))
    displacement = rng.uniform(0.3, 0.6) * room * direction
    start = rng.uniform(low - np.minimum(displacement, 0.0), high - np.maximum(displacement, 0.0))
    stop_frame = num_frames // 2 if stops else None
    duration = stop_frame if stops else num_frames - 1
    return start, displacement / duration, stop_frame


def _edge_frame(side: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """For a frame side: (point on the edge, inward unit normal, extent along it, extent across it)."""
    if side == "left":
        return np.array([0.0, 0.0]), np.array([1.0, 0.0]), float(width), float(height)
    if side == "right":
        return np.array([float(width - 1), 0.0]), np.array([-1.0, 0.0]), float(width), float(height)
    if side == "top":
        return np.array([0.0, 0.0]), np.array([0.0, 1.0]), float(height), float(width)
    return np.array([0.0, float(height - 1)]), np.array([0.0, -1.0]), float(height), float(width)


def _position_from_edge(side: str, depth: float, across: float, height: int, width: int) -> np.ndarray:
    """The point ``depth`` pixels inward from a side and ``across`` pixels along it."""
    origin, inward, _, _ = _edge_frame(side, height, width)
    along = np.array([inward[1] != 0, inward[0] != 0], dtype=np.float64)  # the direction parallel to the side
    return origin + depth * inward + across * along


def _plan_entering_path(
    rng: np.random.Generator, num_frames: int, height: int, width: int, radius: float
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Starts fully outside one side, crosses the edge at a random early frame, ends inside."""
    side = list(_AXIS_DIRECTIONS)[rng.integers(4)]
    _, inward, extent, cross_extent = _edge_frame(side, height, width)
    appear_frame = int(rng.integers(2, num_frames // 2 + 1))
    final_depth = float(np.clip(rng.uniform(0.3, 0.6) * extent, radius + 1.0, extent - radius - 1.0))
    outside_depth = -(radius + _OUTSIDE_MARGIN)
    speed = (final_depth - outside_depth) / (num_frames - 1 - appear_frame)
    across = rng.uniform(radius, cross_extent - radius)
    start = _position_from_edge(side, outside_depth - speed * appear_frame, across, height, width)
    return start, speed * inward, None


def _plan_leaving_path(
    rng: np.random.Generator, num_frames: int, height: int, width: int, radius: float
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Starts inside and is fully outside one side from a frame after the middle on (at least 2 frames)."""
    side = list(_AXIS_DIRECTIONS)[rng.integers(4)]
    _, inward, extent, cross_extent = _edge_frame(side, height, width)
    exit_frame = int(rng.integers(num_frames // 2, num_frames - 2))
    start_depth = float(np.clip(rng.uniform(0.3, 0.7) * extent, radius + 1.0, extent - radius - 1.0))
    speed = (start_depth + radius + _OUTSIDE_MARGIN) / exit_frame
    across = rng.uniform(radius, cross_extent - radius)
    return _position_from_edge(side, start_depth, across, height, width), -speed * inward, None


def _sample_object(rng: np.random.Generator, num_frames: int, height: int, width: int) -> SyntheticObject:
    """Draw one object's appearance and motion."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    color = list(COLORS)[rng.integers(len(COLORS))]
    size = OBJECT_SIZES[rng.integers(len(OBJECT_SIZES))]
    low, high = _RADIUS_FRACTIONS[size]
    radius = float(rng.uniform(low, high) * min(height, width))
    motion = MOTIONS[rng.choice(len(MOTIONS), p=_MOTION_PROBABILITIES)]
    if motion == "static":
        start = rng.uniform([radius, radius], [width - radius, height - radius])
        velocity, stop_frame = np.zeros(2), None
    elif motion in ("linear", "stops"):
        start, velocity, stop_frame = _plan_inside_path(rng, num_frames, height, width, radius, motion == "stops")
    elif motion == "enters":
        start, velocity, stop_frame = _plan_entering_path(rng, num_frames, height, width, radius)
    else:
        start, velocity, stop_frame = _plan_leaving_path(rng, num_frames, height, width, radius)
    return SyntheticObject(
        shape=shape,
        color=color,
        size=size,
        radius=radius,
        motion=motion,
        start=(float(start[0]), float(start[1])),
        velocity=(float(velocity[0]), float(velocity[1])),
        stop_frame=stop_frame,
    )


# ------------------------------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class _SceneFacts:
    """What the instructions may talk about, measured on the rendered scene."""

    objects: tuple[SyntheticObject, ...]
    num_frames: int
    height: int
    width: int
    coverage_area: np.ndarray  # [N, T] pixels inside the frame, ignoring occlusion
    visible_area: np.ndarray  # [N, T] visible pixels
    centers: np.ndarray  # [N, T, 2]

    @property
    def num_objects(self) -> int:
        """N."""
        return len(self.objects)

    def first_visible(self) -> np.ndarray:
        """``[N]`` first frame with a visible pixel (every object has one, see _is_well_visible)."""
        return np.argmax(self.visible_area > 0, axis=1)

    def last_visible(self) -> np.ndarray:
        """``[N]`` last frame with a visible pixel."""
        return self.num_frames - 1 - np.argmax(self.visible_area[:, ::-1] > 0, axis=1)


@dataclass(frozen=True)
class _Candidate:
    """A candidate instruction with, per object, whether it clearly fits (``fits``) or is borderline."""

    text: str
    kind: str
    is_sentence: bool
    fits: np.ndarray  # [N] bool
    borderline: np.ndarray  # [N] bool: neither clearly fits nor clearly does not

    def referent(self) -> int | None:
        """The one object the instruction refers to, or None when it is ambiguous or matches nothing."""
        if self.borderline.any() or int(self.fits.sum()) != 1:
            return None
        return int(np.flatnonzero(self.fits)[0])


def _crisp(text: str, kind: str, fits: np.ndarray, is_sentence: bool = False) -> _Candidate:
    """A candidate whose predicate has no borderline cases."""
    return _Candidate(text, kind, is_sentence, np.asarray(fits, dtype=bool), np.zeros(len(fits), dtype=bool))


def _unique_extreme(values: np.ndarray, largest: bool, margin: Callable[[float, float], bool]) -> np.ndarray:
    """``[N]`` fits-mask of the single extreme finite value, or all False when the runner-up is too close.

    ``margin(best, runner_up)`` says whether the best value stands out clearly enough.
    """
    fits = np.zeros(len(values), dtype=bool)
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size == 0:
        return fits
    order = finite[np.argsort(-values[finite] if largest else values[finite], kind="stable")]
    runner_up = values[order[1]] if order.size > 1 else (-np.inf if largest else np.inf)
    if margin(float(values[order[0]]), float(runner_up)):
        fits[order[0]] = True
    return fits


def _extreme_candidate(
    text: str, kind: str, values: np.ndarray, largest: bool, margin: Callable[[float, float], bool], is_sentence: bool
) -> _Candidate:
    """A superlative ("fastest shape"): valid only when one object wins by a clear margin."""
    fits = _unique_extreme(values, largest, margin)
    # Without a clear winner every object is borderline, which rules the candidate out.
    borderline = np.zeros(len(values), dtype=bool) if fits.any() else np.ones(len(values), dtype=bool)
    return _Candidate(text, kind, is_sentence, fits, borderline)


_ATTRIBUTE_SUBSETS = (
    ("shape",),
    ("color",),
    ("size",),
    ("color", "shape"),
    ("size", "shape"),
    ("size", "color"),
    ("size", "color", "shape"),
)


def _attribute_phrase(obj: SyntheticObject, attributes: Sequence[str]) -> str:
    """E.g. ("size", "color") -> "large red shape"; ("color", "shape") -> "red triangle"."""
    words = [obj.size] if "size" in attributes else []
    words += [obj.color] if "color" in attributes else []
    words.append(obj.shape if "shape" in attributes else "shape")
    return " ".join(words)


def _attribute_matches(
    objects: Sequence[SyntheticObject], reference: SyntheticObject, attributes: Sequence[str]
) -> np.ndarray:
    """``[N]`` objects that share the reference's values of the given attributes."""
    return np.array([all(getattr(obj, name) == getattr(reference, name) for name in attributes) for obj in objects])


def _attribute_candidates(facts: _SceneFacts) -> list[_Candidate]:
    """Appearance phrases for every attribute combination of every object."""
    return [
        _crisp(_attribute_phrase(obj, attributes), "attribute", _attribute_matches(facts.objects, obj, attributes))
        for obj in facts.objects
        for attributes in _ATTRIBUTE_SUBSETS
    ]


def _shortest_unique_phrase(facts: _SceneFacts, index: int) -> str | None:
    """The shortest attribute phrase that singles out an object, if any (used inside reasoning sentences)."""
    for attributes in _ATTRIBUTE_SUBSETS:
        if _attribute_matches(facts.objects, facts.objects[index], attributes).sum() == 1:
            return _attribute_phrase(facts.objects[index], attributes)
    return None


def _direction_verdicts(objects: Sequence[SyntheticObject], direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(fits, borderline) of "moving <direction>": clearly along it, or partly (diagonals)."""
    unit = np.array(_AXIS_DIRECTIONS[direction])
    velocities = np.array([obj.velocity for obj in objects])
    along = velocities @ unit
    across = np.abs(velocities @ np.array([-unit[1], unit[0]]))
    moving = np.hypot(velocities[:, 0], velocities[:, 1]) > 1e-9
    fits = moving & (along > 0) & (along >= 2.0 * across)
    clearly_not = ~moving | (along <= 0.5 * across)
    return fits, ~fits & ~clearly_not


_DIRECTION_PHRASES = {
    "left": "moving to the left",
    "right": "moving to the right",
    "up": "moving up",
    "down": "moving down",
}


def _motion_candidates(facts: _SceneFacts) -> list[_Candidate]:
    """Direction of motion (bare and qualified by shape or colour), stopping, standing still, speed."""
    objects = facts.objects
    candidates: list[_Candidate] = []
    for direction, phrase in _DIRECTION_PHRASES.items():
        fits, borderline = _direction_verdicts(objects, direction)
        candidates.append(_Candidate(f"shape {phrase}", "motion", False, fits, borderline))
        for attribute in ("shape", "color"):
            for obj in objects:
                same = _attribute_matches(objects, obj, (attribute,))
                noun = obj.shape if attribute == "shape" else f"{obj.color} shape"
                candidates.append(_Candidate(f"{noun} {phrase}", "motion", False, fits & same, borderline & same))
    stops = np.array([obj.motion == "stops" for obj in objects])
    candidates.append(_crisp("shape that stops halfway", "motion", stops))
    for obj in objects:
        same_shape = _attribute_matches(objects, obj, ("shape",))
        candidates.append(_crisp(f"{obj.shape} that stops halfway", "motion", stops & same_shape))
    candidates.append(_crisp("shape that never moves", "motion", np.array([obj.speed == 0 for obj in objects])))
    speeds = np.array([obj.speed for obj in objects])
    candidates.append(_extreme_candidate("fastest shape", "motion", speeds, True, lambda b, r: b >= 1.3 * r, False))
    moving_speeds = np.where(speeds > 0, speeds, np.inf)
    candidates.append(
        _extreme_candidate("slowest moving shape", "motion", moving_speeds, False, lambda b, r: r >= 1.3 * b, False)
    )
    return candidates


def _temporal_candidates(facts: _SceneFacts) -> list[_Candidate]:
    """Appearing, disappearing, entering and leaving the frame, staying visible."""
    first = facts.first_visible().astype(np.float64)
    last = facts.last_visible().astype(np.float64)
    final_frame = facts.num_frames - 1
    two_frames_apart = lambda best, runner_up: abs(best - runner_up) >= 2  # noqa: E731 - a margin rule
    appears_last = np.where(first > 0, first, -np.inf)
    disappears_first = np.where(last < final_frame, last, np.inf)
    return [
        _extreme_candidate("object that appears last", "temporal", appears_last, True, two_frames_apart, False),
        _extreme_candidate("object that appears first", "temporal", first, False, two_frames_apart, False),
        _extreme_candidate("shape that disappears first", "temporal", disappears_first, False, two_frames_apart, False),
        _crisp("shape that enters the frame", "temporal", facts.coverage_area[:, 0] == 0),
        _crisp("shape that leaves the frame", "temporal", facts.coverage_area[:, -1] == 0),
        _crisp("shape that stays visible the whole time", "temporal", (facts.visible_area > 0).all(axis=1)),
    ]


_EDGE_NORMALS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, -1.0), "bottom": (0.0, 1.0)}


def _frames_to_reach_edge(facts: _SceneFacts, edge: str) -> np.ndarray:
    """``[N]`` frames until each shape, moving at its initial velocity, touches an edge (inf: never)."""
    normal = np.array(_EDGE_NORMALS[edge])
    limit = {"left": 0.0, "right": facts.width - 1.0, "top": 0.0, "bottom": facts.height - 1.0}[edge]
    frames = np.full(facts.num_objects, np.inf)
    for index, obj in enumerate(facts.objects):
        toward = float(np.asarray(obj.velocity) @ normal)
        start = np.asarray(obj.start)
        inside = np.all(start >= obj.radius) and np.all(start <= np.array([facts.width, facts.height]) - obj.radius)
        if toward > 0 and inside:
            coordinate = start[0] if normal[0] != 0 else start[1]
            distance = abs(limit - coordinate) - obj.radius
            frames[index] = max(distance, 0.0) / toward
    return frames


def _hidden_fraction(facts: _SceneFacts) -> np.ndarray:
    """``[N]`` largest fraction of a shape's in-frame pixels hidden by other shapes over the video."""
    with np.errstate(divide="ignore", invalid="ignore"):
        hidden = 1.0 - facts.visible_area / facts.coverage_area
    return np.nanmax(np.where(facts.coverage_area > 0, hidden, np.nan), axis=1)


def _reasoning_candidates(facts: _SceneFacts) -> list[_Candidate]:
    """Sentences that need a small inference: extrapolated motion, distances, occlusion, colour relations."""
    objects = facts.objects
    candidates = []
    for edge in _EDGE_NORMALS:
        candidates.append(
            _extreme_candidate(
                f"If every shape kept moving at its initial speed, which one would reach the {edge} edge first? "
                "Segment it",
                "reasoning",
                _frames_to_reach_edge(facts, edge),
                False,
                lambda best, runner_up: runner_up - best >= 3,
                True,
            )
        )
    travelled = np.array(
        [obj.speed * (obj.stop_frame if obj.stop_frame is not None else facts.num_frames - 1) for obj in objects]
    )
    candidates.append(
        _extreme_candidate(
            "Which shape travels the longest distance during the video? Segment it",
            "reasoning",
            travelled,
            True,
            lambda best, runner_up: best >= 1.3 * runner_up,
            True,
        )
    )
    hidden = _hidden_fraction(facts)
    candidates.append(
        _Candidate(
            "Which shape is partly hidden behind another shape at some moment? Segment it",
            "reasoning",
            True,
            hidden >= 0.3,
            (hidden > 0.02) & (hidden < 0.3),
        )
    )
    in_last_frame = facts.coverage_area[:, -1] > 0
    for reference_index in range(facts.num_objects):
        reference_phrase = _shortest_unique_phrase(facts, reference_index)
        if reference_phrase is None:
            continue
        others = np.arange(facts.num_objects) != reference_index
        reference = objects[reference_index]
        same_color_other_shape = others & np.array(
            [obj.color == reference.color and obj.shape != reference.shape for obj in objects]
        )
        candidates.append(
            _crisp(
                f"Which shape has the same colour as the {reference_phrase} but a different form? Segment it",
                "reasoning",
                same_color_other_shape,
                is_sentence=True,
            )
        )
        if in_last_frame[reference_index]:
            distances = np.linalg.norm(facts.centers[:, -1] - facts.centers[reference_index, -1], axis=1)
            distances = np.where(others & in_last_frame, distances, np.inf)
            candidates.append(
                _extreme_candidate(
                    f"Which shape is closest to the {reference_phrase} at the end of the video? Segment it",
                    "reasoning",
                    distances,
                    False,
                    lambda best, runner_up: runner_up >= 1.5 * best,
                    True,
                )
            )
    return candidates


_CANDIDATE_BUILDERS: dict[str, Callable[[_SceneFacts], list[_Candidate]]] = {
    "attribute": _attribute_candidates,
    "motion": _motion_candidates,
    "temporal": _temporal_candidates,
    "reasoning": _reasoning_candidates,
}


def _choose_expressions(
    facts: _SceneFacts, rng: np.random.Generator, per_kind: int
) -> tuple[SyntheticExpression, ...] | None:
    """Up to ``per_kind`` unambiguous instructions of each kind, or None when some kind has none."""
    chosen: list[SyntheticExpression] = []
    for kind in EXPRESSION_KINDS:
        unambiguous: dict[str, SyntheticExpression] = {}
        for candidate in _CANDIDATE_BUILDERS[kind](facts):
            referent = candidate.referent()
            if referent is not None:
                unambiguous.setdefault(
                    candidate.text, SyntheticExpression(candidate.text, kind, referent, candidate.is_sentence)
                )
        if not unambiguous:
            return None
        options = list(unambiguous.values())
        picks = rng.permutation(len(options))[:per_kind]
        chosen.extend(options[index] for index in sorted(picks))
    return tuple(chosen)


# ---------------------------------------------------------------------------------------------- generation


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
    background = _render_background(rng, height, width, textured)
    for _ in range(_MAX_SCENE_ATTEMPTS):
        num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
        objects = tuple(_sample_object(rng, num_frames, height, width) for _ in range(num_objects))
        coverage = np.stack([render_object_masks(obj, num_frames, height, width) for obj in objects])
        visible = _visible_masks(coverage)
        facts = _SceneFacts(
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
        expressions = _choose_expressions(facts, rng, config.expressions_per_kind)
        if expressions is None:
            continue
        frames = _paint_frames(background, objects, coverage)
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


# ------------------------------------------------------------------------------------------------- writers


def _write_jpeg_frames(frames: np.ndarray, names: Sequence[str], folder: Path) -> None:
    """``[T, H, W, 3]`` uint8 RGB -> ``<folder>/<name>.jpg`` (quality 95, no chroma subsampling)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for frame, frame_name in zip(frames, names):
        Image.fromarray(frame).save(folder / f"{frame_name}.jpg", format="JPEG", quality=_JPEG_QUALITY, subsampling=0)


def _write_png_masks(masks: np.ndarray, names: Sequence[str], folder: Path) -> None:
    """``[T, H, W]`` bool -> single-channel 0/255 PNGs ``<folder>/<name>.png`` (the prediction writer's format)."""
    from videolisa.outputs import MaskWriter

    with MaskWriter(names, masks.shape[1], masks.shape[2], png_dir=folder) as writer:
        writer.write(masks)


def _encode_rle(mask: np.ndarray) -> dict[str, Any] | None:
    """``[H, W]`` bool -> COCO RLE ``{"size": [h, w], "counts": str}``, or None for an empty mask (MeViS)."""
    from pycocotools import mask as coco_mask

    if not mask.any():
        return None
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _write_json(data: Any, path: Path) -> None:
    """Compact JSON in insertion order (identical data gives identical bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def write_mevis_layout(videos: Iterable[SyntheticVideo], root: Path, split: str = "valid_u") -> None:
    """Write videos in the MeViS layout under ``root/<split>/``.

    ``JPEGImages/<video>/<frame>.jpg``; ``meta_expressions.json`` = ``{"videos": {<video>: {"frames": [...],
    "expressions": {<exp_id>: {"exp", "obj_id": [i], "anno_id": [a], "kind", "is_sent"}}}}}`` (``kind`` and
    ``is_sent`` are extra fields); ``mask_dict.json`` = ``{<anno_id>: [per-frame COCO RLE or null]}`` with one
    annotation per object, numbered across the split. Writes in place; see :func:`write_synthetic_dataset`.
    """
    split_dir = Path(root) / split
    meta: dict[str, Any] = {}
    mask_dict: dict[str, list[dict[str, Any] | None]] = {}
    for video in videos:
        _write_jpeg_frames(video.frames, video.frame_names, split_dir / "JPEGImages" / video.name)
        anno_ids = [len(mask_dict) + index for index in range(len(video.objects))]
        for anno_id, masks in zip(anno_ids, video.masks):
            mask_dict[str(anno_id)] = [_encode_rle(mask) for mask in masks]
        meta[video.name] = {
            "frames": list(video.frame_names),
            "expressions": {
                str(exp_id): {
                    "exp": expression.text,
                    "obj_id": [expression.object_index],
                    "anno_id": [anno_ids[expression.object_index]],
                    "kind": expression.kind,
                    "is_sent": expression.is_sentence,
                }
                for exp_id, expression in enumerate(video.expressions)
            },
        }
    _write_json({"videos": meta}, split_dir / "meta_expressions.json")
    _write_json(mask_dict, split_dir / "mask_dict.json")


CUSTOM_FILE = "annotations.jsonl"


def describing_answer(obj: SyntheticObject, seg_token: str = DEFAULT_SEG_TOKEN) -> str:
    """``"Sure, [SEG] red small triangle."``: the original's ``"Sure, [SEG]."`` followed by what the object looks
    like, colour first.

    A model that reads the hidden state *at* ``[SEG]`` (``seg_hidden_offset=0``) is then taught by the
    language-model loss to put the referent's appearance into exactly the state that prompts SAM, whatever
    the kind of instruction; inference still teacher-forces ``"Sure, [SEG]."`` and a causal model never sees
    the words after ``[SEG]`` there. (On its own this did not make the toy model follow instructions; see
    ``videolisa/builtin/synthetic/MODEL_CARD.md``.)
    """
    return f"Sure, {seg_token} {obj.color} {obj.size} {obj.shape}."


def write_custom_layout(videos: Iterable[SyntheticVideo], root: Path) -> None:
    """Write videos as custom training data (:mod:`videolisa.data.custom`) under ``root``.

    ``JPEGImages/<video>/<frame>.jpg`` and ``annotations.jsonl`` with one record per expression:
    ``{"video": "JPEGImages/<video>", "instruction", "is_sentence", "masks": {"rle": [per-frame RLE or
    null]}, "answer": describing_answer(referent)}``. Writes in place.
    """
    root = Path(root)
    lines = []
    for video in videos:
        _write_jpeg_frames(video.frames, video.frame_names, root / "JPEGImages" / video.name)
        rles = [[_encode_rle(mask) for mask in masks] for masks in video.masks]
        for expression in video.expressions:
            record = {
                "video": f"JPEGImages/{video.name}",
                "instruction": expression.text,
                "is_sentence": expression.is_sentence,
                "masks": {"rle": rles[expression.object_index]},
                "answer": describing_answer(video.objects[expression.object_index]),
            }
            lines.append(json.dumps(record))
    (root / CUSTOM_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def reasonvos_mask_folder(video: str, object_index: int) -> str:
    """ReasonVOS mask folder name of an object: ``<source>_<video>_<obj_id>``."""
    return f"{SYNTHETIC_SOURCE}_{video}_{object_index}"


def write_reasonvos_layout(videos: Iterable[SyntheticVideo], root: Path) -> None:
    """Write videos in the ReasonVOS layout under ``root``.

    ``JPEGImages/<video>/<frame>.jpg``; ``Annotations/synthetic_<video>_<obj_id>/<frame>.png`` (0/255, one
    folder per object); ``meta_expressions.json`` = ``{"videos": {<video>: {"source": "synthetic", "frames":
    [...], "expressions": [{"obj_id", "exp_id", "exp_text", "is_sent", "kind"}, ...]}}}``. Writes in place.
    """
    root = Path(root)
    meta: dict[str, Any] = {}
    for video in videos:
        _write_jpeg_frames(video.frames, video.frame_names, root / "JPEGImages" / video.name)
        for object_index, masks in enumerate(video.masks):
            mask_folder = root / "Annotations" / reasonvos_mask_folder(video.name, object_index)
            _write_png_masks(masks, video.frame_names, mask_folder)
        meta[video.name] = {
            "source": SYNTHETIC_SOURCE,
            "frames": list(video.frame_names),
            "expressions": [
                {
                    "obj_id": expression.object_index,
                    "exp_id": str(exp_id),
                    "exp_text": expression.text,
                    "is_sent": expression.is_sentence,
                    "kind": expression.kind,
                }
                for exp_id, expression in enumerate(video.expressions)
            ],
        }
    _write_json({"videos": meta}, root / "meta_expressions.json")


def _require_even_sizes(sizes: Iterable[tuple[int, int]]) -> None:
    """H.264 with 4:2:0 chroma needs even heights and widths."""
    for height, width in sizes:
        if height % 2 or width % 2:
            raise InvalidInputError(f"the mp4 layout (H.264, yuv420p) needs even frame sizes, got {height}x{width}")


def _write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    """``[T, H, W, 3]`` uint8 RGB -> H.264 mp4 (yuv420p, CRF 17) with PyAV."""
    import av

    height, width = frames.shape[1:3]
    _require_even_sizes([(height, width)])
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "17"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_mp4_layout(videos: Iterable[SyntheticVideo], root: Path, fps: float = 10.0) -> None:
    """Write each video as ``root/<video>/<video>.mp4`` with ``masks/<obj_id>/<frame>.png`` (0/255) and
    ``instructions.json`` (frames, objects, expressions with kinds). Writes in place."""
    root = Path(root)
    for video in videos:
        folder = root / video.name
        folder.mkdir(parents=True, exist_ok=True)
        _write_mp4(video.frames, folder / f"{video.name}.mp4", fps)
        for object_index, masks in enumerate(video.masks):
            _write_png_masks(masks, video.frame_names, folder / "masks" / str(object_index))
        instructions = {
            "video": f"{video.name}.mp4",
            "fps": fps,
            "height": video.height,
            "width": video.width,
            "frames": list(video.frame_names),
            "objects": [{"obj_id": index, **obj.to_json()} for index, obj in enumerate(video.objects)],
            "expressions": [
                {"text": e.text, "kind": e.kind, "obj_id": e.object_index, "is_sent": e.is_sentence}
                for e in video.expressions
            ],
        }
        _write_json(instructions, folder / "instructions.json")


def _require_writable_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse a file, a non-empty folder without ``overwrite``, and (even with it) a non-empty folder that
    lacks the :data:`SYNTH_MARKER` this function's writer leaves: ``overwrite`` replaces only earlier output."""
    if out_dir.is_file():
        raise InvalidInputError(f"output {out_dir} is a file; expected a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not (out_dir / SYNTH_MARKER).is_file():
        raise InvalidInputError(
            f"output folder {out_dir} is not empty and was not written by videolisa synth (it has no {SYNTH_MARKER}); "
            "choose an empty or new folder"
        )
    if not overwrite:
        raise InvalidInputError(f"output folder {out_dir} is not empty; pass overwrite (--overwrite) to replace it")


@contextmanager
def _staged_directory(out_dir: Path) -> Iterator[Path]:
    """Yield a sibling staging folder; on success it replaces ``out_dir`` (renames), on failure it is removed."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:12]}.tmp")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        retired = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:12]}.old")
        os.replace(out_dir, retired)
        os.replace(staging, out_dir)
        shutil.rmtree(retired)
    else:
        os.replace(staging, out_dir)


def write_synthetic_dataset(
    out_dir: Path,
    *,
    layout: str = "mevis",
    num_videos: int = 8,
    seed: int = 0,
    config: SyntheticConfig | None = None,
    split: str = "valid_u",
    fps: float = 10.0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate ``num_videos`` videos and write them atomically to ``out_dir`` in one of :data:`LAYOUTS`.

    Everything is written to a staging folder next to ``out_dir`` that replaces it only once complete. A
    non-empty ``out_dir`` is refused unless ``overwrite`` and it holds the :data:`SYNTH_MARKER` file that every
    dataset written here carries (so no folder this function did not write is ever deleted). ``split`` is the MeViS split folder name and
    ``fps`` the mp4 frame rate. Returns ``out_dir``.
    """
    from tqdm import tqdm

    if layout not in LAYOUTS:
        raise InvalidInputError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if not split or Path(split).name != split:
        raise InvalidInputError(f"split must be a plain folder name, got {split!r}")
    if fps <= 0:
        raise InvalidInputError(f"fps must be positive, got {fps}")
    out_dir = Path(out_dir)
    _require_writable_output(out_dir, overwrite)
    config = config or SyntheticConfig()
    if layout == "mp4":
        _require_even_sizes(config.sizes)
    videos = tqdm(
        generate_videos(seed, num_videos, config),
        total=num_videos,
        desc=f"synth ({layout})",
        unit="video",
        disable=not progress,
    )
    with _staged_directory(out_dir) as staging:
        _write_json({"written_by": "videolisa synth", "layout": layout, "seed": seed, "videos": num_videos},
                    staging / SYNTH_MARKER)
        if layout == "mevis":
            write_mevis_layout(videos, staging, split)
        elif layout == "reasonvos":
            write_reasonvos_layout(videos, staging)
        elif layout == "custom":
            write_custom_layout(videos, staging)
        else:
            write_mp4_layout(videos, staging, fps)
    return out_dir
