"""Open videos, frame folders, single images and in-memory arrays as lazily decoded frame sources.

:func:`open_video` turns any supported input into a :class:`VideoReader` that reports frame count, fps and
size up front and decodes frames only when asked (:meth:`VideoReader.get_frames` for a few frames,
:meth:`VideoReader.iter_chunks` to stream all of them), so a long video is never held in memory at once.
Every reader returns RGB ``uint8`` frames ``[K, H, W, 3]`` (RGB everywhere: the original ``chat.py`` fed
OpenCV's BGR frames to the model by mistake; the released weights were trained and evaluated on RGB).

Video files: the frames a player shows, the way it shows them
    Container headers are not a reliable frame count: WebM/MKV usually have none (decord then estimates
    ``duration x fps``), some MP4s over-report it, and decord asked for a frame past the real end can fail or
    loop forever inside native code (dmlc/decord#54, #373). A packet count is not a frame count either: an MP4
    edit list can hide packets (a clip cut without re-encoding keeps the encoder delay's frames before the
    presentation start, and sometimes one after its end; FFmpeg's demuxer flags them as discarded and its
    decoders decode but do not return them), and a decoder drops the frames before the first one it can decode.
    So every video file is first probed with PyAV: all video packets are demuxed (read, not decoded), and
    only the first frame is decoded. The frames shown are the packets not hidden by the edit list whose
    timestamps are not before that first frame's; one warning line says so when this differs from the packet
    count (``144 packets, 141 frames shown (...)``). The probe costs one demuxing pass and one frame's decoding,
    not a decoding pass; the packets' timestamps also let a decoding error name its frame.

    The first frame also carries the orientation: the display matrix (FFmpeg 7+ copies the container's onto
    every decoded frame; phones record portrait video as landscape frames plus a quarter turn) or, without one,
    the legacy ``rotate`` tag. Frames, sizes and everything computed from them (masks, overlay, RLE) are in the
    displayed orientation, as players show them.

    decord then decodes with random access only where it agrees with PyAV (the rule is in
    :meth:`_DecordVideo.open_if_consistent`: same frame count, same orientation, 8-bit pixels, frame 0 equal
    up to :data:`DECORD_PIXEL_TOLERANCE`); otherwise (or if decord is not installed or cannot open the file)
    PyAV decodes sequentially from the start, which is exact by construction but slower for scattered indices.
    A file without a decodable frame fails at :func:`open_video`, not later.

Images: an EXIF orientation is applied (phone photos come out upright), as OpenCV's ``imread`` does.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
from PIL import ExifTags, Image

from videolisa.errors import VideoReadError

logger = logging.getLogger(__name__)

# Every one is read by PyAV (tests/test_video_corpus.py writes and reads a file of each); decord is optional.
VIDEO_EXTENSIONS = (
    ".mp4",
    ".avi",
    ".mov",
    ".webm",
    ".mkv",
    ".m4v",
    ".gif",
    ".3gp",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".wmv",
    ".flv",
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Frame rate reported for frame folders, single images and arrays, which carry none.
DEFAULT_FPS = 10.0
# decord is used for an 8-bit video file only if its frame 0 is within this many levels (0-255, any channel and
# pixel) of PyAV's. Measured on every 8-bit file of the corpus (tests/test_video_corpus.py: H.264 4:2:0/4:2:2/
# 4:4:4 in limited and full range, MJPEG, ProRes, VP9, FFV1 gray): identical pixels. Two levels absorb a one-step
# rounding difference of another FFmpeg build; 10-bit files, which differ by up to ~20, go to PyAV by rule.
DECORD_PIXEL_TOLERANCE = 2
# PyAV's sequential decoding with FFmpeg's frame threads ran 1.9-3.5x faster than decord's at 1080p on 2 cores
# (issue 24), so frames are read with decord only when its random access decodes fewer than 1/this of the frames
# a sequential pass must (see _frames_decoded_by_seeking).
SEQUENTIAL_DECODING_SPEEDUP = 2.0

VideoBackend = Literal["auto", "pyav"]
_EXPECTED_INPUT = (
    f"expected a video file ({', '.join(VIDEO_EXTENSIONS)}), an image ({', '.join(IMAGE_EXTENSIONS)}), "
    "a folder of such images, or a uint8 RGB array [T, H, W, 3]"
)


def natural_sort_key(name: str) -> tuple[tuple[object, ...], str]:
    """Sort key that orders digit runs by value: ``2.jpg`` before ``10.jpg``, case-insensitive.

    Example: ``sorted(["10.jpg", "2.jpg", "1.jpg"], key=natural_sort_key) == ["1.jpg", "2.jpg", "10.jpg"]``.
    """
    # re.split with a capture group alternates text, digits, text, ... so parts at equal positions have equal types.
    parts = tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))
    return parts, name


def default_frame_names(num_frames: int) -> list[str]:
    """Zero-padded frame names ``00000``, ``00001``, ... (at least 5 digits, more for longer videos)."""
    width = max(5, len(str(max(num_frames - 1, 0))))
    return [f"{index:0{width}d}" for index in range(num_frames)]


class VideoReader(ABC):
    """A video as a lazily decoded sequence of RGB frames; build one with :func:`open_video`.

    Properties are known without decoding the video. Frames come back as ``[K, H, W, 3] uint8`` RGB arrays.
    Use as a context manager (or call :meth:`close`) to release decoder resources early.
    """

    _backend_name: str  # set by each subclass

    def __init__(
        self, source: str, *, num_frames: int, fps: float, height: int, width: int, frame_names: list[str]
    ) -> None:
        self._source = source
        self._num_frames = num_frames
        self._fps = fps
        self._height = height
        self._width = width
        self._frame_names = frame_names

    @property
    def source(self) -> str:
        """The path (or ``<array>``) this reader decodes, as used in error messages."""
        return self._source

    @property
    def backend(self) -> str:
        """What decodes the frames: ``decord``, ``pyav``, ``images`` or ``array``."""
        return self._backend_name

    @property
    def num_frames(self) -> int:
        """Number of frames in the video."""
        return self._num_frames

    @property
    def fps(self) -> float:
        """Frames per second (the container's average rate; a configurable default for folders, images, arrays)."""
        return self._fps

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self._height

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self._width

    @property
    def frame_names(self) -> list[str]:
        """One name per frame: file stems for folders and images, ``00000``, ``00001``, ... otherwise."""
        return list(self._frame_names)

    def __len__(self) -> int:
        return self._num_frames

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._source!r}, num_frames={self._num_frames}, fps={self._fps:g}, "
            f"height={self._height}, width={self._width}, backend={self.backend!r})"
        )

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 (an optional hook: most readers hold nothing)
        """Release decoder resources; the default reader holds none between calls."""

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Decode the frames at ``indices`` (any order, repeats allowed) -> ``[K, H, W, 3] uint8`` RGB.

        Raises :class:`VideoReadError` when a frame cannot be decoded (naming its index) and
        :class:`IndexError` for an index outside ``[0, num_frames)``.
        """
        requested = self._check_indices(indices)
        if not requested:
            return np.empty((0, self._height, self._width, 3), dtype=np.uint8)
        unique = sorted(set(requested))
        decoded = self._decode_sorted(unique)
        if unique == requested:
            return decoded
        position = {index: slot for slot, index in enumerate(unique)}
        return decoded[[position[index] for index in requested]]

    def iter_frame_groups(self, indices: Sequence[int], group_size: int) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield ``(group, frames [len(group), H, W, 3] uint8)`` for the distinct ``indices`` in ascending order,
        ``group_size`` at a time: scattered frames (the sparse sample) of a 4K video without holding them all.

        Example: indices ``[9, 2, 5, 2]``, ``group_size=2`` -> groups ``[2, 5]``, ``[9]``. Errors as
        :meth:`get_frames`.
        """
        unique = sorted(set(self._check_indices(indices)))
        self._check_chunking(group_size, 0)
        for first in range(0, len(unique), group_size):
            group = unique[first : first + group_size]
            yield group, self._decode_sorted(group)

    def iter_chunks(self, chunk_size: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_index, frames [k, H, W, 3] uint8)`` for consecutive chunks from ``start`` to the end.

        Each chunk has ``chunk_size`` frames except possibly the last; only one chunk is in memory at a time.
        ``start`` lets an interrupted pass resume. Example: 10 frames, ``chunk_size=4`` -> starts 0, 4, 8.
        """
        self._check_chunking(chunk_size, start)
        for chunk_start in range(start, self._num_frames, chunk_size):
            yield chunk_start, self._decode_sorted(self._chunk_indices(chunk_start, chunk_size))

    def _check_chunking(self, chunk_size: int, start: int) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if not 0 <= start < self._num_frames:
            raise IndexError(f"start {start} is out of range for {self._source} ({self._num_frames} frames)")

    def _chunk_indices(self, chunk_start: int, chunk_size: int) -> list[int]:
        return list(range(chunk_start, min(chunk_start + chunk_size, self._num_frames)))

    @abstractmethod
    def _decode_sorted(self, indices: list[int]) -> np.ndarray:
        """Decode valid, strictly increasing ``indices`` -> ``[len(indices), H, W, 3] uint8``."""

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        requested = [int(index) for index in np.asarray(indices, dtype=np.int64).reshape(-1)]
        for index in requested:
            if not 0 <= index < self._num_frames:
                raise IndexError(
                    f"frame index {index} is out of range for {self._source} ({self._num_frames} frames); "
                    f"expected 0 <= index < {self._num_frames}"
                )
        return requested

    def _check_frame(self, frame: np.ndarray, index: int) -> np.ndarray:
        if frame.shape != (self._height, self._width, 3) or frame.dtype != np.uint8:
            raise VideoReadError(
                f"{self._source}: frame {index} decoded as {frame.dtype} {tuple(frame.shape)}; expected uint8 "
                f"{(self._height, self._width, 3)} like the rest of the video (frame size changes mid-stream are "
                "not supported)"
            )
        return frame


def open_video(
    source: str | os.PathLike[str] | np.ndarray | VideoReader,
    *,
    default_fps: float = DEFAULT_FPS,
    backend: VideoBackend = "auto",
) -> VideoReader:
    """Open a video file, a folder of frames, a single image or a ``[T, H, W, 3] uint8`` RGB array.

    * Video files (:data:`VIDEO_EXTENSIONS`: ``.mp4 .mov .mkv .webm .avi .gif ...``): the frames a player
      shows, upright (see the module docstring), decoded by decord or PyAV; ``backend="pyav"`` forces PyAV.
      ``frame_names`` are ``00000``, ``00001``, ...
    * Folders: every ``.jpg/.jpeg/.png`` file in natural order (``2.jpg`` before ``10.jpg``); frame names
      are the file stems. Other files are ignored with a logged warning; sizes are checked from the
      image headers; an EXIF orientation (phone photos) is applied, as OpenCV's ``imread`` in the original does.
    * A single image is a 1-frame video named after its stem, upright as its EXIF orientation says.
    * Arrays are wrapped without copying (frames are returned as read-only views).
    * An existing :class:`VideoReader` is returned unchanged.

    Grayscale, RGBA, palette and 16-bit images become 8-bit RGB. Folders, images and arrays report
    ``default_fps``. Raises :class:`VideoReadError` naming the input when it is missing, unreadable, not a
    video, empty, has frames of mixed sizes, or has no decodable frame.
    """
    if isinstance(source, VideoReader):
        return source
    if not (isinstance(default_fps, (int, float)) and math.isfinite(default_fps) and default_fps > 0):
        raise VideoReadError(f"default_fps must be a positive number, got {default_fps!r}")
    if backend not in ("auto", "pyav"):
        raise VideoReadError(f"backend must be 'auto' or 'pyav', got {backend!r}")
    if isinstance(source, np.ndarray):
        return _ArrayVideo(source, fps=float(default_fps))
    if not isinstance(source, (str, os.PathLike)):
        raise VideoReadError(f"cannot open a video from a {type(source).__name__}; {_EXPECTED_INPUT}")
    path = Path(source)
    if not path.exists():
        raise VideoReadError(f"{path} does not exist; {_EXPECTED_INPUT}")
    if path.is_dir():
        return _ImageFrames(str(path), _list_frame_files(path), fps=float(default_fps))
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return _ImageFrames(str(path), [path], fps=float(default_fps))
    if suffix in VIDEO_EXTENSIONS:
        return _open_video_file(path, default_fps=float(default_fps), backend=backend)
    raise VideoReadError(f"{path} has an unsupported extension {path.suffix!r}; {_EXPECTED_INPUT}")


# ----------------------------------------------------------------------------------------------------------
# In-memory arrays


class _ArrayVideo(VideoReader):
    _backend_name = "array"

    def __init__(self, frames: np.ndarray, *, fps: float) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise VideoReadError(
                f"in-memory video has dtype {frames.dtype} and shape {tuple(frames.shape)}; "
                "expected a uint8 RGB array [T, H, W, 3]"
            )
        if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
            raise VideoReadError(f"in-memory video has shape {tuple(frames.shape)}; expected at least one frame")
        # A read-only view: callers cannot modify the array they passed in through the frames we return.
        self._frames = frames.view()
        self._frames.flags.writeable = False
        num_frames, height, width = frames.shape[:3]
        super().__init__(
            "<array>",
            num_frames=num_frames,
            fps=fps,
            height=height,
            width=width,
            frame_names=default_frame_names(num_frames),
        )

    def _decode_sorted(self, indices: list[int]) -> np.ndarray:
        if indices == list(range(indices[0], indices[-1] + 1)):
            return self._frames[indices[0] : indices[-1] + 1]
        return self._frames[indices]


# ----------------------------------------------------------------------------------------------------------
# Frame folders and single images


def _list_frame_files(folder: Path) -> list[Path]:
    files = [entry for entry in folder.iterdir() if entry.is_file()]
    frames = sorted((entry for entry in files if entry.suffix.lower() in IMAGE_EXTENSIONS), key=_path_sort_key)
    ignored = sorted(entry.name for entry in files if entry.suffix.lower() not in IMAGE_EXTENSIONS)
    if ignored:
        logger.warning(
            "%s: ignoring %d file(s) that are not %s frames: %s",
            folder,
            len(ignored),
            "/".join(IMAGE_EXTENSIONS),
            ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else ""),
        )
    if not frames:
        raise VideoReadError(f"{folder} contains no frames; expected {', '.join(IMAGE_EXTENSIONS)} images")
    stems: dict[str, Path] = {}
    for frame in frames:
        if frame.stem in stems:
            raise VideoReadError(
                f"{folder}: {stems[frame.stem].name} and {frame.name} have the same frame name {frame.stem!r}; "
                "expected one image per frame name"
            )
        stems[frame.stem] = frame
    return frames


def _path_sort_key(path: Path) -> tuple[tuple[object, ...], str]:
    return natural_sort_key(path.name)


# EXIF orientation (2-8; 1 is upright) -> the transpose that shows the stored pixels upright. 5-8 turn the
# picture sideways.
_EXIF_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation in the image's header (1 when there is none), read without decoding the pixels.

    Only metadata before the pixels counts (a PNG eXIf chunk after them would need the whole file decoded), so
    that the header size and the decoded frame always agree.
    """
    data = image.info.get("exif")
    if not data:
        return 1
    exif = Image.Exif()
    exif.load(data)
    orientation = exif.get(ExifTags.Base.Orientation, 1)
    return orientation if orientation in _EXIF_TRANSPOSES else 1


