"""Benchmark layouts and aggregation rules, on small datasets written by the tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.metrics import (
    ciou_giou,
    davis_statistics,
    mask_counts,
    read_mask,
    score_benchmark,
    write_report,
)
from videolisa.metrics.io import davis_palette
from videolisa.metrics.refdavis import merge_frame
from videolisa.metrics.reference import reference_jf

# Every test runs with the C kernels and with their NumPy fallback (the conftest fixture).
pytestmark = pytest.mark.usefixtures("scoring_kernels")

HEIGHT, WIDTH = 48, 64


def ellipse(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """``[H, W] uint8`` 0/1 random ellipse."""
    mask = np.zeros((height, width), np.uint8)
    centre = (int(rng.integers(10, width - 10)), int(rng.integers(10, height - 10)))
    axes = (int(rng.integers(3, 12)), int(rng.integers(3, 12)))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


def write_png(path: Path, values: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(values.astype(np.uint8))
    if palette:
        image.putpalette(davis_palette())
    image.save(path)


def expected_item(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Mean J and F of a ``[T, H, W]`` item with the full-frame reference."""
    region, boundary = reference_jf(pred, gt)
    return float(region.mean()), float(boundary.mean())


# --- DAVIS statistics -------------------------------------------------------------------------


def test_davis_statistics_hand_computed():
    values = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.5, 0.9])
    statistics = davis_statistics(values)
    assert statistics.mean == pytest.approx(4.4 / 8)
    assert statistics.recall == 4 / 8  # 1.0, 0.8, 0.6, 0.9 are above 0.5
    # 8 frames: round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7] -> first bin [0:3], last bin [5:8].
    assert statistics.decay == pytest.approx(np.mean([1.0, 0.8, 0.6]) - np.mean([0.0, 0.5, 0.9]))
    assert statistics.official_decay == statistics.decay


def test_decay_past_256_frames_is_correct_where_official_gives_nan():
    values = np.linspace(1.0, 0.0, 300)
    statistics = davis_statistics(values)
    # Bins [0, 75, 149, 224, 299]: first [0:76], last [224:300].
    assert statistics.decay == pytest.approx(values[0:76].mean() - values[224:300].mean())
    assert math.isnan(statistics.official_decay)


def test_official_decay_past_342_frames_is_wrong_not_nan():
    values = np.linspace(1.0, 0.0, 400)
    statistics = davis_statistics(values)
    # The official bins wrap to [0, 100, 199, 43, 143]: its last bin is values[43:144].
    assert statistics.official_decay == pytest.approx(values[0:101].mean() - values[43:144].mean())
    assert statistics.decay == pytest.approx(values[0:101].mean() - values[299:400].mean())


# --- MeViS ------------------------------------------------------------------------------------


def rle(mask: np.ndarray) -> dict:
    encoded = coco_mask.encode(np.asfortranarray(mask))
    return {"size": list(encoded["size"]), "counts": encoded["counts"].decode()}


@pytest.fixture()
def mevis(tmp_path):
    """Two videos; expression "1" of video_a is the union of two annotations; frame 1 of anno 11 is null."""
    rng = np.random.default_rng(0)
    frames = ["00000", "00001", "00002"]
    anno = {key: [ellipse(rng) for _ in frames] for key in ("10", "11", "20")}
    anno["11"][1] = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask_dict = {key: [rle(m) if m.any() else None for m in masks] for key, masks in anno.items()}
    meta = {
        "videos": {
            "video_a": {
                "frames": frames,
                "expressions": {"0": {"exp": "a", "anno_id": [10]}, "1": {"exp": "b", "anno_id": [10, 11]}},
            },
            "video_b": {"frames": frames, "expressions": {"0": {"exp": "c", "anno_id": [20]}}},
        }
    }
    gt_root = tmp_path / "valid_u"
    gt_root.mkdir()
    (gt_root / "meta_expressions.json").write_text(json.dumps(meta))
    (gt_root / "mask_dict.json").write_text(json.dumps(mask_dict))
    gts = {
        ("video_a", "0"): np.stack(anno["10"]),
        ("video_a", "1"): np.stack(anno["10"]) | np.stack(anno["11"]),
        ("video_b", "0"): np.stack(anno["20"]),
    }
    preds = {}
    for (video, expression), gt in gts.items():
        pred = np.stack([np.roll(frame, (1, 2), (0, 1)) for frame in gt])
        preds[(video, expression)] = pred
        for name, frame in zip(frames, pred):
            write_png(tmp_path / "pred" / video / expression / f"{name}.png", frame * 255)
    return gt_root, tmp_path / "pred", gts, preds


