"""Per-frame region (J) and boundary (F) measures, exact and fast.

The definitions are those of the davis2017-evaluation toolkit (``db_eval_iou`` and ``f_measure``),
which MeViS, ReasonVOS and Ref-DAVIS all use (see ``reference/metrics.md``):

* J = |P ∩ G| / |P ∪ G| over non-void pixels, 1 when the union is empty.
* F = 2·precision·recall / (precision + recall) of the two one-pixel boundary maps, a boundary pixel
  counting as matched when the other boundary has a pixel inside a ``disk(bound_pix)`` around it,
  with ``bound_pix = ceil(0.008 · ‖(H, W)‖)``.

:mod:`videolisa.metrics.reference` computes the same numbers the straightforward way (full frame,
``cv2.dilate`` with a disk). This module gives bit-identical results much faster:

* All work happens inside the union of the two masks' bounding boxes, grown by one pixel. Every
  boundary pixel lies in that box (a boundary pixel is a mask pixel or the pixel just above / left
  of one), so the crop never changes a count.
* The boundary map is a pixel whose 2x2 window (itself, right, below, below-right) is not constant,
  with the last row / column replicated: one ``MORPH_GRADIENT`` with a 2x2 kernel. Replication
  reproduces the official special rules for the last row and column and ``b[-1, -1] = 0``; at a crop
  edge inside the frame the replicated row / column is empty in both masks, as the real one is.
* Instead of dilating a whole boundary map with the disk, only the other boundary's pixels are
  tested: the disk is an exact union of a few axis-aligned rectangles, and "is there a boundary
  pixel inside this rectangle" is four look-ups in an integral image.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

# Boundary tolerance as a fraction of the image diagonal (davis2017 ``bound_th``).
BOUNDARY_THRESHOLD = 0.008
# 2x2 window anchored at its top-left pixel: the pixel, its right, lower and lower-right neighbours.
_WINDOW_2X2 = np.ones((2, 2), np.uint8)
_WINDOW_ANCHOR = (0, 0)


def boundary_tolerance(height: int, width: int, bound_th: float = BOUNDARY_THRESHOLD) -> int:
    """Disk radius in pixels used to match boundaries: ``ceil(bound_th · sqrt(H² + W²))``.

    Computed with the same float operations as the official ``np.ceil(bound_th *
    np.linalg.norm(shape))`` (8 at 480x854, 12 at 720x1280, 18 at 1080x1920). A ``bound_th`` of 1 or
    more is taken as the radius itself, as in the official code.
    """
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.sqrt(float(height * height + width * width))))


def disk_footprint(radius: int) -> np.ndarray:
    """``[2r+1, 2r+1] uint8`` disk: 1 where ``dx² + dy² <= r²``; equals ``skimage.morphology.disk``."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius).astype(np.uint8)


