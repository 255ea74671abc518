"""Per-sequence scoring: the units of work that run in the worker processes.

* :class:`BinaryTask` -- binary masks, one ground truth per item (MeViS, ReasonVOS, ``folders``).
  Items of one task share a video, so each ground-truth file or RLE is decoded once per frame even
  when several expressions use it.
* :class:`DavisTask` -- one DAVIS-2017 sequence of indexed PNGs, semi-supervised (objects of the
  first frame, first and last frames dropped) or unsupervised (void, up to 20 proposals, Hungarian
  matching), exactly as ``DAVISEvaluation``.
* :func:`davis_statistics` -- mean, recall and decay of per-frame values (``db_statistics``).

Missing prediction frames (``None``) score J = F = 0 on that frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from videolisa.errors import InvalidInputError
from videolisa.metrics.frame import boundary_tolerance, frame_jf, remove_void
from videolisa.metrics.io import decode_rle, read_label_png, read_mask

# DAVIS labels: 255 marks void pixels; at most this many proposals in the unsupervised task.
DAVIS_VOID_LABEL = 255
DAVIS_MAX_PROPOSALS = 20
# The official decay bins are cast to uint8, which wraps past this many frames.
OFFICIAL_DECAY_FRAME_LIMIT = 256


@dataclass(frozen=True)
class ItemScores:
    """Per-frame J and F of one scored item (``[T] float64`` each)."""

    key: str
    region: np.ndarray
    boundary: np.ndarray


@dataclass(frozen=True)
class BinaryItem:
    """One prediction scored against one binary ground truth, frame by frame.

    Attributes:
        key: report name, ``"<sequence>/<object>"``.
        pred_frames: ``[T]`` prediction PNG paths; None marks a missing frame (scored 0).
        gt_frames: ``[T]`` ground-truth PNG paths (ReasonVOS, ``folders``), or empty.
        gt_annotations: annotation ids whose RLEs form the ground truth (MeViS), or empty.
    """

    key: str
    pred_frames: tuple[str | None, ...]
    gt_frames: tuple[str, ...] = ()
    gt_annotations: tuple[str, ...] = ()


@dataclass(frozen=True)
class BinaryTask:
    """Items of one video.

    Attributes:
        items: the items.
        rles: annotation id -> ``[T]`` RLE dicts (None for an empty frame), for ``gt_annotations``.
        frame_size: ``(H, W)`` of the video when the ground truth is RLE (None for PNG ground truth,
            or when every RLE of the video is empty).
    """

    items: tuple[BinaryItem, ...]
    rles: Mapping[str, Sequence[Mapping | None]] = field(default_factory=dict)
    frame_size: tuple[int, int] | None = None


def _check_same_size(pred: np.ndarray, gt_shape: tuple[int, ...], pred_path: str) -> None:
    if pred.shape != gt_shape:
        raise InvalidInputError(
            f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
            f"{gt_shape[1]}x{gt_shape[0]} (width x height)"
        )


def _rle_ground_truth(
    task: BinaryTask, item: BinaryItem, frame: int, size: tuple[int, int], decoded: dict[str, np.ndarray]
) -> np.ndarray:
    """``[H, W] uint8`` 0/1 union of the item's annotations on ``frame`` (decoding each once)."""
    union = np.zeros(size, np.uint8)
    for annotation in item.gt_annotations:
        rle = task.rles[annotation][frame]
        if not rle:  # the official script skips falsy RLEs: the annotation is absent here
            continue
        if annotation not in decoded:
            decoded[annotation] = decode_rle(rle)
        mask = decoded[annotation]
        if mask.shape != union.shape:
            raise InvalidInputError(
                f"annotation {annotation} frame {frame} has size {mask.shape}, the video {union.shape}"
            )
        np.bitwise_or(union, mask, out=union)
    return union


