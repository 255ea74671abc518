"""Write the tracks of one answer (several objects, :mod:`videolisa.tracks`) and read them back.

:class:`TrackWriter` takes chunks of frames in order, like :class:`videolisa.mask_io.MaskWriter` (which it uses
for the per-track PNG folders and the overlay video), and writes any of:

* ``<tracks_dir>/<id>/<frame_name>.png``: one folder per track, single channel 0 / 255;
* ``<palette_dir>/<frame_name>.png``: every track in one palette PNG per frame, index k for track k, 0 for the
  background (where tracks overlap, the lowest id wins); the palette holds the overlay's colours;
* an RLE JSON file: ``{"format": "videolisa-tracks-rle", "instruction", "answer", "height", "width", "fps",
  "num_frames", "frame_names", "presence_threshold", "tracks": [{"id", "phrase", "present_frames", "scores",
  "rles": [{"size": [H, W], "counts": str}, ...]}, ...]}``, one pycocotools RLE per track and frame;
* an overlay mp4: each track tinted in its own colour (:data:`TRACK_COLORS`), the instruction as a caption and
  a legend ("1 the red circle", ...) at the bottom.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from videolisa.atomic import atomic_path, naming_errors, sweep_temp_files
from videolisa.errors import InvalidInputError
from videolisa.mask_io import DEFAULT_OVERLAY_ALPHA, MaskWriter, PathLike, _caption_font, run_all, tint_masks
from videolisa.processing.video_io import DEFAULT_FPS

TRACKS_FORMAT = "videolisa-tracks-rle"
# Track k is drawn in TRACK_COLORS[(k - 1) % len]: red first, as the single-track overlay, then well-separated hues.
TRACK_COLORS = (
    (255, 0, 0),
    (0, 200, 0),
    (30, 110, 255),
    (255, 200, 0),
    (220, 0, 220),
    (0, 210, 210),
    (255, 120, 0),
    (140, 70, 255),
    (150, 255, 120),
    (255, 120, 170),
)
_LEGEND_BACKGROUND_ALPHA = 0.6


def track_color(track_id: int) -> tuple[int, int, int]:
    """The colour of track ``track_id`` (1-based) in overlays and palette PNGs."""
    return TRACK_COLORS[(track_id - 1) % len(TRACK_COLORS)]


def _legend_label(track_id: int, phrase: str | None) -> str:
    return f"{track_id} {phrase}" if phrase else f"[SEG{track_id}]"


class _LegendBand:
    """A colour swatch and a label per track, rendered once, composited onto the bottom of every frame."""

    def __init__(self, tracks: Sequence[tuple[int, str | None]], height: int, width: int) -> None:
        font_size = max(10, height // 28)
        font = _caption_font(font_size)
        padding = max(3, font_size // 3)
        rows, x = [[]], padding  # wrap the entries over as many rows as the width needs
        for track_id, phrase in tracks:
            label = _legend_label(track_id, phrase)
            entry = font_size + padding + int(font.getlength(label)) + 2 * padding
            if rows[-1] and x + entry > width:
                rows.append([])
                x = padding
            rows[-1].append((x, track_id, label))
            x += entry
        line = font_size + padding
        band = Image.new(
            "RGBA", (width, min(height, len(rows) * line + padding)), (0, 0, 0, round(255 * _LEGEND_BACKGROUND_ALPHA))
        )
        draw = ImageDraw.Draw(band)
        for row, entries in enumerate(rows):
            top = padding + row * line
            for left, track_id, label in entries:
                draw.rectangle((left, top, left + font_size, top + font_size), fill=(*track_color(track_id), 255))
                draw.text((left + font_size + padding, top), label, font=font, fill=(255, 255, 255, 255))
        rgba = np.asarray(band).astype(np.float32)
        self._rgb, self._alpha = rgba[..., :3], rgba[..., 3:] / 255.0

    def apply(self, frames: np.ndarray) -> None:
        """Composite the legend onto the bottom rows of ``frames [F, H, W, 3] uint8``, in place."""
        rows = self._rgb.shape[0]
        bottom = frames[:, -rows:].astype(np.float32)
        frames[:, -rows:] = np.rint(bottom * (1.0 - self._alpha) + self._rgb * self._alpha).astype(np.uint8)


def tint_tracks(frames: np.ndarray, masks: np.ndarray, alpha: float = DEFAULT_OVERLAY_ALPHA) -> np.ndarray:
    """Each track in its colour: ``frames [F, H, W, 3] uint8`` and ``masks [F, K, H, W] bool`` -> ``[F, H, W, 3]``
    (tracks are blended in id order, so an overlap shows both)."""
    tinted = frames
    for k in range(masks.shape[1]):
        tinted = tint_masks(tinted, masks[:, k], track_color(k + 1), alpha)
    return tinted if masks.shape[1] else frames.copy()


def palette_indices(masks: np.ndarray) -> np.ndarray:
    """``[K, H, W] bool`` -> ``[H, W] uint8``: k + 1 for the lowest-numbered track k covering a pixel, else 0."""
    if len(masks) > 255:
        raise InvalidInputError(f"a palette PNG holds at most 255 tracks, got {len(masks)}")
    indices = np.zeros(masks.shape[1:], dtype=np.uint8)
    for k in reversed(range(len(masks))):  # lower ids are painted last, over the higher ones
        indices[masks[k]] = k + 1
    return indices


class TrackWriter:
    """Streams one video's tracks to per-track PNG folders, palette PNGs, an RLE JSON file and an overlay mp4.

    Feed :meth:`write` consecutive chunks in frame order, then :meth:`close` (or use ``with``). ``tracks`` are the
    ``(id, phrase)`` of every track (may be empty: an answer without ``[SEG]``). ``overlay_max_side`` scales the
    overlay down as :class:`~videolisa.mask_io.MaskWriter`'s does.

    The outputs of a chunk are written in parallel, as :class:`~videolisa.mask_io.MaskWriter` writes its own: the
    track folders, the overlay (tinting included), each frame's palette PNG and the RLEs run on ``threads``
    threads (default: the CPU count, at most 8); :meth:`write` returns once they are all written.
    """

    def __init__(
        self,
        frame_names: Sequence[str],
        height: int,
        width: int,
        tracks: Sequence[tuple[int, str | None]],
        *,
        tracks_dir: PathLike | None = None,
        palette_dir: PathLike | None = None,
        rle_path: PathLike | None = None,
        overlay_path: PathLike | None = None,
        instruction: str = "",
        answer: str | None = None,
        fps: float = DEFAULT_FPS,
        presence_threshold: float | None = None,
        overlay_max_side: int | None = None,
        threads: int | None = None,
    ) -> None:
        if tracks_dir is None and palette_dir is None and rle_path is None and overlay_path is None:
            raise InvalidInputError("TrackWriter needs at least one of tracks_dir, palette_dir, rle_path, overlay_path")
        if threads is not None and not (isinstance(threads, int) and threads >= 1):
            raise InvalidInputError(f"threads must be a positive integer or None, got {threads!r}")
        threads = threads or min(8, os.cpu_count() or 1)
        self._names = [str(name) for name in frame_names]
        self._tracks = [(int(track_id), phrase) for track_id, phrase in tracks]
        self._size = (int(height), int(width))
        self._header = {
            "format": TRACKS_FORMAT,
            "instruction": instruction,
            "answer": answer,
            "height": int(height),
            "width": int(width),
            "fps": float(fps),
            "num_frames": len(self._names),
            "frame_names": self._names,
            "presence_threshold": presence_threshold,
        }
        self._rle_path = None if rle_path is None else Path(rle_path)
        self._rles: list[list[dict]] = [[] for _ in self._tracks]
        self._scores: list[list[float | None]] = [[] for _ in self._tracks]
        self._palette_dir = None if palette_dir is None else Path(palette_dir)
        self._palette = [value for k in range(255) for value in (track_color(k) if k else (0, 0, 0))]
        self._written = 0
        self._writers: list[MaskWriter] = []
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="videolisa-tracks") if threads > 1 else None
        try:
            if self._palette_dir is not None:
                with naming_errors(self._palette_dir):
                    self._palette_dir.mkdir(parents=True, exist_ok=True)
                    sweep_temp_files(self._palette_dir, (f"{name}.png" for name in self._names))
            if tracks_dir is not None:
                self._writers += [
                    MaskWriter(self._names, height, width, png_dir=Path(tracks_dir) / str(track_id))
                    for track_id, _ in self._tracks
                ]
            # The overlay writer is last: it gets the tinted frames (and no mask of its own to tint).
            if overlay_path is not None:
                self._writers.append(
                    MaskWriter(
                        self._names,
                        height,
                        width,
                        overlay_path=overlay_path,
                        instruction=instruction,
                        fps=fps,
                        overlay_max_side=overlay_max_side,
                    )
                )
                self._legend = _LegendBand(self._tracks, height, width) if self._tracks else None
        except BaseException:
            self.abort()
            raise
        self._overlay = overlay_path is not None

    def __enter__(self) -> TrackWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, masks: np.ndarray, scores: np.ndarray | None = None, frames: np.ndarray | None = None) -> None:
        """The next chunk: ``masks [F, K, H, W] bool``, presence ``scores [F, K]`` (or None), and for the overlay
        ``frames [F, H, W, 3] uint8``."""
        masks = np.asarray(masks)
        if masks.dtype != np.bool_ or masks.ndim != 4 or masks.shape[1:] != (len(self._tracks), *self._size):
            raise InvalidInputError(
                f"track masks are {masks.dtype} {tuple(masks.shape)}; expected bool "
                f"[F, {len(self._tracks)}, {self._size[0]}, {self._size[1]}]"
            )
        if self._written + len(masks) > len(self._names):
            raise InvalidInputError(
                f"received track masks for {self._written + len(masks)} frames but the video has {len(self._names)}"
            )
        if self._overlay and frames is None:
            raise InvalidInputError("the overlay video needs the frames: pass frames [F, H, W, 3] uint8")
        track_writers = self._writers[:-1] if self._overlay else self._writers
        calls = [partial(writer.write, masks[:, k]) for k, writer in enumerate(track_writers)]
        if self._overlay:
            calls.append(partial(self._write_overlay, masks, np.asarray(frames)))
        if self._palette_dir is not None:
            first = self._written
            calls += [partial(self._write_palette, first + k, frame_masks) for k, frame_masks in enumerate(masks)]
        if self._rle_path is not None:
            calls.append(partial(self._encode, masks, scores))
        run_all(self._pool, calls)
        self._written += len(masks)

    def _write_overlay(self, masks: np.ndarray, frames: np.ndarray) -> None:
        tinted = tint_tracks(frames, masks)
        if self._legend is not None:
            self._legend.apply(tinted)
        self._writers[-1].write(np.zeros(masks.shape[:1] + masks.shape[2:], dtype=bool), tinted)

    def _write_palette(self, index: int, masks: np.ndarray) -> None:
        """Frame ``index``'s palette PNG of ``masks [K, H, W]``."""
        image = Image.fromarray(palette_indices(masks), mode="P")
        image.putpalette(self._palette)
        with atomic_path(self._palette_dir / f"{self._names[index]}.png") as temp_path:
            image.save(temp_path, format="PNG", compress_level=1)

    def _encode(self, masks: np.ndarray, scores: np.ndarray | None) -> None:
        from pycocotools import mask as mask_utils

        for k in range(len(self._tracks)):
            encoded = mask_utils.encode(np.asfortranarray(masks[:, k].transpose(1, 2, 0).astype(np.uint8)))
            self._rles[k] += [
                {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded
            ]
            self._scores[k] += [None] * len(masks) if scores is None else [round(float(s), 6) for s in scores[:, k]]

    def close(self) -> None:
        """Finish every output; raises (and discards the unfinished files) if frames are missing."""
        if self._written != len(self._names):
            self.abort()
            raise InvalidInputError(f"TrackWriter closed after {self._written} of {len(self._names)} frames")
        self._shutdown_pool()
        for writer in self._writers:
            writer.close()
        if self._rle_path is not None:
            record = dict(
                self._header,
                tracks=[
                    {
                        "id": track_id,
                        "phrase": phrase,
                        "present_frames": [t for t, rle in enumerate(rles) if _rle_is_set(rle)],
                        "scores": scores,
                        "rles": rles,
                    }
                    for (track_id, phrase), rles, scores in zip(self._tracks, self._rles, self._scores)
                ],
            )
            with atomic_path(self._rle_path) as temp_path:
                temp_path.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")

    def abort(self) -> None:
        """Discard the unfinished files (PNGs already written stay: each is complete)."""
        self._shutdown_pool()
        for writer in self._writers:
            writer.abort()

    def _shutdown_pool(self) -> None:
        """Stop the writing threads (no write is running: :meth:`write` waits for its chunk)."""
        if self._pool is not None:
            self._pool.shutdown()


def _rle_is_set(rle: dict) -> bool:
    from pycocotools import mask as mask_utils

    return bool(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


@dataclass(frozen=True)
class VideoTrack:
    """One track read back: ``masks [T, H, W] bool``, ``scores`` (None entries when not recorded)."""

    id: int
    phrase: str | None
    masks: np.ndarray
    scores: list[float | None]
    present_frames: list[int]


def read_tracks_json(path: PathLike) -> tuple[dict, list[VideoTrack]]:
    """Read a file written by :class:`TrackWriter` -> ``(header without the tracks, tracks)``."""
    from pycocotools import mask as mask_utils

    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInputError(f"cannot read {path}: {err}; expected a {TRACKS_FORMAT} JSON file") from err
    if not isinstance(record, dict) or record.get("format") != TRACKS_FORMAT:
        raise InvalidInputError(f"{path} is not a {TRACKS_FORMAT} file (its 'format' field is missing or different)")
    size = (record["height"], record["width"])
    tracks = []
    for track in record.pop("tracks"):
        rles = [{"size": rle["size"], "counts": rle["counts"].encode("ascii")} for rle in track["rles"]]
        masks = mask_utils.decode(rles).transpose(2, 0, 1).astype(bool) if rles else np.zeros((0, *size), dtype=bool)
        if masks.shape != (record["num_frames"], *size):
            raise InvalidInputError(
                f"{path}: track {track['id']} has masks {masks.shape}, expected {(record['num_frames'], *size)}"
            )
        tracks.append(VideoTrack(track["id"], track["phrase"], masks, track["scores"], track["present_frames"]))
    return record, tracks
