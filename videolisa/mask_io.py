"""Write a video's masks as PNGs per frame, one COCO-RLE JSON, and an overlay mp4; read them back.

:class:`MaskWriter` takes masks (and, for the overlay, the frames) chunk by chunk in frame order, so memory
does not grow with the video's length, and writes every file atomically: a temporary name in the same
folder, then ``os.replace`` (each PNG on its own; the JSON and the mp4 when :meth:`MaskWriter.close` succeeds).

* PNGs: ``<png_dir>/<frame_name>.png``, single channel, 0 / ``foreground_value`` (255 by default, as the
  original scripts and benchmark toolkits expect).
* RLE JSON: ``{"format": "videolisa-masks-rle", "instruction", "height", "width", "fps", "num_frames",
  "frame_names", "rles": [{"size": [H, W], "counts": str}, ...]}``, one pycocotools RLE per frame.
* Overlay mp4: the mask tinted over each frame, the instruction as a caption; H.264 (``libx264``) when PyAV
  has it, else MPEG-4 Part 2; yuv420p, sizes padded to even numbers by repeating the last row/column.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from videolisa.atomic import AtomicFile, atomic_path, naming_errors, sweep_temp_files
from videolisa.errors import InvalidInputError
from videolisa.processing.video_io import DEFAULT_FPS, natural_sort_key

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
RLE_FORMAT = "videolisa-masks-rle"
# The original overlays blend 50% red over the masked pixels.
DEFAULT_OVERLAY_COLOR = (255, 0, 0)
DEFAULT_OVERLAY_ALPHA = 0.5
# Caption band: white text on black at this opacity.
_CAPTION_BACKGROUND_ALPHA = 0.6
_CAPTION_MAX_LINES = 3
# libx264 preset of overlay videos, chosen by measurement (eval/perf/throughput.py, 1080p at crf 18): ``ultrafast``
# encodes 3.4x as fast as ``veryfast`` (78.6 vs 23.3 frames/s) at a higher PSNR (39.1 vs 36.7 dB; files 2x larger).
OVERLAY_PRESET = "ultrafast"


# ----------------------------------------------------------------------------------------------------------
# Atomic files (videolisa.atomic)


def _start_file(path: PathLike) -> AtomicFile:
    """An :class:`~videolisa.atomic.AtomicFile` for ``path``, after deleting the temporary files an interrupted
    earlier write of ``path`` left."""
    path = Path(path)
    with naming_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_temp_files(path.parent, [path.name])
    return AtomicFile(path)


# ----------------------------------------------------------------------------------------------------------
# Overlays


def _check_color(color: Sequence[int]) -> np.ndarray:
    values = np.asarray(color)
    if values.shape != (3,) or not np.all((values >= 0) & (values <= 255)):
        raise InvalidInputError(f"overlay color must be three values in 0..255 (R, G, B), got {color!r}")
    return values.astype(np.float32)


def _check_alpha(alpha: float) -> float:
    if not 0.0 <= float(alpha) <= 1.0:
        raise InvalidInputError(f"overlay alpha must be in [0, 1], got {alpha!r}")
    return float(alpha)


def _tint_table(color: Sequence[int], alpha: float) -> np.ndarray:
    """``[256, 1, 3] uint8`` (a ``cv2.LUT`` table): level v of channel c -> ``round((1 - alpha) * v + alpha *
    color[c])``, computed in float32 exactly as the per-pixel blend it replaces, so the results are identical."""
    levels = np.arange(256, dtype=np.float32)[:, None]
    return np.rint(levels * (1.0 - _check_alpha(alpha)) + _check_color(color) * _check_alpha(alpha)).astype(np.uint8)[
        :, None, :
    ]


def _tint_in_place(frame: np.ndarray, mask: np.ndarray, table: np.ndarray) -> None:
    """Tint ``frame [H, W, 3] uint8`` where ``mask [H, W] bool``, in place, through ``table``
    (:func:`_tint_table`), touching only the mask's bounding box."""
    mask_u8 = np.ascontiguousarray(mask).view(np.uint8)
    left, top, width, height = cv2.boundingRect(mask_u8)
    if width == 0:
        return
    box = frame[top : top + height, left : left + width]
    cv2.copyTo(cv2.LUT(box, table), mask_u8[top : top + height, left : left + width], box)


