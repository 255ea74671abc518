"""ReVOS: the reader of its release layout, the scorer against a transcription of the official one (VISA
``tools/eval_revos.py`` + ``tools/metrics.py``), the 0/1 prediction PNGs, and ``videolisa synth --layout revos``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from videolisa.benchmarks import get_benchmark
from videolisa.cli import main
from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.metrics import score_benchmark
from videolisa.metrics.reference import boundary_measure, region_similarity
from videolisa.synthetic import SyntheticConfig, write_synthetic_dataset

TINY = SyntheticConfig(
    min_frames=8, max_frames=10, sizes=((48, 64),), min_objects=2, max_objects=4, extra_kinds=("multi", "absent")
)
META = "meta_expressions_valid_.json"


@pytest.fixture(scope="module")
def revos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("revos") / "ReVOS", layout="revos", num_videos=3, seed=5, config=TINY, progress=False
    )


def load(root: Path) -> tuple[dict, dict, dict]:
    """The meta file's videos, mask_dict.json and mask_dict_foreground.json."""
    meta, mask_dict, foreground = (
        json.loads((root / name).read_text()) for name in (META, "mask_dict.json", "mask_dict_foreground.json")
    )
    return meta["videos"], mask_dict, foreground


def ground_truth(info: dict, expression: dict, mask_dict: dict) -> np.ndarray:
    """``[T, H, W] uint8`` union of an expression's annotations."""
    masks = np.zeros((len(info["frames"]), info["height"], info["width"]), np.uint8)
    for frame in range(len(info["frames"])):
        for anno_id in expression["anno_id"]:
            rle = mask_dict[str(anno_id)][frame]
            if rle:
                masks[frame] |= coco_mask.decode(rle)
    return masks


