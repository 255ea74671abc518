"""``videolisa infer``: segment a video from a text instruction and write masks + an overlay video."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from videolisa.commands.refine_options import add_refine_arguments, refine_settings_from_args
from videolisa.errors import InvalidInputError

FORMATS = ("png", "rle")
DEFAULT_MODEL = "builtin:synthetic"
# Lists, relative to --out, every file this command writes there; written before the first of them, so that
# --overwrite can remove exactly an earlier run's files (complete or not) and nothing else.
MANIFEST = ".videolisa-infer.json"
MANIFEST_FORMAT = "videolisa-infer-outputs"
T = TypeVar("T")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``videolisa infer``."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="model directory, Hugging Face id (e.g. ZechenBai/VideoLISA-3.8B) or builtin:NAME "
                             f"(default {DEFAULT_MODEL}: a toy trained on synthetic shapes)")
    parser.add_argument("--video", required=True, help="video file, folder of frames, or a single image")
    parser.add_argument("--prompt", required=True, help="the instruction, e.g. 'the dog that jumps'")
    parser.add_argument("--out", required=True, type=Path,
                        help="output directory: new or empty, or holding an earlier run's results (see --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier videolisa infer in --out: the files it listed in "
                             f"{MANIFEST} are deleted first, nothing else (other non-empty folders are refused)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (default)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                        help="auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--chunk-size", type=int, default=8, help="frames per SAM batch (memory vs speed)")
    parser.add_argument("--no-fast-sam", dest="fast_sam", action="store_false",
                        help="run the stock SAM modules (per-frame decoding, no fused attention or autocast)")
    parser.add_argument("--frames-sparse", type=int, default=None, help="sparse frames (default: model config)")
    parser.add_argument("--frames-dense", type=int, default=None, help="dense frames (default: model config)")
    parser.add_argument("--vision-tower", default=None, help="CLIP id or directory for checkpoints without CLIP")
    parser.add_argument("--format", default="png,rle", help=f"comma-separated mask formats from {list(FORMATS)}")
    parser.add_argument("--save-overlay", action="store_true", help="also write overlay.mp4 (mask tinted over frames)")
    parser.add_argument("--threshold", type=float, default=0.0, help="mask logit threshold (default 0, the original)")
    add_refine_arguments(parser)


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
        if (not name or "\0" in name or relative.is_absolute() or ".." in relative.parts
                or not (out / relative).resolve().is_relative_to(root)):  # e.g. through a link to elsewhere
            raise InvalidInputError(f"{path} lists {name!r}, which is not a path inside {out}; refusing to delete it")
    return files


def prepare_output_dir(out: Path, overwrite: bool) -> Path:
    """Create ``out`` (or check it): a new or empty folder is used as it is; a folder holding an earlier run's
    results is refused unless ``overwrite``, which deletes exactly the files that run listed in its manifest
    (and their leftover temporary files) so that no stale mask survives a shorter rerun; any other non-empty
    folder is refused."""
    from videolisa.outputs import sweep_temp_files

    ensure_writable_dir(out)
    contents = sorted(entry.name for entry in out.iterdir())
    if not contents:
        return out
    if MANIFEST not in contents:
        shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
        raise InvalidInputError(f"--out {out} is not empty ({shown}) and holds no results of videolisa infer; "
                                "choose a new or empty folder")
    if not overwrite:
        raise InvalidInputError(f"--out {out} holds the results of an earlier videolisa infer; pass --overwrite to "
                                "replace them, or choose a new or empty folder")
    files = _read_manifest(out)
    for name in files:
        path = out / name
        path.unlink(missing_ok=True)
        sweep_temp_files(path.parent, [path.name])
    for folder in {(out / name).parent for name in files} - {out}:  # masks/, unless it holds other files
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (out / MANIFEST).unlink()
    return out


def _write_manifest(out: Path, paths: dict[str, Path | None], frame_names: list[str]) -> None:
    """List every file this run will write in ``out`` (before writing any of them)."""
    from videolisa.outputs import atomic_path

    files = [f"masks/{name}.png" for name in frame_names] if paths["png_dir"] is not None else []
    files += [path.name for key, path in paths.items() if key != "png_dir" and path is not None]
    files.append("summary.json")
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


def run(args: argparse.Namespace) -> int:
    """Segment, stream masks to the writers, print a summary."""
    from videolisa.outputs import MaskWriter, atomic_path
    from videolisa.processing.video_io import open_video

    formats = parse_formats(args.format)
    if not args.prompt.strip():
        raise InvalidInputError("--prompt is empty: give a text describing what to segment")
    # The video is checked before --out is created and before the model (torch, transformers: seconds) is
    # imported, so that a wrong path fails at once and leaves nothing behind.
    reader = open_video(args.video)
    out = prepare_output_dir(args.out, args.overwrite)
    from videolisa.predictor import VideoLisaPredictor

    start = time.perf_counter()
    predictor = VideoLisaPredictor.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, vision_tower=args.vision_tower, chunk_size=args.chunk_size,
        fast_sam=args.fast_sam, refine=refine_settings_from_args(args),
    )
    load_seconds = time.perf_counter() - start
    paths = {
        "png_dir": out / "masks" if "png" in formats else None,
        "rle_path": out / "masks.json" if "rle" in formats else None,
        "overlay_path": out / "overlay.mp4" if args.save_overlay else None,
    }
    _write_manifest(out, paths, reader.frame_names)
    start = time.perf_counter()
    with MaskWriter(reader.frame_names, reader.height, reader.width, instruction=args.prompt, fps=reader.fps,
                    **paths) as writer:
        items = predictor.iter_segment(
            reader, [args.prompt], frames_sparse=args.frames_sparse, frames_dense=args.frames_dense,
            threshold=args.threshold, return_frames=args.save_overlay, progress=sys.stderr.isatty(),
        )
        write_in_background(
            items,
            lambda item: writer.write(item.masks[:1], item.frame[None] if item.frame is not None else None),
            max_pending=2 * args.chunk_size,
        )
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
    }
    summary_path = out / "summary.json"
    with atomic_path(summary_path) as temp_path:
        temp_path.write_text(json.dumps(summary, indent=2))
    print(f"segmented {reader.num_frames} frames in {seconds:.1f} s ({summary['frames_per_second']} frames/s) "
          f"on {summary['device']}")
    for key, value in summary["outputs"].items():
        print(f"  {key.replace('_', ' ')}: {value}")
    print(f"  summary: {summary_path}")
    return 0
