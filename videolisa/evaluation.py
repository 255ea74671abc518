"""Batch evaluation: benchmark reader -> predictor -> predictions in the official layout -> scores.

One process or many (``torchrun`` / ``deepspeed`` launcher, one or several nodes): each rank takes a
deterministic shard of the videos; rank 0 waits for all, merges, scores and writes the report.

Resumable and safe: an item's masks are written into a temporary folder that is renamed to its final name
only when every frame is written, so a killed run never leaves a half-written item that counts as done,
and a rerun skips every finished item. Items that fail are listed with their error and make the run exit
non-zero; nothing is silently skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from videolisa.benchmarks import Benchmark, BenchmarkItem, ImageBenchmark, get_benchmark
from videolisa.distributed import DistributedContext, barrier, gather_objects
from videolisa.errors import InvalidInputError, VideoLisaError

if TYPE_CHECKING:
    from videolisa.generation import GenerationConfig
    from videolisa.metrics.report import ScoreReport
    from videolisa.predictor import VideoLisaPredictor
    from videolisa.refine import RefineConfig

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
GROUND_TRUTH_DIR = "ground_truth"
# What the predictions in ``<out>/predictions`` were made with (:func:`prediction_fingerprint`).
FINGERPRINT_FILE = "fingerprint.json"
# Everything an evaluation writes directly under ``<out>``: what ``overwrite`` removes (plus submission zips).
EVALUATION_OUTPUTS = (
    PREDICTIONS_DIR,
    GROUND_TRUTH_DIR,
    FINGERPRINT_FILE,
    "results.json",
    "results.md",
    "score.json",
    "meta_expressions.scored.json",
)
# Files of a model directory whose size and modification time identify its weights, config and tokenizer.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")
# Benchmarks scored only by an evaluation server: the zip it expects and the folder prefix inside it.
SUBMISSION_PREFIX = {"refytvos": "Annotations/", "mevis": ""}


@dataclass
class EvaluationConfig:
    """What to evaluate and how (``videolisa eval`` / ``eval/evaluate.py`` arguments)."""

    benchmark: str
    data_root: Path
    model: str
    out: Path
    split: str | None = None
    limit: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    score: bool = True
    chunk_size: int = 8
    frames_sparse: int | None = None
    frames_dense: int | None = None
    workers: int | None = None
    davis_root: Path | None = None
    vision_tower: str | None = None
    overwrite: bool = False  # remove what an earlier evaluation wrote to ``out`` instead of resuming it
    refine: RefineConfig | None = None  # temporal refinement with SAM 2 (``--refine sam2``); None: off
    # Generation mode (``--generate``): the model writes each answer, an item's masks are its tracks' union;
    # None: the benchmark's teacher-forced answer (the original).
    generation: GenerationConfig | None = None
    # Frames whose presence score is below it are emptied (0: off); None: the mode's default (off when
    # teacher-forced, videolisa.tracks.DEFAULT_PRESENCE_THRESHOLD when generating).
    presence_threshold: float | None = None
    fail_after: int | None = None  # testing aid: raise after this many videos, to simulate a killed run


@dataclass
class RankSummary:
    """What one rank did: items written now, items skipped as already done, failures, frames, seconds."""

    rank: int
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    videos: int = 0
    frames: int = 0
    seconds: float = 0.0


# ============================================================================ item bookkeeping
def contained_path(root: Path, what: str, *relative: str) -> Path:
    """``root / relative[0] / relative[1] ...``, refused unless it lies strictly inside ``root`` both as written
    (each part relative, without ``..``, backslashes or NUL) and once symbolic links are resolved: benchmark ids
    become output paths, and no id may make a run write, sweep or zip anything outside the output folder.
    Raises InvalidInputError naming ``what``."""
    for part in relative:
        pure = PurePosixPath(part)
        if "\0" in part or "\\" in part or not pure.parts or pure.is_absolute() or ".." in pure.parts:
            raise InvalidInputError(f"{what}: {part!r} is not a relative path inside {root}")
    path = root.joinpath(*relative)
    resolved_root = root.resolve()
    resolved = path.resolve()
    if resolved == resolved_root or not resolved.is_relative_to(resolved_root):
        raise InvalidInputError(f"{what}: {'/'.join(relative)!r} resolves to {resolved}, outside {resolved_root}")
    return path


def prediction_dir(out: Path, item: BenchmarkItem) -> Path:
    """Final folder of an item's masks: ``<out>/predictions/<item.output_dir>`` (which must stay inside
    ``<out>/predictions``, see :func:`contained_path`)."""
    return contained_path(out / PREDICTIONS_DIR, f"prediction folder of item {item.key!r}", item.output_dir)


def is_complete(out: Path, item: BenchmarkItem) -> bool:
    """An item is done when its final folder exists (it only appears by renaming a finished folder)."""
    return prediction_dir(out, item).is_dir()


def shard_videos(items: Sequence[BenchmarkItem], context: DistributedContext) -> dict[str, list[BenchmarkItem]]:
    """This rank's videos (round-robin over the sorted video ids) with their items, in order."""
    by_video: dict[str, list[BenchmarkItem]] = defaultdict(list)
    for item in items:
        by_video[item.video_id].append(item)
    video_ids = sorted(by_video)
    return {video: by_video[video] for video in video_ids[context.rank :: context.world_size]}


