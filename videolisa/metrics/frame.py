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
* Both boundary maps come from six bitwise operations on the two masks packed in one image.
* The disk is an exact union of a few centred rectangles (:func:`disk_rectangles`). One separable
  dilation with the largest of them settles most boundary pixels, one with the disk's bounding
  square rules out the far ones, and the few left are tested against the other rectangles with
  four look-ups each in an integral image.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

# Boundary tolerance as a fraction of the image diagonal (davis2017 ``bound_th``).
BOUNDARY_THRESHOLD = 0.008


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


def boundary_bits(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of each bit plane of a mask, exactly as davis2017 ``_seg2bmap``.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour; the
    last row is compared only with its right neighbour, the last column only with its lower one,
    and the last pixel with nothing (so a full-frame mask has no boundary). Working bitwise lets
    two masks packed in bits 0 and 1 share the same six operations.

    Args:
        mask: ``[H, W] uint8`` (for a single mask, values 0/1).

    Returns:
        ``[H, W] uint8``: bit k set where bit plane k of ``mask`` has a boundary pixel.
    """
    edges = np.empty_like(mask)
    height, width = mask.shape
    # dst= views into edges: cv2 writes through them. OpenCV rejects empty arrays, hence the guards.
    edges[:, -1] = 0
    if width > 1:
        cv2.bitwise_xor(mask[:, :-1], mask[:, 1:], dst=edges[:, :-1])
    if height > 1:
        cv2.bitwise_or(edges[:-1], cv2.bitwise_xor(mask[:-1], mask[1:]), dst=edges[:-1])
    if height > 1 and width > 1:
        cv2.bitwise_or(edges[:-1, :-1], cv2.bitwise_xor(mask[:-1, :-1], mask[1:, 1:]), dst=edges[:-1, :-1])
    return edges


def _count_matched(points: np.ndarray, n_points: int, target: np.ndarray, radius: int) -> int:
    """Number of ``points`` pixels that have a ``target`` pixel within ``disk(radius)``.

    Args:
        points: ``[h, w] uint8`` 0/1 boundary map whose pixels are tested.
        n_points: its number of non-zero pixels.
        target: ``[h, w] uint8`` 0/1 boundary map of the same crop (the one dilated officially).
        radius: disk radius in pixels.
    """
    rectangles = disk_rectangles(radius)
    # The largest rectangle inside the disk settles most pixels with one separable dilation ...
    unmatched = cv2.subtract(points, cv2.dilate(target, _rectangle(*rectangles[0])))
    n_unmatched = cv2.countNonZero(unmatched)
    if n_unmatched == 0:
        return n_points
    # ... the square around the disk rules out the far ones (missed parts, false positives) ...
    undecided = cv2.min(unmatched, cv2.dilate(target, _rectangle(radius, radius)))
    if cv2.countNonZero(undecided) == 0:
        return n_points - n_unmatched
    # ... and the few left are tested against the disk's other rectangles.
    return n_points - n_unmatched + _count_matched_exactly(undecided, target, radius, rectangles[1:])


def _rectangle(half_height: int, half_width: int) -> np.ndarray:
    """``[2a+1, 2b+1] uint8`` all-ones structuring element."""
    return np.ones((2 * half_height + 1, 2 * half_width + 1), np.uint8)


def _count_matched_exactly(
    points: np.ndarray, target: np.ndarray, radius: int, rectangles: tuple[tuple[int, int], ...]
) -> int:
    """Exact test of the remaining ``points`` pixels against the other disk rectangles.

    ``points`` and ``target`` are ``[h, w] uint8`` 0/1 maps of one crop. A pixel is matched when
    one of the ``[K]`` rectangles around it holds a ``target`` pixel: four look-ups per rectangle in
    an integral image of ``target`` over the region that can reach the points, padded by ``radius``
    zeros so that no look-up needs clipping. All ``[N, K, 4]`` look-ups are one gather.
    """
    x, y, w, h = cv2.boundingRect(points)
    top, left = max(y - radius, 0), max(x - radius, 0)
    bottom, right = min(y + h + radius, target.shape[0]), min(x + w + radius, target.shape[1])
    padded = cv2.copyMakeBorder(
        target[top:bottom, left:right], radius, radius, radius, radius, cv2.BORDER_CONSTANT, value=0
    )
    stride = padded.shape[1] + 1
    integral = cv2.integral(padded).ravel()  # [(h'+1)·(w'+1)] int32 prefix counts
    xy = _nonzero_points(points[top:bottom, left:right])
    # Flat index of each pixel's position in the padded integral image: [N].
    base = (xy[:, 1] + radius) * stride + (xy[:, 0] + radius)
    corners = np.array(
        [
            [(a + 1) * stride + b + 1, -a * stride + b + 1, (a + 1) * stride - b, -a * stride - b]
            for a, b in rectangles
        ]
    )  # [K, 4]: bottom-right, top-right, bottom-left, top-left
    values = integral[base[:, None, None] + corners[None]]  # [N, K, 4]
    inside = values[..., 0] - values[..., 1] - values[..., 2] + values[..., 3]  # [N, K]
    return int(np.count_nonzero(inside.any(axis=1)))


def _nonzero_points(mask: np.ndarray) -> np.ndarray:
    """``[N, 2] int32`` ``(x, y)`` positions of the non-zero pixels of ``[h, w] uint8`` ``mask``."""
    points = cv2.findNonZero(mask)
    # cv2 returns None for an empty mask and [N, 1, 2] or [N, 2] depending on its version.
    return np.empty((0, 2), np.int32) if points is None else points.reshape(-1, 2)


def _union_crop(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, slice] | None:
    """Rows and columns of the masks' union bounding box grown by one pixel; None if both are empty."""
    boxes = [box for box in (cv2.boundingRect(pred), cv2.boundingRect(gt)) if box[2] > 0]
    if not boxes:
        return None
    height, width = pred.shape
    top = min(y for _, y, _, _ in boxes)
    left = min(x for x, _, _, _ in boxes)
    bottom = max(y + h for _, y, _, h in boxes)
    right = max(x + w for x, _, w, _ in boxes)
    return slice(max(top - 1, 0), min(bottom + 1, height)), slice(max(left - 1, 0), min(right + 1, width))


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
        pred: ``[H, W]`` predicted mask, ``uint8`` 0/1 or ``bool`` (void pixels already cleared).
        gt: ``[H, W]`` ground-truth mask, ``uint8`` 0/1 or ``bool`` (void pixels already cleared).
        radius: boundary tolerance in pixels; default :func:`boundary_tolerance` of the frame size.

    Returns:
        ``(J, F)`` as Python floats, identical to ``db_eval_iou`` and ``f_measure``.
    """
    # A bool array is 0/1 bytes already; OpenCV only needs to see it as uint8.
    pred = pred.view(np.uint8) if pred.dtype == np.bool_ else pred
    gt = gt.view(np.uint8) if gt.dtype == np.bool_ else gt
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    crop = _union_crop(pred, gt)
    if crop is None:
        return 1.0, 1.0
    if radius is None:
        radius = boundary_tolerance(*pred.shape)
    pred_crop, gt_crop = pred[crop], gt[crop]

    n_pred_pixels = cv2.countNonZero(pred_crop)
    n_gt_pixels = cv2.countNonZero(gt_crop)
    intersection = cv2.countNonZero(cv2.bitwise_and(pred_crop, gt_crop))
    region = intersection / (n_pred_pixels + n_gt_pixels - intersection)

    # Both boundary maps at once: bit 0 carries the prediction, bit 1 the ground truth.
    edges = boundary_bits(cv2.scaleAdd(gt_crop, 2.0, pred_crop))
    pred_boundary = cv2.bitwise_and(edges, 1)
    gt_boundary = cv2.threshold(edges, 1, 1, cv2.THRESH_BINARY)[1]
    n_pred = cv2.countNonZero(pred_boundary)
    n_gt = cv2.countNonZero(gt_boundary)
    if n_pred == 0 or n_gt == 0:
        return region, f_from_counts(n_pred, n_gt, 0, 0)
    pred_matched = _count_matched(pred_boundary, n_pred, gt_boundary, radius)
    gt_matched = _count_matched(gt_boundary, n_gt, pred_boundary, radius)
    return region, f_from_counts(n_pred, n_gt, pred_matched, gt_matched)


def as_binary_u8(mask: np.ndarray) -> np.ndarray:
    """``[..., H, W]`` mask of any dtype -> C-contiguous ``uint8`` 0/1 (non-zero is foreground)."""
    if mask.dtype == np.bool_:
        return np.ascontiguousarray(mask).view(np.uint8)
    if mask.dtype == np.uint8:
        # cv2.threshold (> 0 -> 1) is several times faster than numpy's comparison.
        flat = np.ascontiguousarray(mask).reshape(-1, mask.shape[-1])
        return cv2.threshold(flat, 0, 1, cv2.THRESH_BINARY)[1].reshape(mask.shape)
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
