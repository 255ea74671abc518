"""The Gradio demo: upload a video (or pick an example), type an instruction, watch the segmented result.

:func:`build_demo` returns the ``gr.Blocks`` app around one loaded :class:`~videolisa.predictor.VideoLisaPredictor`
(the one inference path); :func:`launch_demo` serves it. ``demo/app.py`` is the command-line entry point.

One request (:func:`segment_for_demo`, plain Python, no Gradio) streams the predictor's masks into a
:class:`~videolisa.mask_io.MaskWriter` that writes, in one pass over the video, the overlay mp4, a PNG per
frame and the COCO-RLE JSON; the PNGs and the JSON are then zipped for download, and the dense (key) frames
are kept as overlay images for the gallery. The page also shows the sampled frame indices and timings.

Safety for a shared machine: the queue runs one request at a time (others wait in line instead of running
out of memory) and holds at most ``max_queue_size``; uploads over ``max_upload_mb`` are refused by Gradio;
frames over ``max_frame_megapixels`` are refused from the file's header before anything is decoded (a small file
can hold huge frames), and videos over ``max_video_seconds`` / ``max_frames`` / ``max_video_megapixels`` as soon
as the video is opened, before its frames are decoded; a request that runs longer than ``max_request_seconds`` is
stopped; each with a message in the page. The server binds to 127.0.0.1 unless told otherwise, warns when it
serves the network without a login, and takes Gradio's ``auth``. SIGTERM ends a blocking server as Ctrl-C
does, so the request folders are removed either way. Gradio is imported only inside :func:`build_demo` and
:func:`launch_demo`, so ``import videolisa.demo`` stays cheap.
"""

from __future__ import annotations

import html
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from videolisa.constants import MASK_LOGIT_THRESHOLD
from videolisa.errors import InvalidInputError, VideoLisaError
from videolisa.mask_io import DEFAULT_OVERLAY_ALPHA, DEFAULT_OVERLAY_COLOR, MaskWriter, atomic_path, make_overlay_image
from videolisa.processing.video_io import VIDEO_EXTENSIONS, VideoReader, open_video

if TYPE_CHECKING:
    import gradio as gr

    from videolisa.predictor import VideoLisaPredictor

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# USER:PASSWORD for the page's login; an environment variable keeps the password out of the process list.
AUTH_ENV = "VIDEOLISA_DEMO_AUTH"
# Sidecar written by `videolisa synth --layout mp4` in each video's folder (see videolisa.synthetic).
SYNTHETIC_INSTRUCTIONS_FILE = "instructions.json"
_API_NAME = "segment"
_THRESHOLD_RANGE = (-10.0, 10.0)


@dataclass(frozen=True)
class DemoLimits:
    """What one request may ask of the shared server.

    Attributes:
        max_upload_mb: largest video file accepted, in megabytes (10**6 bytes).
        max_video_seconds: longest video accepted (frames / fps).
        max_frames: most frames accepted (bounds the work of high-frame-rate videos).
        max_frame_megapixels: largest frame accepted, in 10**6 pixels (default: 4096x2160 fits). A file of a
            few KB can hold 4096x4096 frames that take gigabytes to decode and write.
        max_video_megapixels: most pixels of all frames together, in 10**6 (frames x height x width).
        max_request_seconds: a request still running after this long is stopped with a message.
        max_queue_size: requests waiting in line at most; further users are told the queue is full.
        keep_results_seconds: output files of a request are deleted after this long.
    """

    max_upload_mb: float = 200.0
    max_video_seconds: float = 120.0
    max_frames: int = 3000
    max_frame_megapixels: float = 8.9
    max_video_megapixels: float = 2000.0
    max_request_seconds: float = 600.0
    max_queue_size: int = 16
    keep_results_seconds: float = 3600.0

    def __post_init__(self) -> None:
        for name in (
            "max_upload_mb",
            "max_video_seconds",
            "max_frames",
            "max_frame_megapixels",
            "max_video_megapixels",
            "max_request_seconds",
            "max_queue_size",
            "keep_results_seconds",
        ):
            if not getattr(self, name) > 0:
                raise InvalidInputError(f"demo limit {name} must be positive, got {getattr(self, name)!r}")

    def describe(self) -> str:
        """The limits as one sentence for the page."""
        return (
            f"Videos up to {self.max_video_seconds:g} s, {self.max_frames} frames and {self.max_upload_mb:g} MB, "
            f"frames up to {self.max_frame_megapixels:g} megapixels and {self.max_video_megapixels:g} "
            f"megapixels in all; a request may take {self.max_request_seconds:g} s; requests run one at a time "
            "in a queue."
        )

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1_000_000)


