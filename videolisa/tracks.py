"""Object tracks: one per ``[SEG]`` of an answer, with a per-frame presence score.

A track's presence score on a frame is SAM's stability score of its mask logits there
(:func:`videolisa.refine.anchors.presence_scores`: the IoU of the masks thresholded one logit below and one
above the mask threshold, 0 when the mask is empty), the score the SAM 2 refinement already uses for its anchors.
SAM's IoU head is not used: VideoLISA's training never supervises it (the losses are the LM's cross-entropy and the
masks' BCE and DICE, docs/original.md §4.1), so in a VideoLISA checkpoint it is SAM's head reading a prompt it was
never trained on (in ``builtin:synthetic``, trained from scratch, it outputs about -0.05 for everything), its
values are not bounded, and reading it would need a second output from the batched decoder.
eval/results/presence.md compares both on synthetic clips with absent frames.

A frame whose score is below the presence threshold gets an empty mask; the threshold is off (0) by default in
teacher-forced mode, so that the default path reproduces the original, and :data:`DEFAULT_PRESENCE_THRESHOLD` in
generation mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videolisa.errors import InvalidInputError

# Presence threshold of generation mode: the middle of the best-F1 plateau of "present" per frame on synthetic clips
# with absent frames (eval/presence_calibration.py, eval/results/presence.md).
DEFAULT_PRESENCE_THRESHOLD = 0.45


@dataclass
class Track:
    """One object of an answer.

    Attributes:
        id: 1-based; the k of ``[SEGk]`` in the answer text.
        phrase: the words the answer attached to this ``[SEG]`` ("the red circle"), None when there are none
            ("Sure, [SEG].").
        masks: ``[T, H, W] bool``, empty on frames whose presence score is below the threshold.
        scores: ``[T] float32`` presence scores in [0, 1]; None with SAM 2 refinement (its masks are SAM 2's).
    """

    id: int
    phrase: str | None
    masks: np.ndarray
    scores: np.ndarray | None

    @property
    def present_frames(self) -> list[int]:
        """Indices of the frames where this track's mask is not empty."""
        return present_frames(self.masks)


def check_presence_threshold(value: float | None) -> float | None:
    """None (the mode's default) or a threshold in [0, 1]; anything else raises."""
    if value is not None and not 0.0 <= float(value) <= 1.0:
        raise InvalidInputError(f"presence_threshold must be in [0, 1] (0: off), got {value!r}")
    return None if value is None else float(value)


def resolve_presence_threshold(value: float | None, generating: bool) -> float:
    """The threshold a call uses: ``value`` (checked), or the mode's default when None: 0 (off) when
    teacher-forced, :data:`DEFAULT_PRESENCE_THRESHOLD` when generating."""
    value = check_presence_threshold(value)
    if value is not None:
        return value
    return DEFAULT_PRESENCE_THRESHOLD if generating else 0.0


def present_frames(masks: np.ndarray) -> list[int]:
    """``[T, H, W] bool`` -> indices of the non-empty frames."""
    return np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1)).tolist()
