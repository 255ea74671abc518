"""DAVIS-2017 semi-supervised and unsupervised scoring, as davis2017-evaluation ``DAVISEvaluation``.

Layout: ``<root>/Annotations/480p`` (semi-supervised) or ``<root>/Annotations_unsupervised/480p``
(unsupervised) indexed PNGs, ``<root>/ImageSets/2017/<set>.txt``; predictions are indexed PNGs
``<pred>/<sequence>/<frame>.png``. The global results average every statistic over all objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videolisa.errors import MissingFilesError
from videolisa.metrics.io import MissingPredictions, ground_truth_pngs, require_dir
from videolisa.metrics.parallel import run_tasks
from videolisa.metrics.report import ScoreReport
from videolisa.metrics.sequences import (
    OFFICIAL_DECAY_FRAME_LIMIT,
    DavisObjectScores,
    DavisTask,
    davis_statistics,
    score_davis_task,
)


def davis_tasks(
    davis_root: Path, pred_root: Path, semi_supervised: bool, davis_set: str, missing: MissingPredictions
) -> list[DavisTask]:
    """One task per sequence of ``ImageSets/2017/<set>.txt`` (480p annotations)."""
    annotations = "Annotations" if semi_supervised else "Annotations_unsupervised"
    annotation_root = require_dir(davis_root / annotations / "480p", "DAVIS annotation folder")
    image_set = davis_root / "ImageSets" / "2017" / f"{davis_set}.txt"
    if not image_set.is_file():
        raise MissingFilesError(f"DAVIS sequence list not found: {image_set}")
    sequences = [line.strip() for line in image_set.read_text().splitlines() if line.strip()]
    tasks = []
    for sequence in sequences:
        names = ground_truth_pngs(annotation_root / sequence)
        tasks.append(
            DavisTask(
                sequence=sequence,
                gt_frames=tuple(str(annotation_root / sequence / name) for name in names),
                pred_frames=missing.frames(pred_root / sequence, names),
                semi_supervised=semi_supervised,
            )
        )
    return tasks


def davis_report(benchmark: str, objects: Sequence[DavisObjectScores], notes: list[str]) -> ScoreReport:
    """davis2017 global results: every statistic averaged over all objects (object-weighted)."""
    sequences: dict[str, dict[str, float]] = {}
    official_decay = {"J": [], "F": []}
    long_sequences = set()
    for obj in objects:
        entry: dict[str, float] = {}
        for name, values in (("J", obj.region), ("F", obj.boundary)):
            statistics = davis_statistics(values)
            entry.update(
                {name: statistics.mean, f"{name}_recall": statistics.recall, f"{name}_decay": statistics.decay}
            )
            official_decay[name].append(statistics.official_decay)
        entry["JF"] = (entry["J"] + entry["F"]) / 2
        sequences[f"{obj.sequence}/{obj.object_id}"] = entry
        if len(obj.region) > OFFICIAL_DECAY_FRAME_LIMIT:
            long_sequences.add(obj.sequence)
    overall = {
        name: float(np.mean([entry[name] for entry in sequences.values()]))
        for name in ("J", "J_recall", "J_decay", "F", "F_recall", "F_decay")
    }
    overall = {"JF": (overall["J"] + overall["F"]) / 2, **overall}
    details: dict[str, Any] = {}
    if long_sequences:
        details["official_decay"] = {name: float(np.mean(values)) for name, values in official_decay.items()}
        notes = notes + [
            f"{len(long_sequences)} sequences have more than {OFFICIAL_DECAY_FRAME_LIMIT} frames "
            f"({', '.join(sorted(long_sequences)[:5])}{', ...' if len(long_sequences) > 5 else ''}): "
            "davis2017-evaluation casts the decay bin indices to uint8 and reports NaN or a wrong decay "
            "for them; the decay here is correct (details.official_decay has the official value)"
        ]
    return ScoreReport(benchmark, overall, sequences, details, notes)


def score_davis(
    davis_root: Path, pred_root: Path, semi_supervised: bool, workers: int | None, missing: str, davis_set: str = "val"
) -> ScoreReport:
    """DAVIS-2017 semi-supervised or unsupervised scores of indexed-PNG predictions ``<pred>/<seq>/<id>.png``."""
    tracker = MissingPredictions(missing)
    tasks = davis_tasks(davis_root, pred_root, semi_supervised, davis_set, tracker)
    notes = tracker.check()
    results = run_tasks(score_davis_task, tasks, workers, "DAVIS sequences")
    benchmark = "davis-semi" if semi_supervised else "davis-unsup"
    return davis_report(benchmark, [obj for sequence in results for obj in sequence], notes)