def score_binary_task(task: BinaryTask) -> list[ItemScores]:
    """Per-frame J and F of every item of ``task`` (frame-major, so memory stays one frame)."""
    num_frames = len(task.items[0].pred_frames)
    region = np.zeros((len(task.items), num_frames))
    boundary = np.zeros((len(task.items), num_frames))
    for frame in range(num_frames):
        decoded: dict[str, np.ndarray] = {}  # this frame's ground truth files / annotations
        for index, item in enumerate(task.items):
            pred_path = item.pred_frames[frame]
            if pred_path is None:
                continue  # missing frame, scored 0 (only reachable with missing="zero")
            # Stored values kept: J and F count any non-zero pixel as foreground.
            pred = read_mask(pred_path, binary=False)
            if item.gt_frames:
                gt_path = item.gt_frames[frame]
                if gt_path not in decoded:
                    decoded[gt_path] = read_mask(gt_path, binary=False)
                gt = decoded[gt_path]
            else:
                # A video whose RLEs are all empty has no size of its own: the official script
                # then takes it from the prediction.
                gt = _rle_ground_truth(task, item, frame, task.frame_size or pred.shape, decoded)
            _check_same_size(pred, gt.shape, pred_path)
            region[index, frame], boundary[index, frame] = frame_jf(pred, gt)
    return [ItemScores(item.key, region[i], boundary[i]) for i, item in enumerate(task.items)]


@dataclass(frozen=True)
class DavisStatistics:
    """``db_statistics`` of one object's per-frame values.

    Attributes:
        mean: nanmean over frames.
        recall: fraction of frames above 0.5.
        decay: mean of the first quarter of frames minus mean of the last quarter (correct for any
            length).
        official_decay: what davis2017-evaluation reports: its bin indices are cast to uint8, so
            past 256 frames they wrap and the decay is NaN or wrong.
    """

    mean: float
    recall: float
    decay: float
    official_decay: float


def _decay(values: np.ndarray, bin_edges: np.ndarray) -> float:
    bins = [values[bin_edges[i] : bin_edges[i + 1] + 1] for i in range(4)]
    first, last = bins[0], bins[3]
    if np.all(np.isnan(first)) or np.all(np.isnan(last)):
        return math.nan
    return float(np.nanmean(first) - np.nanmean(last))


def davis_statistics(values: np.ndarray) -> DavisStatistics:
    """Mean, recall and decay of ``[T]`` per-frame values, as davis2017 ``db_statistics``."""
    with np.errstate(invalid="ignore"):
        mean = float(np.nanmean(values)) if not np.all(np.isnan(values)) else math.nan
        recall = float(np.nanmean(values > 0.5))
    edges = np.round(np.linspace(1, len(values), 5) + 1e-10).astype(np.int64) - 1
    return DavisStatistics(
        mean=mean,
        recall=recall,
        decay=_decay(values, edges),
        # numpy's float -> uint8 cast in the official code wraps modulo 256 on x86-64.
        official_decay=_decay(values, edges % 256),
    )


@dataclass(frozen=True)
class DavisTask:
    """One DAVIS-2017 sequence.

    Attributes:
        sequence: sequence name.
        gt_frames: ``[T]`` ground-truth indexed PNG paths.
        pred_frames: ``[T]`` prediction indexed PNG paths; None marks a missing frame (scored 0).
        semi_supervised: the semi-supervised protocol (else unsupervised).
    """

    sequence: str
    gt_frames: tuple[str, ...]
    pred_frames: tuple[str | None, ...]
    semi_supervised: bool


@dataclass(frozen=True)
class DavisObjectScores:
    """Per-frame J and F of one ground-truth object after matching (``[T] float64`` each)."""

    sequence: str
    object_id: int
    region: np.ndarray
    boundary: np.ndarray


def _read_predicted_labels(task: DavisTask, frames: range, gt_shape: tuple[int, int]) -> list[np.ndarray | None]:
    labels: list[np.ndarray | None] = []
    for frame in frames:
        path = task.pred_frames[frame]
        if path is None:
            labels.append(None)
            continue
        frame_labels = read_label_png(path)
        _check_same_size(frame_labels, gt_shape, path)
        labels.append(frame_labels)
    return labels


def _binary(labels: np.ndarray, object_id: int) -> np.ndarray:
    return np.equal(labels, object_id).view(np.uint8)