def tint_masks(
    frames: np.ndarray,
    masks: np.ndarray,
    color: Sequence[int] = DEFAULT_OVERLAY_COLOR,
    alpha: float = DEFAULT_OVERLAY_ALPHA,
) -> np.ndarray:
    """Blend ``color`` over the masked pixels: ``[K, H, W, 3] uint8`` and ``[K, H, W] bool`` -> ``[K, H, W, 3] uint8``.

    Masked pixels become ``round((1 - alpha) * pixel + alpha * color)``; the others are unchanged.
    """
    table = _tint_table(color, alpha)
    if frames.shape[:-1] != masks.shape or frames.shape[-1] != 3:
        raise InvalidInputError(
            f"frames {tuple(frames.shape)} and masks {tuple(masks.shape)} do not match; "
            "expected frames [..., H, W, 3] and masks [..., H, W]"
        )
    tinted = np.array(frames, dtype=np.uint8, copy=True)
    for frame, mask in zip(tinted.reshape(-1, *tinted.shape[-3:]), masks.reshape(-1, *masks.shape[-2:])):
        _tint_in_place(frame, mask, table)
    return tinted


def _caption_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _wrap_words(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: float) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels, at most ``_CAPTION_MAX_LINES`` lines (the last ends in ...)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > _CAPTION_MAX_LINES:
        lines = lines[:_CAPTION_MAX_LINES]
        lines[-1] = f"{lines[-1]} ..."
    return lines


