"""``videolisa infer``: segment a video from a text instruction and write masks + an overlay video."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from videolisa.commands.answer_options import (
    add_answer_arguments,
    check_answer_arguments,
    generation_settings,
    presence_threshold,
)
from videolisa.commands.refine_options import add_refine_arguments, refine_settings_from_args
from videolisa.errors import InvalidInputError

if TYPE_CHECKING:
    from videolisa.mask_io import MaskWriter
    from videolisa.predictor import FrameMasks

FORMATS = ("png", "rle")
DEFAULT_MODEL = "builtin:synthetic"
# Lists, relative to --out, every file this command writes there; written before the first of them, so that
# --overwrite can remove exactly an earlier run's files (complete or not) and nothing else.
MANIFEST = ".videolisa-infer.json"
MANIFEST_FORMAT = "videolisa-infer-outputs"
T = TypeVar("T")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``videolisa infer``."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="model directory, Hugging Face id (e.g. ZechenBai/VideoLISA-3.8B) or builtin:NAME "
        f"(default {DEFAULT_MODEL}: a toy trained on synthetic shapes)",
    )
    parser.add_argument("--video", required=True, help="video file, folder of frames, or a single image")
    parser.add_argument("--prompt", required=True, help="the instruction, e.g. 'the dog that jumps'")
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output directory: new or empty, or holding an earlier run's results (see --overwrite)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier videolisa infer in --out: the files it listed in "
        f"{MANIFEST} are deleted first, nothing else (other non-empty folders are refused)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (default)")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="auto: bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument("--chunk-size", type=int, default=8, help="frames per SAM batch (memory vs speed)")
    parser.add_argument(
        "--no-fast-sam",
        dest="fast_sam",
        action="store_false",
        help="run the stock SAM modules (per-frame decoding, no fused attention or autocast)",
    )
    parser.add_argument("--frames-sparse", type=int, default=None, help="sparse frames (default: model config)")
    parser.add_argument("--frames-dense", type=int, default=None, help="dense frames (default: model config)")
    parser.add_argument("--vision-tower", default=None, help="CLIP id or directory for checkpoints without CLIP")
    parser.add_argument("--format", default="png,rle", help=f"comma-separated mask formats from {list(FORMATS)}")
    parser.add_argument("--save-overlay", action="store_true", help="also write overlay.mp4 (mask tinted over frames)")
    parser.add_argument(
        "--overlay-max-side",
        type=int,
        default=None,
        metavar="PIXELS",
        help="scale overlay.mp4 down so that its longer side is at most PIXELS, a lighter preview "
        "(default: the video's size); the masks keep the video's size",
    )
    parser.add_argument("--threshold", type=float, default=0.0, help="mask logit threshold (default 0, the original)")
    add_refine_arguments(parser)
    add_answer_arguments(
        parser,
        "let the model write its answer (default: the original's teacher-forced 'Sure, [SEG].'); every [SEG] "
        "in it becomes one track: tracks/<id>/ PNGs, palette/ PNGs, masks.json with one RLE list per track",
    )


def parse_formats(text: str) -> list[str]:
    """``"png,rle"`` -> ``["png", "rle"]``; unknown names raise naming the allowed ones."""
    formats = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in formats if item not in FORMATS]
    if unknown or not formats:
        raise InvalidInputError(f"--format must be a comma-separated subset of {list(FORMATS)}, got {text!r}")
    return formats


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise InvalidInputError(f"cannot write to the output directory {path}: {error.strerror or error}") from error
    return path


def _read_manifest(out: Path) -> list[str]:
    """The relative paths an earlier run listed in ``out``'s manifest, each checked to stay inside ``out``."""
    path = out / MANIFEST
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"{path} is not valid JSON ({error}); remove the folder's contents yourself") from error
    files = record.get("files") if isinstance(record, dict) and record.get("format") == MANIFEST_FORMAT else None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise InvalidInputError(f"{path} is not a {MANIFEST_FORMAT} manifest; remove the folder's contents yourself")
    root = out.resolve()
    for name in files:
        relative = Path(name)
        if (
            not name
            or "\0" in name
            or relative.is_absolute()
            or ".." in relative.parts
            or not (out / relative).resolve().is_relative_to(root)
        ):  # e.g. through a link to elsewhere
            raise InvalidInputError(f"{path} lists {name!r}, which is not a path inside {out}; refusing to delete it")
    return files