class _ItemWriter:
    """Writes one item's PNGs (0 and ``item.mask_value``) into a temporary folder; :meth:`commit` renames it to the
    final name."""

    def __init__(self, out: Path, item: BenchmarkItem) -> None:
        self.final = prediction_dir(out, item)
        self.mask_value = item.mask_value
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.parent / f".tmp-{self.final.name}-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()

    def write(self, name: str, mask: np.ndarray) -> None:
        from PIL import Image

        Image.fromarray(mask.astype(np.uint8) * np.uint8(self.mask_value)).save(self.tmp / f"{name}.png")

    def commit(self) -> None:
        os.replace(self.tmp, self.final)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _remove_stale_temporaries(out: Path, items: Sequence[BenchmarkItem]) -> None:
    """Delete temporary item folders left by killed runs.

    Only the folders that hold item folders are listed (not every prediction PNG below them), and the
    matches are collected before anything is deleted.
    """
    parents = {prediction_dir(out, item).parent for item in items}
    stale = [path for parent in sorted(parents) if parent.is_dir() for path in parent.glob(".tmp-*")]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


# ============================================================================ prediction
def predict_video(
    predictor: VideoLisaPredictor, items: list[BenchmarkItem], out: Path, settings: EvaluationConfig
) -> int:
    """Segment one video for all its pending items (decoded and SAM-encoded once); returns its frame count."""
    from videolisa.generation import GENERATE
    from videolisa.processing.video_io import open_video

    answers = {item.answer for item in items}
    if len(answers) != 1:
        raise InvalidInputError(f"items of video {items[0].video_id} use different answers {sorted(answers)}")
    with open_video(items[0].video_path) as reader:
        if tuple(reader.frame_names) != tuple(items[0].frame_names):
            raise InvalidInputError(
                f"{items[0].video_path}: the reader sees frames {list(reader.frame_names)[:3]}..., the benchmark "
                f"lists {list(items[0].frame_names)[:3]}..."
            )
        writers = [_ItemWriter(out, item) for item in items]
        try:
            for frame in predictor.iter_segment(
                reader,
                [item.query for item in items],
                answer=answers.pop() if settings.generation is None else GENERATE,
                frames_sparse=settings.frames_sparse,
                frames_dense=settings.frames_dense,
                generation=settings.generation,
                presence_threshold=settings.presence_threshold,
            ):
                for writer, mask in zip(writers, frame.masks):
                    writer.write(frame.name, mask)
        except BaseException:
            for writer in writers:
                writer.discard()
            raise
        for writer in writers:
            writer.commit()
        return reader.num_frames


