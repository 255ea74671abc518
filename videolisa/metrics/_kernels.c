/*
 * videolisa.metrics._kernels: the compiled kernels behind the exact J / F measures and the PNG mask
 * decoder (a C extension, so that a scoring process pays no JIT compiler's start-up).
 *
 * frame_counts: each row of both masks is packed into bit sets (64 pixels per uint64 word, pixel x at
 * bit x % 64 of word x / 64), pixels are counted with popcounts, the one-pixel boundary rows of
 * davis2017's _seg2bmap are built with word shifts and their pixels listed, and the boundary pixels are
 * matched against the other boundary inside the tolerance disk. A frame costs about one read of both
 * masks. png_unfilter undoes the PNG row filters of 8-bit grey / palette images. boundary_map gives the
 * boundary rows as a whole map (tests and inspection).
 *
 * Foreground is every non-zero byte. The kernels release the GIL while they run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__) && !defined(VIDEOLISA_GENERIC_BITS)
#include <emmintrin.h>
#define VIDEOLISA_SSE2 1
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && !defined(VIDEOLISA_BYTE_LOOP)
#define VIDEOLISA_SWAR 1
#endif

#if defined(_MSC_VER)
#include <intrin.h>
#define restrict __restrict /* MSVC's C compiler spells C99's restrict this way before /std:c11 */
static inline int popcount64(uint64_t value) { return (int)__popcnt64(value); }
static inline int lowest_set_bit(uint64_t value) {
    unsigned long index;
    _BitScanForward64(&index, value);
    return (int)index;
}
#else
static inline int popcount64(uint64_t value) { return __builtin_popcountll(value); }
/* Index of the lowest set bit of a non-zero value. */
static inline int lowest_set_bit(uint64_t value) { return __builtin_ctzll(value); }
#endif

#define NUM_COUNTS 7

/* Pixel counts of one packed row pair: counts[0] += |pred & gt|, counts[1] += |pred|, counts[2] += |gt|. */
typedef void (*RowCounter)(const uint64_t *pred, const uint64_t *gt, Py_ssize_t words, int64_t *counts);

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

static ALWAYS_INLINE void count_row_body(const uint64_t *pred, const uint64_t *gt, Py_ssize_t words,
                                         int64_t *counts) {
    for (Py_ssize_t word = 0; word < words; word++) {
        counts[0] += popcount64(pred[word] & gt[word]);
        counts[1] += popcount64(pred[word]);
        counts[2] += popcount64(gt[word]);
    }
}

static void count_row_portable(const uint64_t *pred, const uint64_t *gt, Py_ssize_t words, int64_t *counts) {
    count_row_body(pred, gt, words, counts);
}

/* Baseline x86-64 has no popcount instruction, so compilers emit a dozen bit operations per word; this
   copy uses the instruction (every x86-64 CPU since 2008 has it) and is chosen at import when the CPU
   reports it: about a quarter of a 480p frame's time. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(VIDEOLISA_GENERIC_BITS)
#define VIDEOLISA_POPCNT_DISPATCH 1
__attribute__((target("popcnt"))) static void count_row_popcnt(const uint64_t *pred, const uint64_t *gt,
                                                               Py_ssize_t words, int64_t *counts) {
    count_row_body(pred, gt, words, counts);
}
#endif

static RowCounter count_row = count_row_portable;

/* Bit k set iff bytes[k] != 0, for k < 64. */
static inline uint64_t nonzero_bits64(const uint8_t *bytes) {
#if defined(VIDEOLISA_SSE2)
    /* Four 16-byte compares with zero and byte masks (pmovmskb): ~20x fewer instructions than a loop. */
    const __m128i zero = _mm_setzero_si128();
    uint64_t zero_bits = 0;
    for (int part = 0; part < 4; part++) {
        __m128i chunk = _mm_loadu_si128((const __m128i *)(bytes + 16 * part));
        zero_bits |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(chunk, zero)) << (16 * part);
    }
    return ~zero_bits;
