"""Benchmark layouts and aggregation rules: from ground-truth and prediction folders to a report.

Each benchmark follows its official toolkit (``docs/metrics.md``):

* ``mevis``: per expression the mean J and F over all frames, ground truth = union of the
  expression's ``anno_id`` RLEs; overall = unweighted mean over expressions, J&F = (J + F) / 2.
* ``reasonvos``: items = object x expression, frames = the object's sorted ground-truth PNGs.
* ``folders``: ``<root>/<sequence>/<object>/<frame>.png`` on both sides, frames = the ground
  truth's PNGs, aggregated like ReasonVOS.
* ``davis-semi`` / ``davis-unsup``: davis2017-evaluation (objects, void, first / last frames,
  Hungarian matching); overall = mean over all objects, with recall and decay.
* ``refdavis``: the Ref-DAVIS17 four-annotator protocol (see :mod:`videolisa.metrics.refdavis`).
* ``refseg``: LISA cIoU / gIoU over images ``<root>/**/<name>.png``.
* ``revos``: J, F, A, R per expression and type, VISA's ``eval_revos.py`` (see :mod:`videolisa.metrics.revos`).

Missing predictions are an error listing what is missing, or with ``missing="zero"`` they score 0
(as MeViS's official script does for a missing video).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.metrics.davis import score_davis
from videolisa.metrics.images import score_refseg
from videolisa.metrics.io import MissingPredictions, ground_truth_pngs, load_json, require_dir
from videolisa.metrics.names import BENCHMARKS
from videolisa.metrics.parallel import run_tasks
from videolisa.metrics.refdavis import score_refdavis
from videolisa.metrics.report import ScoreReport
from videolisa.metrics.revos import revos_report, revos_tasks, score_revos_task
from videolisa.metrics.sequences import BinaryItem, BinaryTask, ItemScores, score_binary_task


def mevis_tasks(
    gt_root: Path, pred_root: Path, meta_path: Path | None, missing: MissingPredictions
) -> list[BinaryTask]:
    """One task per MeViS video: ``<gt>/meta_expressions.json`` + ``<gt>/mask_dict.json``."""
    videos = load_json(meta_path or gt_root / "meta_expressions.json", "MeViS meta_expressions.json")["videos"]
    mask_dict = load_json(gt_root / "mask_dict.json", "MeViS mask_dict.json (valid_u or train split)")
    tasks = []
    for video, info in videos.items():
        names = [f"{frame}.png" for frame in info["frames"]]
        items = []
        rles: dict[str, Sequence] = {}
        for expression_id, expression in info["expressions"].items():
            annotations = tuple(str(annotation) for annotation in expression["anno_id"])
            for annotation in annotations:
                if annotation not in mask_dict:
                    raise InvalidInputError(
                        f"video {video} expression {expression_id}: anno_id {annotation} not in mask_dict.json"
                    )
                if len(mask_dict[annotation]) != len(names):
                    raise InvalidInputError(
                        f"anno_id {annotation} has {len(mask_dict[annotation])} frames, video {video} has {len(names)}"
                    )
                rles[annotation] = mask_dict[annotation]
            pred_frames = missing.frames(pred_root / video / expression_id, names)
            items.append(BinaryItem(f"{video}/{expression_id}", pred_frames, gt_annotations=annotations))
        sizes = [tuple(rle["size"]) for frames in rles.values() for rle in frames if rle]
        tasks.append(BinaryTask(tuple(items), rles, sizes[0] if sizes else None))
    return tasks


def reasonvos_tasks(
    gt_root: Path, pred_root: Path, meta_path: Path | None, missing: MissingPredictions
) -> list[BinaryTask]:
    """One task per ReasonVOS object ``<source>_<video>_<obj_id>``, holding all its expressions."""
    videos = load_json(meta_path or gt_root / "meta_expressions.json", "ReasonVOS meta_expressions.json")["videos"]
    expressions_of: dict[str, list[str]] = defaultdict(list)
    for video, info in videos.items():
        for expression in info["expressions"]:
            expressions_of[f"{info['source']}_{video}_{expression['obj_id']}"].append(str(expression["exp_id"]))
    tasks = []
    for object_key, expression_ids in expressions_of.items():
        gt_folder = gt_root / "Annotations" / object_key
        names = ground_truth_pngs(gt_folder)
        gt_frames = tuple(str(gt_folder / name) for name in names)
        items = tuple(
            BinaryItem(
                f"{object_key}/{expression_id}",
                missing.frames(pred_root / object_key / expression_id, names),
                gt_frames,
            )
            for expression_id in expression_ids
        )
        tasks.append(BinaryTask(items))
    return tasks


def folder_tasks(gt_root: Path, pred_root: Path, missing: MissingPredictions) -> list[BinaryTask]:
    """One task per sequence of ``<root>/<sequence>/<object>/<frame>.png``."""
    tasks = []
    for sequence in sorted(
        entry.name for entry in os.scandir(require_dir(gt_root, "ground-truth root")) if entry.is_dir()
    ):
        items = []
        for obj in sorted(entry.name for entry in os.scandir(gt_root / sequence) if entry.is_dir()):
            gt_folder = gt_root / sequence / obj
            names = ground_truth_pngs(gt_folder)
            items.append(
                BinaryItem(
                    f"{sequence}/{obj}",
                    missing.frames(pred_root / sequence / obj, names),
                    tuple(str(gt_folder / name) for name in names),
                )
            )
        if items:
            tasks.append(BinaryTask(tuple(items)))
    if not tasks:
        raise MissingFilesError(f"no <sequence>/<object>/ folders under the ground-truth root {gt_root}")
    return tasks


def binary_report(benchmark: str, scores: Sequence[ItemScores], notes: list[str]) -> ScoreReport:
    """Mean J and F over each item's frames, then unweighted means over items; J&F = (J + F) / 2."""
    sequences = {}
    for item in scores:
        region, boundary = float(item.region.mean()), float(item.boundary.mean())
        sequences[item.key] = {"J": region, "F": boundary, "JF": (region + boundary) / 2}
    region = float(np.mean([scores["J"] for scores in sequences.values()]))
    boundary = float(np.mean([scores["F"] for scores in sequences.values()]))
    return ScoreReport(benchmark, {"J": region, "F": boundary, "JF": (region + boundary) / 2}, sequences, notes=notes)


