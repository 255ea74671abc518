"""Pure-NumPy twin of the C extension ``videolisa.metrics._kernels``: same functions, arguments, results and
errors, used when the extension was not built (an install without a C compiler).

Exact like the extension (tests run both on the same cases) and several times slower (``eval/perf/kernel_fallback.py``):

* ``frame_counts`` works on the masks' bounding box (plus the one-pixel margin the boundary rule looks at);
  a boundary pixel is matched when some row ``dy`` of the tolerance disk holds a pixel of the other boundary
  within ``|dx| <= half_widths[|dy|]``, read off per-row prefix sums of the other boundary; rows are tried
  nearest first and only for the pixels not matched yet.
* ``png_unfilter`` undoes None / Sub rows for all of them at once (Sub is a running sum), runs of Up rows as a
  running sum down the columns, and Paeth rows as running sums between the columns where the row above
  changes (elsewhere the Paeth predictor is the left pixel); Average rows, rare in mask files, go pixel by pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NUM_COUNTS = 7
_INT64_FORMATS = ("q", "l", "=q", "<q")  # the buffer formats the extension accepts for half_widths


def _byte_matrix(array: Any, name: str, writable: bool = False) -> np.ndarray:
    """``[H, W] uint8`` view of a C-contiguous 2-D buffer of bytes; the extension's errors otherwise."""
    try:
        view = memoryview(array)
    except TypeError:
        view = None
    if view is None or not view.c_contiguous or (writable and view.readonly):
        raise TypeError(f"{name} must be a C-contiguous{' writable' if writable else ''} [H, W] uint8 array")
    if view.ndim != 2 or view.itemsize != 1:
        raise ValueError(
            f"{name} must be a [H, W] array of bytes (uint8), got {view.ndim} dimensions of {view.itemsize}-byte items"
        )
    return np.asarray(view).view(np.uint8)


def _half_widths(array: Any) -> np.ndarray:
    """``[R + 1] int64`` disk half-widths, checked as the extension checks them."""
    try:
        view = memoryview(array)
    except TypeError:
        view = None
    if view is None or not view.c_contiguous:
        raise TypeError("half_widths must be a contiguous [R + 1] int64 array")
    if view.ndim != 1 or view.shape[0] < 1 or view.itemsize != 8 or view.format not in _INT64_FORMATS:
        raise ValueError("half_widths must be a non-empty [R + 1] int64 array")
    widths = np.asarray(view).view(np.int64)
    negative = np.flatnonzero(widths < 0)
    if negative.size:
        raise ValueError(f"half_widths[{negative[0]}] is {widths[negative[0]]}; half-widths are >= 0")
    return widths


def _seg2bmap(mask: np.ndarray) -> np.ndarray:
    """``[H, W] bool`` one-pixel boundary of ``[H, W] bool`` ``mask`` (davis2017 ``_seg2bmap``): a pixel that
    differs from its right, lower or lower-right neighbour; the last row looks only right, the last column
    only down, the last pixel nowhere."""
    boundary = np.zeros_like(mask)
    boundary[:, :-1] = mask[:, :-1] ^ mask[:, 1:]
    boundary[:-1, :] |= mask[:-1, :] ^ mask[1:, :]
    boundary[:-1, :-1] |= mask[:-1, :-1] ^ mask[1:, 1:]
    return boundary


def _foreground_window(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, slice] | None:
    """Rows and columns that hold every boundary pixel of both masks, with the rule of ``_seg2bmap`` unchanged
    inside them: the foreground's bounding box, one pixel more above / left (the boundary reaches toward the
    origin) and below / right (so the box's last row and column compare with their real neighbours). None
    when neither mask has foreground."""
    rows = np.flatnonzero(pred.any(axis=1) | gt.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(pred[rows[0] : rows[-1] + 1].any(axis=0) | gt[rows[0] : rows[-1] + 1].any(axis=0))
    height, width = pred.shape
    return (
        slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, height)),
        slice(max(int(columns[0]) - 1, 0), min(int(columns[-1]) + 2, width)),
    )


