"""Reading and writing the mask files that the benchmarks use.

PNG masks may be 0/255, 0/1, any non-zero value, 1- to 16-bit, or palette (indexed) PNGs. Each
file is read once into memory and decoded by the fastest decoder that gives the pixels needed. PNG
decoding (zlib inflate and row unfiltering) is most of the cost of scoring a frame, so 8-bit
grayscale and palette PNGs -- nearly every mask file -- are inflated with libdeflate and unfiltered
by a C kernel (about five times faster than OpenCV or Pillow, same pixels); other grayscale PNGs go
to OpenCV and everything else to Pillow. COCO run-length encodings are decoded with
pycocotools.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import deflate
import numpy as np

from videolisa.atomic import write_atomically
from videolisa.errors import InvalidInputError, MissingFilesError, VideoReadError
from videolisa.metrics import kernels
from videolisa.metrics.names import MISSING_POLICIES

# How many missing files an error message lists before summarising the rest.
_MISSING_LISTED = 20
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR fields at fixed offsets: width and height (16, 4 bytes each), bit depth (24), colour type (25),
# interlace method (28).
_PNG_WIDTH_OFFSET = 16
_PNG_BIT_DEPTH_OFFSET = 24
_PNG_COLOUR_TYPE_OFFSET = 25
_PNG_INTERLACE_OFFSET = 28
_PNG_GRAYSCALE = 0
_PNG_PALETTE = 3


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise VideoReadError(f"cannot read mask file {path}: {error.strerror}") from error


def _decode_8bit_png(data: bytes, binary: bool) -> np.ndarray | None:
    """``[H, W] uint8`` pixels of an 8-bit grayscale or palette, non-interlaced PNG (the usual mask
    files), or None for any other kind or anything unexpected (the caller then uses a library).

    libdeflate inflates the image data several times faster than zlib, and the row filters are
    undone by a compiled kernel; ``binary`` gives 0/1 (non-zero or not) instead of the values.
    """
    width, height = struct.unpack(">II", data[_PNG_WIDTH_OFFSET : _PNG_WIDTH_OFFSET + 8])
    if (
        data[_PNG_BIT_DEPTH_OFFSET] != 8
        or data[_PNG_COLOUR_TYPE_OFFSET] not in (_PNG_GRAYSCALE, _PNG_PALETTE)
        or data[_PNG_INTERLACE_OFFSET] != 0
        or width * height == 0
    ):
        return None
    image_data, position = [], len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            image_data.append(data[position + 8 : position + 8 + length])
        elif kind == b"IEND":
            break
        position += length + 12  # length, type, data, CRC
    pixels = np.empty((height, width), np.uint8)
    try:
        filtered = deflate.zlib_decompress(b"".join(image_data), height * (width + 1))
        kernels.active.png_unfilter(filtered, pixels, binary)  # ValueError: wrong length or filter type
    except (deflate.DeflateError, ValueError):
        return None
    return pixels


def _decode_png(path: str | os.PathLike, keep_values: bool) -> tuple[np.ndarray, bool]:
    """Decode a PNG with the fastest decoder for its kind: ``(pixels, already 0/1)``.

    8-bit grayscale and palette PNGs go to :func:`_decode_8bit_png` (0/1 unless ``keep_values``);
    other grayscale ones to OpenCV, which is faster than Pillow but rescales 1/2/4-bit grey to
    0-255, keeping non-zero pixels non-zero but not their values (``keep_values`` sends those to
    Pillow); everything else, and anything the fast paths reject, to Pillow.
    """
    data = _read_bytes(path)
    if not data.startswith(_PNG_SIGNATURE) or len(data) <= _PNG_INTERLACE_OFFSET:
        raise VideoReadError(f"{path} is not a PNG file")
    pixels = _decode_8bit_png(data, binary=not keep_values)
    if pixels is not None:
        return pixels, not keep_values
    grayscale = data[_PNG_COLOUR_TYPE_OFFSET] == _PNG_GRAYSCALE
    if grayscale and (not keep_values or data[_PNG_BIT_DEPTH_OFFSET] in (8, 16)):
        import cv2  # here: scoring processes that only meet 8-bit PNGs never load OpenCV

        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is not None:
            return pixels, False
    from PIL import Image  # here, as OpenCV above: only other kinds of PNG need it

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image), False
    except (OSError, ValueError) as error:
        raise VideoReadError(f"cannot decode PNG {path}: {error}") from error


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Stored values of a PNG: ``[H, W]`` (grey values or palette indices) or ``[H, W, C]``.

    Palette PNGs give their indices and grayscale PNGs their values, as Pillow reads them; colour
    PNGs give their channels (RGB order, alpha last).

    Raises:
        VideoReadError: the file is missing, not a PNG, or cannot be decoded.
    """
    return _decode_png(path, keep_values=True)[0]


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """``[H, W]`` integer labels of an indexed (palette) or grayscale PNG, as DAVIS reads them.

    Raises:
        InvalidInputError: the PNG has colour channels, so it holds no labels.
    """
    labels = read_png(path)
    if labels.ndim != 2:
        raise InvalidInputError(
            f"{path} is a colour PNG; DAVIS masks must be indexed (palette) or grayscale PNGs of object ids"
        )
    return labels


