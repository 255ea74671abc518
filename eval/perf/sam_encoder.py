"""SAM image-encoder speed: the stock ``segment_anything`` encoder one frame at a time in float32 (what the
original VideoLISA does) against the fast path of :mod:`videolisa.modeling.sam_fast` (fused SDPA attention
with the relative-position bias as mask, frames batched, bf16 autocast on GPU), at ViT-B and ViT-H shapes
with random weights.

Each (variant, path) runs in its own process, so peak memory (RSS on CPU, CUDA peak allocation on GPU) is
that path's alone. Two measurement modes:

* ``--mode blocks`` (default on CPU, where a ViT-H frame takes minutes): times the stem (patch embedding +
  position embedding), one windowed block, one global-attention block and the neck (best of
  ``--repeats``), and composes a frame as ``stem + n_windowed * windowed + n_global * global + neck``.
  Every block of a kind has the same shapes and arithmetic, so this is the full-encoder time without
  running 12 or 32 blocks. It uses the process's CPU time with ``--threads 1`` by default: per-core work,
  robust to other processes on the machine (with 2 OpenMP threads on 2 shared cores, every parallel
  region waits for whichever thread was descheduled, and timings vary by 2x from run to run).
* ``--mode full`` (default on GPU): the whole encoder on ``--frames`` frames after a warm-up, wall time
  with CUDA synchronisation, best of ``--repeats``.

Prints a table and, as its last line, ``RATIO sam_speedup_<variant>=<stock time / fast time>
sam_fast_fps_<variant>=<fast frames/s> ...``.

Usage: ``python eval/perf/sam_encoder.py [--variants vit_b vit_h] [--device cpu|cuda] [--frames N]``
(about 2-3 minutes on 2 CPU cores with the defaults).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, python_command, ratio_line, run_measured  # noqa: E402

from videolisa.config import SamConfig  # noqa: E402
from videolisa.modeling import sam_fast  # noqa: E402
from videolisa.modeling.sam import build_sam  # noqa: E402

PATHS = ("stock", "fast")
PARTS = ("stem", "windowed", "global", "neck")  # per-part seconds per frame, blocks mode


def build_encoder(
    variant: str, device: torch.device, fast: bool, materialize: bool = True, compile: bool = False
) -> ImageEncoderViT:
    """The variant's image encoder; built on the meta device and materialised with seeded random weights
    (``materialize=False`` keeps it on meta, for FLOP counting). ``fast`` switches it to the fast path with
    bf16 autocast on CUDA (and ``torch.compile`` with ``compile``)."""
    with torch.device("meta"):
        sam = build_sam(SamConfig.from_variant(variant))
    if fast:
        autocast_dtype = torch.bfloat16 if device.type == "cuda" else None
        sam_fast.enable_fast_sam(sam, autocast_dtype=autocast_dtype, compile=compile)
    encoder = sam.image_encoder.eval()
    if materialize:
        encoder.to_empty(device=device)
        randomize(encoder)
    return encoder


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Seeded weights of realistic scale: fan-in-scaled matrices, unit norm gains, small biases and
    relative-position tables (random values only need to avoid NaNs and denormals)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for name, parameter in module.named_parameters():
        if parameter.ndim > 1:
            fan_in = parameter[0].numel()
            values = torch.randn(parameter.shape, generator=generator) / fan_in**0.5
        elif name.endswith("weight"):
            values = torch.ones(parameter.shape)
        else:
            values = 0.02 * torch.randn(parameter.shape, generator=generator)
        parameter.copy_(values)


def encoder_flops(variant: str) -> float:
    """FLOPs of one 1024x1024 frame through the stock encoder (``torch.utils.flop_counter``, on meta)."""
    encoder = build_encoder(variant, torch.device("meta"), fast=False, materialize=False)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(torch.empty(1, 3, encoder.img_size, encoder.img_size, device="meta"))
    return float(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], object], device: torch.device, use_cpu_time: bool) -> float:
    """Seconds of one call: process CPU time (all threads) or wall time with device synchronisation."""
    clock = time.process_time if use_cpu_time else time.perf_counter
    synchronize(device)
    start = clock()
    function()
    synchronize(device)
    return clock() - start


def run_path(
    encoder: ImageEncoderViT,
    path: str,
    x: torch.Tensor,
    module: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    repeats: int,
) -> float:
    """Best-of-``repeats`` seconds for ``module`` over the frames of ``x`` (``[F, ...]``): one frame at a
    time for the stock path, one batch under the fast path's autocast for the fast path."""
    use_cpu_time = device.type == "cpu"
    if path == "stock":
        return min(timed(lambda: [module(frame[None]) for frame in x], device, use_cpu_time) for _ in range(repeats))
    with sam_fast.autocast_for(device, encoder.fast_settings):
        return min(timed(lambda: module(x), device, use_cpu_time) for _ in range(repeats))


