"""Instructions about a rendered scene, each checked to refer to exactly one object.

Instructions come in four kinds -- ``attribute`` ("red triangle"), ``motion`` ("shape moving to the left"),
``temporal`` ("object that appears last") and ``reasoning`` sentences ("Which shape travels the longest
distance during the video? Segment it") -- and each one is checked to refer to exactly one object of its
video; a scene where some kind has no such instruction is drawn again. Phrases carry no leading article so
that the benchmark templates ("Please segment the {phrase} in this scene.") read naturally.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from videolisa.synthetic.scene import (
    AXIS_DIRECTIONS,
    COLORS,
    EXPRESSION_KINDS,
    OBJECT_SIZES,
    SHAPES,
    SyntheticExpression,
    SyntheticObject,
)


@dataclass(frozen=True)
class SceneFacts:
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
    return _looks_phrase({"shape": obj.shape, "color": obj.color, "size": obj.size}, attributes)


def _looks_phrase(looks: dict[str, str], attributes: Sequence[str]) -> str:
    """The phrase of :func:`_attribute_phrase` for attribute values ``looks`` (``shape``, ``color``, ``size``)."""
    words = [looks["size"]] if "size" in attributes else []
    words += [looks["color"]] if "color" in attributes else []
    words.append(looks["shape"] if "shape" in attributes else "shape")
    return " ".join(words)


def _attribute_matches(
    objects: Sequence[SyntheticObject], reference: SyntheticObject, attributes: Sequence[str]
) -> np.ndarray:
    """``[N]`` objects that share the reference's values of the given attributes."""
    return np.array([all(getattr(obj, name) == getattr(reference, name) for name in attributes) for obj in objects])


def _attribute_candidates(facts: SceneFacts) -> list[_Candidate]:
    """Appearance phrases for every attribute combination of every object."""
    return [
        _crisp(_attribute_phrase(obj, attributes), "attribute", _attribute_matches(facts.objects, obj, attributes))
        for obj in facts.objects
        for attributes in _ATTRIBUTE_SUBSETS
    ]


def _shortest_unique_phrase(facts: SceneFacts, index: int) -> str | None:
    """The shortest attribute phrase that singles out an object, if any (used inside reasoning sentences)."""
    for attributes in _ATTRIBUTE_SUBSETS:
        if _attribute_matches(facts.objects, facts.objects[index], attributes).sum() == 1:
            return _attribute_phrase(facts.objects[index], attributes)
    return None


def _direction_verdicts(objects: Sequence[SyntheticObject], direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(fits, borderline) of "moving <direction>": clearly along it, or partly (diagonals)."""
    unit = np.array(AXIS_DIRECTIONS[direction])
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


def _motion_candidates(facts: SceneFacts) -> list[_Candidate]:
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


def _temporal_candidates(facts: SceneFacts) -> list[_Candidate]:
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


def _frames_to_reach_edge(facts: SceneFacts, edge: str) -> np.ndarray:
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


def _hidden_fraction(facts: SceneFacts) -> np.ndarray:
    """``[N]`` largest fraction of a shape's in-frame pixels hidden by other shapes over the video."""
    with np.errstate(divide="ignore", invalid="ignore"):
        hidden = 1.0 - facts.visible_area / facts.coverage_area
    return np.nanmax(np.where(facts.coverage_area > 0, hidden, np.nan), axis=1)


def _reasoning_candidates(facts: SceneFacts) -> list[_Candidate]:
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


_CANDIDATE_BUILDERS: dict[str, Callable[[SceneFacts], list[_Candidate]]] = {
    "attribute": _attribute_candidates,
    "motion": _motion_candidates,
    "temporal": _temporal_candidates,
    "reasoning": _reasoning_candidates,
}


def choose_expressions(
    facts: SceneFacts, rng: np.random.Generator, per_kind: int
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


def _plural(shape: str) -> str:
    """ "circle" -> "circles" (every shape name takes an -s)."""
    return f"{shape}s"


def _multi_candidates(facts: SceneFacts) -> list[_Candidate]:
    """Phrases naming two or more objects: shared colour, shape or size, a shared direction of motion, all shapes.

    "all the shapes" always qualifies (every video has at least two objects), so every video has one.
    """
    objects = facts.objects
    candidates = [_crisp("all the shapes", "multi", np.ones(len(objects), dtype=bool))]
    for color in COLORS:
        candidates.append(_crisp(f"all the {color} shapes", "multi", np.array([o.color == color for o in objects])))
    for shape in SHAPES:
        candidates.append(_crisp(f"all the {_plural(shape)}", "multi", np.array([o.shape == shape for o in objects])))
    for size in OBJECT_SIZES:
        candidates.append(_crisp(f"all the {size} shapes", "multi", np.array([o.size == size for o in objects])))
    for direction, phrase in _DIRECTION_PHRASES.items():
        fits, borderline = _direction_verdicts(objects, direction)
        candidates.append(_Candidate(f"all the shapes {phrase}", "multi", False, fits, borderline))
    return candidates


def _absent_candidates(facts: SceneFacts) -> list[_Candidate]:
    """Appearance phrases in every form an attribute instruction takes ("green shape", "large triangle", "red
    circle", "small green star"...) that no object of the video matches: the words alone cannot tell that the
    referent is absent (a model trained on "green circle"-only absent phrases answered "none" to every present
    "red square"), only the video can."""
    phrases: dict[str, None] = {}  # ordered and distinct
    for shape, color, size in itertools.product(SHAPES, COLORS, OBJECT_SIZES):
        looks = {"shape": shape, "color": color, "size": size}
        for attributes in _ATTRIBUTE_SUBSETS:
            if not any(all(getattr(obj, name) == looks[name] for name in attributes) for obj in facts.objects):
                phrases[_looks_phrase(looks, attributes)] = None
    return [_crisp(text, "absent", np.zeros(facts.num_objects, dtype=bool)) for text in phrases]


def choose_extra_expressions(
    facts: SceneFacts, rng: np.random.Generator, kinds: Sequence[str], per_kind: int
) -> tuple[SyntheticExpression, ...]:
    """Up to ``per_kind`` instructions of each extra kind: ``multi`` phrases that clearly fit two or more objects
    (and clearly not the others), ``absent`` phrases that fit none. Each kind always has at least one."""
    chosen: list[SyntheticExpression] = []
    for kind in kinds:
        builder, wanted = (_multi_candidates, 2) if kind == "multi" else (_absent_candidates, 0)
        options = [
            SyntheticExpression(candidate.text, kind, None, False, tuple(np.flatnonzero(candidate.fits).tolist()))
            for candidate in builder(facts)
            if not candidate.borderline.any() and int(candidate.fits.sum()) >= wanted
        ]
        picks = rng.permutation(len(options))[:per_kind]
        chosen.extend(options[index] for index in sorted(picks))
    return tuple(chosen)