#elif defined(VIDEOLISA_SWAR)
    /* Eight bytes at a time in a little-endian word: the top bit of each byte is set iff the byte is
       non-zero (the 7 low bits plus 0x7f carry into it, or it was set), and one multiplication gathers
       the eight top bits, byte k's to bit 56 + k (the partial products never overlap, so no carries). */
    const uint64_t low7 = 0x7f7f7f7f7f7f7f7fULL;
    uint64_t bits = 0;
    for (int group = 0; group < 8; group++) {
        uint64_t word;
        memcpy(&word, bytes + 8 * group, 8);
        uint64_t top = (((word & low7) + low7) | word) & ~low7;
        bits |= ((top * 0x0002040810204081ULL) >> 56) << (8 * group);
    }
    return bits;
#else
    uint64_t bits = 0;
    for (int k = 0; k < 64; k++) bits |= (uint64_t)(bytes[k] != 0) << k;
    return bits;
#endif
}

/* Bit set of row != 0 ([width] bytes) into out ([width / 64 + 1] words, bits past width cleared);
   whether any bit is set. */
static int pack_row(const uint8_t *row, Py_ssize_t width, uint64_t *out) {
    Py_ssize_t full_words = width >> 6;
    uint64_t seen = 0;
    for (Py_ssize_t word = 0; word < full_words; word++) {
        uint64_t bits = nonzero_bits64(row + (word << 6));
        out[word] = bits;
        seen |= bits;
    }
    Py_ssize_t tail = width & 63;
    uint64_t bits = 0;
    if (tail && full_words) {
        /* The row's last 64 bytes, shifted so that only the pixels after the last full word remain. */
        bits = nonzero_bits64(row + width - 64) >> (64 - tail);
    } else {
        for (Py_ssize_t x = full_words << 6; x < width; x++) bits |= (uint64_t)(row[x] != 0) << (x & 63);
    }
    out[full_words] = bits;
    return (seen | bits) != 0;
}

/* One row of _seg2bmap as bit sets: a pixel is on the boundary when it differs from its right, lower
   or lower-right neighbour. this / below are the packed row and the next (pass this twice for the last
   row, which is then compared only with its right neighbour); the last column is compared only with
   the lower neighbour, and the last pixel with nothing. */
static void boundary_bits(const uint64_t *this_row, const uint64_t *below, Py_ssize_t width, Py_ssize_t words,
                          uint64_t *out) {
    for (Py_ssize_t word = 0; word < words; word++) {
        uint64_t row = this_row[word], lower = below[word];
        /* Bit x of a "right" word is pixel x + 1 (the bits past the width are 0). */
        uint64_t row_next = word + 1 < words ? this_row[word + 1] : 0;
        uint64_t lower_next = word + 1 < words ? below[word + 1] : 0;
        uint64_t right = (row >> 1) | (row_next << 63);
        uint64_t lower_right = (lower >> 1) | (lower_next << 63);
        out[word] = (row ^ right) | (row ^ lower) | (row ^ lower_right);
    }
    Py_ssize_t last_word = (width - 1) >> 6;
    uint64_t last_column = (uint64_t)1 << ((width - 1) & 63);
    out[last_word] = (out[last_word] & ~last_column) | ((this_row[last_word] ^ below[last_word]) & last_column);
}

/* A mask read row by row as bit sets: the current row, the next one, and whether each has foreground. */
typedef struct {
    const uint8_t *pixels; /* [height, width] */
    Py_ssize_t height, width, words;
    uint64_t *this_row, *next_row; /* [words] each */
    int this_any, next_any;
} PackedRows;

/* Start reading pixels; buffers has room for 2 * (width / 64 + 1) words. Call next_packed_row before
   each row, the first included. */
static void start_packed_rows(PackedRows *rows, const uint8_t *pixels, Py_ssize_t height, Py_ssize_t width,
                              uint64_t *buffers) {
    rows->pixels = pixels;
    rows->height = height;
    rows->width = width;
    rows->words = (width >> 6) + 1;
    rows->this_row = buffers;
    rows->next_row = buffers + rows->words;
    rows->this_any = 0;
    rows->next_any = pack_row(pixels, width, rows->next_row);
}

