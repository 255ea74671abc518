"""Scenes: the generator's configuration, the objects and their motion, and the rendering of frames and exact masks.

Each video shows 2-5 flat-coloured shapes (circle, square, triangle, star, diamond) moving over a plain or
lightly textured grey background: linear motion, shapes that stop halfway, shapes that enter or leave the
frame, occlusion by draw order. Every object's coverage is rasterised once per frame (OpenCV, no
anti-aliasing) and the frame is painted from those coverages in draw order, so the masks of each object's
VISIBLE pixels (its coverage minus what the objects drawn after it cover) agree with the pixels exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

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
# Opt-in kinds (SyntheticConfig.extra_kinds): several referents ("all the red shapes") and none ("green circle"
# in a video without one). Drawn after the default kinds, so videos without them stay as they were.
EXTRA_EXPRESSION_KINDS = ("multi", "absent")
DEFAULT_SIZES = ((128, 128), (160, 224), (192, 256))

# Circumradius as a fraction of the shorter frame side.
_RADIUS_FRACTIONS = {"small": (0.07, 0.09), "large": (0.14, 0.17)}
_MOTION_PROBABILITIES = (0.15, 0.3, 0.2, 0.175, 0.175)
# Sub-pixel precision of the rasteriser (OpenCV fixed point: coordinates scaled by 2**bits).
_SUBPIXEL_BITS = 4
# A shape whose centre is this far beyond an edge (in pixels, on top of its radius) covers no pixel.
_OUTSIDE_MARGIN = 1.5


@dataclass(frozen=True)
class SyntheticConfig:
    """What the generator may draw.

    ``sizes`` are (height, width) pairs; frame counts are inclusive bounds; ``expressions_per_kind`` caps the
    number of instructions of each kind per video (at least one of each kind is always present); ``extra_kinds``
    adds :data:`EXTRA_EXPRESSION_KINDS` instructions (up to ``expressions_per_kind`` each).
    """

    min_frames: int = 16
    max_frames: int = 48
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    min_objects: int = 2
    max_objects: int = 5
    expressions_per_kind: int = 2
    textured_background_probability: float = 0.5
    extra_kinds: tuple[str, ...] = ()

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
        for kind in self.extra_kinds:
            if kind not in EXTRA_EXPRESSION_KINDS:
                raise InvalidInputError(f"unknown extra expression kind {kind!r}; expected {EXTRA_EXPRESSION_KINDS}")
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
    """An instruction about a video: one of :data:`EXPRESSION_KINDS`, referring to exactly one object, or (opt-in,
    :data:`EXTRA_EXPRESSION_KINDS`) a ``multi`` phrase naming two or more objects or an ``absent`` phrase that
    names nothing in the video."""

    text: str
    kind: str  # one of EXPRESSION_KINDS or EXTRA_EXPRESSION_KINDS
    object_index: int | None  # the one referent: index into SyntheticVideo.objects / masks; None for extra kinds
    is_sentence: bool  # reasoning sentences vs. referring phrases
    object_indices: tuple[int, ...] | None = None  # referents of the extra kinds ("absent": none)

    @property
    def targets(self) -> tuple[int, ...]:
        """Indices of every object the instruction refers to (empty for ``absent``)."""
        return (self.object_index,) if self.object_index is not None else tuple(self.object_indices or ())

    def target_masks(self, masks: np.ndarray) -> np.ndarray:
        """``[T, H, W]`` bool union of the referents' masks (``masks``: ``[N, T, H, W]``); all False for ``absent``."""
        return masks[list(self.targets)].any(axis=0)


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
    return np.stack([_rasterise(obj.shape, center, obj.radius, height, width) for center in obj.centers(num_frames)])


def paint_frames(background: np.ndarray, objects: Sequence[SyntheticObject], coverage: np.ndarray) -> np.ndarray:
    """Painter's algorithm: ``[H, W, 3]`` background + coverages ``[N, T, H, W]`` -> frames ``[T, H, W, 3]``."""
    frames = np.repeat(background[None], coverage.shape[1], axis=0)
    for obj, covered in zip(objects, coverage):
        frames[covered] = obj.rgb
    return frames


def visible_masks(coverage: np.ndarray) -> np.ndarray:
    """Visible pixels of each object: ``[N, T, H, W]`` coverage -> ``[N, T, H, W]`` bool.

    An object is hidden wherever an object drawn after it (a later index) covers the pixel.
    """
    visible = np.empty_like(coverage)
    covered_above = np.zeros(coverage.shape[1:], dtype=bool)
    for index in reversed(range(coverage.shape[0])):
        visible[index] = coverage[index] & ~covered_above
        covered_above |= coverage[index]
    return visible


def render_background(rng: np.random.Generator, height: int, width: int, textured: bool) -> np.ndarray:
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

AXIS_DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def _sample_direction(rng: np.random.Generator) -> np.ndarray:
    """A unit vector: one of the 4 axis directions (70 %) or the 4 diagonals (30 %)."""
    if rng.random() < 0.7:
        return np.array(list(AXIS_DIRECTIONS.values())[rng.integers(4)])
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
    side = list(AXIS_DIRECTIONS)[rng.integers(4)]
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
    side = list(AXIS_DIRECTIONS)[rng.integers(4)]
    _, inward, extent, cross_extent = _edge_frame(side, height, width)
    exit_frame = int(rng.integers(num_frames // 2, num_frames - 2))
    start_depth = float(np.clip(rng.uniform(0.3, 0.7) * extent, radius + 1.0, extent - radius - 1.0))
    speed = (start_depth + radius + _OUTSIDE_MARGIN) / exit_frame
    across = rng.uniform(radius, cross_extent - radius)
    return _position_from_edge(side, start_depth, across, height, width), -speed * inward, None


def sample_object(rng: np.random.Generator, num_frames: int, height: int, width: int) -> SyntheticObject:
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