def predict_shard(
    predictor: VideoLisaPredictor,
    shard: dict[str, list[BenchmarkItem]],
    settings: EvaluationConfig,
    context: DistributedContext,
) -> RankSummary:
    """Predict every pending item of this rank's videos; failures are recorded per item, not raised."""
    from tqdm.auto import tqdm

    summary = RankSummary(rank=context.rank)
    start = time.perf_counter()
    done_videos = 0
    for video_id, items in tqdm(
        shard.items(), desc=f"rank {context.rank} videos", unit="video", disable=context.rank != 0
    ):
        pending = [item for item in items if not is_complete(settings.out, item)]
        summary.skipped.extend(item.key for item in items if item not in pending)
        if not pending:
            continue
        if settings.fail_after is not None and done_videos >= settings.fail_after:
            raise RuntimeError(f"simulated interruption after {done_videos} videos (fail_after)")
        try:
            summary.frames += predict_video(predictor, pending, settings.out, settings)
            summary.written.extend(item.key for item in pending)
            summary.videos += 1
        # Any error of one video (not only bad input: a decoder or runtime error too) is recorded and the
        # shard goes on: raising here would leave the other ranks waiting for this one in the gather.
        except Exception as error:
            # A traceback only for unexpected errors: bad input is explained by its message.
            logger.error("video %s failed: %s", video_id, error, exc_info=not isinstance(error, VideoLisaError))
            summary.failed.update({item.key: f"{type(error).__name__}: {error}" for item in pending})
        done_videos += 1
    summary.seconds = time.perf_counter() - start
    return summary