def write_predictions(root: Path, pred_root: Path, seed: int, value: int = 1) -> None:
    """Perturbed ground truth as PNGs with foreground ``value``: shifted masks, dropped frames, spurious blobs
    (also on no-target expressions), some exact."""
    rng = np.random.default_rng(seed)
    videos, mask_dict, _ = load(root)
    for video, info in videos.items():
        for exp_id, expression in info["expressions"].items():
            masks = ground_truth(info, expression, mask_dict)
            mode = int(rng.integers(4))
            folder = pred_root / video / exp_id
            folder.mkdir(parents=True)
            for name, mask in zip(info["frames"], masks):
                mask = mask.copy()
                if mode == 1:
                    mask = np.roll(mask, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
                if mode == 2 and rng.random() < 0.3:
                    mask[:] = 0
                if mode == 3 or (not expression["anno_id"] and rng.random() < 0.5):
                    centre = (int(rng.integers(5, info["width"] - 5)), int(rng.integers(5, info["height"] - 5)))
                    cv2.circle(mask, centre, int(rng.integers(2, 9)), 1, -1)
                Image.fromarray(mask * np.uint8(value)).save(folder / f"{name}.png")


# ------------------------------------------------------------------ the official computation, transcribed for tests
def official_expression(
    pred_root: Path, video: str, exp_id: str, info: dict, mask_dict: dict, foreground: dict
) -> list[float]:
    """``eval_queue`` of one expression: raw PNG values (cv2 grayscale), summed uint8 annotations, the
    foreground decoded per frame; per-frame J, F (davis2017), A = mean(gt == pred) and R on raw uint8 values."""
    frames = info["frames"]
    height, width = cv2.imread(str(pred_root / video / exp_id / f"{frames[0]}.png"), cv2.IMREAD_GRAYSCALE).shape
    gt = np.zeros((len(frames), height, width), np.uint8)
    pred = np.zeros_like(gt)
    fore = np.zeros_like(gt)
    for index, name in enumerate(frames):
        for anno_id in info["expressions"][exp_id]["anno_id"]:
            rle = mask_dict[str(anno_id)][index]
            if rle:
                gt[index] += coco_mask.decode(rle)
        decoded = coco_mask.decode(foreground[video]["masks_rle"][index])
        fore[index] = decoded.sum(axis=2).astype(np.uint8) if decoded.ndim == 3 else decoded.astype(np.uint8)
        pred[index] = cv2.imread(str(pred_root / video / exp_id / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
    j = np.array([region_similarity(p, g) for p, g in zip(pred, gt)]).mean()
    f = np.array([boundary_measure(p, g) for p, g in zip(pred, gt)]).mean()
    a = np.array([np.mean(g == p) for g, p in zip(gt, pred)]).mean()
    r = np.array([max(1 - ((1 - g) * p).sum() / (m.sum() + 1e-6), 0.0) for g, p, m in zip(gt, pred, fore)]).mean()
    return [j, f, a, r]


def official_results(root: Path, pred_root: Path) -> dict:
    """The results JSON of the official script (expressions in meta order, i.e. one worker)."""
    videos, mask_dict, foreground = load(root)
    rows = []
    for video, info in videos.items():
        for exp_id, expression in info["expressions"].items():
            j, f, a, r = official_expression(pred_root, video, exp_id, info, mask_dict, foreground)
            rows.append(
                {
                    "J": round(100 * j, 2),
                    "F": round(100 * f, 2),
                    "A": round(100 * a, 2),
                    "R": round(100 * r, 2),
                    "type_id": expression["type_id"],
                }
            )
    results = {}
    for key, type_id in (("referring", 0), ("reason", 1)):
        means = {
            name: np.array([row[name] for row in rows if row["type_id"] == type_id]).mean()
            for name in ("J", "F", "A", "R")
        }
        results[key] = {**means, "JF": (means["J"] + means["F"]) / 2}
    results["overall"] = {
        name: (results["referring"][name] + results["reason"][name]) / 2 for name in ("J", "F", "A", "R", "JF")
    }
    return results


# ---------------------------------------------------------------------------------------------------------- tests
@pytest.mark.usefixtures("scoring_kernels")
@pytest.mark.parametrize("seed", [0, 1])
def test_scores_equal_the_official_computation(revos_root: Path, tmp_path: Path, seed: int) -> None:
    write_predictions(revos_root, tmp_path / "pred", seed)
    report = score_benchmark("revos", revos_root, tmp_path / "pred", workers=1)
    assert report.details["official"] == official_results(revos_root, tmp_path / "pred")
    assert report.overall == {
        name: report.details["official"]["overall"][name] / 100 for name in ("J", "F", "JF", "A", "R")
    }
    types = report.details["types"]
    assert {name: types[name]["count"] for name in types} == {
        name: sum(value == name for value in report.details["type_of"].values())
        for name in ("referring", "reasoning", "no-target")
    }
    assert min(types[name]["count"] for name in types) > 0
    assert report.overall["R"] < 1  # the spurious blobs cost robustness


def test_0_255_pngs_are_scored_as_masks_but_mislead_the_official_scorer(revos_root: Path, tmp_path: Path) -> None:
    """Why ReVOS predictions are written as 0/1: the official A and R compare raw values."""
    write_predictions(revos_root, tmp_path / "binary", seed=3)
    write_predictions(revos_root, tmp_path / "byte", seed=3, value=255)
    binary = score_benchmark("revos", revos_root, tmp_path / "binary", workers=1)
    byte = score_benchmark("revos", revos_root, tmp_path / "byte", workers=1)
    assert byte.details["official"] == binary.details["official"]
    official_byte = official_results(revos_root, tmp_path / "byte")
    assert official_byte["overall"]["J"] == binary.details["official"]["overall"]["J"]
    assert official_byte["overall"]["A"] < binary.details["official"]["overall"]["A"]


def test_missing_predictions(revos_root: Path, tmp_path: Path) -> None:
    write_predictions(revos_root, tmp_path / "pred", seed=0)
    video = sorted(load(revos_root)[0])[0]
    removed = tmp_path / "pred" / video / "0" / "00001.png"
    removed.unlink()
    with pytest.raises(MissingFilesError, match="00001.png"):
        score_benchmark("revos", revos_root, tmp_path / "pred", workers=1)
    report = score_benchmark("revos", revos_root, tmp_path / "pred", workers=1, missing="zero")
    assert report.sequences[f"{video}/0"] == {"J": 0.0, "F": 0.0, "A": 0.0, "R": 0.0, "JF": 0.0}
    assert "whole expression" in report.notes[0]


def test_score_cli(revos_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_predictions(revos_root, tmp_path / "pred", seed=1)
    out = tmp_path / "score.json"
    assert (
        main(
            [
                "score",
                "--benchmark",
                "revos",
                "--gt",
                str(revos_root),
                "--pred",
                str(tmp_path / "pred"),
                "--workers",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "revos:" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["details"]["official"] == json.loads(json.dumps(official_results(revos_root, tmp_path / "pred")))


def test_reader_items_queries_and_types(revos_root: Path) -> None:
    benchmark = get_benchmark("revos", revos_root)
    benchmark.validate()
    items = benchmark.items()
    videos = load(revos_root)[0]
    assert len(items) == sum(len(info["expressions"]) for info in videos.values())
    by_key = {item.key: item for item in items}
    for video, info in videos.items():
        for exp_id, expression in info["expressions"].items():
            item = by_key[f"{video}/{exp_id}"]
            assert item.mask_value == 1 and item.output_dir == f"{video}/{exp_id}"
            assert item.subset == ("referring", "reasoning", "no-target")[expression["type_id"]]
            if expression["type_id"] == 1:
                assert item.query == f"{expression['exp']} Please output segmentation mask."
            else:
                assert item.query == f"Please segment the {expression['exp'].lower()} in this image."


def copy_with_meta(root: Path, tmp_path: Path, edit) -> Path:
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    meta = json.loads((copy / META).read_text())
    edit(copy, meta)
    (copy / META).write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize("hostile", ["../escape", "/abs", "a//b", "a/../b", "a\\b", "."])
def test_reader_refuses_unsafe_video_ids(revos_root: Path, tmp_path: Path, hostile: str) -> None:
    def rename(copy: Path, meta: dict) -> None:
        videos = meta["videos"]
        videos[hostile] = videos.pop(next(iter(videos)))

    copy = copy_with_meta(revos_root, tmp_path, rename)
    with pytest.raises(InvalidInputError, match="video id"):
        get_benchmark("revos", copy).items()


def test_reader_accepts_nested_video_ids(revos_root: Path, tmp_path: Path) -> None:
    def nest(copy: Path, meta: dict) -> None:
        name = next(iter(meta["videos"]))
        (copy / "JPEGImages" / "source").mkdir()
        (copy / "JPEGImages" / name).rename(copy / "JPEGImages" / "source" / name)
        meta["videos"][f"source/{name}"] = meta["videos"].pop(name)
        foreground = json.loads((copy / "mask_dict_foreground.json").read_text())
        foreground[f"source/{name}"] = foreground.pop(name)
        (copy / "mask_dict_foreground.json").write_text(json.dumps(foreground))

    copy = copy_with_meta(revos_root, tmp_path, nest)
    benchmark = get_benchmark("revos", copy)
    benchmark.validate()
    assert any(item.output_dir.startswith("source/") for item in benchmark.items())


def test_reader_errors(revos_root: Path, tmp_path: Path) -> None:
    def empty_referring(copy: Path, meta: dict) -> None:
        expression = next(iter(next(iter(meta["videos"].values()))["expressions"].values()))
        expression["anno_id"] = []

    with pytest.raises(InvalidInputError, match="not a no-target one"):
        get_benchmark("revos", copy_with_meta(revos_root, tmp_path, empty_referring)).items()
    shutil.rmtree(tmp_path / "copy")

    def no_foreground(copy: Path, meta: dict) -> None:
        (copy / "mask_dict_foreground.json").write_text("{}")

    with pytest.raises(MissingFilesError, match="mask_dict_foreground"):
        get_benchmark("revos", copy_with_meta(revos_root, tmp_path, no_foreground)).validate()
    with pytest.raises(MissingFilesError, match="meta_expressions_train_.json"):
        get_benchmark("revos", revos_root, "train").validate()


def test_synth_revos_layout_matches_the_official_foreground_rule(revos_root: Path) -> None:
    """mask_dict_foreground.json = union of the annotations the video's expressions refer to
    (``generate_foreground_mask.py``); no-target expressions have empty id lists."""
    videos, mask_dict, foreground = load(revos_root)
    for video, info in videos.items():
        referenced = {anno for expression in info["expressions"].values() for anno in expression["anno_id"]}
        for frame in range(len(info["frames"])):
            union = np.zeros((info["height"], info["width"]), np.uint8)
            for anno_id in referenced:
                if mask_dict[str(anno_id)][frame]:
                    union |= coco_mask.decode(mask_dict[str(anno_id)][frame])
            assert np.array_equal(coco_mask.decode(foreground[video]["masks_rle"][frame]), union)
            assert foreground[video]["foreground_ratio"][frame] == pytest.approx(union.mean())
        kinds = {expression["kind"]: expression for expression in info["expressions"].values()}
        assert kinds["absent"]["type_id"] == 2 and kinds["absent"]["anno_id"] == []
        assert len(kinds["multi"]["anno_id"]) >= 2


@pytest.mark.slow
def test_eval_writes_0_1_pngs_that_both_scorers_read_alike(tmp_path: Path, tiny_model_dir: Path) -> None:
    from videolisa.evaluation import EvaluationConfig, run_evaluation
    from videolisa.predictor import VideoLisaPredictor

    config = SyntheticConfig(**{**TINY.__dict__, "max_objects": 2, "expressions_per_kind": 1})
    data = write_synthetic_dataset(
        tmp_path / "ReVOS", layout="revos", num_videos=1, seed=2, config=config, progress=False
    )
    predictor = VideoLisaPredictor.from_pretrained(tiny_model_dir, device="cpu", dtype="fp32")
    settings = EvaluationConfig(
        benchmark="revos", data_root=data, model="tiny", out=tmp_path / "out", device="cpu", workers=1
    )
    result = run_evaluation(settings, predictor=predictor)
    pngs = sorted((tmp_path / "out" / "predictions").rglob("*.png"))
    assert pngs
    for path in pngs:
        with Image.open(path) as image:
            assert image.mode == "L" and set(np.unique(np.asarray(image))) <= {0, 1}
    report = score_benchmark("revos", data, tmp_path / "out" / "predictions", workers=1)
    assert report.details["official"] == official_results(data, tmp_path / "out" / "predictions")
    assert result["score"]["overall"] == report.overall
    assert set(result["subsets"]) == {"referring", "reasoning", "no-target"}
    assert result["subsets"]["no-target"]["R"] == report.details["types"]["no-target"]["R"]