def _count_matched(boundary: np.ndarray, other: np.ndarray, half_widths: np.ndarray) -> int:
    """Pixels of ``boundary`` ([H, W] bool) with a pixel of ``other`` ([H, W] bool) inside the disk around them
    (``|dx| <= half_widths[|dy|]``, the footprint of davis2017's ``cv2.dilate``)."""
    ys, xs = np.nonzero(boundary)
    height, width = other.shape
    reach = min(len(half_widths) - 1, height - 1)  # rows further away are outside the frame
    # prefix[reach + y, k]: pixels of other in row y left of column k; `reach` empty rows above and below.
    prefix = np.zeros((height + 2 * reach, width + 1), np.int32)
    np.cumsum(other, axis=1, dtype=np.int32, out=prefix[reach : reach + height, 1:])
    ys = ys + reach
    matched = 0
    for dy in sorted(range(-reach, reach + 1), key=abs):  # nearest rows first: most pixels match there
        half_width = int(half_widths[abs(dy)])
        low, high = np.maximum(xs - half_width, 0), np.minimum(xs + half_width + 1, width)
        hit = prefix[ys + dy, high] > prefix[ys + dy, low]
        matched += int(np.count_nonzero(hit))
        ys, xs = ys[~hit], xs[~hit]
        if ys.size == 0:
            break
    return matched


def frame_counts(pred: Any, gt: Any, half_widths: Any) -> tuple[int, ...]:
    """Pixel and boundary counts of one frame, from which J and F follow exactly (as the extension's).

    Args:
        pred, gt: ``[H, W] uint8`` C-contiguous masks, non-zero is foreground.
        half_widths: ``[R + 1] int64``, the disk of radius R as ``|dx| <= half_widths[|dy|]``.

    Returns:
        ``(intersection, prediction pixels, ground-truth pixels, prediction boundary pixels, ground-truth
        boundary pixels, prediction boundary pixels near the ground-truth boundary, ground-truth boundary
        pixels near the prediction boundary)``.
    """
    pred, gt = _byte_matrix(pred, "pred"), _byte_matrix(gt, "gt")
    widths = _half_widths(half_widths)
    if pred.shape != gt.shape:
        sizes = f"pred [{pred.shape[0]}, {pred.shape[1]}] and gt [{gt.shape[0]}, {gt.shape[1]}]"
        raise ValueError(f"{sizes} differ in size")
    window = _foreground_window(pred, gt) if pred.size else None
    if window is None:
        return (0,) * NUM_COUNTS
    pred, gt = pred[window] != 0, gt[window] != 0
    pred_boundary, gt_boundary = _seg2bmap(pred), _seg2bmap(gt)
    n_pred, n_gt = int(np.count_nonzero(pred_boundary)), int(np.count_nonzero(gt_boundary))
    pred_matched = gt_matched = 0
    if n_pred and n_gt:
        pred_matched = _count_matched(pred_boundary, gt_boundary, widths)
        gt_matched = _count_matched(gt_boundary, pred_boundary, widths)
    pixels = (np.count_nonzero(pred & gt), np.count_nonzero(pred), np.count_nonzero(gt))
    return (*(int(count) for count in pixels), n_pred, n_gt, pred_matched, gt_matched)


def boundary_map(mask: Any, out: Any) -> None:
    """davis2017's ``_seg2bmap`` of ``mask`` (``[H, W] uint8``, non-zero is foreground) into ``out`` (``[H, W]
    uint8``, 0/1)."""
    mask = _byte_matrix(mask, "mask")
    target = _byte_matrix(out, "out", writable=True)
    if mask.shape != target.shape:
        raise ValueError("out must have the shape of mask")
    target[...] = _seg2bmap(mask != 0)