@dataclass(frozen=True)
class DemoConfig:
    """The page's advanced settings for one request (``None`` frame counts: the model config's)."""

    frames_sparse: int | None = None
    frames_dense: int | None = None
    threshold: float = MASK_LOGIT_THRESHOLD
    overlay_color: tuple[int, int, int] = DEFAULT_OVERLAY_COLOR
    overlay_alpha: float = DEFAULT_OVERLAY_ALPHA
    refine: bool = False  # SAM 2 refinement, offered when the demo's predictor has a refiner (--refine sam2)
    # The model writes its answer; every [SEG] in it is a track in its own colour (overlay_color is then unused),
    # and frames under the presence threshold are empty (videolisa.tracks).
    generate: bool = False


@dataclass
class DemoResult:
    """What one request produces.

    Attributes:
        overlay_video: mp4 of the masks tinted over the frames, the instruction as a caption.
        masks_zip: ``masks/<frame>.png`` (0/255) for every frame plus ``masks.json`` (COCO RLE).
        rle_json: the ``masks.json`` also inside the zip.
        key_frames: ``(overlay [H, W, 3] uint8, caption)`` for each dense frame, in frame order.
        frame_indices: ``{"sparse": [...], "dense": [...]}`` video-frame indices the model read.
        timings: seconds and throughput of the request.
        answer: ``{"answer": generated text or None (teacher-forced), "tracks": [{"id", "phrase",
            "present_frames"}, ...]}``. With ``generate`` the zip holds ``tracks/<id>/<frame>.png``,
            ``palette/<frame>.png`` and a per-track ``masks.json`` (:mod:`videolisa.track_io`) instead.
    """

    overlay_video: Path
    masks_zip: Path
    rle_json: Path
    key_frames: list[tuple[np.ndarray, str]]
    frame_indices: dict[str, list[int]]
    timings: dict[str, float]
    answer: dict[str, Any]


@dataclass(frozen=True)
class DemoExample:
    """One entry of the example gallery: a video file and an instruction for it ("" when none is given)."""

    video: Path
    instruction: str


# ----------------------------------------------------------------------------------------------------------
# Examples


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"cannot read example instructions {path}: {error}; expected a JSON file") from error


def _require_strings(values: Any, path: Path, what: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(value, str) and value.strip() for value in values):
        raise InvalidInputError(f"{path}: {what} must be a list of non-empty strings")
    return [value.strip() for value in values]


def _sidecar_instructions(video: Path) -> list[str] | None:
    """Instructions for ``video`` from ``<name>.json`` (``{"instructions": [...]}``) or from the synthetic
    mp4 layout's ``instructions.json`` (``{"video": "<name>.mp4", "expressions": [{"text": ...}]}``)."""
    own = video.with_suffix(".json")
    if own.is_file():
        record = _read_json(own)
        if not isinstance(record, dict) or "instructions" not in record:
            raise InvalidInputError(f'{own}: expected {{"instructions": ["...", ...]}}')
        return _require_strings(record["instructions"], own, "'instructions'")
    shared = video.parent / SYNTHETIC_INSTRUCTIONS_FILE
    if shared.is_file():
        record = _read_json(shared)
        if isinstance(record, dict) and record.get("video") == video.name:
            expressions = record.get("expressions")
            if not isinstance(expressions, list) or not all(isinstance(e, dict) for e in expressions):
                raise InvalidInputError(f"{shared}: 'expressions' must be a list of {{\"text\": ...}} objects")
            return _require_strings([e.get("text") for e in expressions], shared, "every expression's 'text'")
    return None