def prepare_output_dir(out: Path, overwrite: bool) -> Path:
    """Create ``out`` (or check it): a new or empty folder is used as it is; a folder holding an earlier run's
    results is refused unless ``overwrite``, which deletes exactly the files that run listed in its manifest
    (and their leftover temporary files) so that no stale mask survives a shorter rerun; any other non-empty
    folder is refused."""
    from videolisa.mask_io import sweep_temp_files

    ensure_writable_dir(out)
    contents = sorted(entry.name for entry in out.iterdir())
    if not contents:
        return out
    if MANIFEST not in contents:
        shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
        raise InvalidInputError(
            f"--out {out} is not empty ({shown}) and holds no results of videolisa infer; choose a new or empty folder"
        )
    if not overwrite:
        raise InvalidInputError(
            f"--out {out} holds the results of an earlier videolisa infer; pass --overwrite to "
            "replace them, or choose a new or empty folder"
        )
    files = _read_manifest(out)
    for name in files:
        path = out / name
        path.unlink(missing_ok=True)
        sweep_temp_files(path.parent, [path.name])
    folders = {parent for name in files for parent in (out / name).parents if parent.is_relative_to(out)} - {out}
    for folder in sorted(folders, key=lambda path: len(path.parts), reverse=True):  # masks/, tracks/1/, tracks/
        if folder.is_dir() and not any(folder.iterdir()):  # unless it holds other files
            folder.rmdir()
    (out / MANIFEST).unlink()
    return out


def _output_files(out: Path, paths: dict[str, Path | None], frame_names: list[str], track_ids: list[int]) -> list[str]:
    """Every file of ``paths`` relative to ``out``: PNG folders (``png_dir``, ``palette_dir``: one PNG per frame;
    ``tracks_dir``: one folder per track id), the single files, and ``summary.json``."""
    files = []
    for key, path in paths.items():
        if path is None:
            continue
        folder = path.relative_to(out).as_posix()
        if key == "tracks_dir":
            files += [f"{folder}/{track_id}/{name}.png" for track_id in track_ids for name in frame_names]
        elif key in ("png_dir", "palette_dir"):
            files += [f"{folder}/{name}.png" for name in frame_names]
        else:
            files.append(folder)
    return [*files, "summary.json"]


def _write_manifest(out: Path, files: list[str]) -> None:
    """List every file this run will write in ``out`` (before writing any of them)."""
    from videolisa.mask_io import atomic_path

    with atomic_path(out / MANIFEST) as temp_path:
        temp_path.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}), encoding="utf-8")


def write_in_background(items: Iterable[T], write: Callable[[T], None], max_pending: int) -> None:
    """Call ``write(item)`` for every item, in order, in one worker thread while this thread produces the next.

    At most ``max_pending`` items wait for their write (bounded memory: each holds one frame's masks). The
    first error of a write is re-raised here unchanged, and no later write runs.
    """
    failed = threading.Event()

    def guarded_write(item: T) -> None:
        if failed.is_set():  # an earlier write failed; its error is raised in the producing thread
            return
        try:
            write(item)
        except BaseException:
            failed.set()
            raise

    pending: deque[Future[None]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="videolisa-write") as pool:
        try:
            for item in items:
                pending.append(pool.submit(guarded_write, item))
                while len(pending) > max_pending or (pending and pending[0].done()):
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_masks_in_chunks(writer: MaskWriter, items: Iterable[FrameMasks], chunk_size: int) -> None:
    """Write the first instruction's masks of ``items`` (and their frames, when present) to ``writer``
    ``chunk_size`` frames at a time, in a background thread (so the writer spreads a chunk's PNGs over its threads).
    """

    def write(chunk: list[FrameMasks]) -> None:
        frames = [item.frame for item in chunk]
        writer.write(np.stack([item.masks[0] for item in chunk]), None if frames[0] is None else np.stack(frames))

    write_in_background(batched(items, chunk_size), write, max_pending=2)