def test_mevis_scores_each_expression_against_the_union_of_its_annotations(mevis):
    gt_root, pred_root, gts, preds = mevis
    report = score_benchmark("mevis", gt_root, pred_root, workers=1)
    for (video, expression), gt in gts.items():
        j, f = expected_item(preds[(video, expression)], gt)
        assert report.sequences[f"{video}/{expression}"]["J"] == j
        assert report.sequences[f"{video}/{expression}"]["F"] == f
    js = [report.sequences[key]["J"] for key in report.sequences]
    fs = [report.sequences[key]["F"] for key in report.sequences]
    assert report.overall == {"J": np.mean(js), "F": np.mean(fs), "JF": (np.mean(js) + np.mean(fs)) / 2}


def test_mevis_missing_video_is_an_error_listing_it(mevis):
    gt_root, pred_root, _, _ = mevis
    for path in sorted((pred_root / "video_b").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (pred_root / "video_b").rmdir()
    with pytest.raises(MissingFilesError, match="video_b"):
        score_benchmark("mevis", gt_root, pred_root, workers=1)
    report = score_benchmark("mevis", gt_root, pred_root, workers=1, missing="zero")
    assert report.sequences["video_b/0"] == {"J": 0.0, "F": 0.0, "JF": 0.0}
    assert len(report.sequences) == 3  # a missing video counts, as in MeViS's official script
    assert "3 missing prediction frames" in report.notes[0]


def test_mevis_missing_frame_and_wrong_size(mevis):
    gt_root, pred_root, _, _ = mevis
    (pred_root / "video_a" / "0" / "00001.png").unlink()
    with pytest.raises(MissingFilesError, match="00001.png"):
        score_benchmark("mevis", gt_root, pred_root, workers=1)
    write_png(pred_root / "video_a" / "0" / "00001.png", np.zeros((HEIGHT, WIDTH + 1)))
    with pytest.raises(InvalidInputError, match=r"video_a/0/00001.png is 65x48"):
        score_benchmark("mevis", gt_root, pred_root, workers=1)


# --- ReasonVOS --------------------------------------------------------------------------------


def test_reasonvos_items_are_object_times_expression(tmp_path):
    rng = np.random.default_rng(1)
    meta = {
        "videos": {
            "cat_video": {
                "source": "MOSE",
                "frames": ["a", "b"],
                "expressions": [
                    {"obj_id": 1, "exp_id": 0, "exp_text": "x", "is_sent": False},
                    {"obj_id": 1, "exp_id": 3, "exp_text": "y", "is_sent": True},
                    {"obj_id": 2, "exp_id": 5, "exp_text": "z", "is_sent": False},
                ],
            }
        }
    }
    (tmp_path / "meta_expressions.json").write_text(json.dumps(meta))
    expected = {}
    for obj in (1, 2):
        key = f"MOSE_cat_video_{obj}"
        gt = np.stack([ellipse(rng) for _ in range(2)])
        for name, frame in zip(["00003.png", "00010.png"], gt):  # frames = the sorted GT PNGs
            write_png(tmp_path / "Annotations" / key / name, frame * 255)
        for expression in {1: ("0", "3"), 2: ("5",)}[obj]:
            pred = np.stack([ellipse(rng) for _ in range(2)])
            for name, frame in zip(["00003.png", "00010.png"], pred):
                write_png(tmp_path / "pred" / key / expression / name, frame)  # 0/1 PNGs
            expected[f"{key}/{expression}"] = expected_item(pred, gt)
    report = score_benchmark("reasonvos", tmp_path, tmp_path / "pred", workers=2)
    assert set(report.sequences) == set(expected)
    for key, (j, f) in expected.items():
        assert (report.sequences[key]["J"], report.sequences[key]["F"]) == (j, f)


# --- folders, PNG flavours, sizes ---------------------------------------------------------------


def test_folders_reads_palette_binary_and_any_nonzero_pngs(tmp_path):
    rng = np.random.default_rng(2)
    gt = np.stack([ellipse(rng) for _ in range(3)])
    pred = np.stack([ellipse(rng) for _ in range(3)])
    flavours = {"palette": lambda m: (m, True), "binary": lambda m: (m, False), "values": lambda m: (m * 37, False)}
    for name, flavour in flavours.items():
        for t in range(3):
            write_png(tmp_path / "gt" / name / "obj" / f"{t:05d}.png", gt[t] * 255)
            values, palette = flavour(pred[t])
            write_png(tmp_path / "pred" / name / "obj" / f"{t:05d}.png", values, palette=palette)
    report = score_benchmark("folders", tmp_path / "gt", tmp_path / "pred", workers=1)
    j, f = expected_item(pred, gt)
    for name in flavours:
        assert report.sequences[f"{name}/obj"] == {"J": j, "F": f, "JF": (j + f) / 2}


def test_read_mask_flavours(tmp_path):
    mask = ellipse(np.random.default_rng(4))
    cases = {
        "gray255.png": Image.fromarray(mask * 255),
        "gray16.png": Image.fromarray(mask.astype(np.uint16) * 300),
        "rgb.png": Image.fromarray(np.stack([np.zeros_like(mask), mask, np.zeros_like(mask)], axis=2) * 9),
        "onebit.png": Image.fromarray(mask.astype(bool)),
    }
    cases["gray7.png"] = Image.fromarray(mask * 7)
    palette = Image.fromarray(mask * 3, mode="L").convert("P")
    palette.putpalette([0, 0, 0] * 256)  # every index black: foreground is the non-zero index, not the colour
    cases["palette.png"] = palette
    for name, image in cases.items():
        image.save(tmp_path / name)
        np.testing.assert_array_equal(read_mask(tmp_path / name), mask, err_msg=name)
        values = read_mask(tmp_path / name, binary=False)
        assert values.shape == mask.shape and values.dtype == np.uint8, name
        np.testing.assert_array_equal(values != 0, mask != 0, err_msg=name)
    assert read_mask(tmp_path / "gray7.png", binary=False).max() == 7  # stored values kept
    (tmp_path / "not.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match="not a PNG"):
        read_mask(tmp_path / "not.png")


def test_folders_frames_come_from_the_ground_truth(tmp_path):
    rng = np.random.default_rng(3)
    gt = ellipse(rng)
    write_png(tmp_path / "gt" / "s" / "o" / "00002.png", gt)
    write_png(tmp_path / "pred" / "s" / "o" / "00002.png", gt)
    write_png(tmp_path / "pred" / "s" / "o" / "00099.png", 1 - gt)  # not in GT: ignored
    report = score_benchmark("folders", tmp_path / "gt", tmp_path / "pred", workers=1)
    assert report.overall == {"J": 1.0, "F": 1.0, "JF": 1.0}


# --- DAVIS --------------------------------------------------------------------------------------


def make_davis(root: Path, annotations: str, sequences: dict[str, np.ndarray]) -> None:
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(sequences) + "\n")
    for name, labels in sequences.items():
        for t, frame in enumerate(labels):
            write_png(root / annotations / "480p" / name / f"{t:05d}.png", frame, palette=True)


def two_object_sequence(rng: np.random.Generator, frames: int) -> np.ndarray:
    labels = np.zeros((frames, HEIGHT, WIDTH), np.uint8)
    for t in range(frames):
        labels[t][ellipse(rng) > 0] = 1
        labels[t][ellipse(rng) > 0] = 2
    return labels


def test_davis_semi_supervised_drops_first_and_last_frames_and_ignores_new_objects(tmp_path):
    rng = np.random.default_rng(5)
    gt = two_object_sequence(rng, 5)
    gt[2][:5, :5] = 3  # object 3 is not in the first frame: never evaluated
    gt[1][-3:, -3:] = 255  # void: becomes background in the semi-supervised task
    pred = two_object_sequence(rng, 5)
    pred[0] = 0
    pred[4] = 0  # first and last frames are not scored, whatever they hold
    make_davis(tmp_path / "DAVIS", "Annotations", {"seq": gt})
    for t, frame in enumerate(pred):
        write_png(tmp_path / "pred" / "seq" / f"{t:05d}.png", frame, palette=True)
    report = score_benchmark("davis-semi", tmp_path / "DAVIS", tmp_path / "pred", workers=1)
    assert set(report.sequences) == {"seq/1", "seq/2"}
    for obj in (1, 2):
        region, boundary = reference_jf(pred[1:4] == obj, gt[1:4] == obj)
        expected = (davis_statistics(region), davis_statistics(boundary))
        entry = report.sequences[f"seq/{obj}"]
        assert (entry["J"], entry["J_recall"], entry["J_decay"]) == (
            expected[0].mean,
            expected[0].recall,
            expected[0].decay,
        )
        assert (entry["F"], entry["F_recall"], entry["F_decay"]) == (
            expected[1].mean,
            expected[1].recall,
            expected[1].decay,
        )
    assert report.overall["J"] == np.mean([report.sequences[key]["J"] for key in ("seq/1", "seq/2")])
    assert report.overall["JF"] == (report.overall["J"] + report.overall["F"]) / 2


def test_davis_semi_supervised_rejects_extra_object_ids(tmp_path):
    rng = np.random.default_rng(6)
    gt = two_object_sequence(rng, 4)
    make_davis(tmp_path / "DAVIS", "Annotations", {"seq": gt})
    pred = gt.copy()
    pred[1][0, 0] = 3
    for t, frame in enumerate(pred):
        write_png(tmp_path / "pred" / "seq" / f"{t:05d}.png", frame, palette=True)
    with pytest.raises(InvalidInputError, match="object id 3"):
        score_benchmark("davis-semi", tmp_path / "DAVIS", tmp_path / "pred", workers=1)


def test_davis_unsupervised_matches_proposals_and_excludes_void(tmp_path):
    rng = np.random.default_rng(7)
    gt = two_object_sequence(rng, 4)
    gt[:, :4, :] = 255  # a void band
    # Proposals: 1 = object 2 (shifted), 2 = noise, 3 = object 1, in every frame.
    pred = np.zeros_like(gt)
    noise = ellipse(rng)
    for t in range(4):
        pred[t][noise > 0] = 2
        pred[t][np.roll(gt[t] == 2, 1, axis=1)] = 1
        pred[t][gt[t] == 1] = 3
    make_davis(tmp_path / "DAVIS", "Annotations_unsupervised", {"seq": gt})
    for t, frame in enumerate(pred):
        write_png(tmp_path / "pred" / "seq" / f"{t:05d}.png", frame, palette=True)
    report = score_benchmark("davis-unsup", tmp_path / "DAVIS", tmp_path / "pred", workers=1)
    void = gt == 255
    for obj, proposal in ((1, 3), (2, 1)):
        region, boundary = reference_jf(pred == proposal, gt == obj, void)
        assert report.sequences[f"seq/{obj}"]["J"] == region.mean()
        assert report.sequences[f"seq/{obj}"]["F"] == boundary.mean()
    assert report.sequences["seq/1"]["J"] == 1.0


def test_davis_unsupervised_rejects_more_than_20_proposals(tmp_path):
    rng = np.random.default_rng(8)
    gt = two_object_sequence(rng, 2)
    make_davis(tmp_path / "DAVIS", "Annotations_unsupervised", {"seq": gt})
    for t in range(2):
        write_png(tmp_path / "pred" / "seq" / f"{t:05d}.png", np.full((HEIGHT, WIDTH), 21), palette=True)
    with pytest.raises(InvalidInputError, match="at most 20 proposals"):
        score_benchmark("davis-unsup", tmp_path / "DAVIS", tmp_path / "pred", workers=1)


def test_davis_long_sequence_notes_the_official_decay(tmp_path):
    labels = np.zeros((260, 8, 8), np.uint8)
    labels[:, 2:5, 2:5] = 1
    make_davis(tmp_path / "DAVIS", "Annotations_unsupervised", {"long": labels})
    pred = labels.copy()
    pred[200:] = 0  # lost in the last frames: decay = 1 - mean(last quarter)
    for t, frame in enumerate(pred):
        write_png(tmp_path / "pred" / "long" / f"{t:05d}.png", frame, palette=True)
    report = score_benchmark("davis-unsup", tmp_path / "DAVIS", tmp_path / "pred", workers=2)
    assert report.overall["J_decay"] > 0.5
    assert report.details["official_decay"]["J"] != report.details["official_decay"]["J"]  # NaN
    assert any("more than 256 frames" in note for note in report.notes)


# --- Ref-DAVIS ----------------------------------------------------------------------------------


def test_merge_frame_follows_the_original_rule():
    a = np.array([[0, 49, 50, 255, 200, 255]], np.uint8)
    b = np.array([[0, 49, 60, 200, 255, 255]], np.uint8)
    # 49 and below are dropped; the highest value wins; ties go to the first object.
    np.testing.assert_array_equal(merge_frame([a, b]), [[0, 0, 2, 1, 2, 1]])


def test_refdavis_four_annotators_are_merged_scored_and_averaged(tmp_path):
    rng = np.random.default_rng(9)
    gt = two_object_sequence(rng, 3)
    make_davis(tmp_path / "DAVIS", "Annotations_unsupervised", {"vid": gt})
    frames = ["00000", "00001", "00002"]
    expressions = {str(i): {"exp": f"e{i}"} for i in range(8)}  # 2 objects x 4 annotators
    (tmp_path / "meta.json").write_text(json.dumps({"videos": {"vid": {"frames": frames, "expressions": expressions}}}))
    for i in range(8):
        obj, annotator = i // 4 + 1, i % 4
        for t, name in enumerate(frames):
            mask = gt[t] == obj
            if annotator == 3:  # the last annotator's expressions miss the object entirely
                mask = np.zeros_like(mask)
            write_png(tmp_path / "pred" / "vid" / str(i) / f"{name}.png", mask * 255)
    report = score_benchmark("refdavis", tmp_path / "DAVIS", tmp_path / "pred", workers=1, meta=tmp_path / "meta.json")
    annotators = report.details["annotators"]
    assert [a["J"] for a in annotators] == [1.0, 1.0, 1.0, 0.0]
    assert report.overall["J"] == 0.75
    assert report.sequences["vid/1"]["J"] == 0.75
    with pytest.raises(InvalidInputError, match="meta"):
        score_benchmark("refdavis", tmp_path / "DAVIS", tmp_path / "pred", workers=1)


# --- cIoU / gIoU --------------------------------------------------------------------------------


def test_mask_counts_remove_ignore_pixels_from_the_prediction():
    gt = np.array([[0, 1, 1, 255]], np.uint8)
    pred = np.array([[1, 1, 0, 1]], np.uint8)
    assert mask_counts(pred, gt) == (1, 3)  # the prediction on the ignore pixel does not count


def test_ciou_giou_hand_computed():
    ciou, giou, per_mask = ciou_giou([(1, 3), (0, 0), (2, 2)])
    assert per_mask[1] == 1.0  # empty union counts as a perfect mask
    assert per_mask[0] == float(np.float32(1) / (np.float32(3) + np.float32(1e-5)))
    assert ciou == pytest.approx(3 / 5, rel=1e-6)
    assert giou == pytest.approx((1 / 3 + 1 + 1) / 3, rel=1e-5)
    # float32 throughout, as LISA: I / (U + 1e-5) is not exactly 1 for I == U.
    assert per_mask[2] == float(np.float32(2) / (np.float32(2) + np.float32(1e-5)))


def test_refseg_layout_and_zero_policy(tmp_path):
    gt = np.zeros((10, 10), np.uint8)
    gt[2:6, 2:6] = 1
    gt[0, :] = 255
    write_png(tmp_path / "gt" / "a" / "img1.png", gt)
    write_png(tmp_path / "gt" / "img2.png", gt)
    write_png(tmp_path / "pred" / "a" / "img1.png", (gt == 1) * 255)
    with pytest.raises(MissingFilesError, match="img2.png"):
        score_benchmark("refseg", tmp_path / "gt", tmp_path / "pred", workers=1)
    report = score_benchmark("refseg", tmp_path / "gt", tmp_path / "pred", workers=1, missing="zero")
    assert report.sequences["a/img1"]["IoU"] == pytest.approx(1.0, abs=1e-6)
    assert report.sequences["img2"]["IoU"] == 0.0
    assert report.overall["cIoU"] == pytest.approx(0.5, rel=1e-6)
    write_png(tmp_path / "gt" / "img2.png", (gt == 1) * 255)
    with pytest.raises(InvalidInputError, match="0/255 mask is all ignore"):
        score_benchmark("refseg", tmp_path / "gt", tmp_path / "pred", workers=1, missing="zero")


# --- report files -------------------------------------------------------------------------------


def test_write_report_writes_json_csv_and_plot(mevis, tmp_path):
    gt_root, pred_root, _, _ = mevis
    report = score_benchmark("mevis", gt_root, pred_root, workers=1)
    report.details["nan"] = float("nan")
    paths = write_report(report, tmp_path / "out" / "report.json")
    assert [path.suffix for path in paths] == [".json", ".csv", ".png"]
    data = json.loads(paths[0].read_text())
    assert data["overall"] == report.overall
    assert data["sequences"]["video_a/1"] == report.sequences["video_a/1"]
    assert data["details"]["nan"] is None
    rows = paths[1].read_text().splitlines()
    assert rows[0] == "sequence,JF,J,F" and rows[-1].startswith("overall,")
    assert paths[2].read_bytes().startswith(b"\x89PNG")
    assert not list((tmp_path / "out").glob(".*tmp"))
