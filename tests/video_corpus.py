"""A corpus of real encodings, written with PyAV's encoders, for the reader and ``videolisa infer`` tests.

Every clip shows a white square moving down and right over a dark background (:func:`draw_frames`, drawn in
the DISPLAYED orientation). A rotated clip stores the frames turned the other way plus a display matrix (or the
legacy ``rotate`` tag), so the square is where :func:`draw_frames` put it only if the rotation is applied. The
square stays in the lower half of the picture, below the caption band of the overlay video; :func:`find_square`
locates it in a decoded frame (plain, or tinted red by the overlay) to check order and orientation.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

DISPLAYED_SIZE = (96, 128)  # height, width of most clips as displayed
FPS = 25
BACKGROUND_GREEN = 24  # green (and blue) of the background; the square is white
# Square centres (row, column) found in a decoded frame are within this many pixels of the drawn ones.
POSITION_TOLERANCE = 1.5


@dataclass(frozen=True)
class Clip:
    """A generated video file and what a player shows of it."""

    path: Path
    displayed: np.ndarray  # [N, H, W, 3] uint8: the frames shown, as drawn before encoding
    # A substring of the one warning line opening the clip logs (None: it logs no warning).
    warning: str | None = None
    max_mean_error: float = 8.0  # mean absolute difference between decoded and drawn frames (codec loss)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        """Frames shown."""
        return len(self.displayed)


# ------------------------------------------------------------------------------------------------ pixels
def square_centre(index: int, num_frames: int, height: int, width: int) -> tuple[float, float]:
    """Centre (row, column) of the square in displayed frame ``index``: a diagonal through the lower half."""
    progress = index / max(num_frames - 1, 1)
    return height * (0.6 + 0.25 * progress), width * (0.2 + 0.6 * progress)


def square_side(height: int, width: int) -> int:
    return max(6, min(height, width) // 6)


def draw_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """``[T, H, W, 3] uint8``: a red gradient (left to right) on a dark background and the white square."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 0] = np.linspace(24, 120, width).astype(np.uint8)[None, None]
    frames[..., 1:] = BACKGROUND_GREEN
    side = square_side(height, width)
    for index in range(num_frames):
        row, column = square_centre(index, num_frames, height, width)
        top, left = round(row - side / 2), round(column - side / 2)
        frames[index, top : top + side, left : left + side] = 255
    return frames