class _CaptionBand:
    """A caption rendered once for a frame size, composited onto the top of every frame."""

    def __init__(self, text: str, height: int, width: int) -> None:
        font_size = max(12, height // 24)
        font = _caption_font(font_size)
        padding = max(4, font_size // 3)
        lines = _wrap_words(text, font, max_width=width - 2 * padding)
        line_height = font_size + padding // 2
        band_height = min(height, len(lines) * line_height + 2 * padding)
        band = Image.new("RGBA", (width, band_height), (0, 0, 0, round(255 * _CAPTION_BACKGROUND_ALPHA)))
        draw = ImageDraw.Draw(band)
        for row, line in enumerate(lines):
            draw.text((padding, padding + row * line_height), line, font=font, fill=(255, 255, 255, 255))
        rgba = np.asarray(band)
        self.rgba = rgba  # [h, W, 4] uint8: the band as rendered
        # Each pixel becomes round(pixel * weight + offset), in float32 as always. The plain band (no text) has
        # one weight and offset for all its pixels: a lookup table; the text's pixels are blended one by one.
        alpha = rgba[..., 3:].astype(np.float32) / 255.0  # [h, W, 1]
        weight = np.broadcast_to(1.0 - alpha, (*alpha.shape[:2], 3))  # [h, W, 3]
        offset = rgba[..., :3].astype(np.float32) * alpha  # [h, W, 3]
        plain = np.all(rgba == rgba[0, 0], axis=-1)  # the top-left corner is padding, never text
        levels = np.arange(256, dtype=np.float32)[:, None]
        self._plain_table = np.rint(levels * weight[0, 0] + offset[0, 0]).astype(np.uint8)[:, None, :]  # [256, 1, 3]
        self._ink = np.nonzero(~plain)  # rows, columns of the text's pixels
        self._ink_weight, self._ink_offset = weight[self._ink], offset[self._ink]  # [n, 3]
        self.height = band_height

    def apply(self, frames: np.ndarray) -> None:
        """Composite the caption onto the top rows of ``frames [K, H, W, 3] uint8``, in place."""
        rows, columns = self._ink
        ink = frames[:, rows, columns].astype(np.float32)  # [K, n, 3], read before the table overwrites it
        for frame in frames:
            band = frame[: self.height]
            cv2.LUT(band, self._plain_table, dst=band)
        frames[:, rows, columns] = np.rint(ink * self._ink_weight + self._ink_offset).astype(np.uint8)


def make_overlay_image(
    frame: np.ndarray,
    mask: np.ndarray,
    color: Sequence[int] = DEFAULT_OVERLAY_COLOR,
    alpha: float = DEFAULT_OVERLAY_ALPHA,
    caption: str | None = None,
) -> np.ndarray:
    """One frame with its mask tinted and an optional caption (for galleries).

    ``frame [H, W, 3] uint8`` RGB and ``mask [H, W] bool`` -> ``[H, W, 3] uint8``.
    """
    frame = np.asarray(frame)
    mask = np.asarray(mask)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise InvalidInputError(f"frame is {frame.dtype} {tuple(frame.shape)}; expected a uint8 RGB image [H, W, 3]")
    _check_mask_batch(mask[None], frame.shape[0], frame.shape[1], "mask")
    overlay = tint_masks(frame[None], mask[None], color, alpha)
    if caption:
        _CaptionBand(caption, frame.shape[0], frame.shape[1]).apply(overlay)
    return overlay[0]


# ----------------------------------------------------------------------------------------------------------
# Sinks: one per output kind, all fed the same chunks


class _Sink(Protocol):
    def write(self, start: int, masks: np.ndarray, frames: np.ndarray | None) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def _check_frame_name(name: str) -> str:
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise InvalidInputError(f"frame name {name!r} cannot be a file name; expected a plain name such as '00000'")
    return name


def run_all(pool: ThreadPoolExecutor | None, calls: Sequence[Callable[[], None]]) -> None:
    """Run ``calls`` on ``pool`` (None: here, in order) and wait for all of them; then raise the error of the first
    one (in the order given) that failed, so that no call is still running when the caller handles it."""
    if pool is None:
        for call in calls:
            call()
        return
    futures = [pool.submit(call) for call in calls]
    wait(futures)
    for future in futures:
        future.result()


class _PngSink:
    """``<directory>/<frame_name>.png`` per frame, each written atomically; a chunk's frames are encoded on
    ``pool``'s threads (zlib releases the GIL)."""

    def __init__(
        self, directory: PathLike, frame_names: list[str], foreground_value: int, pool: ThreadPoolExecutor | None
    ) -> None:
        if not 1 <= foreground_value <= 255:
            raise InvalidInputError(f"png foreground value must be in 1..255, got {foreground_value!r}")
        self._directory = Path(directory)
        self._frame_names = [_check_frame_name(name) for name in frame_names]
        self._foreground_value = foreground_value
        self._pool = pool
        with naming_errors(self._directory):
            self._directory.mkdir(parents=True, exist_ok=True)
            sweep_temp_files(self._directory, (f"{name}.png" for name in self._frame_names))

    def _write_one(self, index: int, mask: np.ndarray) -> None:
        pixels = mask.view(np.uint8) * np.uint8(self._foreground_value)  # 0 / foreground_value
        with atomic_path(self._directory / f"{self._frame_names[index]}.png") as temp_path:
            Image.fromarray(pixels, mode="L").save(temp_path, format="PNG", compress_level=1)

    def write(self, start: int, masks: np.ndarray, frames: np.ndarray | None) -> None:
        calls = [partial(self._write_one, start + offset, mask) for offset, mask in enumerate(masks)]
        run_all(self._pool if len(calls) > 1 else None, calls)

    def close(self) -> None:
        """Nothing to finish: every PNG is complete once written."""

    def abort(self) -> None:
        """Keep the PNGs already written: each one is complete and correct."""


class _RleJsonSink:
    """One JSON file, streamed: the header first, then one RLE per frame as chunks arrive."""

    def __init__(
        self, path: PathLike, frame_names: list[str], height: int, width: int, instruction: str, fps: float
    ) -> None:
        self._file = _start_file(path)
        with self._naming():
            self._handle = open(self._file.temp_path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close() or abort())
        header = {
            "format": RLE_FORMAT,
            "instruction": instruction,
            "height": height,
            "width": width,
            "fps": fps,
            "num_frames": len(frame_names),
            "frame_names": frame_names,
        }
        # Everything but the closing brace, then the list that write() extends frame by frame.
        with self._naming():
            self._handle.write(json.dumps(header, ensure_ascii=False)[:-1] + ', "rles": [')
        self._separator = "\n"

    def _naming(self) -> AbstractContextManager[None]:
        return naming_errors(self._file.path, self._file.temp_path)

    def write(self, start: int, masks: np.ndarray, frames: np.ndarray | None) -> None:
        from pycocotools import mask as mask_utils

        # pycocotools wants [H, W, K] uint8 in Fortran order.
        encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        with self._naming():
            for rle in encoded:
                entry = {"size": [int(value) for value in rle["size"]], "counts": rle["counts"].decode("ascii")}
                self._handle.write(self._separator + json.dumps(entry))
                self._separator = ",\n"

    def close(self) -> None:
        with self._naming():
            self._handle.write("\n]}\n")
            self._handle.close()
            self._file.commit()

    def abort(self) -> None:
        try:
            self._handle.close()  # on a full disk this raises too (the buffered rest cannot be written)
        finally:
            self._file.discard()


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """``[K, H, W, 3]`` -> ``[K, H + H % 2, W + W % 2, 3]`` repeating the last row/column (yuv420p needs even)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def overlay_codec() -> str:
    """The codec overlay videos use: ``libx264`` (H.264) when this PyAV build has it, else ``mpeg4``."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def add_overlay_stream(container: Any, height: int, width: int, fps: float, preset: str = OVERLAY_PRESET) -> Any:
    """Add the overlay video's stream to a PyAV output ``container``: :func:`overlay_codec`, yuv420p, ``height``
    x ``width`` (even numbers); libx264 at crf 18 with ``preset``, else MPEG-4 at about 0.25 bit per pixel."""
    codec = overlay_codec()
    rate = Fraction(fps).limit_denominator(1001)
    if codec == "libx264":
        stream = container.add_stream(codec, rate=rate, options={"crf": "18", "preset": preset})
        # Frame threads (x264's default): more throughput than the slice threads PyAV asks for.
        stream.codec_context.thread_type = "FRAME"
    else:
        stream = container.add_stream(codec, rate=rate)
        # About 0.25 bit per pixel: mpeg4's default 200 kbit/s would blur the overlay badly.
        stream.bit_rate = max(1_000_000, int(height * width * fps / 4))
    stream.height = height
    stream.width = width
    stream.pix_fmt = "yuv420p"
    return stream


def overlay_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """The overlay video's ``(height, width)`` before padding: the frames' size, scaled down (aspect kept) so that
    its longer side is at most ``max_side`` (None: no limit)."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


class _OverlayVideoSink:
    """An mp4 of the tinted frames with the instruction as a caption.

    :meth:`write` renders a chunk (tint inside the masks' bounding boxes, the caption pre-rendered once) and
    hands it to a background thread that converts and encodes it (:func:`add_overlay_stream`), so the
    next chunk is rendered while this one is encoded. An encoding error is raised by a later call.
    """

    def __init__(
        self,
        path: PathLike,
        height: int,
        width: int,
        fps: float,
        instruction: str,
        color: Sequence[int],
        alpha: float,
        max_side: int | None = None,
    ) -> None:
        import av

        self._table = _tint_table(color, alpha)
        self._frame_size = (height, width)
        self._size = overlay_size(height, width, max_side)
        self._caption = _CaptionBand(instruction, *self._size) if instruction else None
        self._pending: deque[Future[None]] = deque()
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videolisa-overlay")
        self._file = _start_file(path)
        try:
            with self._naming():
                # faststart puts the index first so browsers (the demo) can play the file while it downloads.
                self._container = av.open(
                    str(self._file.temp_path), mode="w", format="mp4", options={"movflags": "+faststart"}
                )
        except BaseException:
            self._encoder.shutdown()
            self._file.discard()
            raise
        try:
            height, width = self._size
            self._stream = add_overlay_stream(self._container, height + height % 2, width + width % 2, fps)
        except BaseException:
            self.abort()
            raise

    def _naming(self) -> AbstractContextManager[None]:
        return naming_errors(self._file.path, self._file.temp_path)

    def _render(self, masks: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """``[K, h, w, 3] uint8`` overlay frames (a new array), padded to even sizes."""
        if self._size == self._frame_size:
            overlay = frames.copy()
        else:
            size = (self._size[1], self._size[0])
            overlay = np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])
            # Area-averaged 0/1 values are rounded to 0/1: a pixel is inside where most of its area was.
            masks = np.stack([cv2.resize(mask.view(np.uint8), size, interpolation=cv2.INTER_AREA) for mask in masks])
            masks = masks.view(np.bool_)
        for frame, mask in zip(overlay, masks):
            _tint_in_place(frame, mask, self._table)
        if self._caption is not None:
            self._caption.apply(overlay)
        return _pad_to_even(overlay)

    def _encode(self, overlay: np.ndarray) -> None:
        import av

        with self._naming():
            for image in overlay:
                self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))

    def write(self, start: int, masks: np.ndarray, frames: np.ndarray | None) -> None:
        assert frames is not None  # MaskWriter.write checks this before any sink runs
        overlay = self._render(np.ascontiguousarray(masks), frames)
        # At most one chunk waits while another is encoded: memory stays bounded by the chunk size.
        while self._pending and (len(self._pending) >= 2 or self._pending[0].done()):
            self._pending.popleft().result()
        self._pending.append(self._encoder.submit(self._encode, overlay))

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        self._encoder.shutdown()
        with self._naming():
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._file.commit()

    def abort(self) -> None:
        self._encoder.shutdown(cancel_futures=True)  # waits for the chunk being encoded, drops the others
        self._pending.clear()
        try:
            self._container.close()  # writes the trailer, which can fail as the writes before it did
        finally:
            self._file.discard()


# ----------------------------------------------------------------------------------------------------------
# The writer


def _check_mask_batch(masks: np.ndarray, height: int, width: int, name: str = "masks") -> np.ndarray:
    if masks.dtype != np.bool_ or masks.ndim != 3 or masks.shape[1:] != (height, width):
        raise InvalidInputError(
            f"{name} is {masks.dtype} {tuple(masks.shape)}; expected bool [K, {height}, {width}] "
            "(binarise logits first, e.g. logits > 0)"
        )
    return masks


class MaskWriter:
    """Streams one video's masks to any of: a PNG folder, a COCO-RLE JSON file, an overlay mp4.

    Feed :meth:`write` consecutive chunks in frame order, then :meth:`close` (or use ``with``: leaving the
    block normally closes, an exception aborts). ``frame_names`` fixes the number of frames and names the
    PNGs; ``height``/``width`` are the frames' size. Only the current chunk is held in memory.

    The outputs are written in parallel (one thread each, and ``threads`` threads for a chunk's PNGs; default:
    the CPU count, at most 8); the overlay's encoding also overlaps the next :meth:`write`. Every call still
    returns only once its chunk's PNGs and RLEs are written, and raises the first error of any output.
    ``overlay_max_side`` scales the overlay video down so that its longer side is at most that many pixels.

    Example::

        with MaskWriter(reader.frame_names, reader.height, reader.width, png_dir="out/masks",
                        rle_path="out/masks.json", overlay_path="out/overlay.mp4",
                        instruction=text, fps=reader.fps) as writer:
            for start, frames in reader.iter_chunks(8):
                writer.write(masks_for(frames), frames)
    """

    def __init__(
        self,
        frame_names: Sequence[str],
        height: int,
        width: int,
        *,
        png_dir: PathLike | None = None,
        rle_path: PathLike | None = None,
        overlay_path: PathLike | None = None,
        instruction: str = "",
        fps: float = DEFAULT_FPS,
        overlay_color: Sequence[int] = DEFAULT_OVERLAY_COLOR,
        overlay_alpha: float = DEFAULT_OVERLAY_ALPHA,
        png_foreground_value: int = 255,
        overlay_max_side: int | None = None,
        threads: int | None = None,
    ) -> None:
        if png_dir is None and rle_path is None and overlay_path is None:
            raise InvalidInputError("MaskWriter needs at least one of png_dir, rle_path, overlay_path")
        self._frame_names = [str(name) for name in frame_names]
        if not self._frame_names or len(set(self._frame_names)) != len(self._frame_names):
            raise InvalidInputError("frame_names must be a non-empty list of distinct names, one per frame")
        if height < 1 or width < 1:
            raise InvalidInputError(f"frame size must be positive, got height={height}, width={width}")
        if not fps > 0:
            raise InvalidInputError(f"fps must be positive, got {fps!r}")
        for name, value in (("overlay_max_side", overlay_max_side), ("threads", threads)):
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise InvalidInputError(f"{name} must be a positive integer or None, got {value!r}")
        threads = threads or min(8, os.cpu_count() or 1)
        self._png_pool = ThreadPoolExecutor(threads, thread_name_prefix="videolisa-png") if threads > 1 else None
        self._sink_pool: ThreadPoolExecutor | None = None
        self._height, self._width = int(height), int(width)
        self._needs_frames = overlay_path is not None
        self._written = 0
        self._open = True
        self._sinks: list[_Sink] = []
        try:
            if png_dir is not None:
                self._sinks.append(_PngSink(png_dir, self._frame_names, png_foreground_value, self._png_pool))
            if rle_path is not None:
                self._sinks.append(
                    _RleJsonSink(rle_path, self._frame_names, self._height, self._width, instruction, float(fps))
                )
            if overlay_path is not None:
                self._sinks.append(
                    _OverlayVideoSink(
                        overlay_path,
                        self._height,
                        self._width,
                        float(fps),
                        instruction,
                        overlay_color,
                        overlay_alpha,
                        overlay_max_side,
                    )
                )
            if len(self._sinks) > 1 and threads > 1:
                self._sink_pool = ThreadPoolExecutor(len(self._sinks), thread_name_prefix="videolisa-write")
        except BaseException:
            self.abort()
            raise

    @property
    def frames_written(self) -> int:
        """How many frames' masks have been written so far."""
        return self._written

    def __enter__(self) -> MaskWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, masks: Any, frames: np.ndarray | None = None) -> None:
        """Write the next chunk: ``masks [K, H, W] bool`` (numpy or CPU tensor) and, for the overlay, the
        matching ``frames [K, H, W, 3] uint8`` RGB."""
        if not self._open:
            raise InvalidInputError("this MaskWriter is already closed")
        masks = _check_mask_batch(np.asarray(masks), self._height, self._width)
        if self._written + len(masks) > len(self._frame_names):
            raise InvalidInputError(
                f"received masks for frames {self._written}..{self._written + len(masks) - 1} but the video has "
                f"{len(self._frame_names)} frames"
            )
        if self._needs_frames:
            if frames is None:
                raise InvalidInputError("the overlay video needs the frames: pass frames [K, H, W, 3] uint8")
            frames = np.asarray(frames)
            if frames.dtype != np.uint8 or frames.shape != (*masks.shape, 3):
                raise InvalidInputError(
                    f"frames is {frames.dtype} {tuple(frames.shape)}; expected uint8 {(*masks.shape, 3)} "
                    "matching the masks"
                )
        run_all(self._sink_pool, [partial(sink.write, self._written, masks, frames) for sink in self._sinks])
        self._written += len(masks)

    def close(self) -> None:
        """Finish every output; raises (and removes the unfinished files) if frames are missing."""
        if not self._open:
            return
        if self._written != len(self._frame_names):
            self.abort()
            raise InvalidInputError(
                f"MaskWriter closed after {self._written} of {len(self._frame_names)} frames; "
                "the JSON and overlay outputs were discarded"
            )
        self._open = False
        self._shutdown_pools()
        for index, sink in enumerate(self._sinks):
            try:
                sink.close()
            except BaseException:
                # This sink's file is unfinished, and so is the run: discard it and the ones not closed yet.
                _abort_all(self._sinks[index:])
                raise

    def abort(self) -> None:
        """Stop and delete unfinished files (PNGs already written stay: each is complete).

        Every output's temporary file is removed even when another's abort fails (a full disk fails the
        buffered writes of closing too); such failures are logged, not raised, so that the error that
        caused the abort is the one the caller sees.
        """
        self._open = False
        self._shutdown_pools()
        _abort_all(self._sinks)

    def _shutdown_pools(self) -> None:
        """Stop the writing threads (no write is running: :meth:`write` waits for its chunk)."""
        for pool in (self._sink_pool, self._png_pool):
            if pool is not None:
                pool.shutdown()


def _abort_all(sinks: Sequence[_Sink]) -> None:
    """``abort()`` every sink, logging (not raising) what fails so that each still gets its turn."""
    for sink in sinks:
        try:
            sink.abort()
        except Exception as error:  # noqa: BLE001 - the abort of the next sink must run whatever happened here
            logger.warning("while discarding an unfinished output: %s", error)


# ----------------------------------------------------------------------------------------------------------
# Readers


@dataclass(frozen=True)
class VideoMasks:
    """A video's masks read back from an RLE JSON file."""

    masks: np.ndarray  # [T, H, W] bool
    frame_names: list[str]
    instruction: str
    fps: float | None


def read_png_masks(directory: PathLike, frame_names: Sequence[str] | None = None) -> np.ndarray:
    """Masks from ``<directory>/<name>.png`` files -> ``[T, H, W] bool`` (any non-zero pixel is foreground).

    Reads ``frame_names`` in that order, or else every ``.png`` in natural order. Palette PNGs count
    non-zero indices; multi-channel PNGs count pixels non-zero in any channel.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder; expected a folder of PNG masks")
    if frame_names is None:
        paths = sorted(
            (path for path in folder.glob("*.png") if path.is_file()), key=lambda path: natural_sort_key(path.name)
        )
    else:
        paths = [folder / f"{name}.png" for name in frame_names]
    if not paths:
        raise InvalidInputError(f"{folder} contains no .png masks")
    masks = []
    for path in paths:
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image)
        except (OSError, SyntaxError, ValueError) as err:
            raise InvalidInputError(f"cannot read mask {path}: {err}; expected a PNG image") from err
        mask = pixels.any(axis=-1) if pixels.ndim == 3 else pixels > 0
        if masks and mask.shape != masks[0].shape:
            raise InvalidInputError(
                f"mask {path} is {mask.shape}, the first mask is {masks[0].shape}; expected masks of one size"
            )
        masks.append(mask)
    return np.stack(masks)


def read_rle_json(path: PathLike) -> VideoMasks:
    """Read a file written by :class:`MaskWriter` (``rle_path``) -> :class:`VideoMasks` (masks ``[T, H, W] bool``)."""
    from pycocotools import mask as mask_utils

    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise InvalidInputError(f"cannot read mask file {path}: {err}; expected a {RLE_FORMAT} JSON file") from err
    if not isinstance(record, dict) or record.get("format") != RLE_FORMAT:
        raise InvalidInputError(f"{path} is not a {RLE_FORMAT} file (its 'format' field is missing or different)")
    rles, names = record["rles"], record["frame_names"]
    size = [record["height"], record["width"]]
    if not (len(rles) == len(names) == record["num_frames"]) or any(rle["size"] != size for rle in rles):
        raise InvalidInputError(
            f"{path} is inconsistent: {len(rles)} RLEs, {len(names)} frame names, num_frames {record['num_frames']}, "
            f"expected equal counts and every RLE of size {size}"
        )
    encoded = [{"size": rle["size"], "counts": rle["counts"].encode("ascii")} for rle in rles]
    masks = mask_utils.decode(encoded).transpose(2, 0, 1).astype(bool)  # [H, W, T] -> [T, H, W]
    return VideoMasks(masks=masks, frame_names=list(names), instruction=record["instruction"], fps=record["fps"])
