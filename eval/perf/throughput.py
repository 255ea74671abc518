"""Does the pipeline around the model keep up? ``videolisa infer`` frames/s against the bounds its parts set.

For 480p, 1080p and 4K H.264 clips (moving shapes over mild noise), measured in the same run, each in a fresh
process, best of ``--repeats``:

* ``infer``: ``videolisa infer`` with the built-in model (whose compute is negligible), masks only (PNG + RLE),
  and ``infer+overlay``: the same with ``--save-overlay``; frames/s as its summary reports (segmentation only,
  model loading excluded); ``generate+overlay``: ``--generate --save-overlay`` (the track writer: per-track
  PNGs, palette PNGs, RLEs and the coloured overlay; the tracks the answer has are in the table);
* ``bound writers``: decoding (in a background thread, as the predictor does) + the PNG and RLE writers alone,
  fed the masks that ``infer`` wrote;
* ``bound encode``: decoding + encoding the decoded frames with the overlay's encoder settings alone;
* ``segment alone``: the predictor's masks (``iter_segment``: decoding, SAM preprocessing, the model,
  upscaling) without any writer, the other stage that bounds ``infer``.

``infer_vs_bound_<res>`` = infer / bound writers and ``overlay_vs_encode_<res>`` = infer+overlay / bound encode
(target >= 0.6 each); ``infer_vs_slowest_<res>`` = infer / min(bound writers, segment alone) says whether the
stages overlap (1.0: the slowest stage sets the pace; on 2 busy cores the sum of their CPU time does). With
``--cpus-scaling`` the 1080p rows are repeated on the first CPU only (``taskset``), to show how the pipeline
scales with cores (``scaling_<n>cpu_vs_1cpu_1080p``). ``--presets`` adds the
libx264 presets' encoding speed and PSNR at 1080p (how the overlay's preset was chosen). The load average is
printed at the start and the end: other work on the machine makes every figure slower.

Usage: ``python eval/perf/throughput.py [--repeats 2] [--cpus-scaling] [--presets]`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, ratio_line, run_measured  # noqa: E402

CLIPS = {"480p": (480, 854, 120), "1080p": (1080, 1920, 60), "4K": (2160, 3840, 20)}  # height, width, frames
FPS = 30
PROMPT = "the red circle"


def write_clip(path: Path, height: int, width: int, num_frames: int) -> Path:
    """A red disc and a blue square moving over a gradient with mild noise; H.264 (crf 23, veryfast)."""
    import av

    rows, cols = np.mgrid[:height, :width]
    background = np.stack([cols * 255 // width, rows * 255 // height, np.full_like(cols, 90)], -1).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 16, (height, width, 3), dtype=np.uint8)
    radius = height // 8
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(num_frames):
            frame = background + np.roll(noise, 3 * index, axis=1)
            centre_y = height // 2 + int(height / 5 * np.sin(index / 10))
            centre_x = int(width * (0.2 + 0.6 * index / max(1, num_frames - 1)))
            frame[(rows - centre_y) ** 2 + (cols - centre_x) ** 2 < radius**2] = (230, 30, 30)
            left = int(width * (0.7 - 0.5 * index / max(1, num_frames - 1)))
            frame[height // 8 : height // 8 + radius, left : left + radius] = (30, 30, 230)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def prefetched_chunks(video: str, chunk_size: int = 8) -> Iterator[tuple[int, np.ndarray]]:
    """Decoded chunks, the next one decoded in a background thread (as the predictor prefetches)."""
    from videolisa.processing.video_io import open_video

    chunks = open_video(video).iter_chunks(chunk_size)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, chunks, None)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next, chunks, None)
            yield chunk


def bound_writers(video: str, masks_json: str, out: str) -> float:
    """Frames/s of decoding + the PNG and RLE writers alone (fed ``masks_json``'s masks)."""
    from videolisa.mask_io import MaskWriter, read_rle_json

    masks = read_rle_json(masks_json).masks
    start = time.perf_counter()
    with MaskWriter(
        [f"{i:05d}" for i in range(len(masks))],
        masks.shape[1],
        masks.shape[2],
        png_dir=Path(out) / "masks",
        rle_path=Path(out) / "masks.json",
        instruction=PROMPT,
    ) as writer:
        for first, frames in prefetched_chunks(video):
            writer.write(masks[first : first + len(frames)])
    return len(masks) / (time.perf_counter() - start)


def segment_alone(video: str, out: str) -> float:
    """Frames/s of the predictor's masks without writers (as ``infer`` times them: from the prompt on)."""
    from videolisa.predictor import VideoLisaPredictor

    predictor = VideoLisaPredictor.from_pretrained("builtin:synthetic", device="cpu")
    start, count = time.perf_counter(), 0
    for _ in predictor.iter_segment(video, [PROMPT]):
        count += 1
    return count / (time.perf_counter() - start)


def open_encoder(path: str, height: int, width: int, preset: str) -> tuple[object, object]:
    """A PyAV container and stream set up as the overlay video's, with libx264's ``preset``."""
    import av

    from videolisa.mask_io import add_overlay_stream

    container = av.open(path, mode="w", format="mp4")
    return container, add_overlay_stream(container, height + height % 2, width + width % 2, FPS, preset)


def bound_encode(video: str, out: str) -> float:
    """Frames/s of decoding + encoding the frames with the overlay's encoder settings alone."""
    import av

    from videolisa.mask_io import OVERLAY_PRESET

    start, count, container = time.perf_counter(), 0, None
    for _, frames in prefetched_chunks(video):
        if container is None:
            container, stream = open_encoder(str(Path(out) / "encoded.mp4"), *frames.shape[1:3], OVERLAY_PRESET)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        count += len(frames)
    container.mux(stream.encode())
    container.close()
    return count / (time.perf_counter() - start)


def preset_quality(video: str, preset: str) -> dict[str, float]:
    """Encoding frames/s (single thread of frames, libx264's own threads) and PSNR (dB) against the decoded frames."""
    import av

    frames = np.concatenate([chunk for _, chunk in prefetched_chunks(video)])
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "preset.mp4")
        start = time.perf_counter()
        container, stream = open_encoder(path, *frames.shape[1:3], preset)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
        container.close()
        fps = len(frames) / (time.perf_counter() - start)
        with av.open(path) as decoded:
            error = np.mean(
                [
                    np.mean((image.to_ndarray(format="rgb24").astype(np.float64) - frames[index]) ** 2)
                    for index, image in enumerate(decoded.decode(video=0))
                ]
            )
        size = os.path.getsize(path) / len(frames) / 1000
    return {"fps": fps, "psnr": 10 * np.log10(255**2 / error), "kb_per_frame": size}


