"""Ref-DAVIS17: the four-annotator protocol that the original left as a manual step.

Every object of a Ref-DAVIS video has one expression from each of four annotators; the
meta_expressions.json lists a video's expressions object-major (expression ``i = obj·4 + annotator``).
The original ``post_process_davis.py`` turns the per-expression 0/255 PNGs into one indexed PNG per
frame and annotator; ``eval_davis.py`` scores each annotator's set with the unsupervised DAVIS-2017
protocol; the four results are then averaged (by hand, in the original). Here all three steps run:

* merge (:func:`merge_frame`): each mask's grey value ``v`` counts as ``v / 100``, values below 0.5
  (``v < 50``) become 0, a background plane of 0.1 is prepended and the label is the arg-max (the
  first object wins ties) -- exactly the original rule, with masks read in grayscale as it does;
* :func:`score_refdavis`: merge into ``anno_<k>/<video>/<frame:05d>.png``, score each annotator,
  report the average of the four.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videolisa.errors import InvalidInputError, VideoReadError
from videolisa.metrics.davis import score_davis
from videolisa.metrics.io import MissingPredictions, load_json, write_indexed_png
from videolisa.metrics.parallel import run_tasks
from videolisa.metrics.report import ScoreReport

NUM_ANNOTATORS = 4
# Grey value at which a mask pixel counts (value / 100 >= 0.5 in the original).
_FOREGROUND_VALUE = 50


@dataclass(frozen=True)
class MergeTask:
    """One video to merge.

    Attributes:
        video: video name.
        masks: ``[annotator][object][T]`` expression mask paths (None: missing, taken as empty).
        out_root: folder receiving ``anno_<k>/<video>/<t:05d>.png``.
    """

    video: str
    masks: tuple[tuple[tuple[str | None, ...], ...], ...]
    out_root: str


def read_expression_mask(path: str) -> np.ndarray:
    """``[H, W] uint8`` grey values of one expression mask, read as the original does (grayscale)."""
    import cv2  # here: only Ref-DAVIS merging reads PNGs with OpenCV (as the original does)

    values = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if values is None:
        raise VideoReadError(f"cannot read expression mask {path}")
    if values.max() < _FOREGROUND_VALUE and values.any():
        raise InvalidInputError(
            f"{path} has non-zero values below {_FOREGROUND_VALUE} only; Ref-DAVIS merging keeps grey "
            f"values >= {_FOREGROUND_VALUE} (the original's value/100 >= 0.5), so write masks as 0/255"
        )
    return values


def merge_frame(object_masks: Sequence[np.ndarray]) -> np.ndarray:
    """Merge one annotator's per-object grey masks of a frame into object ids.

    Args:
        object_masks: ``[N]`` masks ``[H, W] uint8`` (grey values), in object order.

    Returns:
        ``[H, W] uint8`` labels: 0 where no mask reaches 50, else ``1 +`` the index of the mask with
        the highest value (the first one on ties), as the original's arg-max over
        ``[0.1, v_1/100, ..., v_N/100]`` with values below 0.5 zeroed.
    """
    stack = np.stack(object_masks)  # [N, H, W]
    stack[stack < _FOREGROUND_VALUE] = 0
    best = np.argmax(stack, axis=0)  # first maximum, as torch.argmax
    labels = (best + 1).astype(np.uint8)
    labels[stack.max(axis=0) == 0] = 0
    return labels


def _merge_video(task: MergeTask) -> None:
    num_frames = len(task.masks[0][0])
    for annotator, objects in enumerate(task.masks):
        folder = Path(task.out_root) / f"anno_{annotator}" / task.video
        folder.mkdir(parents=True, exist_ok=True)
        for frame in range(num_frames):
            values = [None if paths[frame] is None else read_expression_mask(paths[frame]) for paths in objects]
            shape = next((mask.shape for mask in values if mask is not None), None)
            if shape is None:
                raise InvalidInputError(f"video {task.video} frame {frame}: every expression mask is missing")
            values = [np.zeros(shape, np.uint8) if mask is None else mask for mask in values]
            for mask, paths in zip(values, objects):
                if mask.shape != shape:
                    raise InvalidInputError(f"{paths[frame]} is {mask.shape}, other masks of the frame {shape}")
            write_indexed_png(merge_frame(values), folder / f"{frame:05d}.png")


def merge_tasks(
    pred_root: Path, meta_path: Path, out_root: Path, missing: MissingPredictions
) -> tuple[list[MergeTask], list[str]]:
    """Merge tasks of every video in the Ref-DAVIS meta_expressions.json, and notes for the report."""
    videos = load_json(meta_path, "Ref-DAVIS meta_expressions.json")["videos"]
    tasks, uneven = [], []
    for video, info in videos.items():
        expression_ids = list(info["expressions"])
        if len(expression_ids) % NUM_ANNOTATORS:
            uneven.append(video)
        names = [f"{frame}.png" for frame in info["frames"]]
        num_objects = len(expression_ids) // NUM_ANNOTATORS
        masks = tuple(
            tuple(
                missing.frames(pred_root / video / expression_ids[obj * NUM_ANNOTATORS + annotator], names)
                for obj in range(num_objects)
            )
            for annotator in range(NUM_ANNOTATORS)
        )
        if num_objects:
            tasks.append(MergeTask(video, masks, str(out_root)))
    notes = []
    if uneven:
        notes.append(
            f"{len(uneven)} videos have an expression count that is not a multiple of {NUM_ANNOTATORS} "
            f"({', '.join(uneven[:5])}); as in the original, their last expressions are not scored"
        )
    return tasks, notes


def merge_refdavis_predictions(
    pred_root: str | os.PathLike,
    meta_path: str | os.PathLike,
    out_root: str | os.PathLike,
    workers: int | None = None,
    missing: str = "error",
) -> list[str]:
    """Write each annotator's indexed PNGs ``<out_root>/anno_<k>/<video>/<t:05d>.png``.

    Args:
        pred_root: ``<pred>/<video>/<exp_id>/<frame>.png`` 0/255 expression masks.
        meta_path: Ref-DAVIS ``meta_expressions.json`` (videos, frames, expressions in object-major order).
        out_root: destination folder.
        workers: worker processes (default all cores).
        missing: ``"error"`` or ``"zero"`` (missing expression masks taken as empty).

    Returns:
        Notes for the report.
    """
    tracker = MissingPredictions(missing, scored_as="merged as empty masks")
    tasks, notes = merge_tasks(Path(pred_root), Path(meta_path), Path(out_root), tracker)
    notes = tracker.check() + notes
    run_tasks(_merge_video, tasks, workers, "Ref-DAVIS merge")
    return notes


def average_reports(benchmark: str, reports: Sequence[ScoreReport], notes: list[str]) -> ScoreReport:
    """Average of the annotators' reports: overall numbers and every per-object number."""
    overall = {name: float(np.mean([report.overall[name] for report in reports])) for name in reports[0].overall}
    sequences = {
        key: {name: float(np.mean([report.sequences[key][name] for report in reports])) for name in scores}
        for key, scores in reports[0].sequences.items()
    }
    details = {"annotators": [report.overall for report in reports]}
    notes = notes + sorted({note for report in reports for note in report.notes})
    return ScoreReport(benchmark, overall, sequences, details, notes)