def find_square(frame: np.ndarray) -> tuple[float, float]:
    """Centre (row, column) of the bright square in ``frame [H, W, 3]``, searched in the lower half.

    Green separates it from everything else: 255 on the square (128 where the overlay tints it 50% red),
    24 (12 tinted) on the background.
    """
    height = frame.shape[0]
    rows, columns = np.nonzero(frame[height // 2 :, :, 1] > 80)
    assert len(rows), "no bright square in the lower half of the frame"
    return float(rows.mean()) + height // 2, float(columns.mean())


def assert_square_path(frames: np.ndarray, expected: np.ndarray, what: str) -> None:
    """The square is at the same place in each of ``frames`` as in ``expected`` (both ``[N, H, W, 3]``)."""
    assert frames.shape[0] == expected.shape[0], f"{what}: {frames.shape[0]} frames, expected {expected.shape[0]}"
    for index, (frame, reference) in enumerate(zip(frames, expected)):
        found, drawn = np.array(find_square(frame)), np.array(find_square(reference))
        assert np.abs(found - drawn).max() <= POSITION_TOLERANCE, (
            f"{what}: frame {index} has the square at {found.round(1).tolist()}, expected {drawn.round(1).tolist()}"
        )


# ------------------------------------------------------------------------------------------------ writers
def encode(
    path: Path,
    stored: np.ndarray,
    codec: str,
    pix_fmt: str = "yuv420p",
    *,
    options: dict[str, str] | None = None,
    rotation: tuple[int, bool] | None = None,
    tags: dict[str, str] | None = None,
    container_format: str | None = None,
    timestamps_ms: list[int] | None = None,
    shift_frames: int = 0,
    drop_packets: int = 0,
    before_video: Callable[[av.container.OutputContainer], list[av.Packet]] | None = None,
) -> Path:
    """Encode ``stored`` frames ``[T, H, W, 3]`` with PyAV.

    ``rotation=(degrees counter-clockwise, mirror)`` writes a display matrix; ``tags`` become stream metadata
    (e.g. the legacy ``rotate``); ``timestamps_ms`` gives each frame's time (variable frame rate);
    ``shift_frames`` moves every packet that many frames earlier, so the first timestamps are negative (an MP4
    muxer then writes an edit list hiding them); ``drop_packets`` leaves out the first packets (in decoding order),
    as a cut without re-encoding that misses the key frame; ``before_video`` adds a stream before the video stream and
    returns its packets, which are written before the video's.
    """
    with av.open(str(path), "w", format=container_format) as container:
        first_packets = [] if before_video is None else before_video(container)
        stream = container.add_stream(codec, rate=FPS, options=options or {})
        stream.height, stream.width = stored.shape[1:3]
        stream.pix_fmt = pix_fmt
        if timestamps_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation[0], hflip=rotation[1])
        stream.metadata.update(tags or {})
        _mux(container, first_packets, 0)  # the header is written here, after every stream was added
        packets = []
        for index, image in enumerate(stored):
            frame = to_palette_frame(image) if pix_fmt == "pal8" else av.VideoFrame.from_ndarray(image, format="rgb24")
            if timestamps_ms is not None:
                frame.pts, frame.time_base = timestamps_ms[index], Fraction(1, 1000)
            packets += stream.encode(frame)
        _mux(container, (packets + stream.encode(None))[drop_packets:], shift_frames)
    return path


def to_palette_frame(image: np.ndarray) -> av.VideoFrame:
    """A ``pal8`` frame of an image with at most 256 colours (the drawn frames have about 100): lossless."""
    colours, indices = np.unique(image.reshape(-1, 3), axis=0, return_inverse=True)
    assert len(colours) <= 256, f"{len(colours)} colours do not fit a palette"
    palette = np.zeros((256, 4), np.uint8)
    palette[: len(colours), 0] = 255  # ARGB: opaque
    palette[: len(colours), 1:] = colours
    return av.VideoFrame.from_ndarray((indices.reshape(image.shape[:2]).astype(np.uint8), palette), format="pal8")


def _mux(container: av.container.OutputContainer, packets: list[av.Packet], shift_frames: int) -> None:
    for packet in packets:
        if shift_frames:
            # The encoder's time base is 1/FPS: one tick per frame.
            packet.pts -= shift_frames
            packet.dts -= shift_frames
        container.mux(packet)


def add_audio(container: av.container.OutputContainer) -> list[av.Packet]:
    """An AAC stream (a quiet tone) as stream 0, before the video; returns its packets."""
    stream = container.add_stream("aac", rate=16000)
    packets = []
    for index in range(4):
        samples = (0.1 * np.sin(np.arange(1024, dtype=np.float32) / 5))[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, index * 1024, Fraction(1, 16000)
        packets += stream.encode(frame)
    return packets + stream.encode(None)


def shorten_edit_list(path: Path, frames: int) -> Path:
    """Shorten the MP4's (single) edit list by ``frames`` frames, which hides the last ones, in place.

    Edits the first entry of the ``elst`` box (version 0: 32-bit segment duration in the movie time scale of
    ``mvhd``), as a clip cut without re-encoding can end up with.
    """
    data = bytearray(path.read_bytes())
    movie_header, edit_list = data.find(b"mvhd"), data.find(b"elst")
    assert movie_header > 0 and edit_list > 0 and data[edit_list + 4] == 0, "expected a version-0 edit list"
    (timescale,) = struct.unpack(">I", data[movie_header + 16 : movie_header + 20])
    (duration,) = struct.unpack(">I", data[edit_list + 12 : edit_list + 16])
    data[edit_list + 12 : edit_list + 16] = struct.pack(">I", duration - frames * timescale // FPS)
    path.write_bytes(bytes(data))
    return path


def replace_codec_tag(source: Path, target: Path, old: bytes, new: bytes) -> Path:
    """Copy of an MP4 whose sample description names codec ``new`` instead of ``old`` (no decoder knows it)."""
    data = bytearray(source.read_bytes())
    position = data.find(old, data.find(b"stsd"))
    assert position > 0, f"no {old!r} sample entry"
    data[position : position + 4] = new
    target.write_bytes(bytes(data))
    return target


# ------------------------------------------------------------------------------------------------ the corpus
def _plain(
    root: Path,
    name: str,
    codec: str,
    pix_fmt: str = "yuv420p",
    *,
    num_frames: int = 6,
    size: tuple[int, int] = DISPLAYED_SIZE,
    max_mean_error: float = 8.0,
    **kwargs: object,
) -> Clip:
    frames = draw_frames(num_frames, *size)
    return Clip(
        encode(root / name, frames, codec, pix_fmt, **kwargs),
        frames,  # type: ignore[arg-type]
        max_mean_error=max_mean_error,
    )


def _rotated(
    root: Path, name: str, counter_clockwise: int, *, mirror: bool = False, codec: str = "libx264", tag: bool = False
) -> Clip:
    """A clip displayed as drawn, stored turned back; ``tag`` writes the legacy ``rotate`` tag instead."""
    displayed = draw_frames(6, DISPLAYED_SIZE[1], DISPLAYED_SIZE[0])  # portrait, like a phone's
    stored = np.rot90(displayed, -counter_clockwise // 90, axes=(1, 2))
    if mirror:  # displayed = transposed(stored) for a quarter turn clockwise plus a horizontal mirror
        stored = displayed.transpose(0, 2, 1, 3)
    if tag:
        path = encode(root / name, np.ascontiguousarray(stored), codec, tags={"rotate": str(-counter_clockwise % 360)})
    else:
        path = encode(root / name, np.ascontiguousarray(stored), codec, rotation=(counter_clockwise, mirror))
    return Clip(path, displayed)


def _edit_listed(root: Path) -> Clip:
    """The original repository's example clip in small: H.264 with B-frames whose first two packets have negative
    timestamps (the muxer's edit list hides them) and an edit list one frame short (hiding the last)."""
    frames = draw_frames(20, *DISPLAYED_SIZE)
    path = encode(root / "edit_list.mp4", frames, "libx264", options={"bf": "2"}, shift_frames=2)
    shorten_edit_list(path, 1)
    return Clip(path, frames[2:-1], warning="20 packets, 17 frames shown")


CORPUS: dict[str, Callable[[Path], Clip]] = {
    "h264_bframes": lambda root: _plain(root, "h264_bframes.mp4", "libx264", num_frames=10, options={"bf": "3"}),
    "edit_list": _edit_listed,
    # Four frames at 25 fps, then four at 10 fps.
    # A cut that misses the key frame: the decoder drops the 4 frames before the next one (every 6th).
    "cut_before_key_frame": lambda root: Clip(
        encode(
            root / "cut_before_key_frame.mkv",
            draw_frames(12, *DISPLAYED_SIZE),
            "libx264",
            drop_packets=2,
            options={"g": "6", "keyint_min": "6", "sc_threshold": "0", "bf": "0"},
        ),
        draw_frames(12, *DISPLAYED_SIZE)[6:],
        warning="10 packets, 6 frames shown (the decoder drops 4",
    ),
    "variable_rate": lambda root: _plain(
        root, "variable_rate.mkv", "libx264", num_frames=8, timestamps_ms=[0, 40, 80, 120, 220, 320, 420, 520]
    ),
    "rotate_90": lambda root: _rotated(root, "rotate_90.mp4", -90),  # a quarter turn clockwise: phone portrait
    "rotate_270": lambda root: _rotated(root, "rotate_270.mov", 90),
    "rotate_tag": lambda root: _rotated(root, "rotate_tag.mkv", -90, tag=True),  # legacy tag, decord reads it too
    "rotate_mkv": lambda root: _rotated(root, "rotate_mkv.mkv", -90),  # a Matroska display matrix
    "rotate_mirror": lambda root: _rotated(root, "rotate_mirror.mp4", -90, mirror=True),
    "odd_yuv444": lambda root: _plain(root, "odd_yuv444.mkv", "libx264", "yuv444p", size=(61, 97)),
    "hevc_10bit": lambda root: _plain(
        root, "hevc_10bit.mp4", "libx265", "yuv420p10le", options={"x265-params": "log-level=error"}
    ),
    "mjpeg_full_range": lambda root: _plain(root, "mjpeg_full_range.avi", "mjpeg", "yuvj422p"),
    "prores": lambda root: _plain(root, "prores.mov", "prores_ks", "yuv422p10le"),
    "vp9": lambda root: _plain(root, "vp9.webm", "libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8"}),
    "av1": lambda root: _plain(root, "av1.mkv", "libsvtav1", options={"preset": "12"}),
    "grayscale": lambda root: _plain(root, "grayscale.mkv", "ffv1", "gray", max_mean_error=30.0),  # colour lost
    "audio_first": lambda root: _plain(root, "audio_first.mp4", "libx264", before_video=add_audio),
    "one_frame": lambda root: _plain(root, "one_frame.mp4", "libx264", num_frames=1),
    "gif": lambda root: _plain(root, "animated.gif", "gif", "pal8"),
    "4k": lambda root: _plain(
        root, "4k.mp4", "libx264", num_frames=3, size=(2160, 3840), options={"preset": "ultrafast"}
    ),
}
