"""End-to-end pipeline speed and memory: ``videolisa infer`` on 60- and 600-frame 480p videos, and
``segment_many`` with 8 instructions against ``segment`` with 1.

Models: the ``tiny`` preset (seeded random weights, saved with the in-memory tokenizer to a temporary
directory) and every built-in model (``builtin:<name>``) that the package ships.

* ``videolisa infer`` runs in a fresh process per (model, video); the table shows its wall time (process
  start and model loading included), the segmentation frames/s it reports, and its peak RSS (``wait4``).
  Streaming means memory must not grow with the video: ``peak_memory_600_vs_60_<model>`` should be <= 1.2.
* ``segment_many`` reuses the video decoding, CLIP and the SAM image encoder for every instruction, so 8
  instructions should cost at most 1.5x one (``segment_many_8_vs_1_<model>``). Measured in one process
  with one torch thread, as process CPU time (best of 3 after a warm-up), which is robust to other load on
  the machine.

Prints a table and, as its last line, ``RATIO name=value ...``.

Usage: ``python eval/perf/pipeline.py [--device cpu|cuda] [--frames 60 600]`` (about 2 minutes on 2 CPU
cores for the tiny preset).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, python_command, ratio_line, run_measured  # noqa: E402

HEIGHT, WIDTH, FPS = 480, 854, 30
INSTRUCTIONS = [
    "the red ball",
    "the blue box",
    "the object moving to the left",
    "the object moving to the right",
    "the largest object",
    "the smallest object",
    "the thing that bounces",
    "the background",
]


def render_frame(index: int, background: np.ndarray) -> np.ndarray:
    """``[H, W, 3] uint8``: a red disc moving right on a sine path and a blue square moving left."""
    frame = background.copy()
    rows, cols = np.ogrid[:HEIGHT, :WIDTH]
    centre_x, centre_y = 100 + (5 * index) % (WIDTH - 200), HEIGHT // 2 + int(100 * np.sin(index / 15))
    frame[(rows - centre_y) ** 2 + (cols - centre_x) ** 2 < 60**2] = (230, 30, 30)
    left = (WIDTH - 250 - 3 * index) % (WIDTH - 100)
    frame[200:300, left : left + 100] = (30, 30, 230)
    return frame


def write_video(path: Path, num_frames: int) -> Path:
    """Encode ``num_frames`` moving-shape frames (480p, 30 fps) with PyAV, one frame in memory at a time."""
    import av

    from videolisa.mask_io import overlay_codec

    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    background = np.stack([cols * 255 // WIDTH, rows * 255 // HEIGHT, np.full_like(cols, 90)], -1).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(overlay_codec(), rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(num_frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(render_frame(index, background), format="rgb24")))
        container.mux(stream.encode())
    return path


def save_tiny_model(directory: Path) -> Path:
    """The seeded ``tiny`` preset with its in-memory tokenizer, saved like a released model."""
    import torch

    from videolisa.config import VideoLisaConfig
    from videolisa.modeling.videolisa import VideoLisaForSegmentation
    from videolisa.tokenization import build_tiny_tokenizer

    torch.manual_seed(0)
    VideoLisaForSegmentation(VideoLisaConfig.from_preset("tiny")).eval().save_pretrained(
        directory, tokenizer=build_tiny_tokenizer()
    )
    return directory


def models_to_measure(workdir: Path) -> dict[str, str]:
    """``{name: --model value}``: the tiny preset and every shipped built-in model."""
    from videolisa.builtin import available_builtin_models

    models = {"tiny": str(save_tiny_model(workdir / "tiny"))}
    models.update({name: f"builtin:{name}" for name in available_builtin_models()})
    return models


def run_infer(model: str, video: Path, out: Path, device: str) -> dict[str, float]:
    """One ``videolisa infer`` process: wall seconds, segmentation frames/s, peak RSS MiB."""
    run = run_measured(
        [
            sys.executable,
            "-m",
            "videolisa.cli",
            "infer",
            "--model",
            model,
            "--video",
            str(video),
            "--prompt",
            INSTRUCTIONS[0],
            "--out",
            str(out),
            "--device",
            device,
            "--format",
            "png,rle",
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall": run.wall_seconds,
        "fps": summary["frames_per_second"],
        "rss": run.peak_rss_mib,
        "frames": summary["frames"],
        "load": summary["load_seconds"],
    }


def measure_segment_many(model: str, video: str, device: str, repeats: int) -> dict[str, float]:
    """Child process: best-of-``repeats`` seconds of ``segment`` (1 instruction) and ``segment_many``
    (8 instructions) on ``video``, after a warm-up: CPU time with one torch thread on CPU, wall time on GPU."""
    import torch

    from videolisa.predictor import VideoLisaPredictor

    on_cpu = device == "cpu"
    if on_cpu:
        torch.set_num_threads(1)
    clock = time.process_time if on_cpu else time.perf_counter  # results are numpy: the GPU has finished
    predictor = VideoLisaPredictor.from_pretrained(model, device=device)
    predictor.segment(video, INSTRUCTIONS[0])

    def best(call: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            start = clock()
            call()
            times.append(clock() - start)
        return min(times)

    return {
        "one": best(lambda: predictor.segment(video, INSTRUCTIONS[0])),
        "many": best(lambda: predictor.segment_many(video, INSTRUCTIONS)),
    }


def measure_model(
    name: str, model: str, videos: dict[int, Path], workdir: Path, args: argparse.Namespace
) -> tuple[list[list[object]], dict[str, float]]:
    """Table rows and ratios of one model: ``videolisa infer`` on every video, segment vs segment_many on the
    shortest one."""
    short, long = min(videos), max(videos)
    infer = {n: run_infer(model, video, workdir / f"out-{name}-{n}", args.device) for n, video in videos.items()}
    many = json.loads(
        run_measured(
            python_command(
                Path(__file__),
                "--segment-many-worker",
                model,
                str(videos[short]),
                "--device",
                args.device,
                "--repeats",
                str(args.repeats),
            )
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    rows: list[list[object]] = [
        [name, "infer", n, f"{r['wall']:.1f}", f"{r['load']:.1f}", f"{r['fps']:.1f}", f"{r['rss']:.0f}"]
        for n, r in infer.items()
    ]
    for label, seconds in (("segment x1", many["one"]), ("segment_many x8", many["many"])):
        rows.append([name, label, short, f"{seconds:.2f}", "-", f"{short / seconds:.1f}", "-"])
    ratios = {
        f"peak_memory_{long}_vs_{short}_{name}": infer[long]["rss"] / infer[short]["rss"],
        f"segment_many_8_vs_1_{name}": many["many"] / many["one"],
    }
    return rows, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--frames", type=int, nargs=2, default=[60, 600], metavar=("SHORT", "LONG"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--segment-many-worker", nargs=2, metavar=("MODEL", "VIDEO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.segment_many_worker:
        print(json.dumps(measure_segment_many(*args.segment_many_worker, args.device, args.repeats)))
        return

    short, long = args.frames
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory(prefix="videolisa-perf-") as tmp:
        workdir = Path(tmp)
        videos = {n: write_video(workdir / f"video{n}.mp4", n) for n in (short, long)}
        for name, model in models_to_measure(workdir).items():
            model_rows, model_ratios = measure_model(name, model, videos, workdir, args)
            rows += model_rows
            ratios.update(model_ratios)
    clock = "CPU s (1 thread)" if args.device == "cpu" else "wall s"
    print(
        f"videolisa pipeline on {args.device}, {HEIGHT}p videos ({WIDTH}x{HEIGHT}); infer: wall s of the process "
        f"(start + load + segmentation), load s, segmentation frames/s, peak RSS; segment rows: {clock} on the "
        "short video"
    )
    print_table(["model", "run", "frames", "seconds", "load s", "frames/s", "peak RSS MiB"], rows)
    print(ratio_line(ratios))


if __name__ == "__main__":
    main()
