"""Per-frame region (J) and boundary (F) measures, exact and fast.

The definitions are those of the davis2017-evaluation toolkit (``db_eval_iou`` and ``f_measure``),
which MeViS, ReasonVOS and Ref-DAVIS all use (see ``docs/metrics.md``):

* J = |P ∩ G| / |P ∪ G| over non-void pixels, 1 when the union is empty.
* F = 2·precision·recall / (precision + recall) of the two one-pixel boundary maps, a boundary pixel
  counting as matched when the other boundary has a pixel inside a ``disk(bound_pix)`` around it,
  with ``bound_pix = ceil(0.008 · ‖(H, W)‖)``.

:mod:`videolisa.metrics.reference` computes the same numbers the straightforward way (full frame,
``cv2.dilate`` with a disk). This module gives bit-identical results from the integer counts of
:func:`videolisa.metrics._kernels.frame_counts` (a C extension; without it, its exact NumPy twin, see
:mod:`videolisa.metrics.kernels`), which packs each row into 64-pixel bit sets, counts and builds the
boundaries with word operations, and then works only on the boundary pixels: a boundary pixel is
matched when one row of the disk around it (``|dx| <= isqrt(r² - dy²)``) holds a pixel of the other
boundary.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from videolisa.metrics import kernels

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
def disk_half_widths(radius: int) -> np.ndarray:
    """``[r + 1] int64``: row ``dy`` of ``disk(radius)`` spans ``|dx| <= isqrt(r² - dy²)``, its entry ``dy``.

    Read-only (cached): the disk of :func:`disk_footprint` in the form the counting kernel uses.
    """
    half_widths = np.array([math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)], np.int64)
    half_widths.flags.writeable = False
    return half_widths


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of ``[H, W]`` ``mask`` (non-zero is foreground), exactly as davis2017 ``_seg2bmap``:
    ``[H, W] uint8`` 0/1.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour; the
    last row is compared only with its right neighbour, the last column only with its lower one,
    and the last pixel with nothing (so a full-frame mask has no boundary).
    """
    mask = _as_u8(mask)  # the kernel rejects anything but [H, W], naming "mask"
    boundary = np.empty_like(mask)
    kernels.active.boundary_map(mask, boundary)
    return boundary


def _as_u8(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` mask of any dtype as a C-contiguous ``uint8`` array with the same non-zero pixels."""
    if mask.dtype == np.bool_:
        return np.ascontiguousarray(mask).view(np.uint8)
    if mask.dtype == np.uint8:
        return np.ascontiguousarray(mask)
    return np.ascontiguousarray(mask != 0).view(np.uint8)


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
        pred: ``[H, W]`` predicted mask, any dtype, non-zero is foreground (void pixels already cleared).
        gt: ``[H, W]`` ground-truth mask, same convention.
        radius: boundary tolerance in pixels; default :func:`boundary_tolerance` of the frame size.

    Returns:
        ``(J, F)`` as Python floats, identical to ``db_eval_iou`` and ``f_measure``.
    """
    region, boundary, _ = frame_jf_counts(pred, gt, radius)
    return region, boundary


def frame_jf_counts(
    pred: np.ndarray, gt: np.ndarray, radius: int | None = None
) -> tuple[float, float, tuple[int, int, int]]:
    """J, F and the pixel counts ``(|P ∩ G|, |P|, |G|)`` of one frame, from one pass of the kernel.

    Same arguments as :func:`frame_jf`; the counts let ReVOS's accuracy and robustness be computed without
    another pass over the pixels.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    if pred.ndim != 2:
        raise ValueError(f"expected [H, W] masks, got shape {pred.shape}")
    if radius is None:
        radius = boundary_tolerance(*pred.shape)
    intersection, pred_pixels, gt_pixels, n_pred, n_gt, pred_matched, gt_matched = kernels.active.frame_counts(
        _as_u8(pred), _as_u8(gt), disk_half_widths(radius)
    )
    union = pred_pixels + gt_pixels - intersection
    # Python ints divided like the official numpy sums: the same float.
    region = 1.0 if union == 0 else intersection / union
    boundary = f_from_counts(n_pred, n_gt, pred_matched, gt_matched)
    return region, boundary, (int(intersection), int(pred_pixels), int(gt_pixels))


def remove_void(mask: np.ndarray, void: np.ndarray | None) -> np.ndarray:
    """``[H, W] uint8`` 0/1 mask with the ``void`` pixels (``[H, W]`` 0/1 or None) cleared."""
    if void is None:
        return mask
    return np.bitwise_and(mask, np.bitwise_xor(void, 1))


def compute_jf(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
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
    pred_u8, gt_u8 = _as_u8(pred), _as_u8(gt)
    if void is not None:  # void pixels are background in both masks
        ignored = void != 0
        pred_u8, gt_u8 = np.where(ignored, np.uint8(0), pred_u8), np.where(ignored, np.uint8(0), gt_u8)
    radius = boundary_tolerance(*gt.shape[1:])
    region = np.empty(len(gt), np.float64)
    boundary = np.empty(len(gt), np.float64)
    for t in range(len(gt)):
        region[t], boundary[t] = frame_jf(pred_u8[t], gt_u8[t], radius)
    return region, boundary
