"""The scoring kernels' other code paths and argument checks.

The installed extension packs rows with SSE2 on x86-64; other CPUs use the eight-bytes-at-a-time
(SWAR) path on little-endian machines and a byte loop elsewhere. Both are compiled here with the
interpreter's own compiler settings and must give exactly the installed module's results, as must the
pure-NumPy fallback used by installs without a compiler. The argument checks run on both implementations.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from videolisa.metrics import kernels
from videolisa.metrics.frame import disk_half_widths

SOURCE = Path(kernels.__file__).with_name("_kernels.c")
VARIANTS = {"swar": ["-DVIDEOLISA_GENERIC_BITS"], "byte_loop": ["-DVIDEOLISA_GENERIC_BITS", "-DVIDEOLISA_BYTE_LOOP"]}


@pytest.fixture(scope="module")
def installed():
    """The installed C extension (the reference of the comparisons)."""
    try:
        return kernels.load("extension")
    except ImportError:
        pytest.skip("the C extension videolisa.metrics._kernels is not built in this install")


@pytest.fixture(scope="module", params=[*sorted(VARIANTS), "numpy"])
def variant(request, tmp_path_factory):
    """The extension compiled with one of the portable row-packing paths, or the NumPy fallback."""
    if request.param == "numpy":
        return kernels.load("numpy")
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if shutil.which(compiler[0]) is None:
        pytest.skip(f"no C compiler ({compiler[0]}) to build the portable variants with")
    output = tmp_path_factory.mktemp(request.param) / f"_kernels{sysconfig.get_config_var('EXT_SUFFIX')}"
    command = [
        *compiler,
        "-O2",
        "-shared",
        "-fPIC",
        *VARIANTS[request.param],
        f"-I{sysconfig.get_paths()['include']}",
        str(SOURCE),
        "-o",
        str(output),
    ]
    subprocess.run(command, check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("videolisa.metrics._kernels", output)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_masks(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Two masks with random non-zero values: a noisy one and a disk."""
    values = rng.integers(1, 256, (height, width), dtype=np.uint8)
    noisy = np.where(rng.random((height, width)) < rng.random(), values, 0).astype(np.uint8)
    rows, columns = np.mgrid[:height, :width]
    centre_y, centre_x, radius = rng.integers(0, height), rng.integers(0, width), rng.integers(1, 40)
    disk = (((rows - centre_y) ** 2 + (columns - centre_x) ** 2) < radius**2).astype(np.uint8) * 7
    return noisy, disk


@pytest.mark.parametrize("width", [1, 7, 63, 64, 65, 127, 128, 129, 200])
def test_other_paths_count_like_the_installed_kernel(variant, installed, width):
    rng = np.random.default_rng(width)
    for _ in range(20):
        height = int(rng.integers(1, 50))
        pred, gt = random_masks(rng, height, width)
        half_widths = disk_half_widths(int(rng.integers(0, 12)))
        assert variant.frame_counts(pred, gt, half_widths) == installed.frame_counts(pred, gt, half_widths)
        ours, theirs = np.empty_like(pred), np.empty_like(pred)
        variant.boundary_map(pred, ours)
        installed.boundary_map(pred, theirs)
        np.testing.assert_array_equal(ours, theirs)


def test_other_paths_unfilter_like_the_installed_kernel(variant, installed):
    rng = np.random.default_rng(0)
    height, width = 30, 70
    filtered = rng.integers(0, 256, height * (width + 1), dtype=np.uint8)
    filtered[:: width + 1] = np.arange(height) % 5  # every filter type, first row included
    for binary in (False, True):
        ours, theirs = np.empty((height, width), np.uint8), np.empty((height, width), np.uint8)
        variant.png_unfilter(filtered.tobytes(), ours, binary)
        installed.png_unfilter(filtered.tobytes(), theirs, binary)
        np.testing.assert_array_equal(ours, theirs)


def test_frame_counts_rejects_bad_arguments_by_name(scoring_kernels):
    mask = np.zeros((4, 5), np.uint8)
    half_widths = disk_half_widths(2)
    with pytest.raises(ValueError, match=r"pred \[4, 5\] and gt \[4, 6\] differ"):
        scoring_kernels.frame_counts(mask, np.zeros((4, 6), np.uint8), half_widths)
    with pytest.raises(ValueError, match="gt must be a \\[H, W\\] array of bytes"):
        scoring_kernels.frame_counts(mask, np.zeros((4, 5), np.int32), half_widths)
    with pytest.raises(TypeError, match="pred must be a C-contiguous"):
        scoring_kernels.frame_counts(np.zeros((4, 10), np.uint8)[:, ::2], mask, half_widths)
    with pytest.raises(ValueError, match="half_widths must be a non-empty"):
        scoring_kernels.frame_counts(mask, mask, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"half_widths\[1\] is -1"):
        scoring_kernels.frame_counts(mask, mask, np.array([1, -1], np.int64))
    empty = np.zeros((0, 5), np.uint8)
    assert scoring_kernels.frame_counts(empty, empty, half_widths) == (0,) * 7


def test_png_unfilter_rejects_wrong_lengths_and_filter_types(scoring_kernels):
    out = np.empty((2, 3), np.uint8)
    with pytest.raises(ValueError, match="has 7 bytes; a 2 x 3 image needs 8"):
        scoring_kernels.png_unfilter(bytes(7), out, False)
    with pytest.raises(ValueError, match="invalid PNG filter type 5 in row 1"):
        scoring_kernels.png_unfilter(bytes([0, 1, 2, 3, 5, 0, 0, 0]), out, False)
    with pytest.raises(TypeError, match="out must be a C-contiguous writable"):
        scoring_kernels.png_unfilter(bytes(8), np.zeros((2, 3), np.uint8)[::-1], False)
