"""Does a model follow the instruction? Three numbers on a MeViS-layout split (e.g. held-out synthetic videos).

    python eval/diagnostics/prompt_sensitivity.py --model builtin:synthetic --data outputs/synthetic_learning/heldout

* prompt spread: mean pairwise distance between the segmentation prompts (``[SEG]`` embeddings) of a video's
  instructions, relative to their mean norm -- 0 means the LLM gives every instruction the same prompt;
* cross-referent mask IoU: mean IoU between the predicted masks of two instructions of the same video that name
  *different* objects -- 1 means the masks do not depend on the instruction at all;
* decoder sensitivity: mean absolute change of the mask logits when an instruction's prompt is replaced by a
  random vector of the same norm, relative to the logits' standard deviation -- near 0 means the SAM decoder
  ignores its prompt, whatever the LLM produces.

A model that follows instructions has a clear prompt spread, a low cross-referent IoU and a decoder sensitivity
of order 1. Prints a table; ``--out`` also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from videolisa.cli import reports_errors


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:synthetic", help="model id, folder or builtin:<name>")
    parser.add_argument("--data", type=Path, required=True, help="MeViS-layout root (with <split>/JPEGImages)")
    parser.add_argument("--split", default="valid_u")
    parser.add_argument("--videos", type=int, default=10, help="videos to use (the first N, sorted by name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random prompts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="optional JSON output")
    return parser.parse_args(argv)


def pairwise_spread(prompts: np.ndarray) -> float:
    """Mean pairwise L2 distance of ``[K, C]`` prompts over their mean norm."""
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(prompts, 2)]
    return float(np.mean(distances) / np.linalg.norm(prompts, axis=1).mean())


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``[T, H, W]`` bool masks (1 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def decoder_sensitivity(predictor, frames_dir: Path, prompts: np.ndarray, rng: np.random.Generator) -> float:
    """Mean |logits(prompt) - logits(random prompt of the same norm)| / std(logits(prompt)) on the video's first
    frames (one SAM chunk)."""
    import torch

    from videolisa.processing.video_io import open_video

    with open_video(frames_dir) as reader:
        frames = reader.get_frames(list(range(min(reader.num_frames, predictor.chunk_size))))
        original_hw = (reader.height, reader.width)
    model = predictor.model
    with torch.inference_mode():
        pixels, resized = predictor.processor.sam_pixels(frames, device=predictor.device)
        embeddings = model.encode_images(pixels)
        own = torch.from_numpy(prompts).to(predictor.device)
        noise = torch.from_numpy(rng.standard_normal(prompts.shape).astype(np.float32)).to(predictor.device)
        random = noise / noise.norm(dim=1, keepdim=True) * own.norm(dim=1, keepdim=True)
        logits = model.decode_masks(embeddings, own.to(embeddings.dtype), resized, original_hw).float()
        replaced = model.decode_masks(embeddings, random.to(embeddings.dtype), resized, original_hw).float()
    return float((logits - replaced).abs().mean() / logits.std())


def measure(args: argparse.Namespace) -> dict[str, float]:
    from videolisa.benchmarks.layout import read_json
    from videolisa.predictor import VideoLisaPredictor

    split = args.data / args.split
    videos = read_json(split / "meta_expressions.json", "MeViS meta file")["videos"]
    predictor = VideoLisaPredictor.from_pretrained(args.model, device=args.device)
    rng = np.random.default_rng(args.seed)
    spreads, ious, sensitivities = [], [], []
    for name in sorted(videos)[: args.videos]:
        expressions = list(videos[name]["expressions"].values())
        results = predictor.segment_many(split / "JPEGImages" / name, [e["exp"] for e in expressions])
        prompts = np.concatenate([result.prompt_embedding for result in results])
        spreads.append(pairwise_spread(prompts))
        for (a, ea), (b, eb) in itertools.combinations(zip(results, expressions), 2):
            if ea["anno_id"] != eb["anno_id"]:
                ious.append(mask_iou(a.masks, b.masks))
        sensitivities.append(decoder_sensitivity(predictor, split / "JPEGImages" / name, prompts, rng))
    return {
        "videos": min(args.videos, len(videos)),
        "prompt_spread": float(np.mean(spreads)),
        "cross_referent_mask_iou": float(np.mean(ious)) if ious else float("nan"),
        "decoder_sensitivity": float(np.mean(sensitivities)),
    }


@reports_errors
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    numbers = measure(args)
    print(f"{'model':<24} {'prompt spread':>14} {'cross-referent IoU':>19} {'decoder sensitivity':>20}")
    print(
        f"{args.model:<24} {numbers['prompt_spread']:>14.3f} {numbers['cross_referent_mask_iou']:>19.3f} "
        f"{numbers['decoder_sensitivity']:>20.3f}"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, **numbers}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