def _image_header_size(path: Path) -> tuple[int, int]:
    """Displayed (height, width) read from the image header and its EXIF orientation, without decoding pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if _exif_orientation(image) >= 5:
                width, height = height, width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise VideoReadError(f"cannot read image {path}: {err}; expected a JPEG or PNG file") from err
    return height, width


def _to_rgb8(image: Image.Image) -> np.ndarray:
    """PIL image of any mode -> ``[H, W, 3] uint8`` RGB."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit grayscale: keep the high byte, as OpenCV's imread (used by the original scripts) does.
        gray = (np.asarray(image).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    # Palette, grayscale, 1-bit, RGBA (alpha dropped) and 16-bit RGB (loaded by PIL as 8-bit) all convert here.
    return np.asarray(image.convert("RGB"))


def _read_rgb_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            orientation = _exif_orientation(image)
            upright = image.transpose(_EXIF_TRANSPOSES[orientation]) if orientation != 1 else image
            return _to_rgb8(upright)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise VideoReadError(f"cannot decode image {path}: {err}; expected a readable JPEG or PNG file") from err


class _ImageFrames(VideoReader):
    _backend_name = "images"

    def __init__(self, source: str, paths: list[Path], *, fps: float) -> None:
        height, width = _image_header_size(paths[0])
        for path in paths[1:]:
            size = _image_header_size(path)
            if size != (height, width):
                raise VideoReadError(
                    f"{source}: frame {path.name} is {size[0]}x{size[1]} (HxW) but {paths[0].name} is "
                    f"{height}x{width}; expected all frames of a video to have the same size"
                )
        self._paths = paths
        super().__init__(
            source,
            num_frames=len(paths),
            fps=fps,
            height=height,
            width=width,
            frame_names=[path.stem for path in paths],
        )

    def _decode_sorted(self, indices: list[int]) -> np.ndarray:
        return np.stack([self._check_frame(_read_rgb_image(self._paths[index]), index) for index in indices])


# ----------------------------------------------------------------------------------------------------------
# Video files


@dataclass(frozen=True)
class _Orientation:
    """How stored pixels become the displayed picture: an optional transpose, then optional mirrors.

    Every quarter turn and mirror of a display matrix is one of these eight. Example: a phone video recorded in
    portrait stores landscape frames and a quarter turn clockwise, ``_Orientation(True, False, True)``.
    """

    transpose: bool = False
    flip_rows: bool = False  # reverse the row order (upside down)
    flip_columns: bool = False  # reverse the column order (mirror left-right)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """``[..., H, W, C]`` stored -> ``[..., H', W', C]`` displayed, as a view (no copy)."""
        if self.transpose:
            frames = np.swapaxes(frames, -3, -2)
        if self.flip_rows:
            frames = frames[..., ::-1, :, :]
        if self.flip_columns:
            frames = frames[..., ::-1, :]
        return frames

    @property
    def mirrors(self) -> bool:
        """True for the four orientations that mirror the picture (a quarter turn transposes and flips once)."""
        return self.transpose == (self.flip_rows == self.flip_columns)


# Quarter turns clockwise (the legacy ``rotate`` tag's unit) -> orientation.
_CLOCKWISE_TURNS = (
    _Orientation(),
    _Orientation(transpose=True, flip_columns=True),
    _Orientation(flip_rows=True, flip_columns=True),
    _Orientation(transpose=True, flip_rows=True),
)


def _orientation_from_display_matrix(matrix: np.ndarray, path: Path) -> _Orientation:
    """The orientation of a display matrix (9 int32 values, libavutil/display.h layout).

    The matrix maps a stored pixel (column p, row q) to the displayed one: ``p' = a p + c q``, ``q' = b p + d q``
    (plus a translation). Diagonal: mirrors only; anti-diagonal: a transpose, then mirrors. Angles that are not
    quarter turns are rounded to the nearest one, as mpv does, with a warning.
    """
    a, b, c, d = (int(matrix[index]) for index in (0, 1, 3, 4))
    if abs(b) + abs(c) > abs(a) + abs(d):
        orientation, exact = _Orientation(True, flip_rows=b < 0, flip_columns=c < 0), a == 0 and d == 0
    else:
        orientation, exact = _Orientation(False, flip_rows=d < 0, flip_columns=a < 0), b == 0 and c == 0
    if not exact:
        degrees = math.degrees(math.atan2(b, a))
        logger.warning(
            "%s: the display matrix rotates by %.1f degrees; showing it at the nearest quarter turn", path, degrees
        )
    return orientation


def _orientation_from_rotate_tag(tag: str, path: Path) -> _Orientation:
    """The legacy ``rotate`` stream tag (degrees clockwise) as an orientation, to the nearest quarter turn."""
    try:
        degrees = float(tag)
    except ValueError:
        logger.warning("%s: ignoring the rotate tag %r, which is not a number of degrees", path, tag)
        return _Orientation()
    if degrees % 90:
        logger.warning("%s: the rotate tag says %g degrees; showing it at the nearest quarter turn", path, degrees)
    return _CLOCKWISE_TURNS[round(degrees / 90) % 4]


def _frame_orientation(frame: object, stream: object, path: Path) -> _Orientation:
    """Orientation from the decoded frame's display matrix (FFmpeg 7+ copies the container's onto every frame),
    else from a legacy ``rotate`` tag on the stream (written by old muxers, read by players and decord)."""
    import av

    side_data = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)  # type: ignore[attr-defined]
    if side_data is not None:
        return _orientation_from_display_matrix(np.frombuffer(bytes(side_data), dtype=np.int32), path)
    tags = {key.lower(): value for key, value in stream.metadata.items()}  # type: ignore[attr-defined]
    return _orientation_from_rotate_tag(tags["rotate"], path) if "rotate" in tags else _Orientation()


