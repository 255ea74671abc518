"""Per-frame J and F: hand-computed edge cases, and the fast path against full-frame references."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videolisa.metrics import boundary_tolerance, compute_jf, disk_footprint, frame_jf
from videolisa.metrics.frame import boundary_map, disk_half_widths
from videolisa.metrics.reference import boundary_measure, reference_jf, region_similarity, seg2bmap

# Every test runs with the C kernels and with their NumPy fallback (the conftest fixture).
pytestmark = pytest.mark.usefixtures("scoring_kernels")


def official_f_measure(foreground_mask, gt_mask, void_pixels=None, bound_th=0.008):
    """davis2017-evaluation ``f_measure``, transcribed line by line (``np.bool`` -> ``bool``).

    An independent oracle: it shares no code with the package except ``seg2bmap`` (itself checked
    against hand-computed maps below) and uses skimage's disk as the official code does.
    """
    from skimage.morphology import disk

    if void_pixels is not None:
        void_pixels = void_pixels.astype(bool)
    else:
        void_pixels = np.zeros_like(foreground_mask).astype(bool)
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    fg_boundary = seg2bmap(foreground_mask * np.logical_not(void_pixels))
    gt_boundary = seg2bmap(gt_mask * np.logical_not(void_pixels))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), disk(bound_pix).astype(np.uint8))
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), disk(bound_pix).astype(np.uint8))
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        return 0
    return 2 * precision * recall / (precision + recall)


def official_iou(annotation, segmentation, void_pixels=None):
    """davis2017-evaluation ``db_eval_iou`` for one frame, transcribed."""
    annotation = annotation.astype(bool)
    segmentation = segmentation.astype(bool)
    void_pixels = np.zeros_like(segmentation) if void_pixels is None else void_pixels.astype(bool)
    inters = np.sum((segmentation & annotation) & np.logical_not(void_pixels))
    union = np.sum((segmentation | annotation) & np.logical_not(void_pixels))
    return 1 if np.isclose(union, 0) else inters / union


def blank(height: int, width: int) -> np.ndarray:
    return np.zeros((height, width), np.uint8)


def with_pixels(height: int, width: int, *pixels: tuple[int, int]) -> np.ndarray:
    mask = blank(height, width)
    for y, x in pixels:
        mask[y, x] = 1
    return mask


# --- tolerance and footprint ------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, expected",
    [((480, 854), 8), ((720, 1280), 12), ((1080, 1920), 18), ((848, 480), 8), ((17, 31), 1), ((400, 400), 5)],
)
def test_boundary_tolerance_matches_metrics_md(shape, expected):
    assert boundary_tolerance(*shape) == expected


def test_boundary_tolerance_equals_official_formula_on_many_shapes():
    rng = np.random.default_rng(0)
    for height, width in rng.integers(1, 4000, size=(2000, 2)):
        official = int(np.ceil(0.008 * np.linalg.norm((height, width))))
        assert boundary_tolerance(int(height), int(width)) == official


@pytest.mark.parametrize("radius", range(0, 41))
def test_disk_footprint_equals_skimage_disk(radius):
    from skimage.morphology import disk

    np.testing.assert_array_equal(disk_footprint(radius), disk(radius))
    # The official code passes bound_pix as a float (np.ceil result).
    np.testing.assert_array_equal(disk_footprint(radius), disk(float(radius)).astype(np.uint8))


@pytest.mark.parametrize("radius", range(0, 41))
def test_disk_half_widths_describe_the_disk_exactly(radius):
    rows = np.zeros((2 * radius + 1, 2 * radius + 1), np.uint8)
    for dy, half_width in enumerate(disk_half_widths(radius)):
        for row in (radius - dy, radius + dy):
            rows[row, radius - half_width : radius + half_width + 1] = 1
    np.testing.assert_array_equal(rows, disk_footprint(radius))


# --- boundary maps, hand-computed -------------------------------------------------------------


def test_boundary_of_interior_pixel_is_its_2x2_block_toward_the_origin():
    boundary = boundary_map(with_pixels(6, 7, (3, 4)))
    assert set(zip(*np.nonzero(boundary))) == {(2, 3), (2, 4), (3, 3), (3, 4)}


def test_boundary_of_origin_pixel_is_itself():
    assert set(zip(*np.nonzero(boundary_map(with_pixels(5, 5, (0, 0)))))) == {(0, 0)}


def test_boundary_of_bottom_right_pixel_excludes_the_last_pixel():
    boundary = boundary_map(with_pixels(5, 6, (4, 5)))
    assert set(zip(*np.nonzero(boundary))) == {(3, 4), (3, 5), (4, 4)}


def test_boundary_of_last_row_is_the_row_above():
    mask = blank(5, 7)
    mask[-1, :] = 1
    expected = blank(5, 7)
    expected[-2, :] = 1
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_boundary_of_last_column_is_the_column_left_of_it():
    mask = blank(5, 7)
    mask[:, -1] = 1
    expected = blank(5, 7)
    expected[:, -2] = 1
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_full_frame_and_empty_masks_have_no_boundary():
    assert not boundary_map(np.ones((9, 13), np.uint8)).any()
    assert not boundary_map(blank(9, 13)).any()


def test_horizontal_line_boundary_is_two_full_rows():
    mask = blank(8, 10)
    mask[4, :] = 1
    expected = blank(8, 10)
    expected[3:5, :] = 1
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_boundary_map_equals_seg2bmap_for_any_non_zero_values():
    rng = np.random.default_rng(1)
    for height, width in [(30, 41), (1, 17), (17, 1), (1, 1), (8, 8), (9, 16)]:
        values = rng.integers(0, 256, (height, width), dtype=np.uint8) * (rng.random((height, width)) < 0.4)
        np.testing.assert_array_equal(boundary_map(values.astype(np.uint8)), seg2bmap(values))
        np.testing.assert_array_equal(boundary_map(values > 0), seg2bmap(values))


# --- J and F edge rules, hand-computed ----------------------------------------------------------


def test_both_empty_scores_one():
    assert frame_jf(blank(20, 30), blank(20, 30)) == (1.0, 1.0)


def test_empty_ground_truth_with_prediction_scores_zero():
    assert frame_jf(with_pixels(20, 30, (5, 5)), blank(20, 30)) == (0.0, 0.0)


def test_empty_prediction_with_ground_truth_scores_zero():
    assert frame_jf(blank(20, 30), with_pixels(20, 30, (5, 5))) == (0.0, 0.0)


def test_full_frame_masks():
    full, partial = np.ones((20, 30), np.uint8), with_pixels(20, 30, (5, 5))
    assert frame_jf(full, full) == (1.0, 1.0)
    # Neither boundary has a pixel: F = 1 although J = 0.
    assert frame_jf(blank(20, 30), full) == (0.0, 1.0)
    # A full-frame mask against one with a boundary: F = 0 either way (border_full_frame, full_pred).
    assert frame_jf(partial, full) == (1 / 600, 0.0)
    assert frame_jf(full, partial) == (1 / 600, 0.0)


def test_identical_single_pixels():
    pixel = with_pixels(17, 31, (8, 15))
    assert frame_jf(pixel, pixel) == (1.0, 1.0)
    assert frame_jf(pixel.astype(bool), pixel.astype(bool)) == (1.0, 1.0)


def test_single_pixels_two_columns_apart_match_half_their_boundary():
    # 17x31: tolerance 1 (a plus-shaped disk). Boundary blocks: columns 14-15 and 16-17; only the
    # facing columns 15 and 16 are within one pixel of each other.
    j, f = frame_jf(with_pixels(17, 31, (8, 17)), with_pixels(17, 31, (8, 15)))
    assert (j, f) == (0.0, 0.5)


@pytest.mark.parametrize("offset, expected_f", [((3, 4), 1.0), ((4, 4), 0.75), ((3, 5), 0.5)])
def test_tolerance_exactly_at_and_past_the_disk_edge(offset, expected_f):
    # 400x400: tolerance 5. The pred pixel's 2x2 boundary block is at squared distances
    # (dy² + dx², (dy-1)² + dx², dy² + (dx-1)², (dy-1)² + (dx-1)²) from the GT block: offset (3, 4)
    # gives 25, 20, 18, 13 (all <= 25, matched); (4, 4) gives 32 (not) and three matched; (3, 5)
    # gives 34 and 29 (not) and two matched. The picture is symmetric, so precision = recall.
    assert boundary_tolerance(400, 400) == 5
    gt = with_pixels(400, 400, (200, 200))
    pred = with_pixels(400, 400, (200 + offset[0], 200 + offset[1]))
    assert frame_jf(pred, gt) == (0.0, expected_f)


@pytest.mark.parametrize("shift, expected_f", [(8, 1.0), (9, 0.0)])
def test_band_shifted_by_tolerance_and_one_more(shift, expected_f):
    # 480x854 (tolerance 8): a full-width band's boundary is two rows; shifting the band by 8 keeps
    # every boundary pixel within tolerance, by 9 loses all of them.
    gt = blank(480, 854)
    gt[100:200] = 1
    pred = blank(480, 854)
    pred[100 + shift : 200 + shift] = 1
    j, f = frame_jf(pred, gt)
    assert j == (100 - shift) / (100 + shift)
    assert f == expected_f


def test_thin_lines_one_row_apart_have_perfect_boundary_but_no_overlap():
    gt = blank(31, 40)
    gt[10, :] = 1
    pred = blank(31, 40)
    pred[11, :] = 1
    assert frame_jf(pred, gt) == (0.0, 1.0)


def test_masks_touching_last_row_and_column():
    gt = blank(23, 37)
    gt[15:, 20:] = 1
    pred = blank(23, 37)
    pred[-1, :] = 1
    expected = (official_iou(gt, pred), official_f_measure(pred, gt))
    assert frame_jf(pred, gt) == expected
    assert frame_jf(gt, gt) == (1.0, 1.0)


def test_odd_non_square_sizes_against_official():
    rng = np.random.default_rng(5)
    for height, width in [(1, 1), (1, 9), (9, 1), (2, 3), (17, 31), (31, 17), (101, 7), (7, 203)]:
        for _ in range(10):
            pred = (rng.random((height, width)) < 0.4).astype(np.uint8)
            gt = (rng.random((height, width)) < 0.4).astype(np.uint8)
            assert frame_jf(pred, gt) == (official_iou(gt, pred), official_f_measure(pred, gt))


def test_frame_jf_rejects_different_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        frame_jf(blank(4, 5), blank(5, 4))


# --- fast path against full-frame references ------------------------------------------


def random_blobs(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``[H, W] uint8`` union of a few random ellipses (sometimes none)."""
    mask = blank(height, width)
    for _ in range(int(rng.integers(0, 4))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(0, width // 2 + 1)), int(rng.integers(0, height // 2 + 1)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


def test_fast_path_equals_official_on_random_blobs_at_480p():
    rng = np.random.default_rng(7)
    for _ in range(6):
        gt = random_blobs(rng, 480, 854)
        pred = cv2.dilate(np.roll(gt, tuple(rng.integers(-12, 13, 2)), (0, 1)), np.ones((3, 3), np.uint8))
        assert frame_jf(pred, gt) == (official_iou(gt, pred), official_f_measure(pred, gt))


@pytest.mark.parametrize("width", [1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 191, 200])
def test_fast_path_at_every_bit_word_boundary(width):
    # Rows are packed 64 pixels per word: widths at, just under and just over whole words, with
    # foreground in the last column (whose boundary rule differs) and the last word's tail.
    rng = np.random.default_rng(width)
    for height in (1, 2, 37):
        for _ in range(4):
            pred, gt = random_blobs(rng, height, width), (rng.random((height, width)) < 0.3).astype(np.uint8)
            pred[:, -1] = rng.random(height) < 0.5
            assert frame_jf(pred, gt) == (region_similarity(pred, gt), boundary_measure(pred, gt))
            assert np.array_equal(boundary_map(pred), seg2bmap(pred))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    density=st.floats(0.0, 1.0),
)
def test_fast_path_equals_reference_property(seed, height, width, density):
    rng = np.random.default_rng(seed)
    if rng.random() < 0.5:
        pred, gt = random_blobs(rng, height, width), random_blobs(rng, height, width)
    else:
        pred = (rng.random((height, width)) < density).astype(np.uint8)
        gt = (rng.random((height, width)) < density).astype(np.uint8)
    fast = frame_jf(pred, gt)
    assert fast == (region_similarity(pred, gt), boundary_measure(pred, gt))
    assert fast == (official_iou(gt, pred), official_f_measure(pred, gt))


def test_compute_jf_with_void_equals_reference_and_official():
    rng = np.random.default_rng(11)
    pred = np.stack([random_blobs(rng, 120, 160) for _ in range(5)]).astype(bool)
    gt = np.stack([random_blobs(rng, 120, 160) for _ in range(5)]).astype(bool)
    void = np.stack([random_blobs(rng, 120, 160) for _ in range(5)]).astype(bool)
    region, boundary = compute_jf(pred, gt, void)
    reference_region, reference_boundary = reference_jf(pred, gt, void)
    np.testing.assert_array_equal(region, reference_region)
    np.testing.assert_array_equal(boundary, reference_boundary)
    official = [official_f_measure(pred[t], gt[t], void[t]) for t in range(5)]
    np.testing.assert_array_equal(boundary, official)
    np.testing.assert_array_equal(region, [official_iou(gt[t], pred[t], void[t]) for t in range(5)])


def test_compute_jf_accepts_any_nonzero_values():
    rng = np.random.default_rng(3)
    gt = np.stack([random_blobs(rng, 60, 80) for _ in range(3)])
    values = rng.integers(1, 256, gt.shape).astype(np.uint8)
    region, boundary = compute_jf(gt * values, gt.astype(bool))
    np.testing.assert_array_equal(region, 1.0)
    np.testing.assert_array_equal(boundary, 1.0)


def test_compute_jf_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        compute_jf(np.zeros((2, 4, 5), bool), np.zeros((2, 5, 4), bool))
    assert math.isclose(compute_jf(np.zeros((1, 4, 5), bool), np.zeros((1, 4, 5), bool))[0][0], 1.0)


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 7, 18, 40, 120])
def test_any_radius_equals_reference_dilation(radius):
    # The per-row disk search against cv2.dilate with the disk footprint, including radii larger than
    # the frame (every row of the disk is then clipped).
    rng = np.random.default_rng(radius)
    for _ in range(20):
        pred, gt = random_blobs(rng, 60, 90), random_blobs(rng, 60, 90)
        assert frame_jf(pred, gt, radius)[1] == boundary_measure(pred, gt, bound_th=radius)


def test_frame_jf_accepts_int_and_float_masks():
    rng = np.random.default_rng(4)
    pred, gt = random_blobs(rng, 50, 70), random_blobs(rng, 50, 70)
    expected = frame_jf(pred, gt)
    assert frame_jf(pred.astype(np.int32) * 7, gt.astype(np.float32) * 0.5) == expected