def find_examples(directory: PathLike) -> list[DemoExample]:
    """Example videos in ``directory`` and its direct sub-folders, one entry per (video, instruction).

    A video's instructions come from a sidecar JSON next to it: ``<name>.json`` holding
    ``{"instructions": ["...", ...]}``, or the ``instructions.json`` that ``videolisa synth --layout mp4``
    writes in each video's folder. A video without a sidecar is listed once with an empty instruction
    (and a log line), so every video in the folder is offered. Sorted by path.
    """
    root = Path(directory)
    if not root.is_dir():
        raise InvalidInputError(f"examples folder {root} does not exist; expected a folder of videos")
    videos = sorted(
        path
        for pattern in ("*", "*/*")
        for path in root.glob(pattern)
        if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS
    )
    examples = []
    for video in videos:
        instructions = _sidecar_instructions(video)
        if instructions is None:
            logger.info(
                "example %s has no instructions sidecar (%s); listed with an empty instruction",
                video,
                video.with_suffix(".json").name,
            )
            instructions = [""]
        examples.extend(DemoExample(video, instruction) for instruction in instructions)
    return examples


# ----------------------------------------------------------------------------------------------------------
# One request


def parse_color(value: str) -> tuple[int, int, int]:
    """A colour picker's value (``"#ff0000"``, ``"rgba(255, 0, 0, 1)"``, ``"red"``) -> ``(255, 0, 0)``."""
    from PIL import ImageColor

    try:
        return tuple(ImageColor.getrgb(value.strip())[:3])  # type: ignore[return-value]
    except ValueError as error:
        raise InvalidInputError(f"overlay colour {value!r} is not a colour; expected e.g. '#ff0000'") from error


def _file_stem(path: Path) -> str:
    """A download-friendly stem of an uploaded file name."""
    return re.sub(r"[^\w.-]+", "_", path.stem).strip("._")[:60] or "video"


def _check_upload(path: Path, limits: DemoLimits) -> None:
    if not path.is_file():
        raise InvalidInputError(f"{path.name} was not received; upload the video again")
    size = path.stat().st_size
    if size > limits.max_upload_bytes:
        raise InvalidInputError(
            f"{path.name} is {size / 1e6:.1f} MB; this demo accepts videos up to {limits.max_upload_mb:g} MB"
        )


def _check_length(name: str, num_frames: int, fps: float, limits: DemoLimits) -> None:
    seconds = num_frames / fps
    if num_frames > limits.max_frames or seconds > limits.max_video_seconds:
        raise InvalidInputError(
            f"{name} is too long: {num_frames} frames, {seconds:.1f} s at {fps:g} fps; this demo accepts videos up "
            f"to {limits.max_video_seconds:g} s and {limits.max_frames} frames. Trim the video and try again."
        )


def _megapixels(value: float) -> str:
    """``16.777`` -> ``"16.8"``, ``0.0409`` -> ``"0.0409"``, ``2400.4`` -> ``"2,400"``."""
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def _check_frame_pixels(name: str, height: int, width: int, limits: DemoLimits) -> None:
    """Refuse frames over ``max_frame_megapixels``."""
    frame_megapixels = height * width / 1e6
    if frame_megapixels > limits.max_frame_megapixels:
        raise InvalidInputError(
            f"{name} has frames of {width}x{height} ({_megapixels(frame_megapixels)} megapixels); this demo accepts "
            f"frames up to {limits.max_frame_megapixels:g} megapixels (4096x2160 is 8.8). Scale the video down and "
            "try again."
        )


def _check_header_frame_pixels(path: Path, limits: DemoLimits) -> None:
    """Refuse frames over ``max_frame_megapixels`` from the size in the file's header, before ``open_video``
    decodes a first frame to check it (a few-KB file can hold 16384x16384 frames). A file PyAV cannot parse
    is left to ``open_video``, whose error names what is wrong with it."""
    import av

    try:
        with av.open(str(path)) as container:
            streams = container.streams.video
            height, width = (streams[0].codec_context.height, streams[0].codec_context.width) if streams else (0, 0)
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return
    _check_frame_pixels(path.name, height, width, limits)


def _check_pixels(name: str, num_frames: int, height: int, width: int, limits: DemoLimits) -> None:
    """Refuse frames over ``max_frame_megapixels`` or a video over ``max_video_megapixels`` (from the size and
    frame count the opened video reports, before the frames are decoded)."""
    _check_frame_pixels(name, height, width, limits)
    total = height * width / 1e6 * num_frames
    if total > limits.max_video_megapixels:
        raise InvalidInputError(
            f"{name} has too many pixels: {num_frames} frames of {width}x{height}, {_megapixels(total)} megapixels in "
            f"all; this demo accepts up to {limits.max_video_megapixels:g} megapixels per video. Trim or scale the "
            "video down and try again."
        )