/* Move to row r: the packed next row becomes the current one, and row r + 1 (if any) is packed. */
static void next_packed_row(PackedRows *rows, Py_ssize_t r) {
    uint64_t *swap = rows->this_row;
    rows->this_row = rows->next_row;
    rows->next_row = swap;
    rows->this_any = rows->next_any;
    rows->next_any = 0;
    if (r + 1 < rows->height) rows->next_any = pack_row(rows->pixels + (r + 1) * rows->width, rows->width, rows->next_row);
}

/* The boundary bits of the current row r into out; 0 without computing them when the row cannot
   have any (neither it nor the row below has foreground), else 1. */
static int row_boundary(const PackedRows *rows, Py_ssize_t r, uint64_t *out) {
    if (!rows->this_any && !rows->next_any) return 0;
    const uint64_t *below = r + 1 < rows->height ? rows->next_row : rows->this_row;
    boundary_bits(rows->this_row, below, rows->width, rows->words, out);
    return 1;
}

/* Boundary pixel columns of a mask in compressed-row form: row r's pixels are xs[rows[r]:rows[r + 1]],
   in increasing column order. */
typedef struct {
    Py_ssize_t *rows;  /* [height + 1] */
    int32_t *xs;       /* [capacity] */
    Py_ssize_t count;
    Py_ssize_t capacity;
} BoundaryPixels;

/* Append the columns of the set bits of bits[0:words] to pixels->xs; 0, or -1 when out of memory. */
static int append_set_bits(const uint64_t *bits, Py_ssize_t words, Py_ssize_t width, BoundaryPixels *pixels) {
    if (pixels->count + width > pixels->capacity) {
        Py_ssize_t capacity = 2 * (pixels->count + width);
        int32_t *grown = PyMem_RawRealloc(pixels->xs, (size_t)capacity * sizeof(int32_t));
        if (grown == NULL) return -1;
        pixels->xs = grown;
        pixels->capacity = capacity;
    }
    for (Py_ssize_t word = 0; word < words; word++) {
        uint64_t value = bits[word];
        while (value) {
            pixels->xs[pixels->count++] = (int32_t)((word << 6) + lowest_set_bit(value));
            value &= value - 1;
        }
    }
    return 0;
}

/* Number of boundary pixels of a that have a boundary pixel of b inside the disk around them: the disk
   of radius R is |dx| <= half_widths[|dy|] for |dy| <= R, the footprint of davis2017's cv2.dilate.
   Rows are tried nearest first (0, -1, +1, -2, ...). Within a row of a the pixels come in increasing
   column order, so for each row offset a cursor into b's row only moves forward: its first pixel at
   column >= x - reach. offsets and cursors have room for 2R + 1 entries. */
static Py_ssize_t count_matched(const BoundaryPixels *a, const BoundaryPixels *b, Py_ssize_t height,
                                const int64_t *half_widths, Py_ssize_t radius, Py_ssize_t *offsets,
                                Py_ssize_t *cursors) {
    Py_ssize_t steps = 2 * radius + 1;
    for (Py_ssize_t step = 0; step < steps; step++) offsets[step] = step % 2 ? (step + 1) / 2 : -(step / 2);
    Py_ssize_t matched = 0;
    for (Py_ssize_t r = 0; r < height; r++) {
        if (a->rows[r] == a->rows[r + 1]) continue;
        for (Py_ssize_t step = 0; step < steps; step++) {
            Py_ssize_t rr = r + offsets[step];
            cursors[step] = 0 <= rr && rr < height ? b->rows[rr] : -1;
        }
        for (Py_ssize_t i = a->rows[r]; i < a->rows[r + 1]; i++) {
            int64_t x = a->xs[i];
            for (Py_ssize_t step = 0; step < steps; step++) {
                Py_ssize_t cursor = cursors[step];
                if (cursor < 0) continue;
                Py_ssize_t offset = offsets[step];
                Py_ssize_t end = b->rows[r + offset + 1];
                int64_t reach = half_widths[offset < 0 ? -offset : offset];
                while (cursor < end && b->xs[cursor] < x - reach) cursor++;
                cursors[step] = cursor;
                if (cursor < end && b->xs[cursor] <= x + reach) {
                    matched++;
                    break;
                }
            }
        }
    }
    return matched;
}