@torch.no_grad()
def measure_blocks(variant: str, path: str, frames: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Per-frame seconds composed from the stem, one windowed block, one global block and the neck."""
    encoder = build_encoder(variant, device, fast=path == "fast")
    windowed = [block for block in encoder.blocks if block.window_size > 0]
    global_ = [block for block in encoder.blocks if block.window_size == 0]
    pixels = torch.randn(frames, 3, encoder.img_size, encoder.img_size, device=device)
    stem = lambda x: encoder.patch_embed(x) + encoder.pos_embed  # noqa: E731
    stem(pixels[:1])  # warm up the BLAS / oneDNN libraries
    seconds = {"stem": run_path(encoder, path, pixels, stem, device, repeats)}
    tokens = stem(pixels)
    seconds["windowed"] = run_path(encoder, path, tokens, windowed[0], device, repeats)
    seconds["global"] = run_path(encoder, path, tokens, global_[0], device, repeats)
    neck = lambda x: encoder.neck(x.permute(0, 3, 1, 2))  # noqa: E731
    seconds["neck"] = run_path(encoder, path, tokens, neck, device, repeats)
    total = seconds["stem"] + len(windowed) * seconds["windowed"] + len(global_) * seconds["global"] + seconds["neck"]
    return {name: value / frames for name, value in {**seconds, "frame": total}.items()}


@torch.no_grad()
def measure_full(
    variant: str, path: str, frames: int, repeats: int, device: torch.device, compile: bool
) -> dict[str, float]:
    """Per-frame seconds of the whole encoder (best of ``repeats`` after one warm-up)."""
    encoder = build_encoder(variant, device, fast=path == "fast", compile=compile)
    pixels = torch.randn(frames, 3, encoder.img_size, encoder.img_size, device=device)
    run_path(encoder, path, pixels, encoder, device, repeats=1)  # warm-up (and compilation, if any)
    return {"frame": run_path(encoder, path, pixels, encoder, device, repeats) / frames}


def worker(args: argparse.Namespace) -> None:
    """Child process: measure one (variant, path) and print JSON."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "blocks":
        result = measure_blocks(args.variant, args.path, args.frames, args.repeats, device)
    else:
        result = measure_full(args.variant, args.path, args.frames, args.repeats, device, args.compile)
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["vit_b", "vit_h"], choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mode", choices=["blocks", "full"], default=None, help="default: blocks on CPU, full on GPU")
    parser.add_argument("--frames", type=int, default=None, help="frames per measurement (default: 1 CPU, 16 GPU)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on CPU, unset on GPU)")
    parser.add_argument("--compile", action="store_true", help="full mode: torch.compile the fast encoder")
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    args.mode = args.mode or ("full" if on_gpu else "blocks")
    args.frames = args.frames or (16 if on_gpu else 1)
    args.threads = args.threads if args.threads is not None else (0 if on_gpu else 1)
    if args.worker:
        args.variant, args.path = args.worker
        worker(args)
        return

    rows, ratios = [], {}
    for variant in args.variants:
        flops = encoder_flops(variant)
        per_frame = {}
        for path in PATHS:
            run = run_measured(
                python_command(
                    Path(__file__),
                    "--worker",
                    variant,
                    path,
                    "--device",
                    args.device,
                    "--mode",
                    args.mode,
                    "--frames",
                    str(args.frames),
                    "--repeats",
                    str(args.repeats),
                    "--threads",
                    str(args.threads),
                    *(["--compile"] if args.compile else []),
                )
            )
            result = json.loads(run.stdout.strip().splitlines()[-1])
            per_frame[path] = result["frame"]
            memory = result.get("peak_cuda_mib", run.peak_rss_mib)
            rows.append(
                [
                    variant,
                    path,
                    args.mode,
                    args.frames,
                    *(f"{result[k]:.3f}" if k in result else "-" for k in PARTS),
                    f"{result['frame']:.3f}",
                    f"{1 / result['frame']:.3g}",
                    f"{flops / result['frame'] / 1e12:.2f}",
                    f"{memory:.0f}",
                ]
            )
        ratios[f"sam_speedup_{variant}"] = per_frame["stock"] / per_frame["fast"]
        ratios[f"sam_fast_fps_{variant}"] = 1 / per_frame["fast"]
        print(f"# {variant}: {flops / 1e12:.2f} TFLOP per 1024x1024 frame (torch.utils.flop_counter)", flush=True)
    memory_name = "peak CUDA MiB" if on_gpu else "peak RSS MiB"
    clock = "CPU s/frame" if args.device == "cpu" and args.mode == "blocks" else "s/frame"
    threads = f", {args.threads} thread(s)" if args.threads else ""
    print(
        f"SAM image encoder on {args.device}{threads}: stock = segment_anything one frame at a time in float32; "
        f"fast = videolisa.modeling.sam_fast, {args.frames} frame(s) per batch"
        + (", bf16 autocast" if on_gpu else ", float32")
        + (", torch.compile" if args.compile else "")
    )
    print_table(
        [
            "variant",
            "path",
            "mode",
            "frames",
            *(f"{part} s" for part in PARTS),
            clock,
            "frames/s",
            "TFLOP/s",
            memory_name,
        ],
        rows,
    )
    print(ratio_line(ratios))


if __name__ == "__main__":
    main()