@dataclass(frozen=True)
class _StreamProbe:
    """What PyAV learns about a video file's first video stream: all packets demuxed, the first frame decoded."""

    # Frames a player shows: stored packets minus those the edit list hides and those the decoder drops
    # before its first output frame.
    num_frames: int
    num_packets: int
    fps: float | None
    orientation: _Orientation
    # Frame 0 as displayed, [H, W, 3] uint8 RGB: its shape is the displayed size; decord must reproduce it.
    first_frame: np.ndarray
    bits_per_component: int  # of the decoded pixel format: 8, or 10 for 10-bit video
    # Presentation timestamps of the shown frames in ascending order, or None when some packet has none.
    shown_pts: list[int] | None
    # Indices (among the shown frames) of the key frames a decoder can start from, ascending; None when unknown.
    keyframes: list[int] | None

    @property
    def height(self) -> int:
        """Displayed frame height."""
        return int(self.first_frame.shape[0])

    @property
    def width(self) -> int:
        """Displayed frame width."""
        return int(self.first_frame.shape[1])


def _unreadable(path: Path, err: Exception) -> VideoReadError:
    return VideoReadError(
        f"cannot read video file {path}: {err}; expected a readable {'/'.join(VIDEO_EXTENSIONS)} video"
    )


def _undecodable(path: Path, index: int, err: Exception) -> VideoReadError:
    return VideoReadError(f"{path}: frame {index} could not be decoded ({err}); the video is corrupt or truncated")