/* The counts of frame_counts (see its docstring) into counts; 0, or -1 when out of memory. */
static int count_frame(const uint8_t *pred, const uint8_t *gt, Py_ssize_t height, Py_ssize_t width,
                       const int64_t *half_widths, Py_ssize_t radius, int64_t *counts) {
    memset(counts, 0, NUM_COUNTS * sizeof(int64_t));
    if (height == 0 || width == 0) return 0;
    Py_ssize_t words = (width >> 6) + 1;
    int status = -1;
    /* Boundary pixel columns start with room for a few per row and column and grow when a row might
       not fit (a mask's boundary is usually a few pixels per row). */
    Py_ssize_t initial = 8 * (height + width);
    uint64_t *packed = PyMem_RawCalloc((size_t)(5 * words), sizeof(uint64_t));
    BoundaryPixels pred_pixels = {PyMem_RawCalloc((size_t)height + 1, sizeof(Py_ssize_t)),
                                  PyMem_RawMalloc((size_t)initial * sizeof(int32_t)), 0, initial};
    BoundaryPixels gt_pixels = {PyMem_RawCalloc((size_t)height + 1, sizeof(Py_ssize_t)),
                                PyMem_RawMalloc((size_t)initial * sizeof(int32_t)), 0, initial};
    Py_ssize_t *scratch = PyMem_RawMalloc((size_t)(2 * (2 * radius + 1)) * sizeof(Py_ssize_t));
    if (!packed || !pred_pixels.rows || !pred_pixels.xs || !gt_pixels.rows || !gt_pixels.xs || !scratch) goto done;
    PackedRows pred_rows, gt_rows;
    start_packed_rows(&pred_rows, pred, height, width, packed);
    start_packed_rows(&gt_rows, gt, height, width, packed + 2 * words);
    uint64_t *boundary = packed + 4 * words;
    for (Py_ssize_t r = 0; r < height; r++) {
        next_packed_row(&pred_rows, r);
        next_packed_row(&gt_rows, r);
        /* counts[0..2]: intersection, prediction and ground-truth pixels */
        if (pred_rows.this_any || gt_rows.this_any) count_row(pred_rows.this_row, gt_rows.this_row, words, counts);
        if (row_boundary(&pred_rows, r, boundary) && append_set_bits(boundary, words, width, &pred_pixels) < 0)
            goto done;
        pred_pixels.rows[r + 1] = pred_pixels.count;
        if (row_boundary(&gt_rows, r, boundary) && append_set_bits(boundary, words, width, &gt_pixels) < 0)
            goto done;
        gt_pixels.rows[r + 1] = gt_pixels.count;
    }
    counts[3] = pred_pixels.count;
    counts[4] = gt_pixels.count;
    if (pred_pixels.count > 0 && gt_pixels.count > 0) {
        Py_ssize_t *offsets = scratch, *cursors = scratch + 2 * radius + 1;
        counts[5] = count_matched(&pred_pixels, &gt_pixels, height, half_widths, radius, offsets, cursors);
        counts[6] = count_matched(&gt_pixels, &pred_pixels, height, half_widths, radius, offsets, cursors);
    }
    status = 0;
done:
    PyMem_RawFree(packed);
    PyMem_RawFree(pred_pixels.rows);
    PyMem_RawFree(pred_pixels.xs);
    PyMem_RawFree(gt_pixels.rows);
    PyMem_RawFree(gt_pixels.xs);
    PyMem_RawFree(scratch);
    return status;
}

/* A C-contiguous 2-D buffer of bytes (uint8 / bool / int8) from argument name; 0, or -1 with an error
   set. */