def score_davis_task(task: DavisTask) -> list[DavisObjectScores]:
    """Per-object per-frame J and F of one sequence, with the official protocol of its task.

    Semi-supervised: objects ``1..max(first GT frame)``, first and last frames dropped, no void,
    a predicted id above the object count is an error. Unsupervised: all frames, GT 255 is void,
    at most 20 proposals, proposals matched to objects by the Hungarian algorithm on mean J&F.
    """
    gt_labels = [read_label_png(path) for path in task.gt_frames]
    gt_shape = gt_labels[0].shape
    for path, labels in zip(task.gt_frames, gt_labels):
        if labels.shape != gt_shape:
            raise InvalidInputError(f"ground truth {path} is {labels.shape}, the sequence {gt_shape}")
    first = gt_labels[0]
    num_objects = int(first[first != DAVIS_VOID_LABEL].max(initial=0))
    frames = range(1, len(gt_labels) - 1) if task.semi_supervised else range(len(gt_labels))
    if task.semi_supervised and len(frames) == 0:
        raise InvalidInputError(f"DAVIS sequence {task.sequence} has fewer than 3 frames; none is scored")
    pred_labels = _read_predicted_labels(task, frames, gt_shape)
    num_proposals = max((int(labels.max()) for labels in pred_labels if labels is not None), default=0)
    if task.semi_supervised and num_proposals > num_objects:
        raise InvalidInputError(
            f"sequence {task.sequence}: the predictions contain object id {num_proposals} but the first "
            f"ground-truth frame has only {num_objects} objects"
        )
    if not task.semi_supervised and num_proposals > DAVIS_MAX_PROPOSALS:
        raise InvalidInputError(
            f"sequence {task.sequence}: the predictions contain id {num_proposals}; the unsupervised "
            f"protocol allows at most {DAVIS_MAX_PROPOSALS} proposals"
        )
    # Proposals are zero-padded up to the number of objects, as in the official code.
    num_proposals = max(num_proposals, num_objects)
    radius = boundary_tolerance(*gt_shape)
    pairs = (
        [(obj, obj) for obj in range(num_objects)]
        if task.semi_supervised
        else [(proposal, obj) for proposal in range(num_proposals) for obj in range(num_objects)]
    )
    region = np.zeros((num_proposals, num_objects, len(frames)))
    boundary = np.zeros((num_proposals, num_objects, len(frames)))
    for column, (frame, pred) in enumerate(zip(frames, pred_labels)):
        if pred is None:
            continue  # missing frame, scored 0 (only reachable with missing="zero")
        gt = gt_labels[frame]
        void = None if task.semi_supervised else _binary(gt, DAVIS_VOID_LABEL)
        objects = [remove_void(_binary(gt, obj + 1), void) for obj in range(num_objects)]
        proposals = [remove_void(_binary(pred, proposal + 1), void) for proposal in range(num_proposals)]
        for proposal, obj in pairs:
            region[proposal, obj, column], boundary[proposal, obj, column] = frame_jf(
                proposals[proposal], objects[obj], radius
            )
    if task.semi_supervised:
        matched = [(obj, obj) for obj in range(num_objects)]
    else:
        matched = _hungarian_matching(region, boundary)
    return [
        DavisObjectScores(task.sequence, obj + 1, region[proposal, obj], boundary[proposal, obj])
        for proposal, obj in matched
    ]


def _hungarian_matching(region: np.ndarray, boundary: np.ndarray) -> list[tuple[int, int]]:
    """``(proposal, object)`` pairs maximising mean J&F; ``[P, O, T]`` inputs, official order."""
    from scipy.optimize import linear_sum_assignment  # imported here: slow, only DAVIS needs it

    if region.shape[1] == 0:
        return []
    # The same expression as the official code, so ties break the same way.
    all_metrics = (np.mean(region, axis=2) + np.mean(boundary, axis=2)) / 2
    rows, columns = linear_sum_assignment(-all_metrics)
    return list(zip(rows.tolist(), columns.tolist()))
