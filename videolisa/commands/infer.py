"""``videolisa infer``: segment a video from a text instruction and write masks + an overlay video."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from videolisa.errors import InvalidInputError

FORMATS = ("png", "rle")
DEFAULT_MODEL = "builtin:synthetic"
T = TypeVar("T")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``videolisa infer``."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="model directory, Hugging Face id (e.g. ZechenBai/VideoLISA-3.8B) or builtin:NAME "
                             f"(default {DEFAULT_MODEL}: a toy trained on synthetic shapes)")
    parser.add_argument("--video", required=True, help="video file, folder of frames, or a single image")
    parser.add_argument("--prompt", required=True, help="the instruction, e.g. 'the dog that jumps'")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
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
    from videolisa.outputs import MaskWriter
    from videolisa.processing.video_io import open_video

    formats = parse_formats(args.format)
    if not args.prompt.strip():
        raise InvalidInputError("--prompt is empty: give a text describing what to segment")
    # The video is checked before --out is created and before the model (torch, transformers: seconds) is
    # imported, so that a wrong path fails at once and leaves nothing behind.
    reader = open_video(args.video)
    out = ensure_writable_dir(args.out)
    from videolisa.predictor import VideoLisaPredictor

    start = time.perf_counter()
    predictor = VideoLisaPredictor.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, vision_tower=args.vision_tower, chunk_size=args.chunk_size,
        fast_sam=args.fast_sam,
    )
    load_seconds = time.perf_counter() - start
    paths = {
        "png_dir": out / "masks" if "png" in formats else None,
        "rle_path": out / "masks.json" if "rle" in formats else None,
        "overlay_path": out / "overlay.mp4" if args.save_overlay else None,
    }
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
    tmp_path = summary_path.with_name(f".{summary_path.name}.tmp")
    tmp_path.write_text(json.dumps(summary, indent=2))
    os.replace(tmp_path, summary_path)
    print(f"segmented {reader.num_frames} frames in {seconds:.1f} s ({summary['frames_per_second']} frames/s) "
          f"on {summary['device']}")
    for key, value in summary["outputs"].items():
        print(f"  {key.replace('_', ' ')}: {value}")
    print(f"  summary: {summary_path}")
    return 0