def _paeth(left: int, up: int, up_left: int) -> int:
    """The PNG Paeth predictor (PNG specification, section 9.4)."""
    estimate = left + up - up_left
    to_left, to_up, to_up_left = abs(estimate - left), abs(estimate - up), abs(estimate - up_left)
    if to_left <= to_up and to_left <= to_up_left:
        return left
    return up if to_up <= to_up_left else up_left


def _unfilter_paeth(line: np.ndarray, above: np.ndarray, row: np.ndarray) -> None:
    """Undo the Paeth filter of ``line`` ([W] uint8) given the decoded ``above`` row, into ``row``.

    Where ``above`` is flat (up == up-left) the predictor is the left pixel, so each stretch between the
    columns where ``above`` changes is a running sum started by one Paeth prediction.
    """
    up_left = np.concatenate(([0], above[:-1])).astype(np.uint8)
    starts = np.union1d([0], np.flatnonzero(above != up_left)).tolist()
    left = 0
    for start, end in zip(starts, starts[1:] + [len(line)]):
        stretch = line[start:end].copy()
        stretch[0] = (int(stretch[0]) + _paeth(left, int(above[start]), int(up_left[start]))) & 0xFF
        np.cumsum(stretch, dtype=np.uint8, out=row[start:end])
        left = int(row[end - 1])


def _unfilter_average(line: np.ndarray, above: np.ndarray, row: np.ndarray) -> None:
    """Undo the Average filter of ``line`` ([W] uint8) given the decoded ``above`` row, into ``row``."""
    left, values = 0, []
    for filtered, up in zip(line.tolist(), above.tolist()):
        left = (filtered + ((left + up) >> 1)) & 0xFF
        values.append(left)
    row[:] = values


def png_unfilter(filtered: Any, out: Any, binary: bool) -> None:
    """Undo the PNG row filters of a non-interlaced image with one byte per pixel (8-bit grey or palette) into
    ``out``, as the extension does.

    Args:
        filtered: the inflated IDAT stream, ``[H * (1 + W)]`` bytes (a filter-type byte per row).
        out: ``[H, W] uint8``, writable.
        binary: write 1 where a pixel is non-zero and 0 elsewhere instead of the values.

    Raises:
        ValueError: a wrong length or a filter type other than 0-4.
    """
    data = np.frombuffer(memoryview(filtered).cast("B"), np.uint8)
    pixels = _byte_matrix(out, "out", writable=True)
    height, width = pixels.shape
    if data.size != height * (width + 1):
        needed = height * (width + 1)
        raise ValueError(f"filtered PNG data has {data.size} bytes; a {height} x {width} image needs {needed}")
    if height == 0 or width == 0:
        return
    rows = data.reshape(height, width + 1)
    kinds, lines = rows[:, 0], rows[:, 1:]
    bad = np.flatnonzero(kinds > 4)
    if bad.size:
        raise ValueError(f"invalid PNG filter type {kinds[bad[0]]} in row {bad[0]}")
    # None and Sub rows do not depend on the row above: all at once.
    pixels[kinds == 0] = lines[kinds == 0]
    pixels[kinds == 1] = np.cumsum(lines[kinds == 1], axis=1, dtype=np.uint8)
    dependent = np.flatnonzero(kinds >= 2).tolist()
    zeros = np.zeros(width, np.uint8)
    index = 0
    while index < len(dependent):
        r = dependent[index]
        above = pixels[r - 1] if r > 0 else zeros
        if kinds[r] == 2:  # a run of Up rows: running sums down the columns, from the row above the run
            end = index + 1
            while end < len(dependent) and dependent[end] == r + end - index and kinds[dependent[end]] == 2:
                end += 1
            last = r + end - index
            np.cumsum(lines[r:last], axis=0, dtype=np.uint8, out=pixels[r:last])
            pixels[r:last] += above
            index = end
            continue
        (_unfilter_average if kinds[r] == 3 else _unfilter_paeth)(lines[r], above, pixels[r])
        index += 1
    if binary:
        np.minimum(pixels, 1, out=pixels)