def _open_container(path: Path) -> tuple[object, object]:
    """``(container, first video stream)``; raises naming the file when it is unreadable or has no decoder."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise _unreadable(path, err) from err
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path} has no video stream; expected a video file")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise VideoReadError(
            f"{path}: the FFmpeg of PyAV {av.__version__} on this machine has no decoder for its video codec; "
            "expected a codec FFmpeg decodes (re-encode it, e.g. to H.264 mp4)"
        )
    return container, stream


def _probe_video_file(path: Path) -> _StreamProbe:
    """Demux every video packet (no decoding) and decode only until the first frame comes out."""
    import av

    container, stream = _open_container(path)
    with container:  # type: ignore[attr-defined]
        packets: list[tuple[int | None, bool]] = []  # (pts, hidden by the edit list) of every stored frame
        keyframe_pts: list[int | None] = []
        first: av.VideoFrame | None = None
        try:
            for packet in container.demux(stream):  # type: ignore[attr-defined]
                if packet.size == 0:
                    continue
                packets.append((packet.pts, packet.is_discard))
                if packet.is_keyframe:
                    keyframe_pts.append(packet.pts)
                if first is None:
                    first = _first_output(stream, packet, path)
        except av.error.FFmpegError as err:
            raise VideoReadError(
                f"{path}: frame {len(packets)} cannot be read ({err}); the video is truncated or corrupt"
            ) from err
        if not packets:
            raise VideoReadError(f"{path} contains no video frames; expected a video with at least one frame")
        if first is None:
            first = _first_output(stream, None, path)  # flush: a one-frame video may wait in the decoder
        if first is None:
            raise VideoReadError(f"{path}: no frame could be decoded; expected a video with a decodable frame")
        rate = stream.average_rate or stream.guessed_rate  # type: ignore[attr-defined]
        header_frames = stream.frames  # type: ignore[attr-defined]
        orientation = _frame_orientation(first, stream, path)
        first_frame = np.ascontiguousarray(orientation.apply(first.to_ndarray(format="rgb24")))
    shown = [pts for pts, hidden in packets if not hidden]
    if first.pts is not None and None not in shown:
        # A decoder that drops frames (e.g. a clip cut before its first key frame) starts at a later timestamp.
        shown = [pts for pts in shown if pts >= first.pts]  # type: ignore[operator]
    _warn_about_hidden_frames(path, header_frames, packets, len(shown), first.pts)
    shown_pts = None if None in shown else sorted(shown)  # type: ignore[type-var]
    keyframes = None
    if shown_pts is not None and None not in keyframe_pts:
        # A key frame hidden by the edit list or dropped counts from the next shown frame.
        keyframes = sorted({min(bisect.bisect_left(shown_pts, pts), len(shown_pts) - 1) for pts in keyframe_pts})
    return _StreamProbe(
        num_frames=len(shown),
        num_packets=len(packets),
        fps=float(rate) if rate else None,
        orientation=orientation,
        first_frame=first_frame,
        bits_per_component=max(component.bits for component in first.format.components),
        shown_pts=shown_pts,
        keyframes=keyframes,
    )


def _first_output(stream: object, packet: object | None, path: Path) -> object | None:
    """The first frame the decoder returns for ``packet`` (None: flush), or None when it returns none yet."""
    import av

    try:
        frames = stream.decode(packet)  # type: ignore[attr-defined]
    except av.error.FFmpegError as err:
        raise _undecodable(path, 0, err) from err
    return frames[0] if frames else None


def _warn_about_hidden_frames(
    path: Path, header_frames: int, packets: list[tuple[int | None, bool]], num_shown: int, first_pts: int | None
) -> None:
    """One warning line when the header, the stored packets and the shown frames disagree on the count."""
    if num_shown == len(packets):
        if header_frames and header_frames != len(packets):
            logger.warning(
                "%s: the container header declares %d frames but %d are stored; using %d",
                path,
                header_frames,
                len(packets),
                len(packets),
            )
        return
    hidden = [pts for pts, is_hidden in packets if is_hidden]
    reasons = []
    if hidden:
        if first_pts is not None and None not in hidden:
            before = sum(pts < first_pts for pts in hidden)  # type: ignore[operator]
            reasons.append(f"the edit list hides {before} before the start and {len(hidden) - before} after the end")
        else:
            reasons.append(f"the edit list hides {len(hidden)}")
    dropped = len(packets) - len(hidden) - num_shown
    if dropped:
        reasons.append(f"the decoder drops {dropped} before the first decodable frame")
    header = f"the header declares {header_frames} frames, " if header_frames and header_frames != len(packets) else ""
    logger.warning(
        "%s: %s%d packets, %d frames shown (%s); using the %d frames shown",
        path,
        header,
        len(packets),
        num_shown,
        "; ".join(reasons),
        num_shown,
    )


def _import_decord() -> ModuleType | None:
    # OpenCV first: decord loads its bundled zlib 1.2.3 into the process's global symbol scope, and an
    # OpenCV imported after that binds its libpng to it, after which every cv2 PNG read or write fails
    # ("libpng error: bad parameters to zlib"). Loaded before decord, OpenCV keeps its own zlib.
    import cv2  # noqa: F401

    try:
        import decord
    except ImportError as err:
        warnings.warn(
            f"decord is not available ({err}); decoding video files with PyAV, which reads them sequentially "
            "(slower for scattered frames)",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return decord


def _open_video_file(path: Path, *, default_fps: float, backend: VideoBackend) -> VideoReader:
    probe = _probe_video_file(path)
    fps = probe.fps
    if fps is None:
        logger.warning("%s declares no frame rate; using %g fps", path, default_fps)
        fps = default_fps
    reader: VideoReader | None = None
    if backend == "auto":
        decord = _import_decord()
        if decord is not None:
            reader = _DecordVideo.open_if_consistent(decord, path, probe, fps)
    # The probe decoded frame 0 with PyAV, and decord's frame 0 was compared with it: a file without a decodable
    # frame has failed by now, with the reason.
    return _PyAVVideo(path, probe, fps) if reader is None else reader


def _video_file_kwargs(probe: _StreamProbe, fps: float) -> dict[str, object]:
    return {
        "num_frames": probe.num_frames,
        "fps": fps,
        "height": probe.height,
        "width": probe.width,
        "frame_names": default_frame_names(probe.num_frames),
    }


def _decord_message(err: Exception) -> str:
    """decord's error text without its ``[time] source.cc:line:`` prefixes."""
    return re.sub(r"\[[\d:]+\] \S+:\d+: ", "", str(err).strip().splitlines()[0])