class _Deadline:
    """The end of a request's time budget (``max_request_seconds`` from its start)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.perf_counter() + seconds

    def check(self, done: int, total: int) -> None:
        """Raise once the budget is spent (``done`` of ``total`` frames segmented so far)."""
        if time.perf_counter() > self._end:
            raise InvalidInputError(
                f"the request was stopped after {self.seconds:g} s, the time this demo allows one request, with "
                f"{done} of {total} frames segmented. Try a shorter or smaller video."
            )


def _zip_masks(zip_path: Path, out: Path, files: Sequence[str]) -> None:
    """``files`` (paths relative to ``out``: the PNGs and the RLE JSON) into one zip, written atomically."""
    with atomic_path(zip_path) as temp_path, zipfile.ZipFile(temp_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            archive.write(out / name, name)


def _write_outputs(
    predictor: VideoLisaPredictor,
    reader: VideoReader,
    instruction: str,
    settings: DemoConfig,
    key_indices: set[int],
    paths: dict[str, Path],
    progress: Callable[[int, int], None] | None,
    deadline: _Deadline,
) -> tuple[list[tuple[np.ndarray, str]], dict[str, Any]]:
    """Stream the masks into a MaskWriter (``paths``: png_dir, rle_path, overlay_path) in one pass over the
    video, checking ``deadline`` after every frame; returns the tinted key frames ``(image [H, W, 3] uint8,
    caption)`` in frame order and :attr:`DemoResult.answer` (no generated answer, one track)."""
    key_frames = []
    present: list[int] = []
    with MaskWriter(
        reader.frame_names,
        reader.height,
        reader.width,
        instruction=instruction,
        fps=reader.fps,
        overlay_color=settings.overlay_color,
        overlay_alpha=settings.overlay_alpha,
        **paths,
    ) as writer:
        for item in predictor.iter_segment(
            reader,
            [instruction],
            frames_sparse=settings.frames_sparse,
            frames_dense=settings.frames_dense,
            threshold=settings.threshold,
            return_frames=True,
            progress=progress or False,
            refine=settings.refine and predictor.refiner is not None,
        ):
            deadline.check(item.index + 1, reader.num_frames)
            writer.write(item.masks[:1], item.frame[None])
            if item.masks[0].any():
                present.append(item.index)
            if item.index in key_indices:
                image = make_overlay_image(item.frame, item.masks[0], settings.overlay_color, settings.overlay_alpha)
                key_frames.append((image, f"frame {item.index}"))
    return key_frames, {"answer": None, "tracks": [{"id": 1, "phrase": None, "present_frames": present}]}


def _write_track_outputs(
    predictor: VideoLisaPredictor,
    reader: VideoReader,
    instruction: str,
    settings: DemoConfig,
    key_indices: set[int],
    paths: dict[str, Path],
    progress: Callable[[int, int], None] | None,
    deadline: _Deadline,
) -> tuple[list[tuple[np.ndarray, str]], dict[str, Any]]:
    """Generation mode of :func:`_write_outputs`: the model's answer, one track per ``[SEG]`` streamed into a
    :class:`~videolisa.track_io.TrackWriter` (``paths``: tracks_dir, palette_dir, rle_path, overlay_path);
    returns the key frames (every track in its colour) and the answer with each track's present frames."""
    from videolisa.generation import GENERATE
    from videolisa.track_io import TrackWriter, tint_tracks

    answered = predictor.answer_tracks(
        reader, [instruction], answer=GENERATE, frames_sparse=settings.frames_sparse, frames_dense=settings.frames_dense
    )
    tracks, answer = answered.tracks[0], answered.answers[0]
    present: list[list[int]] = [[] for _ in tracks]
    key_frames = []
    with TrackWriter(
        reader.frame_names,
        reader.height,
        reader.width,
        tracks,
        instruction=instruction,
        answer=answer,
        fps=reader.fps,
        **paths,
    ) as writer:
        for item in answered.frames(
            settings.threshold,
            return_frames=True,
            progress=progress or False,
            refine=settings.refine and predictor.refiner is not None,
        ):
            deadline.check(item.index + 1, reader.num_frames)
            writer.write(item.track_masks[None], None if item.scores is None else item.scores[None], item.frame[None])
            for k, mask in enumerate(item.track_masks):
                if mask.any():
                    present[k].append(item.index)
            if item.index in key_indices:
                key_frames.append((tint_tracks(item.frame[None], item.track_masks[None])[0], f"frame {item.index}"))
    return key_frames, {
        "answer": answer,
        "tracks": [
            {"id": track_id, "phrase": phrase, "present_frames": frames}
            for (track_id, phrase), frames in zip(tracks, present)
        ],
    }