@lru_cache(maxsize=64)
def disk_rectangles(radius: int) -> tuple[tuple[int, int], ...]:
    """The disk of ``radius`` as a union of centred rectangles ``(half_height, half_width)``.

    Row ``dy`` of the disk spans ``|dx| <= isqrt(r² - dy²)``; one rectangle per step of that
    staircase covers the disk exactly. Sorted by area, largest first, so that most matched pixels
    are found by the first test. ``[K]`` with K about 0.7·r.
    """
    half_widths = [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]
    corners = [
        (dy, half_widths[dy])
        for dy in range(radius + 1)
        if dy == radius or half_widths[dy] > half_widths[dy + 1]
    ]
    return tuple(sorted(corners, key=lambda hw: -(2 * hw[0] + 1) * (2 * hw[1] + 1)))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a mask, exactly as davis2017 ``_seg2bmap``.

    Args:
        mask: ``[H, W] uint8`` with values 0/1 (a ``bool`` array viewed as uint8 works).

    Returns:
        ``[H, W] uint8`` 0/1: 1 where the pixel differs from its right, lower or lower-right
        neighbour (last row / column compared with themselves, hence a full-frame mask has none).
    """
    return cv2.morphologyEx(
        mask,
        cv2.MORPH_GRADIENT,
        _WINDOW_2X2,
        anchor=_WINDOW_ANCHOR,
        borderType=cv2.BORDER_REPLICATE | cv2.BORDER_ISOLATED,
    )


def _count_matched(points: np.ndarray, target_boundary: np.ndarray, radius: int) -> int:
    """Number of ``points`` that have a ``target_boundary`` pixel within ``disk(radius)``.

    Args:
        points: ``[N, 2] int32`` ``(x, y)`` pixel positions.
        target_boundary: ``[h, w] uint8`` 0/1 boundary map of the same crop.
        radius: disk radius in pixels.
    """
    height, width = target_boundary.shape
    integral = cv2.integral(target_boundary).ravel()  # [(h+1)·(w+1)] int32 prefix counts
    stride = width + 1
    xs = points[:, 0]
    ys = points[:, 1]

    def any_inside(half_height: int, half_width: int) -> np.ndarray:
        top = np.maximum(ys - half_height, 0) * stride
        bottom = np.minimum(ys + half_height + 1, height) * stride
        left = np.maximum(xs - half_width, 0)
        right = np.minimum(xs + half_width + 1, width)
        inside = integral[bottom + right] - integral[top + right] - integral[bottom + left] + integral[top + left]
        return inside > 0

    # The bounding square of the disk rules out far pixels; the disk's rectangles then decide.
    near = any_inside(radius, radius)
    xs, ys = xs[near], ys[near]
    matched = 0
    for half_height, half_width in disk_rectangles(radius):
        if xs.size == 0:
            break
        hit = any_inside(half_height, half_width)
        matched += int(np.count_nonzero(hit))
        xs, ys = xs[~hit], ys[~hit]
    return matched


def _nonzero_points(mask: np.ndarray) -> np.ndarray:
    """``[N, 2] int32`` ``(x, y)`` positions of the non-zero pixels of ``[h, w] uint8`` ``mask``."""
    points = cv2.findNonZero(mask)
    # cv2 returns None for an empty mask and [N, 1, 2] or [N, 2] depending on its version.
    return np.empty((0, 2), np.int32) if points is None else points.reshape(-1, 2)


def _union_crop(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, slice] | None:
    """Rows and columns of the union bounding box grown by one pixel, or None if both are empty."""
    boxes = [box for box in (cv2.boundingRect(pred), cv2.boundingRect(gt)) if box[2] > 0]
    if not boxes:
        return None
    height, width = pred.shape
    x0 = min(box[0] for box in boxes)
    y0 = min(box[1] for box in boxes)
    x1 = max(box[0] + box[2] for box in boxes)
    y1 = max(box[1] + box[3] for box in boxes)
    return slice(max(y0 - 1, 0), min(y1 + 1, height)), slice(max(x0 - 1, 0), min(x1 + 1, width))


def f_from_counts(n_pred: int, n_gt: int, pred_matched: int, gt_matched: int) -> float:
    """Boundary F-measure from boundary pixel counts, with davis2017's empty-boundary rules.

    Args:
        n_pred, n_gt: boundary pixels of the prediction / ground truth.
        pred_matched: prediction boundary pixels near the ground-truth boundary.
        gt_matched: ground-truth boundary pixels near the prediction boundary.
    """
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = pred_matched / float(n_pred)
        recall = gt_matched / float(n_gt)
    if precision + recall == 0:
        return 0.0
    # Same operation order as the official code, so the result is bit-identical.
    return 2 * precision * recall / (precision + recall)


def frame_jf(pred: np.ndarray, gt: np.ndarray, radius: int | None = None) -> tuple[float, float]:
    """J and F of one frame.

    Args:
        pred: ``[H, W] uint8`` 0/1 predicted mask (void pixels already set to 0).
        gt: ``[H, W] uint8`` 0/1 ground-truth mask (void pixels already set to 0).
        radius: boundary tolerance in pixels; default :func:`boundary_tolerance` of the frame size.

    Returns:
        ``(J, F)`` as Python floats, identical to ``db_eval_iou`` and ``f_measure``.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    crop = _union_crop(pred, gt)
    if crop is None:
        return 1.0, 1.0
    if radius is None:
        radius = boundary_tolerance(*pred.shape)
    pred_crop, gt_crop = pred[crop], gt[crop]

    intersection = cv2.countNonZero(cv2.bitwise_and(pred_crop, gt_crop))
    union = cv2.countNonZero(pred_crop) + cv2.countNonZero(gt_crop) - intersection
    region = intersection / union

    pred_boundary = boundary_map(pred_crop)
    gt_boundary = boundary_map(gt_crop)
    pred_points = _nonzero_points(pred_boundary)
    gt_points = _nonzero_points(gt_boundary)
    n_pred, n_gt = len(pred_points), len(gt_points)
    if n_pred == 0 or n_gt == 0:
        return region, f_from_counts(n_pred, n_gt, 0, 0)
    pred_matched = _count_matched(pred_points, gt_boundary, radius)
    gt_matched = _count_matched(gt_points, pred_boundary, radius)
    return region, f_from_counts(n_pred, n_gt, pred_matched, gt_matched)


def as_binary_u8(mask: np.ndarray) -> np.ndarray:
    """``[..., H, W]`` mask of any dtype -> C-contiguous ``uint8`` 0/1 (non-zero is foreground)."""
    if mask.dtype == np.bool_:
        return np.ascontiguousarray(mask).view(np.uint8)
    return np.ascontiguousarray(mask != 0).view(np.uint8)


def remove_void(mask: np.ndarray, void: np.ndarray | None) -> np.ndarray:
    """``[H, W] uint8`` 0/1 mask with the ``void`` pixels (``[H, W]`` 0/1 or None) cleared."""
    if void is None:
        return mask
    return cv2.bitwise_and(mask, cv2.bitwise_xor(void, 1))


def compute_jf(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of a sequence (``db_eval_iou`` and ``db_eval_boundary``, bit-identical).

    Args:
        pred: ``[T, H, W]`` predicted masks, bool or any dtype (non-zero is foreground).
        gt: ``[T, H, W]`` ground-truth masks, same convention.
        void: optional ``[T, H, W]`` pixels to ignore (non-zero), removed from both masks.

    Returns:
        ``(J [T] float64, F [T] float64)``.
    """
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"expected two [T, H, W] arrays of one shape, got {pred.shape} and {gt.shape}")
    if void is not None and void.shape != gt.shape:
        raise ValueError(f"void {void.shape} does not match the masks {gt.shape}")
    pred_u8, gt_u8 = as_binary_u8(pred), as_binary_u8(gt)
    void_u8 = None if void is None else as_binary_u8(void)
    radius = boundary_tolerance(*gt.shape[1:])
    region = np.empty(len(gt), np.float64)
    boundary = np.empty(len(gt), np.float64)
    for t in range(len(gt)):
        frame_void = None if void_u8 is None else void_u8[t]
        region[t], boundary[t] = frame_jf(
            remove_void(pred_u8[t], frame_void), remove_void(gt_u8[t], frame_void), radius
        )
    return region, boundary