def score_revos(
    gt_root: Path, pred_root: Path, meta_path: Path | None, workers: int | None, missing: str
) -> ScoreReport:
    """ReVOS: one task per video, J, F, A, R per expression, aggregated per type (:mod:`videolisa.metrics.revos`)."""
    tracker = MissingPredictions(missing, scored_as="scored 0 on every metric for the whole expression")
    try:
        tasks = revos_tasks(gt_root, pred_root, meta_path, tracker)
    except (KeyError, TypeError, AttributeError) as error:
        raise InvalidInputError(
            f"revos: the meta file or mask dicts are not in the ReVOS layout ({error!r})"
        ) from error
    if not tasks:
        raise InvalidInputError(f"revos: the meta file under {gt_root} lists no expressions")
    notes = tracker.check()
    results = run_tasks(score_revos_task, tasks, workers, "revos videos")
    return revos_report([item for task in results for item in task], notes)


def score_benchmark(
    benchmark: str,
    gt_root: str | os.PathLike,
    pred_root: str | os.PathLike,
    workers: int | None = None,
    missing: str = "error",
    meta: str | os.PathLike | None = None,
    davis_set: str = "val",
) -> ScoreReport:
    """Score predictions of ``benchmark`` against its ground truth.

    Args:
        benchmark: one of :data:`BENCHMARKS`.
        gt_root: MeViS split folder (``meta_expressions.json``, ``mask_dict.json``); ReasonVOS root
            (``meta_expressions.json``, ``Annotations/``); ReVOS root (``mask_dict.json``,
            ``mask_dict_foreground.json``, ``meta_expressions_valid_.json``); DAVIS root
            (``Annotations[_unsupervised]/480p``, ``ImageSets/2017``) for ``davis-*`` and ``refdavis``; or a mask
            folder (``folders``, ``refseg``).
        pred_root: folder of predicted PNGs in the benchmark's layout.
        workers: worker processes (default: all cores; 1 scores in this process).
        missing: ``"error"`` (default) or ``"zero"`` for missing predictions.
        meta: meta_expressions.json to use instead of the one in ``gt_root`` (required for ``refdavis``).
        davis_set: DAVIS image set (``ImageSets/2017/<set>.txt``).

    Returns:
        The :class:`ScoreReport`.
    """
    gt_root, pred_root = Path(gt_root), Path(pred_root)
    meta_path = None if meta is None else Path(meta)
    require_dir(pred_root, "prediction folder")
    if benchmark in ("davis-semi", "davis-unsup"):
        return score_davis(gt_root, pred_root, benchmark == "davis-semi", workers, missing, davis_set)
    if benchmark == "refdavis":
        if meta_path is None:
            raise InvalidInputError("refdavis needs the Ref-DAVIS meta_expressions.json (meta= / --meta)")
        return score_refdavis(gt_root, pred_root, meta_path, workers=workers, missing=missing, davis_set=davis_set)
    if benchmark == "refseg":
        return score_refseg(gt_root, pred_root, workers=workers, missing=missing)
    if benchmark == "revos":
        return score_revos(gt_root, pred_root, meta_path, workers, missing)
    tracker = MissingPredictions(missing)
    try:
        if benchmark == "mevis":
            tasks = mevis_tasks(gt_root, pred_root, meta_path, tracker)
        elif benchmark == "reasonvos":
            tasks = reasonvos_tasks(gt_root, pred_root, meta_path, tracker)
        elif benchmark == "folders":
            tasks = folder_tasks(gt_root, pred_root, tracker)
        else:
            raise InvalidInputError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(BENCHMARKS)}")
    except (KeyError, TypeError) as error:
        raise InvalidInputError(
            f"{benchmark}: meta_expressions.json is not in the expected layout ({error!r})"
        ) from error
    if not tasks:
        raise InvalidInputError(f"{benchmark}: the meta_expressions.json under {gt_root} lists no expressions")
    notes = tracker.check()
    results = run_tasks(score_binary_task, tasks, workers, f"{benchmark} videos")
    return binary_report(benchmark, [item for task in results for item in task], notes)
