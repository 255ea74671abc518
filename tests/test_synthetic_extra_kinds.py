"""Opt-in synthetic instructions that name several objects (``multi``) or none (``absent``), in every layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videolisa.benchmarks import get_benchmark
from videolisa.cli import main
from videolisa.commands.synth import parse_extra_kinds
from videolisa.data.custom import CustomDataset, read_custom_file
from videolisa.data.sample import SampleConfig
from videolisa.errors import InvalidInputError
from videolisa.generation import number_segments
from videolisa.metrics.io import decode_rle
from videolisa.synthetic import (
    COLORS,
    OBJECT_SIZES,
    SHAPES,
    SyntheticConfig,
    generate_videos,
    write_synthetic_dataset,
)

BASE = SyntheticConfig(min_frames=8, max_frames=12, sizes=((48, 64),), min_objects=2, max_objects=4)
EXTRA = SyntheticConfig(**{**BASE.__dict__, "extra_kinds": ("multi", "absent")})


@pytest.fixture(scope="module")
def pairs() -> list[tuple]:
    """(video without extra kinds, the same seed with them)."""
    return list(zip(generate_videos(21, 12, BASE), generate_videos(21, 12, EXTRA)))


def test_extra_kinds_leave_the_default_generation_unchanged(pairs: list[tuple]) -> None:
    for plain, extra in pairs:
        assert np.array_equal(plain.frames, extra.frames) and np.array_equal(plain.masks, extra.masks)
        assert plain.objects == extra.objects
        assert extra.expressions[: len(plain.expressions)] == plain.expressions
        added = extra.expressions[len(plain.expressions) :]
        assert {expression.kind for expression in added} == {"multi", "absent"}


def _expected_referents(text: str, objects) -> tuple[int, ...] | None:
    """Referents of the attribute-based multi phrases (None for the motion ones, checked elsewhere)."""
    words = text.removeprefix("all the ").split()
    if words == ["shapes"]:
        return tuple(range(len(objects)))
    if len(words) == 2 and words[1] == "shapes" and words[0] in COLORS:
        return tuple(i for i, obj in enumerate(objects) if obj.color == words[0])
    if len(words) == 2 and words[1] == "shapes" and words[0] in OBJECT_SIZES:
        return tuple(i for i, obj in enumerate(objects) if obj.size == words[0])
    if len(words) == 1 and words[0].removesuffix("s") in SHAPES:
        return tuple(i for i, obj in enumerate(objects) if obj.shape == words[0].removesuffix("s"))
    return None


def test_multi_and_absent_referents(pairs: list[tuple]) -> None:
    forms = set()
    for _, video in pairs:
        for expression in video.expressions:
            if expression.kind == "multi":
                assert expression.object_index is None and len(expression.targets) >= 2
                expected = _expected_referents(expression.text, video.objects)
                if expected is not None:
                    assert expression.targets == expected, expression
                union = expression.target_masks(video.masks)
                assert np.array_equal(union, video.masks[list(expression.targets)].any(axis=0))
            elif expression.kind == "absent":  # an attribute phrase ("[size] [colour] shape-or-noun") of nothing
                *adjectives, noun = expression.text.split()
                assert noun in (*SHAPES, "shape") and set(adjectives) <= set(COLORS) | set(OBJECT_SIZES)
                wanted = {word: "color" if word in COLORS else "size" for word in adjectives}
                if noun != "shape":
                    wanted[noun] = "shape"
                assert wanted and not any(
                    all(getattr(obj, name) == word for word, name in wanted.items()) for obj in video.objects
                ), expression
                assert expression.targets == () and not expression.target_masks(video.masks).any()
                forms.add(len(expression.text.split()))
    assert len(forms) >= 2  # absent phrases come in the attribute phrases' several forms


def test_config_and_cli_refuse_unknown_kinds() -> None:
    with pytest.raises(InvalidInputError, match="extra expression kind"):
        SyntheticConfig(extra_kinds=("plural",))
    assert parse_extra_kinds("multi, absent") == ("multi", "absent")
    assert parse_extra_kinds("none") == ()
    with pytest.raises(Exception, match="unknown expression kind"):
        parse_extra_kinds("multi,typo")


def write(tmp_path: Path, layout: str) -> tuple[Path, list]:
    root = write_synthetic_dataset(tmp_path / layout, layout=layout, num_videos=2, seed=4, config=EXTRA, progress=False)
    return root, list(generate_videos(4, 2, EXTRA))


def test_mevis_layout(tmp_path: Path) -> None:
    root, videos = write(tmp_path, "mevis")
    split = root / "valid_u"
    meta = json.loads((split / "meta_expressions.json").read_text())["videos"]
    mask_dict = json.loads((split / "mask_dict.json").read_text())
    for video in videos:
        for exp_id, expression in enumerate(video.expressions):
            entry = meta[video.name]["expressions"][str(exp_id)]
            assert entry["obj_id"] == list(expression.targets) and entry["kind"] == expression.kind
            union = np.zeros((video.num_frames, video.height, video.width), bool)
            for anno_id in entry["anno_id"]:
                union |= np.array(
                    [
                        np.zeros(union.shape[1:], bool) if rle is None else decode_rle(rle).astype(bool)
                        for rle in mask_dict[str(anno_id)]
                    ]
                )
            assert np.array_equal(union, expression.target_masks(video.masks))
    get_benchmark("synthetic", root).validate()


def test_reasonvos_layout(tmp_path: Path) -> None:
    root, videos = write(tmp_path, "reasonvos")
    get_benchmark("reasonvos", root).validate()
    meta = json.loads((root / "meta_expressions.json").read_text())["videos"]
    for video in videos:
        for entry, expression in zip(meta[video.name]["expressions"], video.expressions):
            folder = root / "Annotations" / f"synthetic_{video.name}_{entry['obj_id']}"
            masks = np.array([np.asarray(Image.open(folder / f"{name}.png")) > 0 for name in video.frame_names])
            assert np.array_equal(masks, expression.target_masks(video.masks))
            if expression.kind == "absent":
                assert entry["obj_id"] == "absent"


def test_custom_layout(tmp_path: Path) -> None:
    root, videos = write(tmp_path, "custom")
    records = read_custom_file(root / "annotations.jsonl")
    expressions = [(video, expression) for video in videos for expression in video.expressions]
    assert len(records) == len(expressions)
    for record, (video, expression) in zip(records, expressions):
        empty = np.zeros((video.height, video.width), bool)
        masks = np.array(
            [[empty if rle is None else decode_rle(rle) > 0 for rle in source.rles] for source in record.targets]
        )
        if expression.kind == "absent":  # "not there" is an answer without [SEG]: no track in generation mode
            assert record.answer == "There is none in the video." and not record.has_masks
        elif expression.kind == "multi":
            # One [SEG] and one mask per referent, in the answer's order; each phrase a clause of its own.
            assert np.array_equal(masks, video.masks[list(expression.targets)])
            names = [f"{obj.color} {obj.size} {obj.shape}" for obj in (video.objects[i] for i in expression.targets)]
            listed = ", ".join(f"[SEG] {name}" for name in names[:-1]) + f", and [SEG] {names[-1]}"
            assert record.answer == f"Sure, {listed}."
            assert number_segments(record.answer.split("[SEG]"))[1] == names
        else:
            assert np.array_equal(masks[0], expression.target_masks(video.masks))


def test_custom_layout_multi_records_train_one_target_per_referent(tmp_path: Path) -> None:
    root, videos = write(tmp_path, "custom")
    dataset = CustomDataset(SampleConfig(num_frames_sparse=4, num_frames_dense=2), [root / "annotations.jsonl"])
    index = next(i for i, record in enumerate(dataset.records) if len(record.targets) > 1)
    sample = dataset.build_sample(index, np.random.default_rng(0))
    assert sample.target_masks.shape[0] == len(dataset.records[index].targets)
    assert sample.conversation[-1][1].count("[SEG]") == sample.target_masks.shape[0]


def test_mp4_layout_lists_the_referents(tmp_path: Path) -> None:
    root, videos = write(tmp_path, "mp4")
    for video in videos:
        instructions = json.loads((root / video.name / "instructions.json").read_text())
        for entry, expression in zip(instructions["expressions"], video.expressions):
            if expression.object_index is None:
                assert entry["obj_id"] is None and entry["obj_ids"] == list(expression.targets)
            else:
                assert "obj_ids" not in entry


def test_cli_revos_layout_has_the_extra_kinds_by_default(tmp_path: Path) -> None:
    common = ["--videos", "1", "--min-frames", "8", "--max-frames", "8", "--sizes", "48x64"]
    assert main(["synth", "--out", str(tmp_path / "a"), "--layout", "revos", *common]) == 0
    assert (
        main(
            [
                "synth",
                "--out",
                str(tmp_path / "b"),
                "--layout",
                "revos",
                "--extra-kinds",
                "none",
                "--split",
                "test",
                *common,
            ]
        )
        == 0
    )
    types_a = [
        e["type_id"]
        for v in json.loads((tmp_path / "a" / "meta_expressions_valid_.json").read_text())["videos"].values()
        for e in v["expressions"].values()
    ]
    types_b = [
        e["type_id"]
        for v in json.loads((tmp_path / "b" / "meta_expressions_test_.json").read_text())["videos"].values()
        for e in v["expressions"].values()
    ]
    assert 2 in types_a and 2 not in types_b and len(types_b) < len(types_a)


@pytest.mark.slow
def test_extra_kinds_report_script(tmp_path: Path, tiny_model_dir: Path) -> None:
    """``eval/synthetic_extra_kinds.py`` end to end with the tiny model: its numbers follow from the predictions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "synthetic_extra_kinds", Path(__file__).parents[1] / "eval" / "synthetic_extra_kinds.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    results = tmp_path / "results"
    assert (
        script.main(
            [
                "--model",
                str(tiny_model_dir),
                "--work",
                str(tmp_path / "work"),
                "--videos",
                "1",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    result = json.loads((results / "synthetic_extra_kinds.json").read_text())
    meta = json.loads((tmp_path / "work" / "ReVOS" / "meta_expressions_valid_.json").read_text())["videos"]
    absent = [
        f"{video}/{exp_id}"
        for video, info in meta.items()
        for exp_id, expression in info["expressions"].items()
        if expression["kind"] == "absent"
    ]
    for mode in ("teacher_forced", "generated"):
        predictions = tmp_path / "work" / mode / "predictions"
        empty = [
            all(not np.asarray(Image.open(path)).any() for path in (predictions / key).glob("*.png")) for key in absent
        ]
        scores = result["modes"][mode]
        assert scores["absent"] == {"count": len(absent), "empty_share": float(np.mean(empty))}
        assert scores["multi"]["count"] >= 1 and 0 <= scores["multi"]["JF"] <= 1
        by_form = scores["empty_by_phrase_form"]  # every absent instruction is an appearance phrase
        assert sum(row["absent"][0] for row in by_form.values()) == len(absent)
        assert sum(row["absent"][1] for row in by_form.values()) == sum(empty)
    generation = result["generation"]
    assert generation["multi"]["count"] == result["modes"]["generated"]["multi"]["count"]
    assert generation["absent"]["count"] == len(absent)
    # The tiny model writes text without [SEG]: no track, so no present frame, and empty predictions.
    assert generation["multi"]["tracks_per_instruction"] == 0 and generation["absent"]["no_present_frame_share"] == 1
    assert result["modes"]["generated"]["absent"]["empty_share"] == 1
    assert "ReVOS type" in (results / "synthetic_extra_kinds.md").read_text()
