"""Batch evaluation (``videolisa.evaluation``, ``videolisa eval``) end to end: the tiny model on tiny datasets
written in each benchmark's official layout; outputs where the official scorers read them, scores checked
against values computed here from the written PNGs, reruns, interrupted runs, failures and malformed data."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from benchmark_fixtures import (
    FRAMES,
    encode_rle,
    write_davis_unsupervised,
    write_json,
    write_mevis,
    write_reasonseg,
    write_reasonvos,
    write_refdavis,
    write_refer,
    write_refytvos,
)
from PIL import Image

from videolisa.benchmarks import Benchmark, BenchmarkItem, get_benchmark
from videolisa.cli import main
from videolisa.distributed import DistributedContext
from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.evaluation import (
    EvaluationConfig,
    EvaluationFailed,
    _remove_stale_temporaries,
    prediction_dir,
    run_evaluation,
    shard_videos,
    write_image_ground_truth,
    write_submission_zip,
)

SIZE = (32, 48)  # frame height, width
REFDAVIS_VIDEOS = ("bear", "blackswan")
# Where each evaluation server expects the masks inside the submission zip.
SUBMISSION_PREFIX = {"refytvos": "Annotations/", "mevis": ""}


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path):
    from videolisa.predictor import VideoLisaPredictor

    return VideoLisaPredictor.from_pretrained(tiny_model_dir, device="cpu", dtype="fp32")


def write_dataset(case: str, root: Path) -> dict[str, Any]:
    """Write the dataset of ``case`` under ``root``; the matching :class:`EvaluationConfig` fields."""
    if case == "reasonvos":
        return {"benchmark": "reasonvos", "data_root": write_reasonvos(root / "ReasonVOS", size=SIZE)}
    if case == "mevis":
        return {"benchmark": "mevis", "data_root": write_mevis(root / "MeViS", size=SIZE)}
    if case == "mevis-valid":
        data_root = write_mevis(root / "MeViS", size=SIZE, split="valid", ground_truth=False)
        return {"benchmark": "mevis", "data_root": data_root, "split": "valid"}
    if case == "refytvos":
        return {"benchmark": "refytvos", "data_root": write_refytvos(root / "refer_youtube_vos", size=SIZE)}
    if case == "refdavis":
        # One object per video, so the DAVIS matching is trivial and the score can be computed here.
        data_root = write_refdavis(root / "ref-davis", size=SIZE, videos=REFDAVIS_VIDEOS, objects=1)
        davis_root = write_davis_unsupervised(root / "DAVIS", REFDAVIS_VIDEOS, size=SIZE, objects=1)
        return {"benchmark": "refdavis", "data_root": data_root, "davis_root": davis_root}
    if case == "reasonseg":
        return {"benchmark": "reasonseg", "data_root": write_reasonseg(root / "ReasonSeg")}
    if case == "refcoco":
        return {"benchmark": "refcoco", "data_root": write_refer(root / "refer_seg")}
    raise AssertionError(case)


def make_settings(out: Path, **fields: Any) -> EvaluationConfig:
    return EvaluationConfig(model="tiny-seed0", out=out, device="cpu", workers=1, **fields)


def benchmark_of(settings: EvaluationConfig) -> Benchmark:
    return get_benchmark(settings.benchmark, settings.data_root, settings.split)


# ------------------------------------------------------------------------------------------------ reading outputs
def prediction_path(out: Path, item: BenchmarkItem, frame: str) -> Path:
    return out / "predictions" / item.output_dir / f"{frame}.png"


def read_prediction(out: Path, item: BenchmarkItem, frame: str) -> np.ndarray:
    """A written mask: single-channel 0/255 PNG -> ``[H, W] bool``."""
    with Image.open(prediction_path(out, item, frame)) as image:
        assert image.mode == "L"
        values = np.asarray(image)
    assert set(np.unique(values)) <= {0, 255}
    return values == 255


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: relative path -> (bytes, mtime in ns)."""
    return {
        path.relative_to(folder).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def contents(folder: Path) -> dict[str, bytes]:
    return {name: data for name, (data, _) in snapshot(folder).items()}


def temporaries(out: Path) -> list[Path]:
    return list((out / "predictions").rglob(".tmp-*"))


def assert_official_layout(out: Path, items: Sequence[BenchmarkItem]) -> None:
    """One 0/255 PNG per frame of every item at ``predictions/<output_dir>/<frame>.png``, frame-sized."""
    from videolisa.processing.video_io import open_video

    root = out / "predictions"
    assert {png.parent.relative_to(root).as_posix() for png in root.rglob("*.png")} == {i.output_dir for i in items}
    for item in items:
        folder = out / "predictions" / item.output_dir
        assert sorted(path.stem for path in folder.iterdir()) == sorted(item.frame_names), item.key
        with open_video(item.video_path) as reader:
            size = (reader.height, reader.width)
        for frame in item.frame_names:
            assert read_prediction(out, item, frame).shape == size


# ------------------------------------------------------------------------------------------------ expected scores
def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J of one frame: IoU, 1 when both masks are empty (DAVIS convention)."""
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def mean_region(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> float:
    return float(np.mean([region_similarity(pred, gt) for pred, gt in zip(preds, gts)]))


def reasonvos_item_j(settings: EvaluationConfig, item: BenchmarkItem) -> float:
    """J over the object's ground-truth PNGs (``Annotations/<source>_<video>_<obj_id>``)."""
    gt_folder = settings.data_root / "Annotations" / item.output_dir.split("/")[0]
    names = sorted(path.stem for path in gt_folder.glob("*.png"))
    gts = [np.asarray(Image.open(gt_folder / f"{name}.png")) > 0 for name in names]
    return mean_region([read_prediction(settings.out, item, name) for name in names], gts)


def mevis_item_j(settings: EvaluationConfig, item: BenchmarkItem) -> float:
    """J against the union of the expression's annotations decoded from ``mask_dict.json``."""
    from pycocotools import mask as coco_mask

    split_dir = settings.data_root / (settings.split or "valid_u")
    meta = json.loads((split_dir / "meta_expressions.json").read_text())
    mask_dict = json.loads((split_dir / "mask_dict.json").read_text())
    video, exp_id = item.output_dir.split("/")
    entry = meta["videos"][video]
    gts = []
    for index, _ in enumerate(entry["frames"]):
        gt = np.zeros(SIZE, dtype=bool)
        for anno in entry["expressions"][exp_id]["anno_id"]:
            rle = mask_dict[str(anno)][index]
            if rle:
                gt |= coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        gts.append(gt)
    return mean_region([read_prediction(settings.out, item, frame) for frame in entry["frames"]], gts)


def refdavis_annotator_j(settings: EvaluationConfig, items: Sequence[BenchmarkItem]) -> list[float]:
    """J of each annotator: with one object per video, expression k is annotator k's mask of object 1,
    scored against DAVIS object 1 over all frames and averaged over the videos."""
    by_key = {item.key: item for item in items}
    per_annotator = []
    for annotator in range(4):
        scores = []
        for video in REFDAVIS_VIDEOS:
            item = by_key[f"{video}/{annotator}"]
            gt_folder = settings.davis_root / "Annotations_unsupervised" / "480p" / video
            gts = [np.asarray(Image.open(gt_folder / f"{frame}.png")) == 1 for frame in item.frame_names]
            scores.append(mean_region([read_prediction(settings.out, item, f) for f in item.frame_names], gts))
        per_annotator.append(float(np.mean(scores)))
    return per_annotator


def image_iou_counts(settings: EvaluationConfig, benchmark: Benchmark, item: BenchmarkItem) -> tuple[int, int]:
    """(I, U) of the foreground with the ground truth's ignore (255) pixels removed, as LISA counts them."""
    gt = benchmark.ground_truth(item)
    keep = gt != 255
    target = (gt != 0) & keep
    pred = read_prediction(settings.out, item, item.frame_names[0]) & keep
    return int((pred & target).sum()), int((pred | target).sum())


def ciou_giou(counts: Sequence[tuple[int, int]]) -> dict[str, float]:
    ious = [1.0 if union == 0 else intersection / union for intersection, union in counts]
    return {
        "cIoU": sum(i for i, _ in counts) / sum(u for _, u in counts),
        "gIoU": float(np.mean(ious)),
    }


def expected_scores(
    case: str, settings: EvaluationConfig, items: Sequence[BenchmarkItem]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(overall, subsets) computed here from the written predictions and the ground truth; J only for video
    benchmarks (F needs the boundary machinery the metrics tests cover)."""
    if case in ("reasonvos", "mevis"):
        item_j = reasonvos_item_j if case == "reasonvos" else mevis_item_j
        j = {item.key: item_j(settings, item) for item in items}
        subsets: dict[str, dict[str, float]] = {}
        for subset in sorted({item.subset for item in items if item.subset is not None}):
            members = [item.key for item in items if item.subset == subset]
            subsets[subset] = {"J": float(np.mean([j[key] for key in members])), "count": len(members)}
        return {"J": float(np.mean(list(j.values())))}, subsets
    if case == "refdavis":
        annotators = refdavis_annotator_j(settings, items)
        subsets = {f"anno_{k}": {"J": value, "count": len(REFDAVIS_VIDEOS)} for k, value in enumerate(annotators)}
        return {"J": float(np.mean(annotators))}, subsets
    benchmark = benchmark_of(settings)
    counts = {item.key: image_iou_counts(settings, benchmark, item) for item in items}
    subsets = {}
    for subset in sorted({item.subset for item in items if item.subset is not None}):
        members = [item.key for item in items if item.subset == subset]
        subsets[subset] = {**ciou_giou([counts[key] for key in members]), "count": len(members)}
    return ciou_giou(list(counts.values())), subsets


def assert_scores(result: dict[str, Any], overall: dict[str, float], subsets: dict[str, dict[str, float]]) -> None:
    score = result["score"]["overall"]
    for name, value in overall.items():
        assert score[name] == pytest.approx(value, abs=1e-4), name
    if "J" in score:
        assert score["JF"] == pytest.approx((score["J"] + score["F"]) / 2)
        assert 0.0 <= score["F"] <= 1.0
    assert set(result["subsets"]) == set(subsets)
    for subset, values in subsets.items():
        for name, value in values.items():
            assert result["subsets"][subset][name] == pytest.approx(value, abs=1e-4), (subset, name)


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("case", ["reasonvos", "mevis", "mevis-valid", "refytvos", "refdavis", "reasonseg", "refcoco"])
def test_end_to_end_outputs_scores_and_rerun(case: str, tmp_path: Path, predictor) -> None:
    settings = make_settings(tmp_path / "out", **write_dataset(case, tmp_path / "data"))
    items = benchmark_of(settings).items()
    videos = {item.video_id for item in items}

    result = run_evaluation(settings, predictor=predictor)

    assert_official_layout(settings.out, items)
    assert (result["items"], result["written"], result["skipped_already_done"], result["failed"]) == (
        len(items),
        len(items),
        0,
        {},
    )
    timing = result["timing"]
    assert timing["videos"] == len(videos) and timing["ranks"] == 1
    assert timing["frames"] == sum(len(next(i for i in items if i.video_id == v).frame_names) for v in videos)
    assert timing["frames_per_second"] > 0 and timing["videos_per_second"] > 0
    assert result["runtime"]["device"] == "cpu" and result["runtime"]["dtype"] == "float32"
    assert result["runtime"]["model_config"]["num_frames_sparse"] == result["runtime"]["frames_sparse"]
    assert json.loads((settings.out / "results.json").read_text()) == json.loads(json.dumps(result, default=str))
    markdown = (settings.out / "results.md").read_text()
    assert "frames/s" in markdown and "tiny-seed0" in markdown

    if case in ("mevis-valid", "refytvos"):
        assert "score" not in result
        prefix = SUBMISSION_PREFIX[settings.benchmark]
        with zipfile.ZipFile(result["submission"]) as archive:
            expected = sorted(f"{prefix}{item.output_dir}/{frame}.png" for item in items for frame in item.frame_names)
            assert sorted(archive.namelist()) == expected
            first = items[0]
            stored = archive.read(f"{prefix}{first.output_dir}/{first.frame_names[0]}.png")
        assert stored == prediction_path(settings.out, first, first.frame_names[0]).read_bytes()
    else:
        assert "submission" not in result
        overall, subsets = expected_scores(case, settings, items)
        assert_scores(result, overall, subsets)
        assert json.loads((settings.out / "score.json").read_text())["overall"] == result["score"]["overall"]
        assert "| all |" in markdown
        assert all(f"| {subset} |" in markdown for subset in subsets)

    before = snapshot(settings.out / "predictions")
    again = run_evaluation(settings, predictor=predictor)
    assert (again["written"], again["skipped_already_done"], again["timing"]["videos"]) == (0, len(items), 0)
    assert snapshot(settings.out / "predictions") == before
    assert again.get("score") == result.get("score") and again.get("subsets") == result.get("subsets")


def test_video_benchmark_items_of_a_video_are_segmented_in_one_pass(tmp_path: Path, predictor) -> None:
    calls: list[list[str]] = []

    class CountingPredictor:
        model, device, dtype, chunk_size = predictor.model, predictor.device, predictor.dtype, predictor.chunk_size
        refiner = predictor.refiner

        def iter_segment(self, video: Any, instructions: list[str], **kwargs: Any) -> Iterator:
            calls.append(list(instructions))
            return predictor.iter_segment(video, instructions, **kwargs)

    settings = make_settings(tmp_path / "out", **write_dataset("reasonvos", tmp_path / "data"), score=False)
    run_evaluation(settings, predictor=CountingPredictor())
    queries = {item.video_id: [] for item in benchmark_of(settings).items()}
    for item in benchmark_of(settings).items():
        queries[item.video_id].append(item.query)
    assert sorted(calls) == sorted(queries.values())


def test_generation_mode_writes_each_answers_tracks_and_is_fingerprinted(tmp_path: Path, tiny_model_dir: Path) -> None:
    """``--generate``: each item's masks are the union of the tracks of the answer the model writes (the same
    as ``segment(..., answer="generate")``), and a teacher-forced rerun into the same folder is refused."""
    from videolisa.generation import GENERATE, GenerationConfig
    from videolisa.predictor import VideoLisaPredictor

    predictor = VideoLisaPredictor.from_pretrained(tiny_model_dir, device="cpu", dtype="fp32")
    with torch.no_grad():  # favour [SEG]: answers of text and [SEG] mixed, tracks on some items
        predictor.model.llm.get_output_embeddings().weight[predictor.model.config.seg_token_id] *= 6.0
    generation = GenerationConfig(max_new_tokens=6)
    dataset = write_dataset("reasonvos", tmp_path / "data")
    settings = make_settings(tmp_path / "out", **dataset, generation=generation, presence_threshold=0.0)
    result = run_evaluation(settings, predictor=predictor)
    assert result["runtime"]["generation"] == {"max_new_tokens": 6, "temperature": 0.0, "seed": None}
    fingerprint = json.loads((settings.out / "fingerprint.json").read_text())
    assert fingerprint["generation"] == result["runtime"]["generation"] and fingerprint["presence_threshold"] == 0.0
    tracks = []
    for item in benchmark_of(settings).items():
        expected = predictor.segment(
            item.video_path, item.query, answer=GENERATE, generation=generation, presence_threshold=0.0
        )
        tracks.append(len(expected.tracks))
        written = np.stack([read_prediction(settings.out, item, frame) for frame in item.frame_names])
        assert np.array_equal(written, expected.masks), item.key
    assert max(tracks) > 0  # some answers segmented something
    with pytest.raises(InvalidInputError, match="generation"):
        run_evaluation(replace(settings, generation=None, presence_threshold=0.0), predictor=predictor)


def test_eval_generation_options_need_generate(tmp_path: Path, capsys) -> None:
    dataset = write_dataset("reasonvos", tmp_path / "data")
    argv = ["eval", "--benchmark", "reasonvos", "--data-root", str(dataset["data_root"]), "--model", "tiny-seed0"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--max-new-tokens", "8"]) == 2
    assert "--max-new-tokens, --temperature and --seed need --generate" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ resumability
@pytest.mark.slow
def test_interrupted_run_resumes_with_identical_results(tmp_path: Path, predictor) -> None:
    dataset = write_dataset("reasonvos", tmp_path / "data")
    reference = run_evaluation(make_settings(tmp_path / "reference", **dataset), predictor=predictor)

    interrupted = make_settings(tmp_path / "out", **dataset)
    items = benchmark_of(interrupted).items()
    shard = shard_videos(items, DistributedContext())
    first_video, second_video = list(shard)
    with pytest.raises(RuntimeError, match="simulated interruption after 1 videos"):
        run_evaluation(replace(interrupted, fail_after=1), predictor=predictor)
    done = {
        path.relative_to(interrupted.out / "predictions").as_posix()
        for path in (interrupted.out / "predictions").glob("*/*")
    }
    assert done == {item.output_dir for item in shard[first_video]}
    assert not temporaries(interrupted.out) and not (interrupted.out / "results.json").exists()

    resumed = run_evaluation(interrupted, predictor=predictor)
    assert resumed["written"] == len(shard[second_video])
    assert resumed["skipped_already_done"] == len(shard[first_video])
    assert contents(interrupted.out / "predictions") == contents(tmp_path / "reference" / "predictions")
    assert resumed["score"] == reference["score"] and resumed["subsets"] == reference["subsets"]


@pytest.mark.slow
def test_a_rerun_with_other_settings_is_refused_unless_overwrite(tmp_path: Path, predictor, capsys) -> None:
    """The predictions of a 32/4 run are not reused, nor reported, by a 2/1 run into the same --out."""
    settings = make_settings(tmp_path / "out", **write_dataset("reasonvos", tmp_path / "data"))
    items = benchmark_of(settings).items()
    first = run_evaluation(settings, predictor=predictor)
    fingerprint = json.loads((settings.out / "fingerprint.json").read_text())
    assert fingerprint["frames_sparse"] == 32 and fingerprint["frames_dense"] == 4
    assert fingerprint["dtype"] == "float32" and fingerprint["threshold"] == 0.0
    assert fingerprint["chat_template"] == "phi3_instruct" and fingerprint["model"] == "tiny-seed0"
    assert fingerprint["videolisa_version"] and fingerprint["answers"] == ["Sure, [SEG]."]
    before = snapshot(settings.out)

    other = replace(settings, frames_sparse=2, frames_dense=1)
    with pytest.raises(
        InvalidInputError,
        match=r"other settings \(frames_dense 4 then, 1 now; frames_sparse 32 "
        r"then, 2 now\); pass --overwrite",
    ):
        run_evaluation(other, predictor=predictor)

    class Bfloat16Predictor:  # only what the fingerprint reads: the run is refused before predicting
        model, device, dtype = predictor.model, predictor.device, torch.bfloat16
        refiner = None

    with pytest.raises(InvalidInputError, match='dtype "float32" then, "bfloat16" now'):
        run_evaluation(settings, predictor=Bfloat16Predictor())
    assert snapshot(settings.out) == before  # refused before anything was touched

    (settings.out / "notes.txt").write_text("mine")
    replaced = run_evaluation(replace(other, overwrite=True), predictor=predictor)
    assert (replaced["written"], replaced["skipped_already_done"]) == (len(items), 0)
    assert (replaced["runtime"]["frames_sparse"], replaced["runtime"]["frames_dense"]) == (2, 1)
    assert replaced["score"] != first["score"]
    assert json.loads((settings.out / "fingerprint.json").read_text())["frames_sparse"] == 2
    assert (settings.out / "notes.txt").read_text() == "mine"  # only what an evaluation writes is replaced
    resumed = run_evaluation(other, predictor=predictor)
    assert (resumed["written"], resumed["skipped_already_done"]) == (0, len(items))


@pytest.mark.slow
def test_predictions_without_fingerprint_or_of_changed_model_files_are_refused(
    tmp_path: Path, predictor, tiny_model_dir: Path, capsys
) -> None:
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    settings = replace(
        make_settings(tmp_path / "out", **write_dataset("reasonvos", tmp_path / "data"), score=False),
        model=str(model_dir),
    )
    run_evaluation(settings, predictor=predictor)
    fingerprint = json.loads((settings.out / "fingerprint.json").read_text())
    assert fingerprint["model"] == str(model_dir.resolve())
    assert "model.safetensors" in [name for name, _, _ in fingerprint["model_files"]]

    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # e.g. retrained in place
    capsys.readouterr()
    assert cli_eval(settings, "--no-score", model=model_dir) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "model_files" in err and "--overwrite" in err

    (settings.out / "fingerprint.json").unlink()
    with pytest.raises(InvalidInputError, match="holds predictions but no fingerprint.json"):
        run_evaluation(settings, predictor=predictor)
    assert cli_eval(settings, "--no-score", "--overwrite", model=model_dir) == 0
    assert json.loads((settings.out / "fingerprint.json").read_text())["model_files"] != fingerprint["model_files"]


@pytest.mark.slow
def test_a_video_interrupted_mid_way_leaves_no_item_that_counts_as_done(tmp_path: Path, predictor) -> None:
    class InterruptedPredictor:
        """Stops (like Ctrl-C) after the first frame of the second video."""

        model, device, dtype, chunk_size = predictor.model, predictor.device, predictor.dtype, predictor.chunk_size
        refiner = predictor.refiner
        videos = 0

        def iter_segment(self, video: Any, instructions: list[str], **kwargs: Any) -> Iterator:
            self.videos += 1
            for index, frame in enumerate(predictor.iter_segment(video, instructions, **kwargs)):
                if self.videos == 2 and index == 1:
                    raise KeyboardInterrupt
                yield frame

    settings = make_settings(tmp_path / "out", **write_dataset("reasonvos", tmp_path / "data"))
    items = benchmark_of(settings).items()
    first_video, second_video = list(shard_videos(items, DistributedContext()).values())
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(settings, predictor=InterruptedPredictor())
    predictions = settings.out / "predictions"
    assert all((predictions / item.output_dir).is_dir() for item in first_video)
    assert not any((predictions / item.output_dir).exists() for item in second_video)
    assert not temporaries(settings.out)

    # A killed process cannot clean up: its temporary folder stays behind and must not count as done.
    item_folder = predictions / second_video[0].output_dir
    stale = item_folder.parent / f".tmp-{item_folder.name}-99999"
    stale.mkdir(parents=True)
    Image.fromarray(np.zeros(SIZE, dtype=np.uint8)).save(stale / f"{FRAMES[0]}.png")
    result = run_evaluation(settings, predictor=predictor)
    assert (result["written"], result["skipped_already_done"]) == (len(second_video), len(first_video))
    assert not stale.exists() and not temporaries(settings.out)
    assert_official_layout(settings.out, items)


# ------------------------------------------------------------------------------------------------ failures
def corrupt_last_frame(settings: EvaluationConfig, video: str) -> Path:
    """Overwrite the last frame of a ReasonVOS video with bytes that are not an image (validation reads only
    the first frame's header, so the failure shows up while predicting)."""
    frame = settings.data_root / "JPEGImages" / video / f"{FRAMES[-1]}.jpg"
    frame.write_bytes(b"not a jpeg")
    return frame


@pytest.mark.slow
def test_failed_items_are_listed_and_the_run_fails(tmp_path: Path, predictor, tiny_model_dir: Path, capsys) -> None:
    # Named by its folder, the model of the predictor and of the CLI run below is the same one (fingerprint).
    settings = replace(
        make_settings(tmp_path / "out", **write_dataset("reasonvos", tmp_path / "data")), model=str(tiny_model_dir)
    )
    items = benchmark_of(settings).items()
    broken = [item for item in items if item.video_id == "vidB"]
    frame = corrupt_last_frame(settings, "vidB")

    with pytest.raises(EvaluationFailed, match="2 items failed") as raised:
        run_evaluation(settings, predictor=predictor)
    assert sorted(raised.value.failed) == sorted(item.key for item in broken)
    result = json.loads((settings.out / "results.json").read_text())
    assert sorted(result["failed"]) == sorted(item.key for item in broken)
    assert all(error.startswith("VideoReadError") and "00002.jpg" in error for error in result["failed"].values())
    assert result["written"] == len(items) - len(broken) and "score" not in result
    markdown = (settings.out / "results.md").read_text()
    assert "2 items failed" in markdown and all(item.key in markdown for item in broken)
    assert not any((settings.out / "predictions" / item.output_dir).exists() for item in broken)

    # The CLI reports the failure and exits 2; once the frame is repaired a rerun completes only the rest.
    capsys.readouterr()
    assert cli_eval(settings, model=tiny_model_dir) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: 2 items failed (listed in results.json): ")
    Image.fromarray(np.zeros((*SIZE, 3), dtype=np.uint8)).save(frame, format="JPEG")
    result = run_evaluation(settings, predictor=predictor)
    assert (result["written"], result["skipped_already_done"], result["failed"]) == (len(broken), 3, {})
    assert "score" in result


def test_items_rank_0_cannot_see_fail_the_run(tmp_path: Path, predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on several nodes whose --out is not shared: the other ranks' items are not in rank 0's folder."""
    import videolisa.evaluation

    settings = make_settings(tmp_path / "out", **write_dataset("reasonvos", tmp_path / "data"))
    all_shards = shard_videos(benchmark_of(settings).items(), DistributedContext(rank=0, world_size=2))
    monkeypatch.setattr(videolisa.evaluation, "shard_videos", lambda items, context: all_shards)
    unseen = sorted(item.key for item in benchmark_of(settings).items() if item.video_id not in all_shards)
    with pytest.raises(EvaluationFailed, match="is --out on a filesystem shared by every node"):
        run_evaluation(settings, predictor=predictor)
    result = json.loads((settings.out / "results.json").read_text())
    assert sorted(result["failed"]) == unseen and "score" not in result


def cli_eval(settings: EvaluationConfig, *extra: str, model: Path | str | None = None) -> int:
    """``videolisa eval`` in this process with the settings' benchmark, data and output."""
    args = [
        "eval",
        "--benchmark",
        settings.benchmark,
        "--data-root",
        str(settings.data_root),
        "--out",
        str(settings.out),
        "--model",
        str(model or settings.model),
        "--device",
        "cpu",
        "--workers",
        "1",
    ]
    if settings.split:
        args += ["--split", settings.split]
    return main([*args, *extra])


@pytest.mark.slow
def test_cli_matches_the_python_api(tmp_path: Path, predictor, tiny_model_dir: Path, capsys) -> None:
    dataset = write_dataset("reasonvos", tmp_path / "data")
    api = run_evaluation(make_settings(tmp_path / "api", **dataset), predictor=predictor)
    settings = make_settings(tmp_path / "cli", **dataset)
    assert cli_eval(settings, model=tiny_model_dir) == 0
    printed = capsys.readouterr().out
    assert "| short |" in printed and "| long |" in printed and "results.json" in printed
    assert contents(tmp_path / "cli" / "predictions") == contents(tmp_path / "api" / "predictions")
    assert json.loads((tmp_path / "cli" / "results.json").read_text())["score"] == api["score"]


# ------------------------------------------------------------------------------------------------ malformed data
def test_malformed_datasets_give_clear_errors(tmp_path: Path, predictor, capsys) -> None:
    reasonvos = make_settings(tmp_path / "out1", **write_dataset("reasonvos", tmp_path / "rvos"))
    (reasonvos.data_root / "JPEGImages" / "vid_a" / "00001.jpg").unlink()
    with pytest.raises(MissingFilesError, match=r"frame 00001\.jpg .* missing from .*vid_a"):
        run_evaluation(reasonvos, predictor=predictor)
    (reasonvos.data_root / "meta_expressions.json").unlink()
    with pytest.raises(MissingFilesError, match=r"meta file not found: .*meta_expressions\.json"):
        run_evaluation(reasonvos, predictor=predictor)

    mevis = make_settings(tmp_path / "out2", **write_dataset("mevis", tmp_path / "mevis"))
    mask_dict_path = mevis.data_root / "valid_u" / "mask_dict.json"
    mask_dict = json.loads(mask_dict_path.read_text())
    mask_dict["6"][0] = encode_rle(np.ones((SIZE[0], SIZE[1] - 1), dtype=bool))
    write_json(mask_dict_path, mask_dict)
    wrong_size = r"anno_id 6 .*RLE size \[32, 47\] differs from the frame size \[32, 48\]"
    with pytest.raises(InvalidInputError, match=wrong_size):
        run_evaluation(mevis, predictor=predictor)
    # Through the CLI: exit status 2 and a one-line error, before any model is loaded (there is none).
    capsys.readouterr()
    assert cli_eval(mevis, model=tmp_path / "no-model") == 2
    assert capsys.readouterr().err.startswith("error: ") and not (mevis.out / "predictions").exists()


def test_hostile_ids_in_metadata_write_and_delete_nothing_outside_out(tmp_path: Path, predictor, capsys) -> None:
    hostile = "../../../elsewhere/x"
    mevis = make_settings(tmp_path / "work" / "out", **write_dataset("mevis", tmp_path / "data"))
    meta_path = mevis.data_root / "valid_u" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"][hostile] = meta["videos"].pop("v2")
    write_json(meta_path, meta)
    # The frames exist where the id points, so only the id itself can stop the run.
    frames_root = mevis.data_root / "valid_u" / "JPEGImages"
    shutil.copytree(frames_root / "v2", frames_root / hostile)
    # What out/predictions/<hostile> reaches; a killed run's sweep must not touch it either.
    keep = tmp_path / "elsewhere" / "x" / ".tmp-keep"
    keep.mkdir(parents=True)
    (keep / "file.txt").write_text("keep")
    with pytest.raises(InvalidInputError, match=rf"{re.escape(str(meta_path))}: video id '{re.escape(hostile)}'"):
        run_evaluation(mevis, predictor=predictor)
    capsys.readouterr()
    assert cli_eval(mevis, model=tmp_path / "no-model") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(meta_path) in err and hostile in err and len(err.splitlines()) == 1
    assert sorted(path.relative_to(tmp_path).as_posix() for path in (tmp_path / "elsewhere").rglob("*")) == [
        "elsewhere/x",
        "elsewhere/x/.tmp-keep",
        "elsewhere/x/.tmp-keep/file.txt",
    ]


@pytest.mark.parametrize("output_dir", ["../../elsewhere/x", "/abs/x", "..", ".", "a/../../b", "nul\0", "a\\..\\b"])
def test_every_output_path_stays_under_the_output_folder(tmp_path: Path, output_dir: str) -> None:
    """Also for items of a reader that did not check its ids: writers, the temp sweep, zips, ground truth."""
    out = tmp_path / "work" / "out"
    (out / "predictions").mkdir(parents=True)
    (tmp_path / "elsewhere" / "x" / ".tmp-keep").mkdir(parents=True)
    item = BenchmarkItem(
        key=output_dir,
        video_id="v",
        video_path=tmp_path,
        frame_names=("0",),
        query="q",
        answer="[SEG].",
        output_dir=output_dir,
        subset="short",
    )
    with pytest.raises(InvalidInputError, match="prediction folder of item"):
        prediction_dir(out, item)
    with pytest.raises(InvalidInputError):
        _remove_stale_temporaries(out, [item])
    with pytest.raises(InvalidInputError):
        write_submission_zip(get_benchmark("refytvos", tmp_path / "data"), [item], out)
    with pytest.raises(InvalidInputError, match="ground-truth folder of item"):
        write_image_ground_truth(get_benchmark("reasonseg", tmp_path / "data"), [item], out)
    safe = BenchmarkItem(**{**item.__dict__, "output_dir": "img", "subset": "../../../elsewhere"})
    with pytest.raises(InvalidInputError, match="ground-truth folder of item"):
        write_image_ground_truth(get_benchmark("reasonseg", tmp_path / "data"), [safe], out)
    assert (tmp_path / "elsewhere" / "x" / ".tmp-keep").is_dir()
    assert sorted(path.name for path in out.iterdir()) == ["predictions"]  # no temp zip or staging folder left


def test_a_symlink_out_of_the_prediction_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "predictions").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "predictions" / "video").symlink_to(tmp_path / "elsewhere")
    item = BenchmarkItem(
        key="video/0",
        video_id="video",
        video_path=tmp_path,
        frame_names=("0",),
        query="q",
        answer="[SEG].",
        output_dir="video/0",
    )
    with pytest.raises(InvalidInputError, match="outside"):
        prediction_dir(out, item)


def test_bad_limit_and_unscorable_refdavis_are_refused(tmp_path: Path, predictor) -> None:
    dataset = write_dataset("refdavis", tmp_path / "data")
    with pytest.raises(InvalidInputError, match="--limit must be >= 1"):
        run_evaluation(make_settings(tmp_path / "out", **dataset, limit=0), predictor=predictor)
    with pytest.raises(InvalidInputError, match="refdavis with --limit 3 cannot be scored"):
        run_evaluation(make_settings(tmp_path / "out", **dataset, limit=3), predictor=predictor)
    with pytest.raises(InvalidInputError, match="--davis-root"):
        run_evaluation(make_settings(tmp_path / "out", **{**dataset, "davis_root": None}), predictor=predictor)
    result = run_evaluation(make_settings(tmp_path / "out", **dataset, limit=3, score=False), predictor=predictor)
    assert result["written"] == 3 and "score" not in result


# ------------------------------------------------------------------------------------------------ --limit
def test_limit_evaluates_and_scores_only_the_first_items(tmp_path: Path, predictor) -> None:
    settings = make_settings(tmp_path / "out", **write_dataset("reasonvos", tmp_path / "data"), limit=2)
    items = benchmark_of(settings).items()[:2]
    result = run_evaluation(settings, predictor=predictor)
    assert result["items"] == result["written"] == 2
    assert sorted(path.parent.name + "/" + path.name for path in (settings.out / "predictions").glob("*/*")) == sorted(
        item.output_dir for item in items
    )
    scored = json.loads((settings.out / "score.json").read_text())["sequences"]
    assert sorted(scored) == sorted(item.key for item in items)
    overall, subsets = expected_scores("reasonvos", settings, items)
    assert_scores(result, overall, subsets)


def test_reasonvos_id_keyed_meta_is_scored(tmp_path: Path, predictor) -> None:
    """The older ReasonVOS meta form (expressions keyed by id, ``is_sent`` per video) is read and scored."""
    settings = make_settings(tmp_path / "out", **write_dataset("reasonvos", tmp_path / "data"))
    meta_path = settings.data_root / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    video = meta["videos"]["vidB"]
    video["is_sent"] = True
    video["expressions"] = {
        str(entry["exp_id"]): {"obj_id": entry["obj_id"], "exp_text": entry["exp_text"]}
        for entry in video["expressions"]
    }
    write_json(meta_path, meta)
    result = run_evaluation(settings, predictor=predictor)
    items = benchmark_of(settings).items()
    assert sorted(json.loads((settings.out / "score.json").read_text())["sequences"]) == sorted(i.key for i in items)
    assert_scores(result, *expected_scores("reasonvos", settings, items))


def test_image_ground_truth_follows_the_current_limit(tmp_path: Path, predictor) -> None:
    dataset = write_dataset("refcoco", tmp_path / "data")
    run_evaluation(make_settings(tmp_path / "out", **dataset), predictor=predictor)
    settings = make_settings(tmp_path / "out", **dataset, limit=1)
    result = run_evaluation(settings, predictor=predictor)
    items = benchmark_of(settings).items()[:1]
    scored = json.loads((settings.out / "score.json").read_text())["sequences"]
    assert list(scored) == [f"{items[0].key}/{items[0].frame_names[0]}"]
    assert_scores(result, *expected_scores("refcoco", settings, items))


# ------------------------------------------------------------------------------------------------ sharding, CLI
def test_videos_are_sharded_deterministically_over_ranks(tmp_path: Path) -> None:
    items = get_benchmark("reasonvos", write_reasonvos(tmp_path / "ReasonVOS")).items()
    items += [replace(item, key=f"x/{n}", output_dir=f"x/{n}", video_id=f"v{n}") for n, item in enumerate(items)]
    shards = [shard_videos(items, DistributedContext(rank=rank, world_size=3)) for rank in range(3)]
    videos = [video for shard in shards for video in shard]
    assert sorted(videos) == sorted({item.video_id for item in items}) and len(videos) == len(set(videos))
    assert [list(shard) for shard in shards] == [
        sorted({item.video_id for item in items})[rank::3] for rank in range(3)
    ]
    for shard in shards:
        for video, video_items in shard.items():
            assert video_items == [item for item in items if item.video_id == video]


def test_launcher_environment_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    from videolisa.commands.eval import configure_parser

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert DistributedContext.from_environment() == DistributedContext(rank=3, world_size=4, local_rank=1)
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    required = ["--benchmark", "mevis", "--data-root", "d", "--model", "m", "--out", "o"]
    # The deepspeed launcher appends --local_rank=N to the script's arguments.
    assert parser.parse_args([*required, "--local_rank=1"]).score is True
    assert parser.parse_args([*required, "--score"]).score is True
    assert parser.parse_args([*required, "--no-score"]).score is False