def run(args: argparse.Namespace) -> int:
    """Segment, stream masks to the writers, print a summary."""
    from videolisa.mask_io import MaskWriter, atomic_path
    from videolisa.processing.video_io import open_video
    from videolisa.track_io import TrackWriter

    formats = parse_formats(args.format)
    if not args.prompt.strip():
        raise InvalidInputError("--prompt is empty: give a text describing what to segment")
    check_answer_arguments(args)
    if args.overlay_max_side is not None and args.overlay_max_side < 1:
        raise InvalidInputError(f"--overlay-max-side must be a positive number of pixels, got {args.overlay_max_side}")
    # The video is checked before --out is created and before the model (torch, transformers: seconds) is
    # imported, so that a wrong path fails at once and leaves nothing behind.
    reader = open_video(args.video)
    out = prepare_output_dir(args.out, args.overwrite)
    from videolisa.constants import DEFAULT_ANSWER
    from videolisa.generation import GENERATE
    from videolisa.predictor import VideoLisaPredictor

    start = time.perf_counter()
    predictor = VideoLisaPredictor.from_pretrained(
        args.model,
        device=args.device,
        dtype=args.dtype,
        vision_tower=args.vision_tower,
        chunk_size=args.chunk_size,
        fast_sam=args.fast_sam,
        refine=refine_settings_from_args(args),
    )
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    answered = predictor.answer_tracks(
        reader,
        [args.prompt],
        answer=GENERATE if args.generate else DEFAULT_ANSWER,
        frames_sparse=args.frames_sparse,
        frames_dense=args.frames_dense,
        generation=generation_settings(args),
        presence_threshold=args.presence_threshold,
    )
    tracks = answered.tracks[0]
    paths: dict[str, Path | None] = {
        "png_dir": out / "masks" if "png" in formats and not args.generate else None,
        "tracks_dir": out / "tracks" if "png" in formats and args.generate else None,
        "palette_dir": out / "palette" if "png" in formats and args.generate else None,
        "rle_path": out / "masks.json" if "rle" in formats else None,
        "overlay_path": out / "overlay.mp4" if args.save_overlay else None,
    }
    paths = {key: path for key, path in paths.items() if path is not None}
    _write_manifest(out, _output_files(out, paths, reader.frame_names, [track_id for track_id, _ in tracks]))
    present: list[list[int]] = [[] for _ in tracks]  # per track, the frames where its mask is not empty
    items = _recording_presence(
        answered.frames(args.threshold, return_frames=args.save_overlay, progress=sys.stderr.isatty()), present
    )
    if args.generate:
        with TrackWriter(
            reader.frame_names,
            reader.height,
            reader.width,
            tracks,
            instruction=args.prompt,
            answer=answered.answers[0],
            fps=reader.fps,
            presence_threshold=presence_threshold(args),
            overlay_max_side=args.overlay_max_side,
            **paths,
        ) as track_writer:
            write_in_background(
                items,
                lambda item: track_writer.write(
                    item.track_masks[None],
                    None if item.scores is None else item.scores[None],
                    None if item.frame is None else item.frame[None],
                ),
                max_pending=2 * args.chunk_size,
            )
    else:
        with MaskWriter(
            reader.frame_names,
            reader.height,
            reader.width,
            instruction=args.prompt,
            fps=reader.fps,
            overlay_max_side=args.overlay_max_side,
            **paths,
        ) as writer:
            write_masks_in_chunks(writer, items, args.chunk_size)
    seconds = time.perf_counter() - start
    sparse, dense = predictor.sample_frames(reader.num_frames, args.frames_sparse, args.frames_dense)
    summary = {
        "video": str(args.video),
        "instruction": args.prompt,
        "model": str(args.model),
        "frames": reader.num_frames,
        "size_hw": [reader.height, reader.width],
        "seconds": round(seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "frames_per_second": round(reader.num_frames / seconds, 3) if seconds > 0 else None,
        "sparse_indices": sparse,
        "dense_indices": dense,
        "outputs": {key: str(value) for key, value in paths.items() if value is not None},
        "device": str(predictor.device),
        "dtype": str(predictor.dtype).replace("torch.", ""),
        "answer": answered.answers[0],
        "presence_threshold": presence_threshold(args),
        "present_frames": sorted(set().union(*present)),
        "tracks": [
            {"id": track_id, "phrase": phrase, "present_frames": frames}
            for (track_id, phrase), frames in zip(tracks, present)
        ],
    }
    summary_path = out / "summary.json"
    with atomic_path(summary_path) as temp_path:
        temp_path.write_text(json.dumps(summary, indent=2))
    print(
        f"segmented {reader.num_frames} frames in {seconds:.1f} s ({summary['frames_per_second']} frames/s) "
        f"on {summary['device']}"
    )
    for key, value in summary["outputs"].items():
        print(f"  {key.replace('_', ' ')}: {value}")
    if args.generate:
        print(f"  answer: {answered.answers[0]}")
        for entry in summary["tracks"]:
            print(
                f"  track {entry['id']} ({entry['phrase'] or 'no phrase'}): present in "
                f"{len(entry['present_frames'])} of {reader.num_frames} frames"
            )
    print(f"  summary: {summary_path}")
    return 0


def _recording_presence(items: Iterable[FrameMasks], present: list[list[int]]) -> Iterator[FrameMasks]:
    """``items`` unchanged; appends each frame's index to ``present[k]`` when track k's mask is not empty there."""
    for item in items:
        for k, mask in enumerate(item.track_masks if item.track_masks is not None else item.masks):
            if mask.any():
                present[k].append(item.index)
        yield item