class _DecordVideo(VideoReader):
    """Random access with decord; switches to sequential PyAV decoding for good if decord fails.

    decord's threaded decoder reports a corrupt packet while decoding frames before it, so its errors cannot
    name the bad frame; PyAV then either decodes the frames (a decord-only problem) or names the frame.
    """

    _backend_name = "decord"

    def __init__(self, decord: ModuleType, reader: object, path: Path, probe: _StreamProbe, fps: float) -> None:
        self._decord = decord
        self._reader: object | None = reader
        self._keyframes = probe.keyframes
        self._pyav = _PyAVVideo(path, probe, fps)
        super().__init__(str(path), **_video_file_kwargs(probe, fps))  # type: ignore[arg-type]

    @classmethod
    def open_if_consistent(cls, decord: ModuleType, path: Path, probe: _StreamProbe, fps: float) -> _DecordVideo | None:
        """A decord reader for ``path``, or None (with a logged reason) when decord disagrees with PyAV on it.

        The rule: decord is used only when it counts the frames shown (it counts packets, including those an
        edit list hides), the picture is not mirrored (decord applies an MP4 display matrix's rotation and the
        legacy ``rotate`` tag, but neither mirrors nor a Matroska display matrix), the pixels have 8 bits (decord's
        bundled FFmpeg converts 10-bit YUV to RGB up to ~20 levels away from PyAV's) and its frame 0 equals
        PyAV's displayed frame 0 up to :data:`DECORD_PIXEL_TOLERANCE`. Otherwise PyAV decodes. Reasons that are
        known decord limitations are logged at INFO level, surprises as warnings.
        """
        if probe.orientation.mirrors or probe.bits_per_component > 8:
            logger.info(
                "%s is %s; decord does not decode it as PyAV does, so PyAV decodes it",
                path,
                "mirrored" if probe.orientation.mirrors else f"{probe.bits_per_component}-bit",
            )
            return None
        try:
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        except decord.DECORDError as err:
            logger.info("decord cannot open %s (%s); decoding it with PyAV", path, _decord_message(err))
            return None
        if len(reader) != probe.num_frames:
            # Counting the hidden packets is decord's known limitation (the probe has warned about them).
            log = logger.info if len(reader) == probe.num_packets else logger.warning
            log(
                "decord counts %d frames in %s but %d are shown; decoding it with PyAV",
                len(reader),
                path,
                probe.num_frames,
            )
            return None
        try:
            first = reader.get_batch([0]).asnumpy()[0]
            reader.seek(0)
        except decord.DECORDError as err:
            logger.info("decord cannot decode frame 0 of %s (%s); decoding it with PyAV", path, _decord_message(err))
            return None
        if first.shape != probe.first_frame.shape:
            logger.info(
                "decord shows %s as %dx%d (HxW), players as %dx%d; decoding it with PyAV",
                path,
                first.shape[0],
                first.shape[1],
                probe.height,
                probe.width,
            )
            return None
        difference = int(np.abs(first.astype(np.int16) - probe.first_frame).max())
        if difference > DECORD_PIXEL_TOLERANCE:
            logger.warning(
                "decord's frame 0 of %s differs from PyAV's by up to %d levels (more than %d); decoding it with PyAV",
                path,
                difference,
                DECORD_PIXEL_TOLERANCE,
            )
            return None
        return cls(decord, reader, path, probe, fps)

    @property
    def backend(self) -> str:
        """``decord``, or ``pyav`` once decord has failed on this file."""
        return self._backend_name if self._reader is not None else self._pyav.backend

    def close(self) -> None:
        """Drop the decord reader (it has no explicit close); later reads use PyAV."""
        self._reader = None

    def iter_chunks(self, chunk_size: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_index, frames [k, H, W, 3] uint8)`` chunks, decoded sequentially with PyAV.

        A full pass is sequential, which PyAV does at constant memory; decord 0.6 keeps decoding ahead in its
        own thread without bound when the consumer is slower (dmlc/decord#157, #208), so peak memory would
        grow with the video length. decord keeps serving random access (:meth:`get_frames`).
        """
        self._check_chunking(chunk_size, start)
        yield from self._pyav.iter_chunks(chunk_size, start)

    def iter_frame_groups(self, indices: Sequence[int], group_size: int) -> Iterator[tuple[list[int], np.ndarray]]:
        """As :meth:`VideoReader.iter_frame_groups`: with decord's random access, group by group, or with one
        sequential PyAV pass when that decodes faster (:meth:`_sequential_is_faster`); the same frames."""
        unique = sorted(set(self._check_indices(indices)))
        self._check_chunking(group_size, 0)
        groups = [unique[first : first + group_size] for first in range(0, len(unique), group_size)]
        if groups and self._sequential_is_faster(groups):
            yield from self._pyav.iter_frame_groups(unique, group_size)
            return
        for group in groups:
            yield group, self._decode_sorted(group)

    def _sequential_is_faster(self, batches: list[list[int]]) -> bool:
        """Whether one sequential PyAV pass up to the last index beats decord reading ``batches`` (each a
        ``get_batch`` call followed by a seek back to frame 0) by :data:`SEQUENTIAL_DECODING_SPEEDUP`."""
        if self._keyframes is None:
            return False
        seeking = sum(_frames_decoded_by_seeking(batch, self._keyframes) for batch in batches)
        return batches[-1][-1] + 1 <= SEQUENTIAL_DECODING_SPEEDUP * seeking

    def _decode_sorted(self, indices: list[int]) -> np.ndarray:
        frames = None if self._sequential_is_faster([indices]) else self._decode_with_decord(indices)
        return self._pyav.get_frames(indices) if frames is None else frames

    def _decode_with_decord(self, indices: list[int]) -> np.ndarray | None:
        """Frames ``[K, H, W, 3] uint8``, or None when decord is closed or has failed on this file."""
        if self._reader is None:
            return None
        try:
            frames = self._reader.get_batch(indices).asnumpy()  # type: ignore[attr-defined]
            # Stop decord's read-ahead thread from buffering frames past this batch (see iter_chunks).
            self._reader.seek(0)  # type: ignore[attr-defined]
        except self._decord.DECORDError as err:
            logger.warning(
                "decord failed on %s frames %d..%d (%s); decoding it with PyAV from now on",
                self._source,
                indices[0],
                indices[-1],
                _decord_message(err),
            )
            self._reader = None
            return None
        for index, frame in zip(indices, frames):
            self._check_frame(frame, index)
        return frames


def _frames_decoded_by_seeking(indices: list[int], keyframes: list[int]) -> int:
    """How many frames a seeking decoder (decord) decodes to return the ascending ``indices`` from a fresh start:
    each from the key frame at or before it, or onwards from the previous one when that lies after this key
    frame (``keyframes``: ascending shown-frame indices; frame 0 always starts a decoder)."""
    decoded, position = 0, -1
    for index in indices:
        keyframe = keyframes[bisect.bisect_right(keyframes, index) - 1] if keyframes and keyframes[0] <= index else 0
        start = position + 1 if keyframe <= position < index else keyframe
        decoded += index - start + 1
        position = index
    return decoded


class _PyAVVideo(VideoReader):
    _backend_name = "pyav"

    def __init__(self, path: Path, probe: _StreamProbe, fps: float) -> None:
        self._path = path
        self._orientation = probe.orientation
        self._shown_pts = probe.shown_pts
        super().__init__(str(path), **_video_file_kwargs(probe, fps))  # type: ignore[arg-type]

    def _decode_sorted(self, indices: list[int]) -> np.ndarray:
        slots = {index: slot for slot, index in enumerate(indices)}
        frames = np.empty((len(indices), self._height, self._width, 3), dtype=np.uint8)
        for index, frame in self._decode_from_start(stop=indices[-1] + 1, wanted=slots.keys()):
            frames[slots[index]] = frame
        return frames

    def iter_frame_groups(self, indices: Sequence[int], group_size: int) -> Iterator[tuple[list[int], np.ndarray]]:
        """As :meth:`VideoReader.iter_frame_groups`, from one sequential decoding pass."""
        unique = sorted(set(self._check_indices(indices)))
        self._check_chunking(group_size, 0)
        if not unique:
            return
        group: list[int] = []
        frames: list[np.ndarray] = []
        for index, frame in self._decode_from_start(stop=unique[-1] + 1, wanted=set(unique)):
            group.append(index)
            frames.append(frame)
            if len(group) == group_size or index == unique[-1]:
                yield group, np.stack(frames)
                group, frames = [], []

    def iter_chunks(self, chunk_size: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start_index, frames [k, H, W, 3] uint8)`` chunks from one sequential decoding pass."""
        self._check_chunking(chunk_size, start)
        chunk: list[np.ndarray] = []
        for index, frame in self._decode_from_start(stop=self._num_frames):
            if index < start:
                continue
            chunk.append(frame)
            if len(chunk) == chunk_size or index == self._num_frames - 1:
                yield index + 1 - len(chunk), np.stack(chunk)
                chunk = []

    def _decode_from_start(self, stop: int, wanted: Collection[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame [H, W, 3] uint8)`` in presentation order for indices ``0 .. stop - 1`` (only those
        in ``wanted`` when given: the others are decoded, which later frames need, but not converted to RGB).

        Decoded with FFmpeg's frame threads (sequential decoding is the pipeline's slowest stage on many cores).
        A threaded decoder reports an error a few packets late, so when that pass fails, an unthreaded pass from
        the start yields the frames not yielded yet and names the frame that cannot be decoded.
        """
        yielded = 0
        try:
            for index, frame in self._decode_pass(stop, threaded=True, wanted=wanted):
                yield index, frame
                yielded = index + 1
        except VideoReadError:
            for index, frame in self._decode_pass(stop, threaded=False, wanted=wanted):
                if index >= yielded:
                    yield index, frame

    def _decode_pass(
        self, stop: int, threaded: bool, wanted: Collection[int] | None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """One decoding pass of :meth:`_decode_from_start`, with or without frame threads."""
        import av

        next_index = 0
        container, stream = _open_container(self._path)
        with container:  # type: ignore[attr-defined]
            if threaded:
                stream.thread_type = "AUTO"  # type: ignore[attr-defined]
            # Frames of packets an edit list hides are decoded (later frames may refer to them) but not returned
            # by the decoder.
            for packet in container.demux(stream):  # type: ignore[attr-defined]
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as err:
                    raise _undecodable(self._path, self._packet_index(packet.pts, next_index), err) from err
                for frame in decoded:
                    if next_index >= stop:
                        return
                    if wanted is None or next_index in wanted:
                        # Contiguous: a turned view would make every chunk stacked from it strided too.
                        image = np.ascontiguousarray(self._orientation.apply(frame.to_ndarray(format="rgb24")))
                        yield next_index, self._check_frame(image, next_index)
                    next_index += 1
        if next_index < stop:
            raise VideoReadError(
                f"{self._path}: only {next_index} of {self._num_frames} frames could be decoded; frame "
                f"{next_index} is missing (the video is corrupt or truncated)"
            )

    def _packet_index(self, pts: int | None, frames_decoded: int) -> int:
        """Frame index of the packet with timestamp ``pts`` (decoding order differs with B-frames)."""
        if pts is None or self._shown_pts is None:
            return frames_decoded
        return min(bisect.bisect_left(self._shown_pts, pts), self._num_frames - 1)
