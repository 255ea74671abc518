"""Temporal refinement (SAM 2) speed and memory: ``iter_segment`` with ``refine`` on 60- and 600-frame videos.

Models: the ``tiny`` VideoLISA preset and a small random SAM 2 (transformers ``Sam2VideoModel``, SAM 2.1's
architecture with a 5-block Hiera at 256x256 pixels; seeded, nothing downloaded). Each length runs in a fresh
process (peak RSS by ``wait4``) that streams the refined masks and drops them, as ``videolisa infer`` / ``eval``
write them frame by frame. The refinement holds one chunk of frames and SAM 2's memory window, so memory must
not grow with the video: ``refine_peak_memory_600_vs_60`` should be <= 1.2. The table gives the seconds of
the whole segmentation with refinement (LLM pass, anchor frames, SAM 2 over every frame).

Prints a table and, as its last line, ``RATIO name=value ...``.

Usage: ``python eval/perf/refine.py [--frames 60 600] [--device cpu|cuda]`` (about 4 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, python_command, ratio_line, run_measured  # noqa: E402

HEIGHT, WIDTH = 120, 160
SAM2_IMAGE_SIZE = 256


def write_video(folder: Path, num_frames: int) -> Path:
    """A folder of PNG frames: a square crossing a noisy background (decoded lazily by the reader)."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(num_frames):
        frame = rng.integers(0, 120, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        left = (3 * index) % (WIDTH - 40)
        frame[40:80, left : left + 40] = (250, 60, 40)
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    return folder


def build_sam2():
    """A small random SAM 2 in transformers (SAM 2.1's defaults for memory and decoder)."""
    import torch
    from transformers import (
        Sam2HieraDetConfig,
        Sam2VideoConfig,
        Sam2VideoModel,
        Sam2VideoPromptEncoderConfig,
        Sam2VisionConfig,
    )

    feature = SAM2_IMAGE_SIZE // 16
    backbone = Sam2HieraDetConfig(
        hidden_size=8,
        image_size=[SAM2_IMAGE_SIZE] * 2,
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 2, 4, 8],
        window_size_per_stage=[8, 4, 4, 2],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[4, 4],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[feature * 4] * 2, [feature * 2] * 2, [feature] * 2],
    )
    config = Sam2VideoConfig(
        vision_config=vision,
        image_size=SAM2_IMAGE_SIZE,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(image_size=SAM2_IMAGE_SIZE),
        memory_attention_rope_feat_sizes=[feature, feature],
    )
    torch.manual_seed(0)
    return Sam2VideoModel(config).eval()


def child(video: Path, device: str) -> None:
    """Stream the refined masks of ``video`` (dropping them) and print frames and seconds as JSON; the
    predictor logs the refine step's own timing (anchors, SAM 2)."""
    import torch

    from videolisa.config import VideoLisaConfig
    from videolisa.modeling.videolisa import VideoLisaForSegmentation
    from videolisa.predictor import VideoLisaPredictor
    from videolisa.refine import RefineConfig, Sam2Refiner, build_sam2_processor
    from videolisa.tokenization import build_tiny_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = VideoLisaForSegmentation(VideoLisaConfig.from_preset("tiny")).eval()
    sam2 = build_sam2().to(device)
    refiner = Sam2Refiner(sam2, build_sam2_processor(sam2), RefineConfig(min_score=0.0), device)
    predictor = VideoLisaPredictor(model, build_tiny_tokenizer(), device=device, dtype="fp32", refine=refiner)
    start = time.perf_counter()
    frames = sum(1 for _ in predictor.iter_segment(video, ["the red square"]))
    print(json.dumps({"frames": frames, "seconds": time.perf_counter() - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs=2, default=[60, 600], metavar=("SHORT", "LONG"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.device)
        return
    rows, peaks = [], {}
    with tempfile.TemporaryDirectory(prefix="refine-perf-") as root:
        for num_frames in args.frames:
            video = write_video(Path(root) / f"video-{num_frames}", num_frames)
            run = run_measured(python_command(Path(__file__), "--child", str(video), "--device", args.device))
            report = json.loads(run.stdout.strip().splitlines()[-1])
            assert report["frames"] == num_frames, report
            peaks[num_frames] = run.peak_rss_mib
            rows.append(
                [num_frames, run.wall_seconds, report["seconds"], num_frames / report["seconds"], run.peak_rss_mib]
            )
    print_table(["frames", "process wall s", "segment+refine s", "frames/s", "peak RSS MiB"], rows)
    short, long = args.frames
    print(ratio_line({f"refine_peak_memory_{long}_vs_{short}": peaks[long] / peaks[short]}))


if __name__ == "__main__":
    main()