static int get_mask(PyObject *object, const char *name, int writable, Py_buffer *view) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s [H, W] uint8 array", name,
                     writable ? " writable" : "");
        return -1;
    }
    if (view->ndim != 2 || view->itemsize != 1) {
        PyErr_Format(PyExc_ValueError, "%s must be a [H, W] array of bytes (uint8), got %d dimensions of %zd-byte "
                     "items", name, view->ndim, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(frame_counts_doc,
"frame_counts(pred, gt, half_widths) -> tuple[int, ...]\n\n"
"Pixel and boundary counts of one frame, from which J and F follow exactly.\n\n"
"pred, gt: [H, W] uint8 C-contiguous masks, non-zero is foreground. half_widths: [R + 1] int64, the\n"
"disk of radius R as |dx| <= half_widths[|dy|] (half_widths[d] = isqrt(R^2 - d^2)).\n\n"
"Returns (intersection, prediction pixels, ground-truth pixels, prediction boundary pixels,\n"
"ground-truth boundary pixels, prediction boundary pixels near the ground-truth boundary,\n"
"ground-truth boundary pixels near the prediction boundary).");

static PyObject *frame_counts(PyObject *module, PyObject *args) {
    PyObject *pred_object, *gt_object, *half_widths_object;
    if (!PyArg_ParseTuple(args, "OOO:frame_counts", &pred_object, &gt_object, &half_widths_object)) return NULL;
    Py_buffer pred, gt, half_widths;
    if (get_mask(pred_object, "pred", 0, &pred) < 0) return NULL;
    if (get_mask(gt_object, "gt", 0, &gt) < 0) {
        PyBuffer_Release(&pred);
        return NULL;
    }
    PyObject *result = NULL;
    if (PyObject_GetBuffer(half_widths_object, &half_widths, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_SetString(PyExc_TypeError, "half_widths must be a contiguous [R + 1] int64 array");
        goto release_masks;
    }
    if (pred.shape[0] != gt.shape[0] || pred.shape[1] != gt.shape[1]) {
        PyErr_Format(PyExc_ValueError, "pred [%zd, %zd] and gt [%zd, %zd] differ in size", pred.shape[0],
                     pred.shape[1], gt.shape[0], gt.shape[1]);
        goto release_all;
    }
    const char *format = half_widths.format;
    if (half_widths.ndim != 1 || half_widths.shape[0] < 1 || half_widths.itemsize != 8 ||
        !(strcmp(format, "q") == 0 || strcmp(format, "l") == 0 || strcmp(format, "=q") == 0 ||
          strcmp(format, "<q") == 0)) {
        PyErr_SetString(PyExc_ValueError, "half_widths must be a non-empty [R + 1] int64 array");
        goto release_all;
    }
    const int64_t *widths = half_widths.buf;
    Py_ssize_t radius = half_widths.shape[0] - 1;
    for (Py_ssize_t d = 0; d <= radius; d++) {
        if (widths[d] < 0) {
            PyErr_Format(PyExc_ValueError, "half_widths[%zd] is %lld; half-widths are >= 0", d, (long long)widths[d]);
            goto release_all;
        }
    }
    int64_t counts[NUM_COUNTS];
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = count_frame(pred.buf, gt.buf, pred.shape[0], pred.shape[1], widths, radius, counts);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        PyErr_NoMemory();
        goto release_all;
    }
    result = Py_BuildValue("(LLLLLLL)", (long long)counts[0], (long long)counts[1], (long long)counts[2],
                           (long long)counts[3], (long long)counts[4], (long long)counts[5], (long long)counts[6]);
release_all:
    PyBuffer_Release(&half_widths);
release_masks:
    PyBuffer_Release(&pred);
    PyBuffer_Release(&gt);
    return result;
}

/* _seg2bmap of mask ([height, width] bytes) into out (same size, 0/1); 0, or -1 when out of memory. */
static int boundary_rows(const uint8_t *mask, Py_ssize_t height, Py_ssize_t width, uint8_t *out) {
    if (height == 0 || width == 0) return 0;
    Py_ssize_t words = (width >> 6) + 1;
    uint64_t *packed = PyMem_RawCalloc((size_t)(3 * words), sizeof(uint64_t));
    if (packed == NULL) return -1;
    PackedRows rows;
    start_packed_rows(&rows, mask, height, width, packed);
    uint64_t *boundary = packed + 2 * words;
    for (Py_ssize_t r = 0; r < height; r++) {
        next_packed_row(&rows, r);
        uint8_t *out_row = out + r * width;
        if (!row_boundary(&rows, r, boundary)) {
            memset(out_row, 0, (size_t)width);
            continue;
        }
        for (Py_ssize_t x = 0; x < width; x++) out_row[x] = (boundary[x >> 6] >> (x & 63)) & 1;
    }
    PyMem_RawFree(packed);
    return 0;
}

PyDoc_STRVAR(boundary_map_doc,
"boundary_map(mask, out) -> None\n\n"
"davis2017's _seg2bmap of mask ([H, W] uint8, non-zero is foreground) into out ([H, W] uint8, 0/1):\n"
"the row rule frame_counts applies, as a whole map (for tests and inspection).");

static PyObject *boundary_map(PyObject *module, PyObject *args) {
    PyObject *mask_object, *out_object;
    if (!PyArg_ParseTuple(args, "OO:boundary_map", &mask_object, &out_object)) return NULL;
    Py_buffer mask, out;
    if (get_mask(mask_object, "mask", 0, &mask) < 0) return NULL;
    if (get_mask(out_object, "out", 1, &out) < 0) {
        PyBuffer_Release(&mask);
        return NULL;
    }
    PyObject *result = NULL;
    if (mask.shape[0] != out.shape[0] || mask.shape[1] != out.shape[1]) {
        PyErr_SetString(PyExc_ValueError, "out must have the shape of mask");
    } else {
        int status;
        Py_BEGIN_ALLOW_THREADS
        status = boundary_rows(mask.buf, mask.shape[0], mask.shape[1], out.buf);
        Py_END_ALLOW_THREADS
        if (status < 0) {
            PyErr_NoMemory();
        } else {
            result = Py_NewRef(Py_None);
        }
    }
    PyBuffer_Release(&mask);
    PyBuffer_Release(&out);
    return result;
}

/* The PNG Paeth predictor (PNG specification, section 9.4). */
static inline int paeth(int left, int up, int up_left) {
    int estimate = left + up - up_left;
    int to_left = abs(estimate - left), to_up = abs(estimate - up), to_up_left = abs(estimate - up_left);
    if (to_left <= to_up && to_left <= to_up_left) return left;
    if (to_up <= to_up_left) return up;
    return up_left;
}

/* Sub filter: each byte adds the pixel to its left (a running sum along the row). Mask rows are mostly
   runs of one value, whose filtered bytes are zeros: eight of them at a time just repeat the left
   pixel. */
static void unfilter_sub(const uint8_t *restrict line, Py_ssize_t width, uint8_t *restrict row) {
    uint8_t left = 0;
    Py_ssize_t x = 0;
    while (x < width) {
        uint64_t chunk = 1;
        if (x + 8 <= width) memcpy(&chunk, line + x, 8);
        if (chunk == 0) {
            memset(row + x, left, 8);
            x += 8;
        } else {
            row[x] = left = (uint8_t)(line[x] + left);
            x++;
        }
    }
}

/* Undo the row filters of filtered ([height * (1 + width)] bytes) into out ([height * width]); the row
   with an invalid filter type, or -1. The row pointers are restrict: a row, the row above and the
   filtered line never overlap, so the compiler need not reload after each store. */
static Py_ssize_t unfilter_rows(const uint8_t *filtered, Py_ssize_t height, Py_ssize_t width, int binary,
                                uint8_t *out) {
    for (Py_ssize_t r = 0; r < height; r++) {
        const uint8_t *restrict line = filtered + r * (width + 1) + 1;
        uint8_t kind = line[-1];
        uint8_t *restrict row = out + r * width;
        const uint8_t *restrict above = r > 0 ? out + (r - 1) * width : NULL;
        switch (kind) {
        case 0:
            memcpy(row, line, (size_t)width);
            break;
        case 1:
            unfilter_sub(line, width, row);
            break;
        case 2:
            if (above == NULL) {
                memcpy(row, line, (size_t)width);
            } else {
                for (Py_ssize_t x = 0; x < width; x++) row[x] = (uint8_t)(line[x] + above[x]);
            }
            break;
        case 3: {
            int left = 0;
            for (Py_ssize_t x = 0; x < width; x++) {
                int up = above ? above[x] : 0;
                row[x] = (uint8_t)(left = (uint8_t)(line[x] + ((left + up) >> 1)));
            }
            break;
        }
        case 4: {
            int left = 0, up_left = 0;
            for (Py_ssize_t x = 0; x < width; x++) {
                int up = above ? above[x] : 0;
                /* Where the row above is flat (up == up-left) the predictor is the left pixel: the
                   common case in masks, and a much shorter dependency chain. */
                int predicted = up == up_left ? left : paeth(left, up, up_left);
                row[x] = (uint8_t)(left = (uint8_t)(line[x] + predicted));
                up_left = up;
            }
            break;
        }
        default:
            return r;
        }
    }
    if (binary) {
        for (Py_ssize_t i = 0; i < height * width; i++) out[i] = out[i] != 0;
    }
    return -1;
}

PyDoc_STRVAR(png_unfilter_doc,
"png_unfilter(filtered, out, binary) -> None\n\n"
"Undo the PNG row filters of a non-interlaced image with one byte per pixel (8-bit grey or palette;\n"
"PNG specification, section 9) into out.\n\n"
"filtered: the inflated IDAT stream, [H * (1 + W)] bytes (a filter-type byte per row). out: [H, W]\n"
"uint8, writable. binary: write 1 where a pixel is non-zero and 0 elsewhere instead of the values.\n"
"Raises ValueError for a wrong length or a filter type other than 0-4.");

static PyObject *png_unfilter(PyObject *module, PyObject *args) {
    Py_buffer filtered, out;
    PyObject *out_object;
    int binary;
    if (!PyArg_ParseTuple(args, "y*Op:png_unfilter", &filtered, &out_object, &binary)) return NULL;
    if (get_mask(out_object, "out", 1, &out) < 0) {
        PyBuffer_Release(&filtered);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t height = out.shape[0], width = out.shape[1];
    if (filtered.len != height * (width + 1)) {
        PyErr_Format(PyExc_ValueError, "filtered PNG data has %zd bytes; a %zd x %zd image needs %zd", filtered.len,
                     height, width, height * (width + 1));
    } else {
        Py_ssize_t bad_row;
        Py_BEGIN_ALLOW_THREADS
        bad_row = unfilter_rows(filtered.buf, height, width, binary, out.buf);
        Py_END_ALLOW_THREADS
        if (bad_row >= 0) {
            PyErr_Format(PyExc_ValueError, "invalid PNG filter type %d in row %zd",
                         ((const uint8_t *)filtered.buf)[bad_row * (width + 1)], bad_row);
        } else {
            result = Py_NewRef(Py_None);
        }
    }
    PyBuffer_Release(&filtered);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef kernel_methods[] = {
    {"frame_counts", frame_counts, METH_VARARGS, frame_counts_doc},
    {"boundary_map", boundary_map, METH_VARARGS, boundary_map_doc},
    {"png_unfilter", png_unfilter, METH_VARARGS, png_unfilter_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT,
    "videolisa.metrics._kernels",
    "Compiled kernels behind the exact J / F measures and the PNG mask decoder (see _kernels.c).",
    -1,
    kernel_methods,
};

PyMODINIT_FUNC PyInit__kernels(void) {
#if defined(VIDEOLISA_POPCNT_DISPATCH)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("popcnt")) count_row = count_row_popcnt;
#endif
    PyObject *module = PyModule_Create(&kernels_module);
    if (module != NULL && PyModule_AddIntConstant(module, "NUM_COUNTS", NUM_COUNTS) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
