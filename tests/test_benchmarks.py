"""Tests of the benchmark readers: tiny datasets written in each official layout, read back."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmark_fixtures import (
    COCO_IMAGE_SIZE,
    FRAMES,
    coco_image,
    encode_rle,
    write_frames,
    write_image,
    write_json,
    write_masks,
    write_mevis,
    write_reasonseg,
    write_reasonvos,
    write_refdavis,
    write_refer,
    write_refytvos,
)

from videolisa.benchmarks import BENCHMARKS, BenchmarkItem, ImageBenchmark, get_benchmark
from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.synthetic import SyntheticConfig, generate_videos, write_synthetic_dataset


def keys(items: list[BenchmarkItem]) -> list[str]:
    return [item.key for item in items]


# ------------------------------------------------------------------------------------------------ ReasonVOS


@pytest.fixture
def reasonvos_root(tmp_path: Path) -> Path:
    return write_reasonvos(tmp_path / "ReasonVOS")


def test_reasonvos_items(reasonvos_root: Path) -> None:
    benchmark = get_benchmark("reasonvos", reasonvos_root)
    benchmark.validate()
    items = benchmark.items()
    assert keys(items) == [
        "MeViS_vid_a_1/0",
        "MeViS_vid_a_1/1",
        "MeViS_vid_a_2/2",
        "BURST_vidB_0/2",
        "BURST_vidB_0/10",
    ]
    by_key = {item.key: item for item in items}
    assert by_key["MeViS_vid_a_1/0"].query == "Please segment the the red car in this scene."
    assert by_key["MeViS_vid_a_1/1"].query == "Which car stops first. Please output the segmentation masks."
    assert by_key["BURST_vidB_0/10"].query == "The animal that is scared. Please output the segmentation masks."
    assert [item.subset for item in items] == ["short", "long", "short", "short", "long"]
    first = by_key["MeViS_vid_a_2/2"]
    assert first.video_id == "vid_a" and first.video_path == reasonvos_root / "JPEGImages" / "vid_a"
    assert first.frame_names == tuple(FRAMES) and first.answer == "Sure, [SEG]."
    assert first.output_dir == first.key
    assert benchmark.has_ground_truth


def test_reasonvos_reads_the_older_id_keyed_form(reasonvos_root: Path) -> None:
    meta = {
        "videos": {
            "vidB": {
                "source": "BURST",
                "frames": FRAMES,
                "is_sent": True,
                "expressions": {"4": {"obj_id": 0, "exp_text": "the fastest one"}},
            }
        }
    }
    write_json(reasonvos_root / "meta_expressions.json", meta)
    items = get_benchmark("reasonvos", reasonvos_root).items()
    assert [(item.key, item.query, item.subset) for item in items] == [
        ("BURST_vidB_0/4", "the fastest one. Please output the segmentation masks.", "long")
    ]


def test_reasonvos_malformed_layouts(reasonvos_root: Path) -> None:
    (reasonvos_root / "JPEGImages" / "vid_a" / "00001.jpg").unlink()
    with pytest.raises(MissingFilesError, match="00001.jpg"):
        get_benchmark("reasonvos", reasonvos_root).validate()
    write_frames(reasonvos_root / "JPEGImages" / "vid_a", ["00001"])

    shutil.rmtree(reasonvos_root / "Annotations" / "MeViS_vid_a_2")
    with pytest.raises(MissingFilesError, match="MeViS_vid_a_2"):
        get_benchmark("reasonvos", reasonvos_root).validate()
    write_masks(reasonvos_root / "Annotations" / "MeViS_vid_a_2", FRAMES, size=(10, 16))
    with pytest.raises(InvalidInputError, match="10x16"):
        get_benchmark("reasonvos", reasonvos_root).validate()

    meta = json.loads((reasonvos_root / "meta_expressions.json").read_text())
    del meta["videos"]["vid_a"]["expressions"][1]["exp_text"]
    write_json(reasonvos_root / "meta_expressions.json", meta)
    with pytest.raises(InvalidInputError, match="'exp_text'"):
        get_benchmark("reasonvos", reasonvos_root).items()

    (reasonvos_root / "meta_expressions.json").unlink()
    with pytest.raises(MissingFilesError, match="meta_expressions.json"):
        get_benchmark("reasonvos", reasonvos_root).validate()


# ---------------------------------------------------------------------------------------------------- MeViS


@pytest.fixture
def mevis_root(tmp_path: Path) -> Path:
    return write_mevis(tmp_path / "MeViS")


def test_mevis_items(mevis_root: Path) -> None:
    benchmark = get_benchmark("mevis", mevis_root)
    assert benchmark.split == "valid_u" and benchmark.has_ground_truth
    benchmark.validate()
    items = benchmark.items()
    assert keys(items) == ["v1/2", "v1/10", "v2/0"]
    assert [item.query for item in items] == [
        "Please segment the the cat on the left in this image.",
        "Please segment the two cats in this image.",
        "Please segment the bird flying away in this image.",
    ]
    assert items[0].output_dir == "v1/2" and items[0].video_path == mevis_root / "valid_u" / "JPEGImages" / "v1"
    assert all(item.subset is None and item.answer == "Sure, [SEG]." for item in items)


def test_mevis_online_split_has_no_ground_truth(mevis_root: Path) -> None:
    shutil.copytree(mevis_root / "valid_u", mevis_root / "valid")
    (mevis_root / "valid" / "mask_dict.json").unlink()
    benchmark = get_benchmark("mevis", mevis_root, "valid")
    benchmark.validate()
    assert not benchmark.has_ground_truth and len(benchmark.items()) == 3


def test_mevis_malformed_ground_truth(mevis_root: Path) -> None:
    mask_dict_path = mevis_root / "valid_u" / "mask_dict.json"
    mask_dict = json.loads(mask_dict_path.read_text())

    wrong_size = dict(mask_dict, **{"6": [encode_rle(np.ones((12, 15), dtype=bool)), None, None]})
    write_json(mask_dict_path, wrong_size)
    with pytest.raises(InvalidInputError, match=r"RLE size \[12, 15\] differs from the frame size \[12, 16\]"):
        get_benchmark("mevis", mevis_root).validate()

    write_json(mask_dict_path, dict(mask_dict, **{"6": [None, None]}))
    with pytest.raises(InvalidInputError, match="expected 3 per-frame RLEs, found 2"):
        get_benchmark("mevis", mevis_root).validate()

    write_json(mask_dict_path, {key: value for key, value in mask_dict.items() if key != "7"})
    with pytest.raises(InvalidInputError, match="anno_id 7"):
        get_benchmark("mevis", mevis_root).validate()

    mask_dict_path.unlink()
    with pytest.raises(MissingFilesError, match="mask_dict"):
        get_benchmark("mevis", mevis_root).validate()


def test_mevis_missing_frames_folder_and_bad_json(mevis_root: Path) -> None:
    shutil.rmtree(mevis_root / "valid_u" / "JPEGImages" / "v2")
    with pytest.raises(MissingFilesError, match="frames folder not found"):
        get_benchmark("mevis", mevis_root).validate()
    (mevis_root / "valid_u" / "meta_expressions.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        get_benchmark("mevis", mevis_root).validate()


# ------------------------------------------------------------------------------------ Ref-YouTube-VOS, Ref-DAVIS


@pytest.fixture
def refytvos_root(tmp_path: Path) -> Path:
    return write_refytvos(tmp_path / "refer_youtube_vos")


def test_refytvos_items_leave_out_test_videos(refytvos_root: Path) -> None:
    benchmark = get_benchmark("refytvos", refytvos_root)
    benchmark.validate()
    items = benchmark.items()
    assert keys(items) == ["aaa/0", "aaa/1", "bbb/0", "bbb/1"]
    assert items[0].query == "Please segment the a aaa person in this image."
    assert items[0].video_path == refytvos_root / "valid" / "JPEGImages" / "aaa"
    assert not benchmark.has_ground_truth


def test_refytvos_without_test_meta_needs_every_video(refytvos_root: Path) -> None:
    (refytvos_root / "meta_expressions" / "test" / "meta_expressions.json").unlink()
    with pytest.raises(MissingFilesError, match="ccc"):
        get_benchmark("refytvos", refytvos_root).validate()


@pytest.fixture
def refdavis_root(tmp_path: Path) -> Path:
    return write_refdavis(tmp_path / "ref-davis")


def test_refdavis_items_carry_the_annotator(refdavis_root: Path) -> None:
    benchmark = get_benchmark("refdavis", refdavis_root)
    benchmark.validate()
    items = benchmark.items()
    assert keys(items) == [f"blackswan/{index}" for index in range(8)]
    assert [item.subset for item in items] == [f"anno_{index % 4}" for index in range(8)]
    assert items[5].query == "Please segment the expression 5 in this image."


def test_refdavis_rejects_incomplete_annotator_groups(refdavis_root: Path) -> None:
    meta_path = refdavis_root / "meta_expressions" / "valid" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    del meta["videos"]["blackswan"]["expressions"]["7"]
    write_json(meta_path, meta)
    with pytest.raises(InvalidInputError, match="7 expressions"):
        get_benchmark("refdavis", refdavis_root).validate()
    meta["videos"]["blackswan"]["expressions"]["7"] = {"exp": "x", "obj_id": "3"}
    write_json(meta_path, meta)
    with pytest.raises(InvalidInputError, match="annotators of one object"):
        get_benchmark("refdavis", refdavis_root).validate()


# ------------------------------------------------------------------------------------------------- ReasonSeg


@pytest.fixture
def reasonseg_root(tmp_path: Path) -> Path:
    return write_reasonseg(tmp_path / "ReasonSeg")


def test_reasonseg_items_and_ground_truth(reasonseg_root: Path) -> None:
    benchmark = get_benchmark("reasonseg", reasonseg_root)
    assert isinstance(benchmark, ImageBenchmark) and benchmark.split == "val"
    benchmark.validate()
    items = benchmark.items()
    assert keys(items) == ["a_image", "b_image"]
    assert items[0].query == " What is the café sign in this video? Please output segmentation mask."
    assert items[1].query == " What would you use to cut paper? Please output segmentation mask."
    assert [item.subset for item in items] == ["short", "long"]
    assert items[1].answer == "[SEG]." and items[1].frame_names == ("b_image",)
    assert items[1].video_path == reasonseg_root / "val" / "b_image.jpg"

    expected = np.zeros((12, 14), dtype=np.uint8)
    expected[3:9, 2:11] = 1  # the outline is drawn too, so both edges are included
    expected[4:7, 4:7] = 255  # the smaller "ignore" polygon is drawn last; 4.7 truncates to 4
    assert np.array_equal(benchmark.ground_truth(items[1]), expected)


def test_reasonseg_missing_annotation(reasonseg_root: Path) -> None:
    (reasonseg_root / "val" / "a_image.json").unlink()
    with pytest.raises(MissingFilesError, match="a_image.json"):
        get_benchmark("reasonseg", reasonseg_root).validate()
    with pytest.raises(InvalidInputError, match="no split 'dev'"):
        get_benchmark("reasonseg", reasonseg_root, "dev")


# --------------------------------------------------------------------------------------------------- refCOCO


@pytest.fixture
def refer_root(tmp_path: Path) -> Path:
    return write_refer(tmp_path / "refer_seg")


@pytest.mark.parametrize("name", ["refcoco", "refcoco+", "refcocog"])
def test_refcoco_items(refer_root: Path, name: str) -> None:
    benchmark = get_benchmark(name, refer_root)
    benchmark.validate()
    items = benchmark.items()
    assert keys(items) == [
        "COCO_train2014_000000000001/3",
        "COCO_train2014_000000000001/7",
        "COCO_train2014_000000000002/9",
    ]
    assert items[1].query == " What is man on the left in this video? Please output segmentation mask."
    assert items[0].query == " What is guy in this video? Please output segmentation mask."
    assert items[2].video_id == "COCO_train2014_000000000002"
    assert items[2].frame_names == ("COCO_train2014_000000000002",) and items[2].answer == "[SEG]."
    assert all(item.subset is None for item in items)
    assert len(get_benchmark(name, refer_root, "testA").items()) == 1


def test_refcoco_ground_truth(refer_root: Path) -> None:
    benchmark = get_benchmark("refcoco", refer_root)
    items = benchmark.items()
    rle_mask = benchmark.ground_truth(items[2])
    expected = np.zeros(COCO_IMAGE_SIZE, dtype=np.uint8)
    expected[5:15, 1] = 1
    assert rle_mask.dtype == np.uint8 and np.array_equal(rle_mask, expected)
    polygon_mask = benchmark.ground_truth(items[0])
    assert polygon_mask.shape == COCO_IMAGE_SIZE and set(np.unique(polygon_mask)) == {0, 1}
    assert polygon_mask[3:10, 3:12].all()  # well inside the polygon
    outside = np.ones(COCO_IMAGE_SIZE, dtype=bool)
    outside[1:12, 1:14] = False
    assert not polygon_mask[outside].any()


def test_refcoco_malformed(refer_root: Path) -> None:
    with pytest.raises(InvalidInputError, match="splits present: testA, val"):
        get_benchmark("refcoco", refer_root, "testB").items()
    write_image(coco_image(refer_root, 2), (20, 31))
    with pytest.raises(InvalidInputError, match="20x31"):
        get_benchmark("refcoco", refer_root).validate()
    (refer_root / "refcocog" / "refs(umd).p").unlink()
    with pytest.raises(MissingFilesError, match=r"refs\(umd\).p"):
        get_benchmark("refcocog", refer_root).validate()


class _Exploit:
    def __init__(self, victim: Path) -> None:
        self.victim = victim

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.remove, (str(self.victim),))


def test_refcoco_refuses_pickles_with_code(refer_root: Path) -> None:
    victim = refer_root / "victim.txt"
    victim.write_text("still here")
    (refer_root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([_Exploit(victim)], protocol=2))
    with pytest.raises(InvalidInputError, match="refusing to load global"):
        get_benchmark("refcoco", refer_root).validate()
    assert victim.read_text() == "still here"


def test_refcoco_reads_sets_in_protocol_0_pickles(refer_root: Path) -> None:
    from videolisa.benchmarks.refcoco import load_container_pickle

    path = refer_root / "plain.p"
    data = [{"a": (1, 2.5, None, True), "b": {"x", "y"}, "c": "text"}]
    path.write_bytes(pickle.dumps(data, protocol=0))
    assert load_container_pickle(path) == data


# ------------------------------------------------------------------------------------------- hostile ids
# Ids from metadata become output paths (<out>/predictions/<video>/<exp_id>): each must be one plain name.
HOSTILE_IDS = ["../../../elsewhere/x", "..", "/tmp/abs", "a\\b", "nul\0byte", "", "C:drive"]


def rename_key(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def rewrite_json(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    write_json(path, data)


def assert_refused(benchmark: str, root: Path, file_name: str, hostile: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        get_benchmark(benchmark, root).items()
    assert file_name in str(error.value) and repr(hostile) in str(error.value)
    assert "not a plain file name" in str(error.value)


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_expression_dict_readers_refuse_hostile_video_and_expression_ids(tmp_path: Path, hostile: str) -> None:
    mevis = write_mevis(tmp_path / "MeViS")
    meta = mevis / "valid_u" / "meta_expressions.json"
    rewrite_json(meta, lambda data: rename_key(data["videos"], "v2", hostile))
    assert_refused("mevis", mevis, str(meta), hostile)

    refytvos = write_refytvos(tmp_path / "refer_youtube_vos")
    meta = refytvos / "meta_expressions" / "valid" / "meta_expressions.json"
    rewrite_json(meta, lambda data: rename_key(data["videos"]["aaa"]["expressions"], "1", hostile))
    assert_refused("refytvos", refytvos, str(meta), hostile)

    refdavis = write_refdavis(tmp_path / "ref-davis")
    meta = refdavis / "meta_expressions" / "valid" / "meta_expressions.json"
    rewrite_json(meta, lambda data: rename_key(data["videos"], "blackswan", hostile))
    assert_refused("refdavis", refdavis, str(meta), hostile)


@pytest.mark.parametrize("field", ["video", "source", "obj_id", "exp_id"])
@pytest.mark.parametrize("hostile", ["../../../elsewhere/x", "..", "/tmp/abs", "nul\0byte"])
def test_reasonvos_refuses_hostile_ids(reasonvos_root: Path, field: str, hostile: str) -> None:
    def change(data: dict[str, Any]) -> None:
        video = data["videos"]["vidB"]
        if field == "video":
            rename_key(data["videos"], "vidB", hostile)
        elif field == "source":
            video["source"] = hostile
        else:
            video["expressions"][0][field] = hostile

    meta = reasonvos_root / "meta_expressions.json"
    rewrite_json(meta, change)
    assert_refused("reasonvos", reasonvos_root, str(meta), hostile)


def test_reasonseg_refuses_an_image_named_dot(reasonseg_root: Path) -> None:
    # "..jpg" has the stem ".": its predictions would land in the prediction root itself.
    shutil.copy(reasonseg_root / "val" / "a_image.jpg", reasonseg_root / "val" / "..jpg")
    shutil.copy(reasonseg_root / "val" / "a_image.json", reasonseg_root / "val" / "..json")
    assert_refused("reasonseg", reasonseg_root, str(reasonseg_root / "val"), ".")


@pytest.mark.parametrize("hostile", ["../../../elsewhere/x", "..", "/tmp/abs"])
def test_refcoco_refuses_hostile_file_names_and_sentence_ids(refer_root: Path, hostile: str) -> None:
    instances = refer_root / "refcoco" / "instances.json"
    original = instances.read_text()
    rewrite_json(instances, lambda data: data["images"][0].update(file_name=hostile + ".jpg"))
    assert_refused("refcoco", refer_root, str(instances), hostile if hostile == ".." else hostile + ".jpg")
    instances.write_text(original)

    refs_path = refer_root / "refcoco" / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())
    refs[0]["sentences"][0]["sent_id"] = hostile
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    assert_refused("refcoco", refer_root, str(refs_path), hostile)


def test_plain_ids_with_dots_are_accepted(mevis_root: Path) -> None:
    meta = mevis_root / "valid_u" / "meta_expressions.json"
    rewrite_json(meta, lambda data: rename_key(data["videos"]["v1"]["expressions"], "2", "2..b"))
    assert "v1/2..b" in keys(get_benchmark("mevis", mevis_root).items())


# -------------------------------------------------------------------------------- synthetic data, registry


def test_synthetic_outputs_pass_the_official_readers(tmp_path: Path) -> None:
    config = SyntheticConfig(min_frames=10, max_frames=12, sizes=((64, 96),))
    write_synthetic_dataset(tmp_path / "mevis", num_videos=2, seed=9, config=config, progress=False)
    write_synthetic_dataset(tmp_path / "rvos", layout="reasonvos", num_videos=2, seed=9, config=config, progress=False)
    videos = list(generate_videos(9, 2, config))
    expressions = [expression for video in videos for expression in video.expressions]

    readers = (("mevis", tmp_path / "mevis"), ("synthetic", tmp_path / "mevis"), ("reasonvos", tmp_path / "rvos"))
    for name, root in readers:
        benchmark = get_benchmark(name, root)
        benchmark.validate()
        assert len(benchmark.items()) == len(expressions)

    synthetic_items = get_benchmark("synthetic", tmp_path / "mevis").items()
    assert [item.subset for item in synthetic_items] == [expression.kind for expression in expressions]
    sentence = next(item for item, e in zip(synthetic_items, expressions) if e.is_sentence)
    # The synthetic benchmark asks with the training templates its model learned (MeViS/SHORT, LONG).
    assert sentence.query.endswith("? Segment it Please output segmentation mask.")
    phrase_item, phrase = next((item, e) for item, e in zip(synthetic_items, expressions) if not e.is_sentence)
    assert phrase_item.query == f"Please segment the {phrase.text.lower()} in this image."
    reasonvos_items = get_benchmark("reasonvos", tmp_path / "rvos").items()
    assert {item.subset for item in reasonvos_items} == {"short", "long"}


def test_registry() -> None:
    assert set(BENCHMARKS) == {
        "reasonvos",
        "mevis",
        "revos",
        "refytvos",
        "refdavis",
        "reasonseg",
        "refcoco",
        "refcoco+",
        "refcocog",
        "synthetic",
    }
    with pytest.raises(ValueError, match="unknown benchmark 'davis'.*reasonvos, mevis"):
        get_benchmark("davis", "/nowhere")
    with pytest.raises(InvalidInputError, match="no split 'valid'"):
        get_benchmark("reasonvos", "/nowhere", "valid")