# ============================================================================ scoring
def write_image_ground_truth(benchmark: ImageBenchmark, items: Sequence[BenchmarkItem], out: Path) -> Path:
    """Write each image item's target ``[H, W]`` uint8 (1 object, 0 background, 255 ignore) as a PNG.

    Layout under the returned root ``<out>/ground_truth``: ``all/<output_dir>/<frame>.png`` for every item and
    ``subsets/<subset>/<output_dir>/<frame>.png`` for the items of each subset, i.e. the prediction layout, so
    each folder is a ``refseg`` ground-truth root. The folder is rebuilt from ``items`` every time (in a
    temporary folder, then renamed): ground truth left by an earlier run with another ``--limit`` would
    otherwise be scored too.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    root = out / GROUND_TRUTH_DIR
    staging = out / f".{GROUND_TRUTH_DIR}-{os.getpid()}"
    # Every folder is checked before the first is written, so a refused id leaves no staging folder behind.
    item_dirs = [
        [
            contained_path(staging, f"ground-truth folder of item {item.key!r}", *folder, item.output_dir)
            for folder in [("all",)] + ([("subsets", item.subset)] if item.subset is not None else [])
        ]
        for item in items
    ]
    shutil.rmtree(staging, ignore_errors=True)
    for item, folders in tqdm(zip(items, item_dirs), desc="ground truth", unit="image", total=len(items)):
        target = Image.fromarray(benchmark.ground_truth(item).astype(np.uint8))
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            target.save(folder / f"{item.frame_names[0]}.png")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(staging, root)
    return root


def score_predictions(
    benchmark: Benchmark, items: Sequence[BenchmarkItem], settings: EvaluationConfig
) -> ScoreReport | None:
    """Score with :mod:`videolisa.metrics` where ground truth exists; None for server-only benchmarks.

    Ref-DAVIS17 has no ground truth in its own layout but is scored against the DAVIS-2017
    ``Annotations_unsupervised`` of ``settings.davis_root``.
    """
    from videolisa.metrics import score_benchmark

    pred_root = settings.out / PREDICTIONS_DIR
    name = benchmark.name
    if isinstance(benchmark, ImageBenchmark):
        gt_root = write_image_ground_truth(benchmark, items, settings.out)
        return score_benchmark("refseg", gt_root / "all", pred_root, workers=settings.workers)
    if name == "refdavis":
        _require_refdavis_scorable(settings)
        return score_benchmark(
            "refdavis",
            settings.davis_root,
            pred_root,
            workers=settings.workers,
            meta=_scoring_meta(benchmark, items, settings),
        )
    if not benchmark.has_ground_truth:
        return None
    if name == "reasonvos":
        return score_benchmark(
            "reasonvos",
            benchmark.root,
            pred_root,
            workers=settings.workers,
            meta=_scoring_meta(benchmark, items, settings),
        )
    if name == "revos":
        return score_benchmark(
            "revos", benchmark.root, pred_root, workers=settings.workers, meta=_scoring_meta(benchmark, items, settings)
        )
    if name in ("mevis", "synthetic"):
        return score_benchmark(
            "mevis",
            benchmark.split_dir,
            pred_root,
            workers=settings.workers,
            meta=_scoring_meta(benchmark, items, settings),
        )
    raise InvalidInputError(f"no scorer for benchmark {name!r}")


def _scoring_meta(benchmark: Benchmark, items: Sequence[BenchmarkItem], settings: EvaluationConfig) -> Path:
    """The meta file the scorer reads: the benchmark's own, or a copy under ``<out>`` that keeps only the
    evaluated items (``--limit``) and gives ReasonVOS expressions as the list the scorer reads (the reader
    also accepts the older id-keyed form)."""
    meta_path = benchmark.meta_path
    meta = json.loads(Path(meta_path).read_text())
    id_keyed_reasonvos = benchmark.name == "reasonvos" and any(
        isinstance(entry["expressions"], dict) for entry in meta["videos"].values()
    )
    if settings.limit is None and not id_keyed_reasonvos:
        return meta_path
    keep = {item.output_dir for item in items}
    videos = {}
    for video, entry in meta["videos"].items():
        if benchmark.name == "reasonvos":
            expressions = entry["expressions"]
            if isinstance(expressions, dict):
                expressions = [{**expression, "exp_id": exp_id} for exp_id, expression in expressions.items()]
            kept: list | dict = [
                expression
                for expression in expressions
                if f"{entry['source']}_{video}_{expression['obj_id']}/{expression['exp_id']}" in keep
            ]
        else:
            kept = {
                exp_id: expression for exp_id, expression in entry["expressions"].items() if f"{video}/{exp_id}" in keep
            }
        if kept:
            videos[video] = {**entry, "expressions": kept}
    scoring_meta = settings.out / "meta_expressions.scored.json"
    _write_text(scoring_meta, json.dumps({"videos": videos}))
    return scoring_meta


def subset_scores(
    benchmark: Benchmark, report: ScoreReport, items: Sequence[BenchmarkItem], settings: EvaluationConfig
) -> dict[str, dict[str, float]]:
    """Scores of each subset (ReasonVOS / ReasonSeg short vs long, Ref-DAVIS annotators, synthetic kinds),
    with the benchmark's own aggregation, plus ``count`` (items of the subset).

    * video benchmarks scored per expression: unweighted means of J and F over the subset's items,
      J&F = (mean J + mean F) / 2 like the overall number;
    * Ref-DAVIS17 (subsets ``anno_k``): annotator k's DAVIS result, from the report's details;
    * ReVOS (subsets = expression types): the type's J, F, J&F, A, R from the report's details;
    * image benchmarks: cIoU / gIoU of the subset's images (cIoU does not decompose into per-image values).
    """
    from videolisa.metrics import score_benchmark

    members: dict[str, list[BenchmarkItem]] = defaultdict(list)
    for item in items:
        if item.subset is not None:
            members[item.subset].append(item)
    result: dict[str, dict[str, float]] = {}
    for subset, subset_items in sorted(members.items()):
        if isinstance(benchmark, ImageBenchmark):
            gt_root = settings.out / GROUND_TRUTH_DIR / "subsets" / subset
            scores = dict(
                score_benchmark("refseg", gt_root, settings.out / PREDICTIONS_DIR, workers=settings.workers).overall
            )
        elif benchmark.name == "refdavis":
            scores = dict(report.details["annotators"][int(subset.removeprefix("anno_"))])
        elif benchmark.name == "revos":  # expression types, aggregated as the official scorer does
            scores = {name: value for name, value in report.details["types"][subset].items() if name != "count"}
        else:
            rows = [report.sequences[item.output_dir] for item in subset_items]
            region = float(np.mean([row["J"] for row in rows]))
            boundary = float(np.mean([row["F"] for row in rows]))
            scores = {"J": region, "F": boundary, "JF": (region + boundary) / 2}
        result[subset] = {**scores, "count": len(subset_items)}
    return result


def write_submission_zip(benchmark: Benchmark, items: Sequence[BenchmarkItem], out: Path) -> Path:
    """The zip an evaluation server expects (Ref-YouTube-VOS: ``Annotations/<video>/<exp>/<frame>.png``;
    MeViS ``valid``: ``<video>/<exp>/<frame>.png``), written atomically."""
    prefix = SUBMISSION_PREFIX[benchmark.name]
    target = out / f"submission_{benchmark.name}_{benchmark.split}.zip"
    tmp = target.with_name(f".{target.name}.tmp")
    # prediction_dir refuses an output_dir that is absolute or has "..", so no member name can climb out of
    # the archive; all are checked before the zip is opened.
    folders = [(item, prediction_dir(out, item)) for item in items]
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for item, folder in folders:
            for png in sorted(folder.glob("*.png")):
                archive.write(png, f"{prefix}{item.output_dir}/{png.name}")
    os.replace(tmp, target)
    return target


# ============================================================================ report
def markdown_report(result: dict[str, Any]) -> str:
    """A human-readable summary table of the evaluation result."""
    split = f" ({result['split']})" if result["split"] is not None else ""
    lines = [f"# {result['benchmark']}{split} — {result['model']}", ""]
    score = result.get("score")
    if score:
        names = list(score["overall"])
        lines += ["| subset | " + " | ".join(names) + " | items |", "|---" * (len(names) + 2) + "|"]
        lines.append("| all | " + " | ".join(_pct(score["overall"][n]) for n in names) + f" | {result['items']} |")
        for subset, values in result.get("subsets", {}).items():
            lines.append(f"| {subset} | " + " | ".join(_pct(values.get(n)) for n in names) + f" | {values['count']} |")
    else:
        lines.append(
            "No ground truth: predictions only"
            + (f"; submission: {result['submission']}" if result.get("submission") else ".")
        )
    runtime = result["runtime"]
    lines += [
        "",
        f"Model `{result['model']}` on {runtime['device']} ({runtime['dtype']}), "
        f"{runtime['frames_sparse']} sparse / {runtime['frames_dense']} dense frames.",
    ]
    timing = result["timing"]
    lines += [
        "",
        f"{timing['videos']} videos, {timing['frames']} frames in {timing['seconds']:.1f} s "
        f"({timing['videos_per_second']:.3f} videos/s, {timing['frames_per_second']:.2f} frames/s)",
    ]
    if result["failed"]:
        lines += ["", f"**{len(result['failed'])} items failed:**"] + [
            f"- {k}: {v}" for k, v in result["failed"].items()
        ]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ============================================================================ fingerprint
def prediction_fingerprint(
    settings: EvaluationConfig, benchmark: Benchmark, items: Sequence[BenchmarkItem], predictor: VideoLisaPredictor
) -> dict[str, Any]:
    """Every setting that changes what the masks in ``<out>/predictions`` are: the one place that lists them.

    A resumed run skips the items already written, so it must make them with the same settings; the fingerprint
    is written next to the predictions and a run whose fingerprint differs is refused (:func:`check_fingerprint`).
    A new option that changes predictions adds its key here (a JSON value), nothing else. Not included, because
    the masks do not depend on them: ``limit`` (a longer run extends a shorter one), ``chunk_size``, ``workers``,
    ``score``, ``davis_root``, the device index. A model given by Hugging Face id or as an in-memory predictor is
    identified by its name and config only (no local files to take sizes and times from).
    """
    import videolisa
    from videolisa.constants import MASK_LOGIT_THRESHOLD

    config = predictor.model.config
    return {
        "videolisa_version": videolisa.__version__,
        "benchmark": benchmark.name,
        "split": benchmark.split,
        "answers": sorted({item.answer for item in items}),
        **model_identity(settings.model),
        "model_config_sha256": hashlib.sha256(
            json.dumps(config.to_dict(), sort_keys=True, default=str).encode()
        ).hexdigest(),
        "vision_tower": settings.vision_tower,
        "chat_template": config.chat_template,
        "device_type": predictor.device.type,
        "dtype": str(predictor.dtype).removeprefix("torch."),
        "frames_sparse": settings.frames_sparse or config.num_frames_sparse,
        "frames_dense": settings.frames_dense or config.num_frames_dense,
        "threshold": MASK_LOGIT_THRESHOLD,
        "refine": refine_identity(predictor),
        **answer_mode(settings),
    }


def answer_mode(settings: EvaluationConfig) -> dict[str, Any]:
    """``generation`` (its settings, None when teacher-forced) and the ``presence_threshold`` the predictions use
    (``settings.presence_threshold`` or the mode's default)."""
    from videolisa.tracks import resolve_presence_threshold

    generating = settings.generation is not None
    return {
        "generation": asdict(settings.generation) if generating else None,
        "presence_threshold": resolve_presence_threshold(settings.presence_threshold, generating=generating),
    }


def refine_identity(predictor: VideoLisaPredictor) -> dict[str, Any] | None:
    """The predictor's refinement settings, its SAM 2 model identified as by :func:`model_identity` (``model``,
    ``model_files``); None without refinement, so that folders predicted before refinement existed stay
    resumable."""
    if predictor.refiner is None:
        return None
    identity = model_identity(predictor.refiner.settings.model)
    return {**predictor.refiner.describe(), "model": identity["model"], "model_files": identity["model_files"]}


def model_identity(model: str | Path) -> dict[str, Any]:
    """``model`` (a directory resolved to an absolute path; ``builtin:NAME`` to the shipped folder) and, for a
    local directory, ``[name, size, mtime_ns]`` of its weight, config and tokenizer files."""
    from videolisa.checkpoint import BUILTIN_PREFIX, resolve_model_dir

    model = str(model)
    if not (model.startswith(BUILTIN_PREFIX) or Path(model).expanduser().is_dir()):
        return {"model": model, "model_files": None}
    path = resolve_model_dir(model)
    files = sorted(entry for entry in path.iterdir() if entry.is_file() and entry.suffix in MODEL_FILE_SUFFIXES)
    return {
        "model": str(path.resolve()),
        "model_files": [[entry.name, entry.stat().st_size, entry.stat().st_mtime_ns] for entry in files],
    }


def check_fingerprint(out: Path, fingerprint: dict[str, Any]) -> None:
    """Refuse to resume into ``out`` unless its predictions were made with ``fingerprint``'s settings.

    A folder without a fingerprint is accepted only if it holds no predictions yet. Raises InvalidInputError
    listing every setting that differs, before anything in ``out`` is changed.
    """
    path = out / FINGERPRINT_FILE
    advice = "pass --overwrite to replace them, or choose another --out"
    if not path.is_file():
        predictions = out / PREDICTIONS_DIR
        if predictions.is_dir() and any(predictions.iterdir()):
            raise InvalidInputError(
                f"--out {out} holds predictions but no {FINGERPRINT_FILE}, so the settings they were made with are "
                f"unknown (an older videolisa or another tool wrote them); {advice}"
            )
        return
    try:
        previous = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"cannot read {path}: {error}; {advice}") from error
    current = json.loads(json.dumps(fingerprint))  # tuples -> lists, as read back from the file
    if not isinstance(previous, dict):
        raise InvalidInputError(f"{path} is not a JSON object; {advice}")
    changed = [key for key in sorted(set(previous) | set(current)) if previous.get(key) != current.get(key)]
    if changed:
        differences = "; ".join(
            f"{key} {_brief(previous.get(key))} then, {_brief(current.get(key))} now" for key in changed
        )
        raise InvalidInputError(f"--out {out} holds predictions made with other settings ({differences}); {advice}")