def score_refdavis(
    davis_root: str | os.PathLike,
    pred_root: str | os.PathLike,
    meta_path: str | os.PathLike,
    workers: int | None = None,
    missing: str = "error",
    davis_set: str = "val",
    merged_root: str | os.PathLike | None = None,
) -> ScoreReport:
    """Ref-DAVIS17 J&F: merge per annotator, score each with unsupervised DAVIS-2017, average the four.

    Args:
        davis_root: DAVIS-2017 root with ``Annotations_unsupervised/480p`` and ``ImageSets/2017``.
        pred_root: ``<pred>/<video>/<exp_id>/<frame>.png`` expression masks.
        meta_path: Ref-DAVIS ``meta_expressions.json``.
        workers: worker processes (default all cores).
        missing: ``"error"`` or ``"zero"``.
        davis_set: DAVIS image set to score.
        merged_root: keep the merged indexed PNGs there (default: a temporary folder, removed).
    """
    with tempfile.TemporaryDirectory(prefix="refdavis-merged-") as temporary:
        out_root = Path(merged_root) if merged_root is not None else Path(temporary)
        notes = merge_refdavis_predictions(pred_root, meta_path, out_root, workers, missing)
        reports = [
            score_davis(Path(davis_root), out_root / f"anno_{annotator}", False, workers, missing, davis_set)
            for annotator in range(NUM_ANNOTATORS)
        ]
    return average_reports("refdavis", reports, notes)
