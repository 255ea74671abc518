"""Compiled (numba) kernels behind the exact J / F measures and the PNG mask decoder.

Scoring a frame with whole-frame array operations costs a dozen passes over both masks, and decoding
a mask PNG undoes the row filters byte by byte; numpy cannot do the latter without Python-level loops.
These kernels make one pass over the rows that hold any foreground and then work only on the
boundary pixels, so a frame costs about as much as reading it once. They are compiled on first use
and cached on disk (``cache=True``); a later process loads them from the cache, which with numba's
own start-up costs about a second (see :func:`load_all`).

Foreground is every non-zero value: callers need not binarise their masks first.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Length of :func:`frame_counts`' result.
NUM_COUNTS = 7


@njit(cache=True, nogil=True)
def _binarise_row(row: np.ndarray, out: np.ndarray) -> bool:
    """``out[:W] = row != 0`` as 0/1 bytes; whether any is 1. (Two plain loops: both vectorise.)"""
    for x in range(row.shape[0]):
        out[x] = row[x] != 0
    acc = np.uint8(0)
    for x in range(row.shape[0]):
        acc |= out[x]
    return acc != 0


@njit(cache=True, nogil=True)
def _boundary_row(row: np.ndarray, below: np.ndarray, width: int, out: np.ndarray) -> None:
    """One row of davis2017's ``_seg2bmap`` boundary map into ``out[:W]`` (0/1 bytes).

    ``row`` and ``below`` are 0/1 bytes of this row and the next (pass ``row`` twice for the last row).
    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour; the
    last row compares only with the right neighbour (``below`` is the row itself there), the last
    column only with the lower one, and the last pixel with nothing.
    """
    for x in range(width - 1):
        p = row[x]
        out[x] = (p ^ row[x + 1]) | (p ^ below[x]) | (p ^ below[x + 1])
    out[width - 1] = row[width - 1] ^ below[width - 1]


@njit(cache=True, nogil=True)
def boundary_map(mask: np.ndarray) -> np.ndarray:
    """davis2017's ``_seg2bmap`` of ``[H, W] uint8`` ``mask`` (non-zero is foreground): ``[H, W] uint8`` 0/1.

    The same row rule that :func:`frame_counts` applies, as a whole map (for tests and inspection).
    """
    height, width = mask.shape
    words = (width + 7) // 8
    rows = np.zeros((2, words * 8), np.uint8)
    out = np.zeros((height, words * 8), np.uint8)
    this, below = rows[0], rows[1]
    _binarise_row(mask[0], below)
    for r in range(height):
        this, below = below, this
        if r + 1 < height:
            _binarise_row(mask[r + 1], below)
            _boundary_row(this, below, width, out[r])
        else:
            _boundary_row(this, this, width, out[r])
    return out[:, :width].copy()


@njit(cache=True, nogil=True)
def _append_nonzero(row64: np.ndarray, row8: np.ndarray, width: int, xs: np.ndarray, count: int) -> int:
    """Append the columns of the non-zero bytes of ``row8[:width]`` to ``xs`` from ``count`` on, in
    increasing order, skipping eight zero bytes at a time through the ``row64`` view; the new count."""
    for word in range(row64.shape[0]):
        if row64[word] != 0:
            for x in range(word * 8, min(word * 8 + 8, width)):
                if row8[x] != 0:
                    xs[count] = x
                    count += 1
    return count


@njit(cache=True, nogil=True)
def _room_for_row(xs: np.ndarray, count: int, width: int) -> np.ndarray:
    """``xs`` if ``width`` more entries fit after ``count``, else a copy with twice the room."""
    if count + width <= xs.shape[0]:
        return xs
    grown = np.empty(2 * (count + width), xs.dtype)
    grown[:count] = xs[:count]
    return grown


@njit(cache=True, nogil=True)
def _count_matched(
    rows_a: np.ndarray, xs_a: np.ndarray, rows_b: np.ndarray, xs_b: np.ndarray, half_widths: np.ndarray
) -> int:
    """Number of boundary pixels of A that have a boundary pixel of B inside the disk around them.

    A and B are in compressed-row form: the pixels of row ``r`` are ``xs[rows[r]:rows[r + 1]]``, in
    increasing column order. The disk of radius R is ``|dx| <= half_widths[|dy|]`` for ``|dy| <= R``
    (``half_widths[d] = isqrt(R² - d²)``), the footprint of davis2017's ``cv2.dilate``. Rows are tried
    nearest first. Within a row of A the pixels come in increasing column order, so for each row
    offset a cursor into B's row only moves forward: its first pixel at column >= x - reach.
    """
    height = rows_a.shape[0] - 1
    radius = half_widths.shape[0] - 1
    # Row offsets nearest first: 0, -1, +1, -2, +2, ...
    offsets = np.empty(2 * radius + 1, np.int64)
    for step in range(2 * radius + 1):
        offsets[step] = (step + 1) // 2 if step % 2 else -(step // 2)
    cursors = np.empty(2 * radius + 1, np.int64)
    matched = 0
    for r in range(height):
        if rows_a[r] == rows_a[r + 1]:
            continue
        for step in range(2 * radius + 1):
            rr = r + offsets[step]
            cursors[step] = rows_b[rr] if 0 <= rr < height else -1
        for i in range(rows_a[r], rows_a[r + 1]):
            x = xs_a[i]
            for step in range(2 * radius + 1):
                cursor = cursors[step]
                if cursor < 0:
                    continue
                rr = r + offsets[step]
                end = rows_b[rr + 1]
                reach = half_widths[abs(offsets[step])]
                while cursor < end and xs_b[cursor] < x - reach:
                    cursor += 1
                cursors[step] = cursor
                if cursor < end and xs_b[cursor] <= x + reach:
                    matched += 1
                    break
    return matched


@njit(cache=True, nogil=True)
def frame_counts(pred: np.ndarray, gt: np.ndarray, half_widths: np.ndarray) -> np.ndarray:
    """Pixel and boundary counts of one frame, from which J and F follow exactly.

    Everything happens inside the union of the two masks' bounding boxes grown by one pixel: every
    boundary pixel lies in it (a boundary pixel is a mask pixel or the pixel just above / left of
    one), and the one-pixel margin of zeros makes the crop's last row and column follow the same
    rules as inside the frame, so the crop never changes a count.

    Args:
        pred: ``[H, W] uint8`` prediction, non-zero is foreground (C-contiguous).
        gt: ``[H, W] uint8`` ground truth, same convention.
        half_widths: ``[R + 1] int64`` disk half-widths (see :func:`_count_matched`).

    Returns:
        ``[7] int64``: intersection, prediction pixels, ground-truth pixels, prediction boundary
        pixels, ground-truth boundary pixels, prediction boundary pixels near the ground-truth
        boundary, ground-truth boundary pixels near the prediction boundary.
    """
    height, width = pred.shape
    columns = np.zeros(width, np.uint8)
    top, bottom = height, -1
    for r in range(height):
        p_row, g_row = pred[r], gt[r]
        acc = np.uint8(0)
        for x in range(width):
            acc |= p_row[x] | g_row[x]
        if acc != 0:
            top = min(top, r)
            bottom = r
            for x in range(width):
                columns[x] |= p_row[x] | g_row[x]
    if bottom < 0:
        return np.zeros(NUM_COUNTS, np.int64)
    left = 0
    while columns[left] == 0:
        left += 1
    right = width - 1
    while columns[right] == 0:
        right -= 1
    rows = slice(max(top - 1, 0), min(bottom + 2, height))
    cols = slice(max(left - 1, 0), min(right + 2, width))
    return _crop_counts(pred[rows, cols], gt[rows, cols], half_widths)


@njit(cache=True, nogil=True)
def _crop_counts(pred: np.ndarray, gt: np.ndarray, half_widths: np.ndarray) -> np.ndarray:
    """:func:`frame_counts` of a crop (``[h, w] uint8`` views) that holds every foreground pixel.

    Rows are binarised one at a time into small buffers; rows where neither this row nor the next
    has foreground in a mask are skipped for that mask, and pixel counts are accumulated per column
    (a reduction per row would not vectorise as well).
    """
    height, width = pred.shape
    words = (width + 7) // 8
    # Rows: this and next of each mask (0/1), and the boundary row; padded to whole 8-byte words.
    buffers = np.zeros((5, words), np.uint64)
    pred_this, pred_next = buffers[0].view(np.uint8), buffers[1].view(np.uint8)
    gt_this, gt_next = buffers[2].view(np.uint8), buffers[3].view(np.uint8)
    boundary64 = buffers[4]
    boundary8 = boundary64.view(np.uint8)
    # Per-column pixel counts; uint32 so that no frame height can overflow them.
    column_counts = np.zeros((3, width), np.uint32)
    pred_rows = np.zeros(height + 1, np.int64)
    gt_rows = np.zeros(height + 1, np.int64)
    # Boundary pixel columns, grown when a row might not fit (a mask's boundary is usually a few
    # pixels per row; a whole-frame allocation per frame cost more than the counting).
    pred_xs = np.empty(8 * (height + width), np.int32)
    gt_xs = np.empty(8 * (height + width), np.int32)
    n_pred = 0
    n_gt = 0
    pred_next_any = _binarise_row(pred[0], pred_next)
    gt_next_any = _binarise_row(gt[0], gt_next)
    for r in range(height):
        pred_this, pred_next = pred_next, pred_this
        gt_this, gt_next = gt_next, gt_this
        pred_any, gt_any = pred_next_any, gt_next_any
        last = r + 1 == height
        pred_next_any = False if last else _binarise_row(pred[r + 1], pred_next)
        gt_next_any = False if last else _binarise_row(gt[r + 1], gt_next)
        if pred_any:
            for x in range(width):
                column_counts[0, x] += pred_this[x]
        if gt_any:
            for x in range(width):
                column_counts[1, x] += gt_this[x]
        if pred_any and gt_any:
            for x in range(width):
                column_counts[2, x] += pred_this[x] & gt_this[x]
        # A row holds boundary pixels only if it or the row below has foreground.
        if pred_any or pred_next_any:
            _boundary_row(pred_this, pred_this if last else pred_next, width, boundary8)
            pred_xs = _room_for_row(pred_xs, n_pred, width)
            n_pred = _append_nonzero(boundary64, boundary8, width, pred_xs, n_pred)
        pred_rows[r + 1] = n_pred
        if gt_any or gt_next_any:
            _boundary_row(gt_this, gt_this if last else gt_next, width, boundary8)
            gt_xs = _room_for_row(gt_xs, n_gt, width)
            n_gt = _append_nonzero(boundary64, boundary8, width, gt_xs, n_gt)
        gt_rows[r + 1] = n_gt
    counts = np.zeros(NUM_COUNTS, np.int64)
    counts[0] = column_counts[2].sum()
    counts[1] = column_counts[0].sum()
    counts[2] = column_counts[1].sum()
    counts[3] = n_pred
    counts[4] = n_gt
    if n_pred > 0 and n_gt > 0:
        counts[5] = _count_matched(pred_rows, pred_xs, gt_rows, gt_xs, half_widths)
        counts[6] = _count_matched(gt_rows, gt_xs, pred_rows, pred_xs, half_widths)
    return counts


@njit(cache=True, nogil=True)
def _paeth(left: int, up: int, up_left: int) -> int:
    """The PNG Paeth predictor (PNG specification, section 9.4)."""
    estimate = left + up - up_left
    to_left = abs(estimate - left)
    to_up = abs(estimate - up)
    to_up_left = abs(estimate - up_left)
    if to_left <= to_up and to_left <= to_up_left:
        return left
    if to_up <= to_up_left:
        return up
    return up_left


@njit(cache=True, nogil=True)
def png_unfilter(filtered: np.ndarray, height: int, width: int, binary: bool) -> np.ndarray:
    """Undo the PNG row filters of a non-interlaced image with one byte per pixel (8-bit grey or
    palette; PNG specification, section 9).

    Rows are handled through slices (so that "None" and "Up" vectorise) and the left neighbour is
    carried in a register (so that "Sub", "Average" and "Paeth" run at a byte per cycle or so).

    Args:
        filtered: ``[H · (1 + W)] uint8``, the inflated IDAT stream (a filter-type byte per row).
        height, width: image size.
        binary: return 1 where a pixel is non-zero and 0 elsewhere instead of the pixel values.

    Returns:
        ``[H, W] uint8`` pixels (or their 0/1 flags).

    Raises:
        ValueError: a row has a filter type other than 0-4.
    """
    out = np.empty((height, width), np.uint8)
    zeros = np.zeros(width, np.uint8)
    for r in range(height):
        start = r * (width + 1)
        kind = filtered[start]
        line = filtered[start + 1 : start + 1 + width]
        row = out[r]
        above = out[r - 1] if r > 0 else zeros
        if kind == 0:
            for x in range(width):
                row[x] = line[x]
        elif kind == 1:
            left = np.uint8(0)
            for x in range(width):
                left = np.uint8(line[x] + left)
                row[x] = left
        elif kind == 2:
            for x in range(width):
                row[x] = line[x] + above[x]
        elif kind == 3:
            left = np.int32(0)
            for x in range(width):
                left = np.int32(np.uint8(line[x] + ((left + np.int32(above[x])) >> 1)))
                row[x] = left
        elif kind == 4:
            left = np.int32(0)
            above_left = np.int32(0)
            for x in range(width):
                up = np.int32(above[x])
                # Where the row above is flat (up == up-left) the Paeth predictor is the left pixel:
                # the common case in masks, and a much shorter dependency chain.
                predicted = left if up == above_left else _paeth(left, up, above_left)
                left = np.int32(np.uint8(line[x] + predicted))
                above_left = up
                row[x] = left
        else:
            raise ValueError("invalid PNG filter type")
    if binary:
        flat = out.ravel()
        for i in range(flat.shape[0]):
            flat[i] = flat[i] != 0
    return out


def load_all() -> None:
    """Load every kernel now (from numba's disk cache, or compile it), not on its first real use.

    Loading costs about a second per process, mostly numba's own start-up; the scoring pool's
    forkserver calls this once so that the worker processes it forks inherit the loaded kernels.
    """
    mask = np.zeros((2, 9), np.uint8)
    half_widths = np.zeros(1, np.int64)
    half_widths.flags.writeable = False  # as videolisa.metrics.frame passes them: the same compiled version
    frame_counts(mask, mask, half_widths)
    boundary_map(mask)
    png_unfilter(np.zeros(2 * 10, np.uint8), 2, 9, True)
    png_unfilter(np.zeros(2 * 10, np.uint8), 2, 9, False)
