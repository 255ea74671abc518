"""Peak memory of ``videolisa infer`` on 4K frames against 480p: frames stream, so a 4K video costs a few chunks
of 4K frames more than a 480p one, not a whole video's worth, and memory does not grow with the video's length.

Writes H.264 clips of the same moving shapes at 854x480 and 3840x2160 (``--frames`` counts), runs
``videolisa infer --save-overlay`` on each in a fresh process (``wait4`` peak RSS), and prints a table and, as
its last line, ``RATIO peak_memory_4k_vs_480p=<4K RSS / 480p RSS> peak_memory_4k_long_vs_short=<...>
extra_memory_in_4k_frames=<...>``.

What to expect: one 4K RGB frame is 24 MiB (20x a 480p one). In flight at once: the SAM chunk being segmented
and the next one being decoded (``--chunk-size``, 8 frames each), the writers' queue (2 chunks of frames and
masks), the overlay encoder's look-ahead, and the malloc arenas of those threads; this fills up over the first
~40 frames, then stays flat: ``peak_memory_4k_long_vs_short`` near 1 once SHORT is past that (measured on 2 CPU
cores, builtin:synthetic: 4K 24 / 48 / 96 frames 3011 / 3889 / 3754 MiB, 480p 24 frames 1080 MiB).

Usage: ``python eval/perf/big_frames.py [--model builtin:synthetic] [--frames 48 96] [--device cpu]`` (about 15
minutes on 2 CPU cores; ``--frames 8 16`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, ratio_line, run_measured  # noqa: E402

SIZES = {"480p": (480, 854), "4k": (2160, 3840)}
FPS = 30
FRAME_MIB = 2160 * 3840 * 3 / 2**20  # one decoded 4K RGB frame


def write_video(path: Path, num_frames: int, height: int, width: int) -> Path:
    """``num_frames`` frames of a red disc and a blue square moving over a gradient, H.264, one frame in memory."""
    import av

    rows, cols = np.ogrid[:height, :width]
    background = np.zeros((height, width, 3), np.uint8)
    background[..., 0] = (cols * 255 // width).astype(np.uint8)
    background[..., 1] = (rows * 255 // height).astype(np.uint8)
    background[..., 2] = 90
    radius, side = height // 8, height // 5
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(num_frames):
            frame = background.copy()
            centre_x = width // 6 + index * (2 * width // 3) // max(num_frames - 1, 1)
            frame[(rows - height // 2) ** 2 + (cols - centre_x) ** 2 < radius**2] = (230, 30, 30)
            left = width - side - centre_x // 2
            frame[height // 8 : height // 8 + side, left : left + side] = (30, 30, 230)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def run_infer(model: str, video: Path, out: Path, device: str, chunk_size: int) -> dict[str, float]:
    """One ``videolisa infer --save-overlay`` process: wall seconds, segmentation frames/s, peak RSS MiB."""
    run = run_measured(
        [
            str(Path(sys.executable).parent / "videolisa"),
            "infer",
            "--model",
            model,
            "--video",
            str(video),
            "--prompt",
            "the red ball",
            "--out",
            str(out),
            "--device",
            device,
            "--chunk-size",
            str(chunk_size),
            "--save-overlay",
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    return {"wall": run.wall_seconds, "fps": summary["frames_per_second"], "rss": run.peak_rss_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:synthetic")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--frames", type=int, nargs=2, default=[48, 96], metavar=("SHORT", "LONG"))
    parser.add_argument("--chunk-size", type=int, default=8)
    args = parser.parse_args()

    short, long = args.frames
    runs: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="videolisa-perf-") as tmp:
        workdir = Path(tmp)
        for name, count in (("480p", short), ("4k", short), ("4k", long)):
            video = write_video(workdir / f"{name}-{count}.mp4", count, *SIZES[name])
            runs[name, count] = run_infer(
                args.model, video, workdir / f"out-{name}-{count}", args.device, args.chunk_size
            )
            (workdir / f"{name}-{count}.mp4").unlink()
    print(
        f"videolisa infer --save-overlay ({args.model}, {args.device}, chunk size {args.chunk_size}): wall s of "
        "the process, segmentation frames/s, peak RSS"
    )
    print_table(
        ["size", "frames", "wall s", "frames/s", "peak RSS MiB"],
        [
            [name, count, f"{run['wall']:.1f}", f"{run['fps']:.2f}", f"{run['rss']:.0f}"]
            for (name, count), run in runs.items()
        ],
    )
    extra = runs["4k", short]["rss"] - runs["480p", short]["rss"]
    print(
        ratio_line(
            {
                "peak_memory_4k_vs_480p": runs["4k", short]["rss"] / runs["480p", short]["rss"],
                "peak_memory_4k_long_vs_short": runs["4k", long]["rss"] / runs["4k", short]["rss"],
                # How many 4K frames' worth of memory the 4K run needs beyond the 480p run.
                "extra_memory_in_4k_frames": extra / FRAME_MIB,
            }
        )
    )


if __name__ == "__main__":
    main()
