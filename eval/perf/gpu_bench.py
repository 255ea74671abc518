"""GPU benchmarks at the release shapes in bf16 (run by ``eval/perf/gpu.sh``), and FLOP-count predictions.

On a CUDA device, with the ``videolisa-3.8b`` preset (Phi-3-mini LLM, CLIP ViT-L/14-336, SAM ViT-H) and
seeded random weights (speed does not depend on the values):

* SAM image encoder frames/s, stock per-frame fp32 against the fast path (``eval/perf/sam_encoder.py
  --device cuda``, optionally ``--compile``);
* CLIP on the 32 sparse frames and the LLM pass over 2,336 visual tokens plus a ~50-token conversation
  (milliseconds, CUDA-synchronised, best of ``--repeats``);
* end to end: ``VideoLisaPredictor.segment`` on a 100-frame 480p video file (decoding, CLIP, LLM, SAM on
  every frame, masks at 480p back on the CPU), fast path and stock SAM.

``--predict`` (any machine, no GPU needed): FLOPs of each stage from ``torch.utils.flop_counter`` on the
meta device, and the times they predict at a given bf16 peak (H100/H200 SXM: 989 TFLOP/s dense) and
model-FLOP utilisation.

Prints tables and, as its last line, ``RATIO name=value ...``.

Usage: ``python eval/perf/gpu_bench.py [--compile]`` or ``python eval/perf/gpu_bench.py --predict``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parse_ratio_line, print_table, python_command, ratio_line, run_measured  # noqa: E402
from pipeline import write_video  # noqa: E402
from sam_encoder import encoder_flops  # noqa: E402

from videolisa.config import VideoLisaConfig  # noqa: E402
from videolisa.modeling.videolisa import VideoLisaForSegmentation  # noqa: E402

PRESET = "videolisa-3.8b"
TEXT_TOKENS = 40  # instruction tokens besides the chat template's
VIDEO_FRAMES = 100
H100_BF16_PEAK_TFLOPS = 989.0


def conversation_ids(config: VideoLisaConfig) -> list[int]:
    """A Phi-3 chat prompt with the video placeholder, ``TEXT_TOKENS`` instruction ids and the answer
    ``Sure, [SEG].`` (template ids as in the parity fixture; the instruction ids are arbitrary)."""
    system = [1, 32006, 13, 6520, 16685, 27149, 19323, 26193, 15071, 6679, 32007, 13]
    user = [32010, 13, config.image_token_index, 13, *range(1000, 1000 + TEXT_TOKENS), 32007, 13]
    answer = [32001, 13, 24118, 5978, config.seg_token_id, 6679, 32007]
    return system + user + answer


def count_flops(config: VideoLisaConfig) -> dict[str, float]:
    """FLOPs per stage (``torch.utils.flop_counter`` on the meta device): SAM encoder and mask decoder per
    frame, CLIP over the sparse frames, one LLM pass."""
    from videolisa.modeling.sam import decode_low_res_logits

    with torch.device("meta"):
        model = VideoLisaForSegmentation(config).eval()
    tokens = len(conversation_ids(config)) - 1 + config.num_video_tokens
    grid = config.sam.image_embedding_size

    def flops(function: Callable[[], object]) -> float:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            function()
        return float(counter.get_total_flops())

    return {
        "sam_encoder_per_frame": encoder_flops(config.sam.variant),
        "sam_decoder_per_frame": flops(
            lambda: decode_low_res_logits(
                model.sam,
                torch.empty(1, config.sam.prompt_embed_dim, grid, grid, device="meta"),
                torch.empty(1, config.sam.prompt_embed_dim, device="meta"),
            )
        ),
        "clip_sparse_frames": flops(
            lambda: model.encode_frames(
                torch.empty(
                    1, config.num_frames_sparse, 3, config.clip_image_size, config.clip_image_size, device="meta"
                )
            )
        ),
        "llm_pass": flops(
            lambda: model.llm.get_decoder()(
                inputs_embeds=torch.empty(1, tokens, config.llm_hidden_size, device="meta"),
                attention_mask=torch.ones(1, tokens, dtype=torch.long, device="meta"),
                use_cache=False,
            )
        ),
    }


def predict(config: VideoLisaConfig, peak_tflops: float, utilisations: list[float]) -> dict[str, float]:
    """Print the FLOP table and the times it predicts; returns the predicted ViT-H frames/s and
    end-to-end seconds at the first utilisation."""
    counts = count_flops(config)
    frames_flops = VIDEO_FRAMES * (counts["sam_encoder_per_frame"] + counts["sam_decoder_per_frame"])
    end_to_end = frames_flops + counts["clip_sparse_frames"] + counts["llm_pass"]
    stages = [
        ("SAM ViT-H encoder, 1 frame", counts["sam_encoder_per_frame"]),
        ("SAM mask decoder, 1 frame x 1 prompt", counts["sam_decoder_per_frame"]),
        (f"CLIP ViT-L/14-336, {config.num_frames_sparse} frames", counts["clip_sparse_frames"]),
        (
            f"LLM pass, {config.num_video_tokens} visual + {len(conversation_ids(config)) - 1} text tokens",
            counts["llm_pass"],
        ),
        (f"end to end, {VIDEO_FRAMES} frames", end_to_end),
    ]
    rows = [
        [name, f"{value / 1e12:.4g}", *(f"{value / (peak_tflops * 1e12 * u) * 1e3:.3g}" for u in utilisations)]
        for name, value in stages
    ]
    print(f"FLOPs (torch.utils.flop_counter) and predicted milliseconds at {peak_tflops:.0f} TFLOP/s bf16 peak")
    print_table(["stage", "TFLOP", *(f"ms @ {u:.0%} MFU" for u in utilisations)], rows)
    seconds_per_frame = counts["sam_encoder_per_frame"] / (peak_tflops * 1e12 * utilisations[0])
    return {
        "predicted_sam_fps_vit_h": 1 / seconds_per_frame,
        "predicted_end_to_end_s": end_to_end / (peak_tflops * 1e12 * utilisations[0]),
    }


def cuda_seconds(function: Callable[[], object], repeats: int) -> float:
    """Best-of-``repeats`` wall seconds of ``function`` with CUDA synchronisation, after one warm-up."""
    function()
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def build_release_model(config: VideoLisaConfig, device: torch.device) -> VideoLisaForSegmentation:
    """The release architecture with seeded random weights, built directly on ``device``, in bf16."""
    torch.manual_seed(0)
    with device:
        return VideoLisaForSegmentation(config).to(torch.bfloat16).eval()


@torch.inference_mode()
def bench_prompt_stages(model: VideoLisaForSegmentation, device: torch.device, repeats: int) -> dict[str, float]:
    """Milliseconds of CLIP over the sparse frames and of one LLM pass (SDPA)."""
    config = model.config
    size = config.clip_image_size
    pixels = torch.randn(1, config.num_frames_sparse, 3, size, size, device=device, dtype=torch.bfloat16)
    dense = torch.linspace(0, config.num_frames_sparse - 1, config.num_frames_dense + 2)[1:-1].long()[None]
    video_tokens = model.build_video_tokens(pixels, dense.to(device))
    ids = torch.tensor([conversation_ids(config)], device=device)
    return {
        "clip_ms": 1e3 * cuda_seconds(lambda: model.build_video_tokens(pixels, dense.to(device)), repeats),
        "llm_ms": 1e3 * cuda_seconds(lambda: model.compute_prompts(ids, video_tokens), repeats),
    }


def bench_end_to_end(
    model: VideoLisaForSegmentation, device: torch.device, repeats: int, chunk_size: int
) -> dict[str, float]:
    """Seconds of ``VideoLisaPredictor.segment`` on a 100-frame 480p video file, fast and stock SAM."""
    from videolisa.predictor import VideoLisaPredictor

    ids = conversation_ids(model.config)
    results = {}
    with tempfile.TemporaryDirectory(prefix="videolisa-gpu-") as tmp:
        video = write_video(Path(tmp) / "video.mp4", VIDEO_FRAMES)
        for fast_sam in (True, False):
            predictor = VideoLisaPredictor(
                model, None, device=device, dtype="bf16", chunk_size=chunk_size, fast_sam=fast_sam
            )
            key = "fast" if fast_sam else "stock_sam"
            results[key] = cuda_seconds(lambda: predictor.segment(str(video), prompt_ids=ids), repeats)  # noqa: B023 (called here)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predict", action="store_true", help="only FLOP counts and predicted times (no GPU)")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_PEAK_TFLOPS)
    parser.add_argument(
        "--mfu",
        type=float,
        nargs="+",
        default=[0.5, 0.35, 0.65],
        help="model-FLOP utilisations to predict at (the first goes into the RATIO line)",
    )
    parser.add_argument("--compile", action="store_true", help="also torch.compile the SAM encoder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=16, help="SAM frames per batch end to end")
    args = parser.parse_args()
    config = VideoLisaConfig.from_preset(PRESET)
    ratios = predict(config, args.peak_tflops, args.mfu)
    if args.predict:
        print(ratio_line(ratios))
        return
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --predict for FLOP-based predictions")
    device = torch.device("cuda")
    print(
        f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}",
        flush=True,
    )
    sam = run_measured(
        python_command(
            Path(__file__).with_name("sam_encoder.py"),
            "--device",
            "cuda",
            "--variants",
            "vit_b",
            "vit_h",
            "--frames",
            "16",
            *(["--compile"] if args.compile else []),
        )
    )
    print(sam.stdout, flush=True)
    ratios.update(parse_ratio_line(sam.stdout))
    model = build_release_model(config, device)
    stages = bench_prompt_stages(model, device, args.repeats)
    end_to_end = bench_end_to_end(model, device, args.repeats, args.chunk_size)
    print(
        f"release shapes ({PRESET}, bf16, SDPA): CLIP over {config.num_frames_sparse} frames, one LLM pass over "
        f"{config.num_video_tokens} visual + {len(conversation_ids(config)) - 1} text tokens, and segment() on a "
        f"{VIDEO_FRAMES}-frame 480p video (chunks of {args.chunk_size})"
    )
    print_table(
        ["stage", "milliseconds"],
        [
            ["CLIP + projector + sparse-dense tokens", f"{stages['clip_ms']:.1f}"],
            ["LLM pass -> [SEG] prompt", f"{stages['llm_ms']:.1f}"],
            [f"end to end, {VIDEO_FRAMES} frames, fast SAM", f"{end_to_end['fast'] * 1e3:.0f}"],
            [f"end to end, {VIDEO_FRAMES} frames, stock SAM", f"{end_to_end['stock_sam'] * 1e3:.0f}"],
        ],
    )
    ratios.update(
        {
            "llm_pass_ms": stages["llm_ms"],
            "clip_ms": stages["clip_ms"],
            "end_to_end_100_frames_s": end_to_end["fast"],
            "end_to_end_speedup": end_to_end["stock_sam"] / end_to_end["fast"],
        }
    )
    print(ratio_line(ratios))


if __name__ == "__main__":
    main()
