"""Straightforward full-frame J and F, written as the davis2017-evaluation toolkit computes them.

This is the baseline the fast path in :mod:`videolisa.metrics.frame` is tested and benchmarked
against: no cropping, the boundary map built with shifted copies and the official last-row /
last-column rules, and each boundary dilated over the whole frame with ``cv2.dilate`` and a disk
footprint. It runs about as fast as the official code.
"""

from __future__ import annotations

import cv2
import numpy as np

from videolisa.metrics.frame import BOUNDARY_THRESHOLD, boundary_tolerance, disk_footprint, f_from_counts


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """Official ``_seg2bmap``: ``[H, W]`` mask -> ``[H, W] bool`` one-pixel boundary map."""
    seg = mask.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    boundary = seg ^ east | seg ^ south | seg ^ south_east
    boundary[-1, :] = seg[-1, :] ^ east[-1, :]
    boundary[:, -1] = seg[:, -1] ^ south[:, -1]
    boundary[-1, -1] = 0
    return boundary


def region_similarity(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """Official ``db_eval_iou`` of one frame: ``[H, W]`` masks (non-zero is foreground) -> J."""
    gt = gt.astype(bool)
    pred = pred.astype(bool)
    keep = np.ones_like(gt) if void is None else ~void.astype(bool)
    intersection = np.sum(pred & gt & keep)
    union = np.sum((pred | gt) & keep)
    if np.isclose(union, 0):
        return 1.0
    return float(intersection / union)


def boundary_measure(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUNDARY_THRESHOLD
) -> float:
    """Official ``f_measure`` of one frame: ``[H, W]`` masks (non-zero is foreground) -> F."""
    keep = np.ones(gt.shape, bool) if void is None else ~void.astype(bool)
    radius = boundary_tolerance(*gt.shape, bound_th=bound_th)
    pred_boundary = seg2bmap(pred.astype(bool) & keep)
    gt_boundary = seg2bmap(gt.astype(bool) & keep)
    footprint = disk_footprint(radius)
    pred_dilated = cv2.dilate(pred_boundary.astype(np.uint8), footprint)
    gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), footprint)
    return f_from_counts(
        int(np.sum(pred_boundary)),
        int(np.sum(gt_boundary)),
        int(np.sum(pred_boundary & (gt_dilated > 0))),
        int(np.sum(gt_boundary & (pred_dilated > 0))),
    )


def reference_jf(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of a ``[T, H, W]`` sequence, full frame (``db_eval_iou`` / ``db_eval_boundary``).

    Returns ``(J [T] float64, F [T] float64)``.
    """
    region = np.empty(len(gt), np.float64)
    boundary = np.empty(len(gt), np.float64)
    for t in range(len(gt)):
        frame_void = None if void is None else void[t]
        region[t] = region_similarity(pred[t], gt[t], frame_void)
        boundary[t] = boundary_measure(pred[t], gt[t], frame_void)
    return region, boundary