def segment_for_demo(
    predictor: VideoLisaPredictor,
    video: PathLike,
    instruction: str,
    out_dir: PathLike,
    settings: DemoConfig = DemoConfig(),
    limits: DemoLimits = DemoLimits(),
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Segment ``video`` from ``instruction`` and write the demo's outputs into ``out_dir``.

    Checks the file size and the frame size (from the file's header) against ``limits`` before anything is
    decoded, the video's length and total pixels as soon as it is opened, all before any model work, and
    stops the request once it has run for ``limits.max_request_seconds``. ``progress`` is called with
    ``(frames_done, total)`` after each chunk.
    Raises :class:`~videolisa.errors.VideoLisaError` (with a message for the page) for an empty instruction,
    an unreadable video, one over the limits, or a request out of time.
    """
    start = time.perf_counter()
    deadline = _Deadline(limits.max_request_seconds)
    instruction = (instruction or "").strip()
    if not instruction:
        raise InvalidInputError("the instruction is empty: type what to segment, e.g. 'the red square moving left'")
    path, out = Path(video), Path(out_dir)
    _check_upload(path, limits)
    _check_header_frame_pixels(path, limits)
    stem = _file_stem(path)
    folders = (
        {"tracks_dir": out / "tracks", "palette_dir": out / "palette"}
        if settings.generate
        else {"png_dir": out / "masks"}
    )
    paths = {**folders, "rle_path": out / "masks.json", "overlay_path": out / f"{stem}_overlay.mp4"}
    with open_video(path) as reader:
        _check_length(path.name, reader.num_frames, reader.fps, limits)
        _check_pixels(path.name, reader.num_frames, reader.height, reader.width, limits)
        sparse, dense = predictor.sample_frames(reader.num_frames, settings.frames_sparse, settings.frames_dense)
        write = _write_track_outputs if settings.generate else _write_outputs
        key_frames, answer = write(predictor, reader, instruction, settings, set(dense), paths, progress, deadline)
        frame_names, num_frames = reader.frame_names, reader.num_frames
    masks_zip = out / f"{stem}_masks.zip"
    png_folders = (
        [f"tracks/{track['id']}" for track in answer["tracks"]] + ["palette"] if settings.generate else ["masks"]
    )
    pngs = [f"{folder}/{name}.png" for folder in png_folders for name in frame_names]
    _zip_masks(masks_zip, out, [*pngs, "masks.json"])
    total = time.perf_counter() - start
    return DemoResult(
        overlay_video=paths["overlay_path"],
        masks_zip=masks_zip,
        rle_json=paths["rle_path"],
        key_frames=key_frames,
        frame_indices={"sparse": sparse, "dense": dense},
        timings={"frames": num_frames, "seconds": round(total, 3), "frames_per_second": round(num_frames / total, 2)},
        answer=answer,
    )


class _ResultFolders:
    """One temporary folder per request under a root that lives as long as the app; folders older than
    ``keep_seconds`` are removed when a new one is made (Gradio serves its own copies of the files)."""

    def __init__(self, keep_seconds: float) -> None:
        self._root = tempfile.TemporaryDirectory(prefix="videolisa-demo-")
        self._keep_seconds = keep_seconds

    def new_folder(self) -> Path:
        """Make an empty folder for a request, after deleting expired ones."""
        root = Path(self._root.name)
        now = time.time()
        for folder in root.iterdir():
            if now - folder.stat().st_mtime > self._keep_seconds:
                shutil.rmtree(folder, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="request-", dir=root))

    def discard(self, folder: Path) -> None:
        """Delete a request's folder now (the request failed: nothing in it is served)."""
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# The Gradio app


def _page_message(error: VideoLisaError, video: str | None) -> str:
    """The error's message for the page: server paths of the upload replaced by its file name, HTML-escaped
    (Gradio renders error messages as HTML)."""
    message = str(error)
    if video:
        message = message.replace(str(video), Path(video).name)
    return html.escape(message, quote=False)


def _describe_model(predictor: VideoLisaPredictor) -> str:
    dtype = str(predictor.dtype).replace("torch.", "")
    return f"{predictor.device} ({dtype})"


def build_demo(
    predictor: VideoLisaPredictor,
    *,
    examples_dirs: Sequence[PathLike] = (),
    limits: DemoLimits = DemoLimits(),
    model_name: str = "",
) -> gr.Blocks:
    """The demo page around a loaded ``predictor``, with its queue configured; serve it with :func:`launch_demo`.

    ``examples_dirs`` are searched with :func:`find_examples` for the example gallery. The event is exposed
    to ``gradio_client`` as ``/segment`` with inputs ``(video, instruction, frames_sparse, frames_dense,
    threshold, overlay_color, overlay_opacity)`` and outputs ``(overlay video, key-frame gallery, masks zip,
    frame indices, timings)``. The device is fixed when the model is loaded and shown read-only.
    """
    import gradio as gr

    examples = [example for directory in examples_dirs for example in find_examples(directory)]
    results = _ResultFolders(limits.keep_results_seconds)
    config = predictor.model.config
    red, green, blue = DEFAULT_OVERLAY_COLOR

    def segment(
        video: str | None,
        instruction: str,
        frames_sparse: float,
        frames_dense: float,
        threshold: float,
        overlay_color: str,
        overlay_opacity: float,
        generate: bool = False,
        refine: bool = False,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way of asking for a progress bar)
    ) -> tuple[str, list[tuple[np.ndarray, str]], str, dict[str, list[int]], dict[str, float], dict[str, Any]]:
        """Segment the video from the instruction; returns the overlay video, key frames, masks zip, sampled
        frame indices, timings, and the answer with its tracks."""
        if not video:
            raise gr.Error("No video: upload one or pick an example below.", print_exception=False)
        settings = DemoConfig(
            int(frames_sparse),
            int(frames_dense),
            float(threshold),
            parse_color(overlay_color),
            float(overlay_opacity),
            bool(refine),
            bool(generate),
        )
        progress(0, desc="Reading the video and the instruction")
        folder = results.new_folder()
        try:
            result = segment_for_demo(
                predictor,
                video,
                instruction,
                folder,
                settings,
                limits,
                progress=lambda done, total: progress((done, total), desc="Segmenting frames", unit="frames"),
            )
        except VideoLisaError as error:
            results.discard(folder)
            raise gr.Error(
                _page_message(error, video), title="Cannot segment this video", print_exception=False
            ) from error
        return (
            str(result.overlay_video),
            result.key_frames,
            str(result.masks_zip),
            result.frame_indices,
            result.timings,
            result.answer,
        )

    with gr.Blocks(title="VideoLISA demo", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(
            "# VideoLISA: language-instructed video segmentation\n"
            "Upload a video (or pick an example), describe what to segment, and press **Segment**. "
            + limits.describe(),
            elem_id="limits",
        )
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video", sources=["upload"], elem_id="input-video")
                instruction = gr.Textbox(
                    label="Instruction",
                    placeholder="e.g. the red square moving to the left",
                    lines=2,
                    elem_id="instruction",
                )
                run_button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                with gr.Accordion("Advanced settings", open=False, elem_id="advanced-settings"):
                    frames_sparse = gr.Slider(
                        1,
                        2 * config.num_frames_sparse,
                        value=config.num_frames_sparse,
                        step=1,
                        label="Sparse frames (read by the LLM)",
                    )
                    frames_dense = gr.Slider(
                        1,
                        2 * config.num_frames_dense,
                        value=config.num_frames_dense,
                        step=1,
                        label="Dense frames (full resolution, at most the sparse ones)",
                    )
                    threshold = gr.Slider(
                        *_THRESHOLD_RANGE, value=MASK_LOGIT_THRESHOLD, step=0.1, label="Mask logit threshold"
                    )
                    overlay_color = gr.ColorPicker(value=f"#{red:02x}{green:02x}{blue:02x}", label="Overlay colour")
                    overlay_opacity = gr.Slider(
                        0.0, 1.0, value=DEFAULT_OVERLAY_ALPHA, step=0.05, label="Overlay opacity"
                    )
                    generate = gr.Checkbox(
                        value=False,
                        elem_id="generate",
                        label="Generate the answer (one track per [SEG], each in its own colour; "
                        "frames where a target is absent stay empty)",
                    )
                    # Only when launched with --refine sam2 (the SAM 2 weights are loaded at launch).
                    refine = (
                        [
                            gr.Checkbox(
                                value=True, label="Refine with SAM 2 (propagate the anchor masks)", elem_id="refine"
                            )
                        ]
                        if predictor.refiner is not None
                        else []
                    )
                    gr.Textbox(
                        value=_describe_model(predictor),
                        label="Device (chosen at launch with --device)",
                        interactive=False,
                    )
                if examples:
                    gr.Examples(
                        [[str(e.video), e.instruction] for e in examples],
                        inputs=[video, instruction],
                        label="Examples",
                        examples_per_page=8,
                        elem_id="examples",
                    )
            with gr.Column():
                overlay = gr.Video(
                    label="Segmented video", autoplay=True, loop=True, interactive=False, elem_id="overlay-video"
                )
                # PNG, not Gradio's default lossy webp, which smears thin masks.
                key_frames = gr.Gallery(
                    label="Key frames",
                    columns=4,
                    rows=1,
                    height=220,
                    object_fit="contain",
                    format="png",
                    elem_id="key-frames",
                )
                masks_zip = gr.File(label="Download masks", elem_id="masks-zip")
                with gr.Row():
                    indices = gr.JSON(label="Sampled frames", max_height=260, elem_id="frame-indices")
                    timings = gr.JSON(label="Timings", max_height=260, elem_id="timings")
                tracks = gr.JSON(
                    label="Answer and tracks (id, phrase, frames where present)", max_height=260, elem_id="tracks"
                )
        if model_name:
            gr.Markdown(f"Model: `{model_name}`")
        gr.on(
            [run_button.click, instruction.submit],
            segment,
            inputs=[
                video,
                instruction,
                frames_sparse,
                frames_dense,
                threshold,
                overlay_color,
                overlay_opacity,
                generate,
                *refine,
            ],
            outputs=[overlay, key_frames, masks_zip, indices, timings, tracks],
            api_name=_API_NAME,
            concurrency_limit=1,
        )
    return demo.queue(max_size=limits.max_queue_size, default_concurrency_limit=1)


def parse_auth(text: str) -> tuple[str, str]:
    """``"USER:PASSWORD"`` (from ``--auth`` or :data:`AUTH_ENV`) -> ``("USER", "PASSWORD")``; the password
    may contain colons."""
    user, _, password = text.partition(":")
    if not user or not password:
        raise InvalidInputError(f"the demo's login (--auth or {AUTH_ENV}) must be USER:PASSWORD, both parts non-empty")
    return user, password


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def launch_demo(
    demo: gr.Blocks,
    *,
    limits: DemoLimits = DemoLimits(),
    host: str = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    auth: tuple[str, str] | None = None,
    block: bool = True,
    quiet: bool = False,
) -> str:
    """Serve ``demo`` on ``host:port`` (``port=None``: a free port from 7860 up) and return its local URL.

    Pass the ``limits`` given to :func:`build_demo`: Gradio refuses uploads over ``max_upload_mb`` before
    they reach the request. ``auth=(user, password)`` puts Gradio's login in front of the page; serving
    another address than this machine's loopback without one logs a warning. ``block=True`` serves until
    Ctrl-C or SIGTERM (both stop the server, and the request folders are removed on exit); ``block=False``
    returns at once with the server running in a thread (tests; stop it with ``demo.close()``).
    """
    if auth is None and not _is_loopback(host):
        logger.warning(
            "serving the demo on %s without a login: anyone who can reach this machine can use it (and its "
            "GPU or CPU time). Require one with --auth USER:PASSWORD or the %s=USER:PASSWORD environment "
            "variable (launch_demo(auth=...) from Python).",
            host,
            AUTH_ENV,
        )
    if block:
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=limits.max_upload_bytes,
        auth=auth,
        prevent_thread_lock=not block,
        quiet=quiet,
        ssr_mode=False,
        share=False,
    )
    return demo.local_url
