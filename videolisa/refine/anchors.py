"""Anchor frames for the refinement: which of VideoLISA's own masks become SAM 2 mask prompts.

Every (frame, track) the predictor decodes gets a presence score: SAM's stability score of the low-resolution
logits (the IoU of the masks thresholded at ``threshold - 1`` and ``threshold + 1``; segment_anything's own
``calculate_stability_score``), 0 when the mask is empty. A collector keeps, per track, the ``capacity``
best frames it is shown (non-empty masks first, then by score; their low-resolution logits only), so scoring a
whole video needs memory for ``capacity`` frames, not for the video.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import torch
from segment_anything.utils.amg import calculate_stability_score

# SAM's automatic mask generator scores stability with this logit offset.
STABILITY_OFFSET = 1.0


def presence_scores(low_res: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[F, K, h, w]`` mask logits -> ``[F, K]`` float32 presence scores in [0, 1] (0: empty mask)."""
    flat = low_res.float().flatten(0, 1)
    stability = calculate_stability_score(flat, threshold, STABILITY_OFFSET)
    return torch.where(mask_areas(low_res, threshold).flatten() > 0, stability, 0.0).reshape(low_res.shape[:2])


def mask_areas(low_res: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[F, K, h, w]`` mask logits -> ``[F, K]`` int64 pixel counts of the masks ``logits > threshold``."""
    return (low_res > threshold).flatten(2).sum(dim=2)


@dataclass
class Anchor:
    """One candidate anchor: ``low_res [h, w]`` float32 logits of ``track`` on video frame ``frame``, whose
    mask covers ``area`` low-resolution pixels."""

    score: float
    frame: int
    area: int = field(compare=False)
    track: int = field(compare=False)
    low_res: torch.Tensor = field(compare=False, repr=False)


class AnchorCollector:
    """Keeps the ``capacity`` best-scoring frames of each of ``num_tracks`` tracks (ties: earlier frames)."""

    def __init__(self, num_tracks: int, capacity: int, threshold: float) -> None:
        self.threshold = threshold
        self.capacity = capacity
        self._heaps: list[list[tuple[tuple[bool, float, int], Anchor]]] = [[] for _ in range(num_tracks)]

    def observe(self, frame_indices: list[int], low_res: torch.Tensor) -> None:
        """Score ``low_res [F, K, h, w]`` logits of the video frames ``frame_indices`` and keep the best."""
        scores = presence_scores(low_res, self.threshold).cpu()
        areas = mask_areas(low_res, self.threshold).cpu()
        for row, frame in enumerate(frame_indices):
            for track, heap in enumerate(self._heaps):
                score, area = float(scores[row, track]), int(areas[row, track])
                # Heap of the kept anchors, worst first; a later frame loses a tie (-frame sorts it lower).
                key = (area > 0, score, -frame)
                if len(heap) == self.capacity and key <= heap[0][0]:
                    continue
                anchor = Anchor(score, frame, area, track, low_res[row, track].float().cpu().clone())
                item = (key, anchor)
                if len(heap) < self.capacity:
                    heapq.heappush(heap, item)
                else:
                    heapq.heapreplace(heap, item)

    def anchors(self, track: int, min_score: float) -> list[Anchor]:
        """The kept anchors of ``track`` whose mask is non-empty and scores at least ``min_score``, by frame."""
        kept = (item[1] for item in self._heaps[track])
        return sorted((a for a in kept if a.area > 0 and a.score >= min_score), key=lambda a: a.frame)
