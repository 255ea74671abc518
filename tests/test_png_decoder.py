"""The fast 8-bit PNG decoder (libdeflate + compiled unfiltering) against Pillow, pixel for pixel."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from videolisa.errors import VideoReadError
from videolisa.metrics.io import _decode_8bit_png, read_mask, read_png

# Every test runs with the C kernels and with their NumPy fallback (the conftest fixture).
pytestmark = pytest.mark.usefixtures("scoring_kernels")


def paeth(left: int, up: int, up_left: int) -> int:
    estimate = left + up - up_left
    distances = (abs(estimate - left), abs(estimate - up), abs(estimate - up_left))
    return (left, up, up_left)[distances.index(min(distances))]


def filter_row(kind: int, row: np.ndarray, previous: np.ndarray) -> bytes:
    """PNG filter ``kind`` applied to one row of 8-bit pixels (PNG specification, section 9), in Python."""
    out = bytearray()
    for x, value in enumerate(row.tolist()):
        left = int(row[x - 1]) if x else 0
        up = int(previous[x])
        up_left = int(previous[x - 1]) if x else 0
        predictor = (0, left, up, (left + up) // 2, paeth(left, up, up_left))[kind]
        out.append((value - predictor) % 256)
    return bytes([kind]) + bytes(out)


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png(pixels: np.ndarray, filters: list[int], palette: bool = False, idat_pieces: int = 1) -> bytes:
    """An 8-bit grayscale (or palette) PNG of ``[H, W] uint8`` ``pixels`` with the given filter per row,
    its compressed data split over ``idat_pieces`` IDAT chunks."""
    height, width = pixels.shape
    previous = np.zeros(width, np.uint8)
    stream = b""
    for row, kind in zip(pixels, filters):
        stream += filter_row(kind, row, previous)
        previous = row
    compressed = zlib.compress(stream, 6)
    header = struct.pack(">IIBBBBB", width, height, 8, 3 if palette else 0, 0, 0, 0)
    body = chunk(b"IHDR", header)
    if palette:
        body += chunk(b"PLTE", bytes(range(256)) * 3)
    step = -(-len(compressed) // idat_pieces)
    for start in range(0, len(compressed), step):
        body += chunk(b"IDAT", compressed[start : start + step])
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def pillow_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


@pytest.mark.parametrize("palette", [False, True])
def test_every_filter_type_decodes_like_pillow(palette):
    rng = np.random.default_rng(0)
    for height, width in [(1, 1), (1, 9), (7, 1), (13, 17), (40, 33)]:
        for values in ("random", "mask"):
            if values == "random":
                pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
            else:
                pixels = (rng.random((height, width)) < 0.4).astype(np.uint8) * 255
            filters = rng.integers(0, 5, height).tolist()
            data = encode_png(pixels, filters, palette=palette, idat_pieces=int(rng.integers(1, 4)))
            expected = pillow_pixels(data)
            np.testing.assert_array_equal(expected, pixels)  # the test's own encoder is right
            np.testing.assert_array_equal(_decode_8bit_png(data, binary=False), expected)
            np.testing.assert_array_equal(_decode_8bit_png(data, binary=True), (expected != 0).astype(np.uint8))


def test_files_from_opencv_and_pillow_writers(tmp_path):
    rng = np.random.default_rng(1)
    for index in range(12):
        height, width = (int(v) for v in rng.integers(1, 200, 2))
        mask = np.zeros((height, width), np.uint8)
        cv2.ellipse(mask, (width // 2, height // 2), (width // 3 + 1, height // 4 + 1), 30.0, 0, 360, 255, -1)
        mask[rng.random((height, width)) < 0.02] = int(rng.integers(1, 256))
        path = tmp_path / f"{index}.png"
        if index % 3 == 0:
            cv2.imwrite(str(path), mask, [cv2.IMWRITE_PNG_COMPRESSION, int(rng.integers(0, 10))])
        elif index % 3 == 1:
            Image.fromarray(mask).save(path, optimize=bool(index % 2))
        else:
            image = Image.fromarray(mask // 255)
            image.putpalette([0, 0, 0, 255, 255, 255])
            image.save(path)
        expected = np.asarray(Image.open(path))
        np.testing.assert_array_equal(read_png(path), expected)
        np.testing.assert_array_equal(read_mask(path), (expected != 0).astype(np.uint8))


def test_other_kinds_and_damaged_files_fall_back_to_a_library(tmp_path):
    pixels = np.arange(30, dtype=np.uint8).reshape(5, 6)
    data = encode_png(pixels, [0] * 5)
    # Adam7-interlaced (header byte 28) and 16-bit images are not for the fast path.
    assert _decode_8bit_png(data[:28] + b"\x01" + data[29:], binary=False) is None
    assert _decode_8bit_png(data[:24] + b"\x10" + data[25:], binary=False) is None
    sixteen_bit = tmp_path / "sixteen.png"
    cv2.imwrite(str(sixteen_bit), pixels.astype(np.uint16) * 1000)
    np.testing.assert_array_equal(read_png(sixteen_bit), pixels.astype(np.uint16) * 1000)

    truncated = data[: len(data) // 2]
    assert _decode_8bit_png(truncated, binary=False) is None
    (tmp_path / "truncated.png").write_bytes(truncated)
    with pytest.raises(VideoReadError, match="truncated.png"):
        read_mask(tmp_path / "truncated.png")

    # A header that promises more rows than the image data holds: rejected before the (unchecked) kernel.
    taller = data.replace(
        chunk(b"IHDR", struct.pack(">IIBBBBB", 6, 5, 8, 0, 0, 0, 0)),
        chunk(b"IHDR", struct.pack(">IIBBBBB", 6, 9, 8, 0, 0, 0, 0)),
    )
    assert taller != data and _decode_8bit_png(taller, binary=False) is None

    bad_filter = bytearray(encode_png(pixels, [0] * 5))
    stream = bytearray(zlib.decompress(bytes(bad_filter[bad_filter.index(b"IDAT") + 4 : -16])))
    stream[0] = 9  # filter type 9 does not exist
    assert (
        _decode_8bit_png(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", 6, 5, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(stream)))
            + chunk(b"IEND", b""),
            binary=False,
        )
        is None
    )