def _brief(value: Any, limit: int = 80) -> str:
    """A setting's value for an error message, cut to ``limit`` characters."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def remove_evaluation_outputs(out: Path) -> None:
    """What an earlier evaluation wrote directly under ``out`` (:data:`EVALUATION_OUTPUTS`, submission zips);
    nothing else in ``out`` is touched."""
    entries = [out / name for name in EVALUATION_OUTPUTS] + sorted(out.glob("submission_*.zip"))
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


# ============================================================================ driver
def run_evaluation(settings: EvaluationConfig, predictor: VideoLisaPredictor | None = None) -> dict[str, Any]:
    """Evaluate ``settings.model`` on ``settings.benchmark``; returns the result dict (also written to
    ``<out>/results.json`` and ``<out>/results.md`` by rank 0). Raises if any item failed (after writing
    the report) so callers exit non-zero."""
    context = DistributedContext.from_environment()
    benchmark = get_benchmark(settings.benchmark, settings.data_root, settings.split)
    benchmark.validate()
    all_items = benchmark.items()
    if settings.limit is not None and settings.limit < 1:
        raise InvalidInputError(f"--limit must be >= 1, got {settings.limit}")
    items = all_items[: settings.limit]
    if settings.score and benchmark.name == "refdavis":
        _require_refdavis_scorable(settings, cut_by_limit=len(items) < len(all_items))
    if predictor is None:
        from videolisa.predictor import VideoLisaPredictor

        predictor = VideoLisaPredictor.from_pretrained(
            settings.model,
            device=_rank_device(settings.device, context),
            dtype=settings.dtype,
            vision_tower=settings.vision_tower,
            chunk_size=settings.chunk_size,
            refine=settings.refine,
        )
    fingerprint = prediction_fingerprint(settings, benchmark, items, predictor)
    if not settings.overwrite:
        check_fingerprint(settings.out, fingerprint)  # on every rank, so that all refuse and none waits below
    settings.out.mkdir(parents=True, exist_ok=True)
    if context.rank == 0:
        if settings.overwrite:
            remove_evaluation_outputs(settings.out)
        _write_text(settings.out / FINGERPRINT_FILE, json.dumps(fingerprint, indent=2) + "\n")
        _remove_stale_temporaries(settings.out, items)
    barrier(context)
    summary = predict_shard(predictor, shard_videos(items, context), settings, context)
    summaries = gather_objects(summary, context)
    if context.rank != 0:
        return {}
    result = _finish(benchmark, items, settings, summaries, describe_runtime(predictor, settings))
    if result["failed"]:
        raise EvaluationFailed(result["failed"])
    return result


def _require_refdavis_scorable(settings: EvaluationConfig, cut_by_limit: bool = False) -> None:
    """Ref-DAVIS17 is scored against DAVIS-2017 (``--davis-root``) on every sequence of its image set, with
    the expressions of each object taken four by four, so a ``--limit`` that cuts the item list cannot be
    scored."""
    if settings.davis_root is None:
        raise InvalidInputError("scoring refdavis needs --davis-root (DAVIS-2017 with Annotations_unsupervised)")
    if cut_by_limit:
        raise InvalidInputError(
            f"refdavis with --limit {settings.limit} cannot be scored: DAVIS-2017 scores every sequence of "
            "ImageSets/2017/val.txt and all 4 annotators' expressions of each object; add --no-score"
        )


def _rank_device(device: str, context: DistributedContext) -> str:
    """The device of this rank: under a launcher, ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` (one GPU per
    process; ``auto`` falls back to the CPU without CUDA)."""
    if not context.is_distributed or device not in ("auto", "cuda"):
        return device
    import torch

    if device == "auto" and not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{context.local_rank}"


def describe_runtime(predictor: VideoLisaPredictor, settings: EvaluationConfig) -> dict[str, Any]:
    """What the predictions were made with: device, dtype, Sparse-Dense frame counts, refinement, generation
    mode, the model's config."""
    config = predictor.model.config
    return {
        "device": str(predictor.device),
        "dtype": str(predictor.dtype).removeprefix("torch."),
        "frames_sparse": settings.frames_sparse or config.num_frames_sparse,
        "frames_dense": settings.frames_dense or config.num_frames_dense,
        "chunk_size": predictor.chunk_size,
        "refine": predictor.refiner.describe() if predictor.refiner is not None else None,
        **answer_mode(settings),
        "model_config": config.to_dict(),
    }


class EvaluationFailed(VideoLisaError):
    """Some items failed; the report lists them."""

    def __init__(self, failed: dict[str, str]) -> None:
        super().__init__(
            f"{len(failed)} items failed (listed in results.json): "
            + "; ".join(f"{key}: {error}" for key, error in list(failed.items())[:5])
        )
        self.failed = failed


def _finish(
    benchmark: Benchmark,
    items: list[BenchmarkItem],
    settings: EvaluationConfig,
    summaries: list[RankSummary],
    runtime: dict[str, Any],
) -> dict[str, Any]:
    failed = {key: error for summary in summaries for key, error in summary.failed.items()}
    # Every item is now written, failed, or was done before; one that rank 0 cannot see was written by a rank
    # on another node into an --out that is not shared with this one.
    failed.update(
        {
            item.key: f"no predictions in {prediction_dir(settings.out, item)} after the run (is --out on a "
            "filesystem shared by every node?)"
            for item in items
            if item.key not in failed and not is_complete(settings.out, item)
        }
    )
    seconds = max((summary.seconds for summary in summaries), default=0.0)
    frames = sum(summary.frames for summary in summaries)
    videos = sum(summary.videos for summary in summaries)
    result: dict[str, Any] = {
        "benchmark": benchmark.name,
        "split": benchmark.split,
        "model": settings.model,
        "items": len(items),
        "written": sum(len(summary.written) for summary in summaries),
        "skipped_already_done": sum(len(summary.skipped) for summary in summaries),
        "failed": failed,
        "timing": {
            "videos": videos,
            "frames": frames,
            "seconds": seconds,
            "videos_per_second": videos / seconds if seconds else 0.0,
            "frames_per_second": frames / seconds if seconds else 0.0,
            "ranks": len(summaries),
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "runtime": runtime,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if settings.score and not failed:
        report = score_predictions(benchmark, items, settings)
        if report is not None:
            from videolisa.metrics import write_report

            write_report(report, settings.out / "score.json")
            result["score"] = {"overall": report.overall, "notes": report.notes}
            result["subsets"] = subset_scores(benchmark, report, items, settings)
    if benchmark.name in SUBMISSION_PREFIX and not benchmark.has_ground_truth and not failed:
        result["submission"] = str(write_submission_zip(benchmark, items, settings.out))
    _write_text(settings.out / "results.json", json.dumps(result, indent=2, default=str))
    _write_text(settings.out / "results.md", markdown_report(result))
    return result
