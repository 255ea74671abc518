"""Compiled (numba) kernels behind the exact J / F measures and the PNG mask decoder.

Scoring a frame with whole-frame array operations costs a dozen passes over both masks, and decoding
a mask PNG undoes the row filters byte by byte; numpy cannot do the latter without Python-level loops.
The J / F kernel packs each row into bit sets (one vector compare per 64 pixels), counts and builds
boundaries with word operations, and then works only on the boundary pixels, so a frame costs about
as much as reading it once. They are compiled on first use
and cached on disk (``cache=True``); a later process loads them from the cache, which with numba's
own start-up costs about a second (see :func:`load_all`).

Foreground is every non-zero value: callers need not binarise their masks first.
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Length of :func:`frame_counts`' result.
NUM_COUNTS = 7
# Rows are handled as bit sets, 64 pixels per uint64 word, pixel x at bit x % 64 of word x // 64.
_BIG_ENDIAN = sys.byteorder == "big"
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_SIXTY_THREE = np.uint64(63)


@intrinsic
def _nonzero_bits64(typingctx, row, index):
    """``uint64`` whose bit k is ``row[index + k] != 0`` for k < 64 (``row``: 1-D contiguous ``uint8``,
    64 bytes readable from ``index``).

    One unaligned 64-byte vector load and compare: LLVM turns the ``<64 x i1>`` to ``i64`` bitcast into a
    byte-mask instruction (``pmovmskb`` on x86), about 20 times cheaper than testing the bytes one by one.
    """
    if not (isinstance(row, types.Array) and row.dtype == types.uint8 and row.ndim == 1 and row.layout == "C"):
        return None
    signature = types.uint64(row, index)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        vector = ir.VectorType(ir.IntType(8), 64)
        pointer = builder.bitcast(builder.gep(array.data, [args[1]]), vector.as_pointer())
        flags = builder.icmp_unsigned("!=", builder.load(pointer, align=1), ir.Constant(vector, None))
        bits = builder.bitcast(flags, ir.IntType(64))
        # A vector bitcast puts element 0 in the most significant bit on big-endian targets.
        return builder.bitreverse(bits) if _BIG_ENDIAN else bits

    return signature, codegen


@intrinsic
def _popcount(typingctx, value):
    """Number of set bits of a ``uint64`` (LLVM ``ctpop``: one instruction where the CPU has it)."""
    if value != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@intrinsic
def _lowest_set_bit(typingctx, value):
    """Index of the lowest set bit of a non-zero ``uint64`` (LLVM ``cttz``)."""
    if value != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.uint64(types.uint64), codegen


@njit(cache=True, nogil=True)
def _pack_row(row: np.ndarray, out: np.ndarray) -> bool:
    """Bit set of ``row != 0`` (``[W] uint8``) into ``out`` (``[W // 64 + 1] uint64``, bits past ``W``
    cleared); whether any bit is set."""
    width = row.shape[0]
    full_words = width >> 6
    seen = _ZERO
    for word in range(full_words):
        bits = _nonzero_bits64(row, word << 6)
        out[word] = bits
        seen |= bits
    tail = width & 63
    bits = _ZERO
    if tail and full_words:
        # The row's last 64 bytes, shifted so that only the pixels after the last full word remain.
        bits = _nonzero_bits64(row, width - 64) >> np.uint64(64 - tail)
    else:
        for x in range(full_words << 6, width):
            if row[x] != 0:
                bits |= _ONE << np.uint64(x & 63)
    out[full_words] = bits
    return (seen | bits) != _ZERO


@njit(cache=True, nogil=True)
def _boundary_bits(this: np.ndarray, below: np.ndarray, width: int, out: np.ndarray) -> None:
    """One row of davis2017's ``_seg2bmap`` boundary map, as bit sets (see :func:`_pack_row`).

    ``this`` and ``below`` are this row and the next (pass ``this`` twice for the last row). A pixel
    is on the boundary when it differs from its right, lower or lower-right neighbour; the last row
    compares only with the right neighbour (``below`` is the row itself there), the last column only
    with the lower one, and the last pixel with nothing.
    """
    words = out.shape[0]
    for word in range(words):
        row, lower = this[word], below[word]
        # Bit x of a "right" word is pixel x + 1 (the bits past the width are 0).
        row_next = this[word + 1] if word + 1 < words else _ZERO
        lower_next = below[word + 1] if word + 1 < words else _ZERO
        right = (row >> _ONE) | (row_next << _SIXTY_THREE)
        lower_right = (lower >> _ONE) | (lower_next << _SIXTY_THREE)
        out[word] = (row ^ right) | (row ^ lower) | (row ^ lower_right)
    last_word = (width - 1) >> 6
    last_column = _ONE << np.uint64((width - 1) & 63)
    out[last_word] = (out[last_word] & ~last_column) | ((this[last_word] ^ below[last_word]) & last_column)


@njit(cache=True, nogil=True)
def _append_set_bits(bits: np.ndarray, xs: np.ndarray, count: int) -> int:
    """Append the columns of the set bits of ``bits`` to ``xs`` from ``count`` on, in increasing order;
    the new count."""
    for word in range(bits.shape[0]):
        value = bits[word]
        while value != _ZERO:
            xs[count] = (word << 6) + np.int64(_lowest_set_bit(value))
            count += 1
            value &= value - _ONE
    return count


@njit(cache=True, nogil=True)
def boundary_map(mask: np.ndarray) -> np.ndarray:
    """davis2017's ``_seg2bmap`` of ``[H, W] uint8`` ``mask`` (non-zero is foreground): ``[H, W] uint8`` 0/1.

    The same row rule that :func:`frame_counts` applies, as a whole map (for tests and inspection).
    """
    height, width = mask.shape
    rows = np.zeros((3, (width >> 6) + 1), np.uint64)
    this, below, boundary = rows[0], rows[1], rows[2]
    out = np.zeros((height, width), np.uint8)
    _pack_row(mask[0], below)
    for r in range(height):
        this, below = below, this
        if r + 1 < height:
            _pack_row(mask[r + 1], below)
            _boundary_bits(this, below, width, boundary)
        else:
            _boundary_bits(this, this, width, boundary)
        for x in range(width):
            out[r, x] = (boundary[x >> 6] >> np.uint64(x & 63)) & _ONE
    return out


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

    One pass over the rows: each row of both masks is packed into a bit set (64 pixels per word, one
    vector compare each), pixels are counted with ``popcount``, the boundary rows are built with word
    shifts and their pixels listed; rows where neither the row nor the next has foreground in a mask
    are skipped for that mask. The boundary pixels are then matched (:func:`_count_matched`). No
    dilation, no full-frame temporary.

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
    rows = np.zeros((5, (width >> 6) + 1), np.uint64)
    pred_this, pred_next, gt_this, gt_next, boundary = rows[0], rows[1], rows[2], rows[3], rows[4]
    pred_rows = np.zeros(height + 1, np.int64)
    gt_rows = np.zeros(height + 1, np.int64)
    # Boundary pixel columns, grown when a row might not fit (a mask's boundary is usually a few
    # pixels per row; a whole-frame allocation per frame cost more than the counting).
    pred_xs = np.empty(8 * (height + width), np.int32)
    gt_xs = np.empty(8 * (height + width), np.int32)
    n_pred = 0
    n_gt = 0
    intersection = pred_pixels = gt_pixels = _ZERO
    pred_next_any = _pack_row(pred[0], pred_next)
    gt_next_any = _pack_row(gt[0], gt_next)
    for r in range(height):
        pred_this, pred_next = pred_next, pred_this
        gt_this, gt_next = gt_next, gt_this
        pred_any, gt_any = pred_next_any, gt_next_any
        last = r + 1 == height
        pred_next_any = False if last else _pack_row(pred[r + 1], pred_next)
        gt_next_any = False if last else _pack_row(gt[r + 1], gt_next)
        if pred_any or gt_any:
            for word in range(rows.shape[1]):
                pred_pixels += _popcount(pred_this[word])
                gt_pixels += _popcount(gt_this[word])
                intersection += _popcount(pred_this[word] & gt_this[word])
        # A row holds boundary pixels only if it or the row below has foreground.
        if pred_any or pred_next_any:
            _boundary_bits(pred_this, pred_this if last else pred_next, width, boundary)
            pred_xs = _room_for_row(pred_xs, n_pred, width)
            n_pred = _append_set_bits(boundary, pred_xs, n_pred)
        pred_rows[r + 1] = n_pred
        if gt_any or gt_next_any:
            _boundary_bits(gt_this, gt_this if last else gt_next, width, boundary)
            gt_xs = _room_for_row(gt_xs, n_gt, width)
            n_gt = _append_set_bits(boundary, gt_xs, n_gt)
        gt_rows[r + 1] = n_gt
    counts = np.zeros(NUM_COUNTS, np.int64)
    counts[0] = intersection
    counts[1] = pred_pixels
    counts[2] = gt_pixels
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
    """Load the kernels that scoring uses now (from numba's disk cache, or compile them), not on
    their first real use.

    Loading costs about a second per process, mostly numba's own start-up; the scoring pool's
    forkserver calls this once so that the worker processes it forks inherit the loaded kernels.
    (:func:`boundary_map` is for tests and inspection and loads on first use.)
    """
    mask = np.zeros((2, 9), np.uint8)
    half_widths = np.zeros(1, np.int64)
    half_widths.flags.writeable = False  # as videolisa.metrics.frame passes them: the same compiled version
    frame_counts(mask, mask, half_widths)
    png_unfilter(np.zeros(2 * 10, np.uint8), 2, 9, True)
