"""ReVOS scoring: J, F, J&F, A (pixel accuracy) and R (robustness), per expression type and overall.

The definitions and the aggregation are those of ReVOS's official scorer (VISA ``tools/eval_revos.py`` with
``tools/metrics.py``; the foreground masks come from ``tools/generate_foreground_mask.py``):

* per expression, per frame: J and F as davis2017 (:mod:`videolisa.metrics.frame`), A = share of pixels where
  prediction and ground truth agree, R = ``max(1 - |P \\ G| / (|foreground| + 1e-6), 0)`` with the video's
  foreground = union of every annotation that any expression of the video refers to
  (``mask_dict_foreground.json``); each is averaged over the expression's frames;
* per expression the four means are turned into percentages rounded to two decimals; a type's J, F, A, R are
  the means of those over its expressions and its J&F = (J + F) / 2; "overall" is the mean of the referring
  (``type_id`` 0) and reasoning (1) numbers. No-target expressions (2) are scored but, as in the official
  script, left out of "overall"; the report gives them as their own type.

Masks are scored as masks: any non-zero prediction pixel is foreground and the ground truth is the union of
the expression's annotations. The official script instead compares the raw PNG values with the summed 0/1
annotations, so its A and R are right only for 0/1 predictions of expressions whose annotations do not
overlap; ``videolisa eval`` writes ReVOS predictions as 0/1 PNGs so that both agree.

An expression with a missing prediction frame scores 0 on all four (``missing="zero"``), as the official
script scores an expression whose PNGs it cannot read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.metrics.frame import boundary_tolerance, frame_jf_counts
from videolisa.metrics.io import MissingPredictions, load_json, read_mask
from videolisa.metrics.report import ScoreReport
from videolisa.metrics.sequences import BinaryItem, BinaryTask, _check_same_size, _rle_ground_truth

# type_id of ReVOS expressions and the names the report uses for them.
REVOS_TYPES = {0: "referring", 1: "reasoning", 2: "no-target"}
# The official script's key of each type in its results JSON.
OFFICIAL_TYPE_KEYS = {0: "referring", 1: "reason"}
DEFAULT_META = "meta_expressions_valid_.json"
MASK_DICT = "mask_dict.json"
FOREGROUND_DICT = "mask_dict_foreground.json"
# Added to the foreground area before dividing, as in the official robustness.
_ROBUSTNESS_EPSILON = 1e-6
_METRICS = ("J", "F", "A", "R")


@dataclass(frozen=True)
class RevosTask:
    """The expressions of one ReVOS video.

    Attributes:
        task: items (one per expression) with the RLEs of their annotations.
        foreground_area: ``[T]`` foreground pixels of the video per frame.
        frame_size: ``(H, W)`` of the video (the foreground RLEs' size).
        types: ``type_id`` of each item.
    """

    task: BinaryTask
    foreground_area: tuple[int, ...]
    frame_size: tuple[int, int]
    types: tuple[int, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RevosScores:
    """Per-frame J, F, A, R of one expression (``[T] float64`` each) and its type."""

    key: str
    type_id: int
    per_frame: dict[str, np.ndarray]


def frame_accuracy_robustness(counts: tuple[int, int, int], pixels: int, foreground: int) -> tuple[float, float]:
    """A and R of one frame from ``(|P ∩ G|, |P|, |G|)``, the frame's pixel count and its foreground area.

    Computed with the official float operations: ``mean(gt == pred)`` is ``agreeing / pixels`` and
    ``max(1 - false_positive / (foreground + 1e-6), 0)``.
    """
    intersection, pred_pixels, gt_pixels = counts
    disagreeing = pred_pixels + gt_pixels - 2 * intersection
    accuracy = (pixels - disagreeing) / pixels
    robustness = max(1 - (pred_pixels - intersection) / (foreground + _ROBUSTNESS_EPSILON), 0.0)
    return accuracy, robustness


def score_revos_task(revos: RevosTask) -> list[RevosScores]:
    """Per-frame J, F, A and R of every expression of one video (frame-major: one frame in memory)."""
    task = revos.task
    num_frames = len(revos.foreground_area)
    values = {name: np.zeros((len(task.items), num_frames)) for name in _METRICS}
    incomplete = [any(path is None for path in item.pred_frames) for item in task.items]
    radius = boundary_tolerance(*revos.frame_size)
    pixels = revos.frame_size[0] * revos.frame_size[1]
    for frame in range(num_frames):
        decoded: dict[str, np.ndarray] = {}
        for index, item in enumerate(task.items):
            if incomplete[index]:
                continue  # scored 0 on every frame (only reachable with missing="zero")
            pred_path = item.pred_frames[frame]
            pred = read_mask(pred_path, binary=False)
            _check_same_size(pred, revos.frame_size, pred_path)
            gt = _rle_ground_truth(task, item, frame, revos.frame_size, decoded)
            region, boundary, counts = frame_jf_counts(pred, gt, radius)
            accuracy, robustness = frame_accuracy_robustness(counts, pixels, revos.foreground_area[frame])
            for name, value in zip(_METRICS, (region, boundary, accuracy, robustness)):
                values[name][index, frame] = value
    return [
        RevosScores(item.key, type_id, {name: values[name][index] for name in _METRICS})
        for index, (item, type_id) in enumerate(zip(task.items, revos.types))
    ]


def _foreground_areas(video: str, entry: Any, num_frames: int, where: Path) -> tuple[tuple[int, ...], tuple[int, int]]:
    """``([T] foreground pixels, (H, W))`` of a video's ``mask_dict_foreground.json`` entry."""
    from pycocotools import mask as coco_mask

    rles = entry.get("masks_rle") if isinstance(entry, dict) else None
    if not isinstance(rles, list) or len(rles) != num_frames:
        found = len(rles) if isinstance(rles, list) else "no masks_rle list"
        raise InvalidInputError(f"{where}: video {video!r} needs {num_frames} foreground RLEs, found {found}")
    try:
        areas = tuple(int(coco_mask.area(dict(rle))) for rle in rles)
        sizes = {tuple(int(side) for side in rle["size"]) for rle in rles}
    except (TypeError, ValueError, KeyError) as error:
        raise InvalidInputError(f"{where}: video {video!r} has an invalid foreground RLE ({error!r})") from error
    if len(sizes) != 1:
        raise InvalidInputError(f"{where}: video {video!r} has foreground RLEs of several sizes {sorted(sizes)}")
    return areas, sizes.pop()


def revos_tasks(gt_root: Path, pred_root: Path, meta_path: Path | None, missing: MissingPredictions) -> list[RevosTask]:
    """One task per video of the ReVOS meta file (default ``<gt>/meta_expressions_valid_.json``)."""
    meta_path = meta_path or gt_root / DEFAULT_META
    videos = load_json(meta_path, "ReVOS meta_expressions")["videos"]
    mask_dict = load_json(gt_root / MASK_DICT, f"ReVOS {MASK_DICT}")
    foreground = load_json(gt_root / FOREGROUND_DICT, f"ReVOS {FOREGROUND_DICT}")
    tasks = []
    for video, info in videos.items():
        names = [f"{frame}.png" for frame in info["frames"]]
        if video not in foreground:
            raise MissingFilesError(f"{gt_root / FOREGROUND_DICT} has no foreground masks of video {video!r}")
        areas, frame_size = _foreground_areas(video, foreground[video], len(names), gt_root / FOREGROUND_DICT)
        items, types = [], []
        rles: dict[str, Sequence[Mapping | None]] = {}
        for expression_id, expression in info["expressions"].items():
            type_id = expression["type_id"]
            if type_id not in REVOS_TYPES:
                raise InvalidInputError(
                    f"{meta_path}: video {video!r} expression {expression_id}: type_id {type_id!r} is not one of "
                    f"{sorted(REVOS_TYPES)}"
                )
            annotations = tuple(str(annotation) for annotation in expression["anno_id"])
            for annotation in annotations:
                if annotation not in mask_dict or len(mask_dict[annotation]) != len(names):
                    raise InvalidInputError(
                        f"video {video!r} expression {expression_id}: anno_id {annotation} needs {len(names)} "
                        f"per-frame RLEs in {MASK_DICT}"
                    )
                rles[annotation] = mask_dict[annotation]
            pred_frames = missing.frames(pred_root / video / expression_id, names)
            items.append(BinaryItem(f"{video}/{expression_id}", pred_frames, gt_annotations=annotations))
            types.append(type_id)
        if items:
            tasks.append(RevosTask(BinaryTask(tuple(items), rles, frame_size), areas, frame_size, tuple(types)))
    return tasks


def official_round(fraction: np.float64) -> np.float64:
    """``round(100 * value, 2)`` on a numpy float, as the official script rounds each expression's means."""
    return round(100 * np.float64(fraction), 2)


def _type_means(rows: Sequence[dict[str, np.float64]]) -> dict[str, float]:
    """Means of the rounded percentages over a type's expressions; J&F = (J + F) / 2 (NaN when empty)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {
            name: float(np.array([row[name] for row in rows], np.float64).mean()) if rows else float("nan")
            for name in _METRICS
        }
    means["JF"] = (means["J"] + means["F"]) / 2
    return means


def revos_report(scores: Sequence[RevosScores], notes: list[str]) -> ScoreReport:
    """The report: ``overall`` and each type's numbers as fractions, the official results JSON (percent) in
    ``details["official"]``, per-type numbers with counts in ``details["types"]``."""
    sequences: dict[str, dict[str, float]] = {}
    rounded: dict[int, list[dict[str, np.float64]]] = {type_id: [] for type_id in REVOS_TYPES}
    type_of: dict[str, str] = {}
    for item in scores:
        means = {name: item.per_frame[name].mean() for name in _METRICS}
        sequences[item.key] = {
            **{name: float(value) for name, value in means.items()},
            "JF": float((means["J"] + means["F"]) / 2),
        }
        rounded[item.type_id].append({name: official_round(value) for name, value in means.items()})
        type_of[item.key] = REVOS_TYPES[item.type_id]
    per_type = {type_id: _type_means(rows) for type_id, rows in rounded.items()}
    official = {OFFICIAL_TYPE_KEYS[type_id]: per_type[type_id] for type_id in OFFICIAL_TYPE_KEYS}
    official["overall"] = {
        name: (official["referring"][name] + official["reason"][name]) / 2 for name in ("J", "F", "A", "R", "JF")
    }
    overall = {name: official["overall"][name] / 100 for name in ("J", "F", "JF", "A", "R")}
    types = {
        REVOS_TYPES[type_id]: {
            **{name: value / 100 for name, value in per_type[type_id].items()},
            "count": len(rounded[type_id]),
        }
        for type_id in REVOS_TYPES
    }
    notes = [
        *notes,
        "overall = mean of the referring and reasoning types, as the official ReVOS scorer; "
        "no-target expressions are reported as their own type",
    ]
    return ScoreReport(
        "revos", overall, sequences, details={"official": official, "types": types, "type_of": type_of}, notes=notes
    )
