"""Does SAM 2 propagation (``--refine sam2``) recover noisy per-frame masks? A synthetic check of issue 21 item 5.

    python eval/diagnostics/refine_recovery.py --out eval/results/refine_recovery.json

A model whose masks are right on the dense frames and noisy elsewhere is simulated from the synthetic generator's
exact masks: the ground truth of the dense frames (the frames ``--refine-anchors dense`` uses, chosen by the
package's own frame sampling) is kept and every other frame's mask is corrupted (shifted, dilated or eroded,
sometimes dropped). The dense-frame masks are then propagated by the package's :class:`~videolisa.refine.Sam2Refiner`
-- the path ``--refine sam2`` runs -- with a tiny SAM 2 (transformers ``Sam2VideoModel``, random weights, 128 px)
before and after a short CPU training on other synthetic clips.

Training: transformers' ``Sam2VideoModel.forward`` is decorated with ``torch.inference_mode`` but nothing inside
it detaches (in eval mode; in train mode it drops the object scores), so the undecorated function
(``inspect.unwrap``) run with gradients propagates a first-frame mask prompt through a clip end to end: loss =
BCE + DICE (the package's ``videolisa.losses``) of every later frame's mask logits, plus BCE of the object score
against "the object is visible", as SAM 2's own training. The memory encoder's features pass through bfloat16
inside transformers (kept as is).

Scores (``videolisa.metrics.compute_jf``, J&F averaged over the objects of the held-out clips, generated from
``--eval-seed``, never trained on): the corrupted masks, the nearest dense frame's mask copied (what a tracker must
beat), the refined masks with the untrained and the trained SAM 2, and the ground truth (upper bound, 1.0).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np

from videolisa.cli import reports_errors

# Refine anchors: the dense frames the release's predictor uses (32 sparse frames, 4 of them dense).
NUM_SPARSE, NUM_DENSE = 32, 4
IMAGE_SIZE = 128
# Random weights call the object absent on most frames (masks of -1024); start from "present" as tests/sam2_tiny.py.
OBJECT_SCORE_BIAS = 4.0
# SAM 2 outputs -1024 where it calls the object absent; the constant is clamped so the logged loss stays readable
# (its gradient is zero either way).
LOSS_LOGIT_FLOOR = -30.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-seconds", type=float, default=270.0, help="wall-clock training budget")
    parser.add_argument("--train-seed", type=int, default=1, help="seed of the training clips")
    parser.add_argument("--train-frames", type=int, default=8, help="frames per training clip (>= 8)")
    parser.add_argument("--eval-seed", type=int, default=2, help="seed of the held-out clips")
    parser.add_argument("--eval-videos", type=int, default=6)
    parser.add_argument("--eval-frames", type=int, default=16, help="frames per held-out clip")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and corruption seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    return parser.parse_args(argv)


def synthetic_config(num_frames: int):
    """Clips of exactly ``num_frames`` frames, 96x128, 2-3 objects."""
    from videolisa.synthetic import SyntheticConfig

    return SyntheticConfig(
        min_frames=num_frames, max_frames=num_frames, sizes=((96, 128),), min_objects=2, max_objects=3
    )


def build_sam2(seed: int):
    """A tiny random ``Sam2VideoModel`` (SAM 2.1's architecture; 5-block Hiera of width 16 at 128 px, one
    memory-attention layer, 4 memory frames) and its processor."""
    import torch
    from transformers import (
        Sam2HieraDetConfig,
        Sam2VideoConfig,
        Sam2VideoMaskDecoderConfig,
        Sam2VideoModel,
        Sam2VideoPromptEncoderConfig,
        Sam2VisionConfig,
    )

    from videolisa.refine.sam2 import build_sam2_processor

    width, feature = 16, IMAGE_SIZE // 16
    backbone = Sam2HieraDetConfig(
        hidden_size=width,
        num_attention_heads=1,
        image_size=[IMAGE_SIZE, IMAGE_SIZE],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[width * 2**i for i in range(4)],
        num_attention_heads_per_stage=[2**i for i in range(4)],
        window_size_per_stage=[8, 4, 4, 2],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[4, 4],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[width * 2**i for i in (3, 2, 1, 0)],
        backbone_feature_sizes=[[feature * 4] * 2, [feature * 2] * 2, [feature] * 2],
    )
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(image_size=IMAGE_SIZE),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(),
        image_size=IMAGE_SIZE,
        num_maskmem=4,
        max_object_pointers_in_encoder=8,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=256,
        memory_attention_rope_feat_sizes=[feature, feature],
    )
    torch.manual_seed(seed)
    model = Sam2VideoModel(config).eval()
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(OBJECT_SCORE_BIAS)
    return model, build_sam2_processor(model)


def dense_frames(num_frames: int) -> list[int]:
    """The dense (anchor) frames of a ``num_frames`` video, as the predictor picks them."""
    from videolisa.processing.sampling import dense_frame_indices, sample_dense_positions, sample_sparse_indices

    return sorted(
        set(
            dense_frame_indices(
                sample_sparse_indices(num_frames, NUM_SPARSE), sample_dense_positions(NUM_SPARSE, NUM_DENSE)
            )
        )
    )


def corrupt_masks(masks: np.ndarray, keep: list[int], rng: np.random.Generator) -> np.ndarray:
    """A noisy per-frame segmenter: ``masks [T, H, W] bool`` with every frame not in ``keep`` shifted by up to
    8 px, dilated or eroded by 2-4 px, and dropped (empty) with probability 0.15. Returns a new array."""
    import cv2

    noisy = masks.copy()
    height, width = masks.shape[1:]
    for frame in range(len(masks)):
        if frame in keep:
            continue
        if rng.random() < 0.15:
            noisy[frame] = False
            continue
        dy, dx = rng.integers(-8, 9, size=2)
        shifted = np.zeros_like(masks[frame])
        src = masks[frame][max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
        shifted[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
        radius = int(rng.integers(2, 5))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        morph = cv2.dilate if rng.random() < 0.5 else cv2.erode
        noisy[frame] = morph(shifted.astype(np.uint8), kernel).astype(bool)
    return noisy


def nearest_anchor_masks(masks: np.ndarray, anchors: list[int]) -> np.ndarray:
    """Every frame gets the mask of its nearest anchor frame (``masks [T, H, W]``): a tracker that does not move."""
    nearest = [min(anchors, key=lambda anchor: abs(anchor - frame)) for frame in range(len(masks))]
    return masks[nearest]


def sequence_jf(pred: np.ndarray, gt: np.ndarray, frames: list[int]) -> float:
    """Mean J&F over ``frames`` of one object (``[T, H, W]`` masks), with the package's scorer."""
    from videolisa.metrics import compute_jf

    region, boundary = compute_jf(pred[frames], gt[frames])
    return float((region.mean() + boundary.mean()) / 2)


