"""LISA-style image segmentation scores: cIoU and gIoU (``evaluation/eval_img/val.py``).

Per mask, ``intersectionAndUnionGPU(pred > 0, gt, K=2, ignore_index=255)`` first removes the
ground truth's ignore pixels from the prediction, then counts the foreground class:

* gIoU = Σ I / (U + 1e-5) over masks, a mask with U == 0 counting 1, divided by (N + 1e-5);
* cIoU = Σ I / (Σ U + 1e-10).

Everything is float32, accumulated mask by mask in order, as one GPU running the original does.

``refseg`` layout: ``<root>/**/<name>.png`` ground truth (0 background, 255 ignore, any other
value foreground) and predictions at the same relative paths (non-zero is foreground).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.metrics.io import MissingPredictions, read_label_png, read_mask
from videolisa.metrics.parallel import run_tasks
from videolisa.metrics.report import ScoreReport

IGNORE_LABEL = 255
# Images per worker task.
_CHUNK = 64


@dataclass(frozen=True)
class ImageCounts:
    """Foreground intersection and union of one mask (ignore pixels excluded)."""

    key: str
    intersection: int
    union: int


def mask_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """``(I, U)`` of the foreground class, as ``intersectionAndUnionGPU``.

    Args:
        pred: ``[H, W]`` predicted mask (non-zero is foreground).
        gt: ``[H, W]`` ground truth: 0 background, 255 ignore, any other value foreground.
    """
    if pred.shape != gt.shape:
        raise InvalidInputError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    keep = gt != IGNORE_LABEL
    pred_fg = (pred != 0) & keep
    gt_fg = (gt != 0) & keep
    intersection = int(np.count_nonzero(pred_fg & gt_fg))
    return intersection, int(np.count_nonzero(pred_fg)) + int(np.count_nonzero(gt_fg)) - intersection


def ciou_giou(counts: Iterable[tuple[int, int]]) -> tuple[float, float, list[float]]:
    """cIoU, gIoU and the per-mask IoU from ``(I, U)`` counts, in LISA's float32 arithmetic.

    Returns:
        ``(cIoU, gIoU, [N] per-mask IoU)`` (float32 values as Python floats).
    """
    epsilon = np.float32(1e-5)
    intersection_sum = union_sum = iou_sum = np.float32(0)
    per_mask = []
    for intersection, union in counts:
        iou = np.float32(intersection) / (np.float32(union) + epsilon)
        if union == 0:
            iou = iou + np.float32(1.0)  # an empty target counts as a perfect mask
        per_mask.append(float(iou))
        intersection_sum = np.float32(intersection_sum + np.float32(intersection))
        union_sum = np.float32(union_sum + np.float32(union))
        iou_sum = np.float32(iou_sum + iou)
    ciou = intersection_sum / (union_sum + np.float32(1e-10))
    giou = iou_sum / np.float32(len(per_mask) + 1e-5)
    return float(ciou), float(giou), per_mask


def _score_images(pairs: Sequence[tuple[str, str, str | None]]) -> list[ImageCounts]:
    results = []
    for key, gt_path, pred_path in pairs:
        gt = read_label_png(gt_path)
        if np.any(gt == IGNORE_LABEL) and not np.any((gt != 0) & (gt != IGNORE_LABEL)):
            raise InvalidInputError(
                f"ground truth {gt_path} has 255 pixels and no foreground: refseg ground truth uses 255 "
                "for ignore and 1 (any value but 0 and 255) for foreground, so a 0/255 mask is all ignore"
            )
        pred = np.zeros(gt.shape, np.uint8) if pred_path is None else read_mask(pred_path)
        if pred.shape != gt.shape:
            raise InvalidInputError(f"prediction {pred_path} is {pred.shape}, its ground truth {gt.shape}")
        results.append(ImageCounts(key, *mask_counts(pred, gt)))
    return results


def score_refseg(
    gt_root: str | os.PathLike, pred_root: str | os.PathLike, workers: int | None = None, missing: str = "error"
) -> ScoreReport:
    """cIoU / gIoU of ``<pred>/**/<name>.png`` against ``<gt>/**/<name>.png``.

    Images are taken in sorted order of their relative paths. With ``missing="zero"`` a missing
    prediction counts as an empty mask (an IoU of 0 unless the ground truth is empty too).
    """
    gt_root, pred_root = Path(gt_root), Path(pred_root)
    gt_paths = sorted(gt_root.rglob("*.png"))
    if not gt_paths:
        raise MissingFilesError(f"no ground-truth PNG files under {gt_root}")
    tracker = MissingPredictions(missing, scored_as="scored as empty masks")
    pairs = []
    for gt_path in gt_paths:
        relative = gt_path.relative_to(gt_root)
        (pred_path,) = tracker.frames(pred_root / relative.parent, [relative.name])
        pairs.append((relative.with_suffix("").as_posix(), str(gt_path), pred_path))
    notes = tracker.check()
    chunks = [pairs[start : start + _CHUNK] for start in range(0, len(pairs), _CHUNK)]
    counts = [item for chunk in run_tasks(_score_images, chunks, workers, "refseg images") for item in chunk]
    ciou, giou, per_mask = ciou_giou((item.intersection, item.union) for item in counts)
    sequences = {item.key: {"IoU": iou} for item, iou in zip(counts, per_mask)}
    return ScoreReport("refseg", {"cIoU": ciou, "gIoU": giou}, sequences, notes=notes)