def read_mask(path: str | os.PathLike, binary: bool = True) -> np.ndarray:
    """Mask of a PNG: ``[H, W] uint8``, foreground wherever a stored value is non-zero.

    For colour PNGs a pixel is foreground when any colour channel (not alpha) is non-zero.

    Args:
        path: the PNG file.
        binary: return 0/1. With False, 8-bit grayscale and palette masks keep their stored values
            (foreground is still exactly the non-zero pixels), which saves a pass over the pixels for
            consumers that only test for non-zero, such as the J/F kernel.
    """
    pixels, is_binary = _decode_png(path, keep_values=not binary)
    if is_binary or (not binary and pixels.ndim == 2 and pixels.dtype == np.uint8):
        return pixels
    if pixels.ndim == 3:
        colour_channels = pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., :1]
        return np.ascontiguousarray(colour_channels.any(axis=2)).view(np.uint8)
    if pixels.dtype == np.uint8:
        return np.minimum(pixels, 1)
    return (pixels != 0).view(np.uint8)


def decode_rle(rle: Mapping) -> np.ndarray:
    """COCO run-length encoding ``{"size": [h, w], "counts": str | bytes}`` -> ``[h, w] uint8`` 0/1."""
    from pycocotools import mask as coco_mask  # imported here: only MeViS needs it

    try:
        return coco_mask.decode(dict(rle))
    except (TypeError, ValueError, KeyError) as error:
        raise InvalidInputError(f"invalid COCO RLE {str(rle)[:80]}: {error}") from error


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; a missing or malformed file is an error naming it and ``what`` it is."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise MissingFilesError(f"{what} not found: {path}") from error
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{what} {path} is not valid JSON: {error}") from error


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a :class:`MissingFilesError` naming ``what`` it should be."""
    if not path.is_dir():
        raise MissingFilesError(f"{what} not found: {path}")
    return path


def ground_truth_pngs(folder: Path) -> list[str]:
    """Sorted PNG names of a ground-truth folder, which must exist and hold at least one."""
    names = list_pngs(require_dir(folder, "ground-truth folder"))
    if not names:
        raise MissingFilesError(f"ground-truth folder {folder} has no PNG files")
    return names


def list_pngs(folder: str | os.PathLike) -> list[str]:
    """Sorted file names of the ``*.png`` files in ``folder`` (not recursive)."""
    return sorted(name for name in os.listdir(folder) if name.endswith(".png"))


@lru_cache(maxsize=1)
def davis_palette() -> tuple[int, ...]:
    """The DAVIS / PASCAL VOC colour map as a flat ``[256·3]`` tuple for ``Image.putpalette``."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    return tuple(palette.ravel().tolist())


def write_indexed_png(labels: np.ndarray, path: str | os.PathLike, palette: Sequence[int] | None = None) -> None:
    """Write ``[H, W] uint8`` object ids as a palette PNG (DAVIS colours by default), atomically.

    ``putpalette`` turns the grayscale image into a palette image whose indices are the ids.
    """
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(labels, np.uint8))
    image.putpalette(list(palette if palette is not None else davis_palette()))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_atomically(path, buffer.getvalue())


class MissingPredictions:
    """Finds the prediction frames of each item and records the ones that are not there.

    With policy ``"error"`` :meth:`check` raises one error listing everything missing; with
    ``"zero"`` missing frames come back as None and :meth:`check` returns a note saying how they
    were scored (``scored_as``).
    """

    def __init__(self, policy: str, scored_as: str = "scored 0") -> None:
        if policy not in MISSING_POLICIES:
            raise InvalidInputError(f"missing must be one of {MISSING_POLICIES}, got {policy!r}")
        self.policy = policy
        self.scored_as = scored_as
        self.missing: list[str] = []
        self.missing_frames = 0
        self._listings: dict[str, set[str]] = {}

    def frames(self, folder: str | os.PathLike, names: Sequence[str]) -> tuple[str | None, ...]:
        """``[T]`` paths ``folder/name`` for each of ``names``, None where the file is missing."""
        folder = os.fspath(folder)
        if folder not in self._listings:
            self._listings[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        present = self._listings[folder]
        if not present:
            self.missing.append(f"{folder}{os.sep} (folder missing or empty, {len(names)} frames)")
            self.missing_frames += len(names)
            return (None,) * len(names)
        paths = tuple(os.path.join(folder, name) if name in present else None for name in names)
        for name, path in zip(names, paths):
            if path is None:
                self.missing.append(os.path.join(folder, name))
                self.missing_frames += 1
        return paths

    def check(self) -> list[str]:
        """Raise if anything is missing under policy "error"; else the notes for the report."""
        if not self.missing:
            return []
        listed = "\n  ".join(self.missing[:_MISSING_LISTED])
        more = len(self.missing) - _MISSING_LISTED
        summary = f"{self.missing_frames} prediction frames are missing:\n  {listed}" + (
            f"\n  ... and {more} more" if more > 0 else ""
        )
        if self.policy == "error":
            raise MissingFilesError(f"{summary}\n(with missing='zero' / --missing zero they are {self.scored_as})")
        return [f"{self.missing_frames} missing prediction frames were {self.scored_as} (first: {self.missing[0]})"]