def train(model, processor, args: argparse.Namespace) -> dict:
    """Train ``model`` in place to propagate a first-frame mask prompt through synthetic clips for
    ``args.train_seconds``; returns the step count and the loss curve."""
    import torch
    import torch.nn.functional as F

    from videolisa.losses import dice_per_mask, sigmoid_bce_per_mask
    from videolisa.synthetic import generate_videos

    forward = inspect.unwrap(type(model).forward)  # without torch.inference_mode
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    clips = generate_videos(args.train_seed, 10**6, synthetic_config(args.train_frames))
    curve, steps, start = [], 0, time.perf_counter()
    while time.perf_counter() - start < args.train_seconds:
        video = next(clips)
        objects = [i for i in range(len(video.masks)) if video.masks[i, 0].sum() >= 16]
        if not objects:
            continue
        session = processor.init_video_session(video=list(video.frames), inference_device="cpu", dtype=torch.float32)
        processor.add_inputs_to_inference_session(
            session,
            frame_idx=0,
            obj_ids=objects,
            input_masks=[torch.from_numpy(video.masks[i, 0]) for i in objects],
        )
        targets = torch.from_numpy(video.masks[objects]).float()  # [K, T, H, W]
        losses = []
        with torch.enable_grad():
            for frame in range(video.num_frames):
                output = forward(model, inference_session=session, frame_idx=frame)
                if frame == 0:
                    continue  # the prompt itself
                logits = F.interpolate(output.pred_masks.float(), size=targets.shape[-2:], mode="bilinear")[:, 0]
                logits = logits.clamp(min=LOSS_LOGIT_FLOOR)
                present = (targets[:, frame].flatten(1).amax(1) > 0).float()
                losses.append(
                    sigmoid_bce_per_mask(logits, targets[:, frame])
                    + dice_per_mask(logits, targets[:, frame])
                    + F.binary_cross_entropy_with_logits(output.object_score_logits.float().reshape(-1), present)
                )
            loss = torch.stack(losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        steps += 1
        curve.append(float(loss.detach()))
        if steps % 25 == 0:
            print(f"step {steps}  loss {np.mean(curve[-25:]):.3f}  {time.perf_counter() - start:.0f}s", flush=True)
    return {
        "steps": steps,
        "seconds": round(time.perf_counter() - start, 1),
        "loss_first_25": float(np.mean(curve[:25])),
        "loss_last_25": float(np.mean(curve[-25:])),
    }


def evaluate(refiner, videos: list, seed: int) -> dict[str, dict[str, float]]:
    """J&F of corrupted, nearest-anchor, refined and ground-truth masks over the objects of ``videos``:
    ``{"all": {row: score}, "non_anchor": {row: score}}`` (scores over every frame / the corrupted frames only)."""
    from videolisa.processing.video_io import open_video

    rng = np.random.default_rng(seed)
    scores: dict[str, dict[str, list[float]]] = {"all": {}, "non_anchor": {}}
    for video in videos:
        anchors = dense_frames(video.num_frames)
        others = [frame for frame in range(video.num_frames) if frame not in anchors]
        # Objects visible on some anchor frame (the refiner skips empty anchors: the package does too).
        objects = [i for i in range(len(video.masks)) if any(video.masks[i, f].any() for f in anchors)]
        prompts = {i: {f: video.masks[i, f] for f in anchors if video.masks[i, f].any()} for i in objects}
        refined = np.zeros((len(objects), *video.masks.shape[1:]), bool)
        for frame, logits in refiner.propagate(open_video(video.frames), prompts):
            refined[:, frame] = (logits > 0).numpy()
        for row, i in enumerate(objects):
            gt = video.masks[i]
            rows = {
                "corrupted": corrupt_masks(gt, anchors, rng),
                "nearest_anchor": nearest_anchor_masks(gt, sorted(prompts[i])),
                "refined": refined[row],
                "ground_truth": gt,
            }
            for name, pred in rows.items():
                scores["all"].setdefault(name, []).append(sequence_jf(pred, gt, list(range(video.num_frames))))
                scores["non_anchor"].setdefault(name, []).append(sequence_jf(pred, gt, others))
    return {part: {name: round(float(np.mean(v)), 4) for name, v in rows.items()} for part, rows in scores.items()}


@reports_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    from videolisa.refine import RefineConfig, Sam2Refiner
    from videolisa.synthetic import generate_videos

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, processor = build_sam2(args.seed)
    refiner = Sam2Refiner(model, processor, RefineConfig(model="tiny-random"), "cpu")
    videos = list(generate_videos(args.eval_seed, args.eval_videos, synthetic_config(args.eval_frames)))
    results = {"untrained": evaluate(refiner, videos, args.seed)}
    print("untrained:", json.dumps(results["untrained"]), flush=True)
    results["training"] = train(model, processor, args)
    results["trained"] = evaluate(refiner, videos, args.seed)
    print("trained:", json.dumps(results["trained"]), flush=True)
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    results["args"] = {key: str(value) for key, value in vars(args).items()}
    print(json.dumps(results, indent=1))
    if args.out is not None:
        from videolisa.atomic import write_atomically

        write_atomically(args.out, (json.dumps(results, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