def child(kind: str, *args: str, cpus: str | None) -> float | dict[str, float]:
    """Run one measurement in a fresh process (pinned to ``cpus`` with taskset when given)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, *args]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    return json.loads(run_measured(command).stdout.strip().splitlines()[-1])


def infer(video: Path, out: Path, overlay: bool, cpus: str | None, generate: bool = False) -> float:
    """Segmentation frames/s of ``videolisa infer`` (built-in model, CPU)."""
    shutil.rmtree(out, ignore_errors=True)
    command = (
        [
            str(Path(sys.executable).parent / "videolisa"),
            "infer",
            "--video",
            str(video),
            "--prompt",
            PROMPT,
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
        + (["--save-overlay"] if overlay else [])
        + (["--generate"] if generate else [])
    )
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    run_measured(command, env={"HF_HUB_OFFLINE": "1"})
    summary = json.loads((out / "summary.json").read_text())
    if generate:
        print(f"{video.name} --generate: answer {summary['answer']!r}, {len(summary['tracks'])} track(s)")
    return summary["frames_per_second"]


def measure(name: str, video: Path, workdir: Path, repeats: int, cpus: str | None) -> dict[str, float]:
    """Best-of-``repeats`` frames/s of the four runs on one clip."""
    runs: dict[str, list[float]] = {
        "infer": [],
        "infer+overlay": [],
        "generate+overlay": [],
        "bound writers": [],
        "bound encode": [],
        "segment alone": [],
    }
    masks_out = workdir / f"infer-{name}"
    for _ in range(repeats):
        runs["infer"].append(infer(video, masks_out, overlay=False, cpus=cpus))
        scratch = workdir / "scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        runs["bound writers"].append(
            child("writers", str(video), str(masks_out / "masks.json"), str(scratch), cpus=cpus)
        )
        runs["infer+overlay"].append(infer(video, workdir / f"overlay-{name}", overlay=True, cpus=cpus))
        runs["generate+overlay"].append(
            infer(video, workdir / f"generate-{name}", overlay=True, cpus=cpus, generate=True)
        )
        shutil.rmtree(scratch, ignore_errors=True)
        runs["bound encode"].append(child("encode", str(video), str(scratch), cpus=cpus))
        runs["segment alone"].append(child("segment", str(video), str(scratch), cpus=cpus))
    return {key: max(values) for key, values in runs.items()}


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def worker(args: list[str]) -> None:
    kind, *rest = args
    tmp = rest[-1]
    Path(tmp).mkdir(parents=True, exist_ok=True)
    if kind == "writers":
        print(json.dumps(bound_writers(*rest)))
    elif kind == "encode":
        print(json.dumps(bound_encode(*rest)))
    elif kind == "segment":
        print(json.dumps(segment_alone(*rest)))
    else:
        print(json.dumps(preset_quality(rest[0], kind)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--cpus-scaling", action="store_true", help="repeat 1080p on the first CPU only")
    parser.add_argument("--presets", action="store_true", help="libx264 presets' speed and PSNR at 1080p")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return

    cpus = len(os.sched_getaffinity(0))
    print(f"{cpus} CPUs; load average at the start: {load_average()}")
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory(prefix="videolisa-throughput-") as tmp:
        workdir = Path(tmp)
        configs = [(name, None) for name in args.clips]
        if args.cpus_scaling and cpus > 1:
            configs.append(("1080p", "0"))
        results: dict[tuple[str, str | None], dict[str, float]] = {}
        for name, pinned in configs:
            height, width, frames = CLIPS[name]
            video = workdir / f"{name}.mp4"
            if not video.exists():
                write_clip(video, height, width, frames)
            results[name, pinned] = fps = measure(name, video, workdir, args.repeats, pinned)
            threads = "1" if pinned else str(cpus)
            rows += [[name, frames, threads, run, f"{value:.1f}"] for run, value in fps.items()]
            if pinned is None:
                ratios[f"infer_vs_bound_{name}"] = fps["infer"] / fps["bound writers"]
                ratios[f"overlay_vs_encode_{name}"] = fps["infer+overlay"] / fps["bound encode"]
                ratios[f"infer_vs_slowest_{name}"] = fps["infer"] / min(fps["bound writers"], fps["segment alone"])
        if ("1080p", "0") in results and ("1080p", None) in results:
            for run in ("infer", "infer+overlay"):
                key = f"scaling_{cpus}cpu_vs_1cpu_1080p{'_overlay' if run != 'infer' else ''}"
                ratios[key] = results["1080p", None][run] / results["1080p", "0"][run]
        preset_rows = []
        if args.presets:
            video = workdir / "1080p.mp4"
            if not video.exists():
                write_clip(video, *CLIPS["1080p"])
            for preset in ("ultrafast", "superfast", "veryfast", "faster"):
                quality = child(preset, str(video), str(workdir / "scratch"), cpus=None)
                preset_rows.append(
                    [preset, f"{quality['fps']:.1f}", f"{quality['psnr']:.2f}", f"{quality['kb_per_frame']:.0f}"]
                )
    print(f"frames/s, best of {args.repeats}; threads: CPUs the processes may use")
    print_table(["clip", "frames", "CPUs", "run", "frames/s"], rows)
    if preset_rows:
        print("libx264 crf 18 at 1080p (encoding alone, frame threads): frames/s, PSNR against the decoded clip")
        print_table(["preset", "frames/s", "PSNR dB", "kB/frame"], preset_rows)
    print(f"load average at the end: {load_average()}")
    print(ratio_line(ratios))


if __name__ == "__main__":
    main()
