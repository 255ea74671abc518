"""Tests of videolisa.synthetic and the ``videolisa synth`` command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videolisa import synthetic
from videolisa.cli import main
from videolisa.commands.synth import parse_sizes
from videolisa.errors import InvalidInputError
from videolisa.synthetic import (
    COLORS,
    EXPRESSION_KINDS,
    SyntheticConfig,
    SyntheticObject,
    generate_video,
    generate_videos,
    render_object_masks,
    write_synthetic_dataset,
)

SMALL = SyntheticConfig(min_frames=10, max_frames=16, sizes=((64, 96), (96, 64), (72, 72)))


@pytest.fixture(scope="module")
def videos() -> list[synthetic.SyntheticVideo]:
    return list(generate_videos(seed=11, num_videos=24, config=SMALL))


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_video() -> None:
    first, second = generate_video(7, SMALL), generate_video(7, SMALL)
    assert first.frames.dtype == np.uint8 and first.masks.dtype == bool
    assert first.frames.shape == (first.num_frames, first.height, first.width, 3)
    assert first.masks.shape == (len(first.objects), first.num_frames, first.height, first.width)
    assert np.array_equal(first.frames, second.frames)
    assert np.array_equal(first.masks, second.masks)
    assert first.objects == second.objects
    assert first.expressions == second.expressions


def test_different_seeds_give_different_videos() -> None:
    first, second = generate_video(7, SMALL), generate_video(8, SMALL)
    assert first.frames.shape != second.frames.shape or not np.array_equal(first.frames, second.frames)
    assert first.objects != second.objects


def test_video_depends_only_on_seed_and_index() -> None:
    assert list(generate_videos(3, 2, SMALL))[1].objects == list(generate_videos(3, 4, SMALL))[1].objects


def test_written_dataset_is_byte_identical_per_seed(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_synthetic_dataset(tmp_path / name, num_videos=2, seed=seed, config=SMALL, progress=False)
    files_a, files_b, files_c = (_files(tmp_path / name) for name in "abc")
    assert files_a == files_b
    assert files_a["valid_u/mask_dict.json"] != files_c["valid_u/mask_dict.json"]
    first_frame = "valid_u/JPEGImages/synthetic-0000/00000.jpg"
    assert files_a[first_frame] != files_c[first_frame]


# -------------------------------------------------------------------------------- masks agree with pixels


def test_masks_are_exactly_the_pixels_painted_in_each_colour(videos: list[synthetic.SyntheticVideo]) -> None:
    for video in videos:
        union = video.masks.any(axis=0)
        for color, rgb in COLORS.items():
            painted = (video.frames == np.array(rgb, dtype=np.uint8)).all(axis=-1)
            expected = np.zeros_like(union)
            for obj, masks in zip(video.objects, video.masks):
                if obj.color == color:
                    expected |= masks
            assert np.array_equal(painted, expected), (video.name, color)
        background = video.frames[~union]
        assert np.all(background[:, 0] == background[:, 1]) and np.all(background[:, 1] == background[:, 2])


def test_masks_are_coverage_minus_later_objects(videos: list[synthetic.SyntheticVideo]) -> None:
    for video in videos[:8]:
        coverage = np.stack(
            [render_object_masks(obj, video.num_frames, video.height, video.width) for obj in video.objects]
        )
        for index in range(len(video.objects)):
            covered_later = coverage[index + 1 :].any(axis=0)
            assert np.array_equal(video.masks[index], coverage[index] & ~covered_later)
        # Visible masks never overlap.
        assert video.masks.sum(axis=0).max() <= 1


def test_rasteriser_matches_the_geometry() -> None:
    height, width = 60, 80
    yy, xx = np.mgrid[0:height, 0:width]
    circle = SyntheticObject("circle", "red", "large", 10.0, "static", (30.3, 25.7), (0.0, 0.0))
    square = SyntheticObject("square", "blue", "large", 10.0, "static", (50.0, 30.0), (0.0, 0.0))
    disk = render_object_masks(circle, 1, height, width)[0]
    distance = np.hypot(xx - 30.3, yy - 25.7)
    assert disk[distance <= 9.0].all() and not disk[distance > 11.0].any()
    box = render_object_masks(square, 1, height, width)[0]  # half side 0.8 * radius = 8
    chebyshev = np.maximum(np.abs(xx - 50.0), np.abs(yy - 30.0))
    assert box[chebyshev <= 7.0].all() and not box[chebyshev > 9.0].any()


def test_moving_object_positions_follow_the_motion_model() -> None:
    stopping = SyntheticObject("star", "green", "small", 5.0, "stops", (10.0, 20.0), (2.0, -1.0), stop_frame=4)
    centers = stopping.centers(8)
    assert np.allclose(centers[2], [14.0, 18.0])
    assert np.allclose(centers[4:], [[18.0, 16.0]] * 4)


def test_entering_and_leaving_objects_have_empty_masks_on_some_frames(videos: list[synthetic.SyntheticVideo]) -> None:
    seen = set()
    for video in videos:
        for obj, masks in zip(video.objects, video.masks):
            coverage = render_object_masks(obj, video.num_frames, video.height, video.width)
            in_frame = coverage.any(axis=(1, 2))
            if obj.motion == "enters":
                assert not in_frame[0] and in_frame[-1]
                assert not masks[0].any() and masks.any()
                seen.add("enters")
            elif obj.motion == "leaves":
                assert in_frame[0] and not in_frame[-1]
                assert not masks[-1].any() and masks.any()
                seen.add("leaves")
            else:
                assert in_frame.all()
    assert seen == {"enters", "leaves"}


# ------------------------------------------------------------------------------------------ instructions


def _matches_attribute_phrase(obj: SyntheticObject, text: str) -> bool:
    words = text.split()
    noun = words[-1]
    return (noun == "shape" or noun == obj.shape) and all(word in (obj.size, obj.color) for word in words[:-1])


def test_every_video_has_unique_unambiguous_instructions(videos: list[synthetic.SyntheticVideo]) -> None:
    for video in videos:
        texts = [expression.text for expression in video.expressions]
        assert len(texts) == len(set(texts)), video.name
        kinds = [expression.kind for expression in video.expressions]
        assert set(kinds) == set(EXPRESSION_KINDS)
        assert all(kinds.count(kind) <= SMALL.expressions_per_kind for kind in EXPRESSION_KINDS)
        for expression in video.expressions:
            assert expression.is_sentence == (expression.kind == "reasoning")
            assert video.masks[expression.object_index].any(), expression
            matching = None
            if expression.kind == "attribute":
                matching = [_matches_attribute_phrase(obj, expression.text) for obj in video.objects]
            elif expression.text == "shape that stops halfway":
                matching = [obj.motion == "stops" for obj in video.objects]
            elif expression.text == "shape that never moves":
                matching = [obj.speed == 0 for obj in video.objects]
            elif expression.text == "shape that enters the frame":
                matching = [obj.motion == "enters" for obj in video.objects]
            elif expression.text == "shape that leaves the frame":
                matching = [obj.motion == "leaves" for obj in video.objects]
            elif expression.text == "object that appears last":
                first = [int(np.argmax(masks.any(axis=(1, 2)))) for masks in video.masks]
                matching = [value == max(first) for value in first]
            if matching is not None:
                assert sum(matching) == 1 and matching[expression.object_index], (video.name, expression)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(InvalidInputError, match="frame counts"):
        SyntheticConfig(min_frames=4)
    with pytest.raises(InvalidInputError, match="too small"):
        SyntheticConfig(sizes=((32, 64),))
    with pytest.raises(InvalidInputError, match="object counts"):
        SyntheticConfig(min_objects=3, max_objects=2)


# ------------------------------------------------------------------------------------------------ layouts


def test_mevis_layout_round_trip(tmp_path: Path) -> None:
    from pycocotools import mask as coco_mask

    out = write_synthetic_dataset(tmp_path / "mevis", num_videos=2, seed=3, config=SMALL, progress=False)
    expected = list(generate_videos(3, 2, SMALL))
    meta = json.loads((out / "valid_u" / "meta_expressions.json").read_text())["videos"]
    mask_dict = json.loads((out / "valid_u" / "mask_dict.json").read_text())
    assert sorted(meta) == [video.name for video in expected]
    for video in expected:
        entry = meta[video.name]
        assert entry["frames"] == list(video.frame_names)
        assert len(entry["expressions"]) == len(video.expressions)
        for exp_id, expression in zip(entry["expressions"], video.expressions):
            record = entry["expressions"][exp_id]
            assert (record["exp"], record["kind"], record["is_sent"]) == (
                expression.text,
                expression.kind,
                expression.is_sentence,
            )
            assert record["obj_id"] == [expression.object_index]
            rles = mask_dict[str(record["anno_id"][0])]
            decoded = np.stack(
                [
                    coco_mask.decode(rle).astype(bool) if rle else np.zeros((video.height, video.width), dtype=bool)
                    for rle in rles
                ]
            )
            assert np.array_equal(decoded, video.masks[expression.object_index])
            assert all(rle is None for rle, mask in zip(rles, video.masks[expression.object_index]) if not mask.any())
        for index, frame in enumerate(video.frames):
            decoded_frame = np.asarray(Image.open(out / "valid_u" / "JPEGImages" / video.name / f"{index:05d}.jpg"))
            assert decoded_frame.shape == frame.shape
            assert np.abs(decoded_frame.astype(int) - frame).mean() < 2.0


def test_reasonvos_layout_round_trip(tmp_path: Path) -> None:
    out = write_synthetic_dataset(
        tmp_path / "rvos", layout="reasonvos", num_videos=2, seed=4, config=SMALL, progress=False
    )
    expected = list(generate_videos(4, 2, SMALL))
    meta = json.loads((out / "meta_expressions.json").read_text())["videos"]
    for video in expected:
        entry = meta[video.name]
        assert entry["source"] == "synthetic" and entry["frames"] == list(video.frame_names)
        assert isinstance(entry["expressions"], list)
        assert [(e["exp_text"], e["kind"], e["is_sent"], e["obj_id"]) for e in entry["expressions"]] == [
            (e.text, e.kind, e.is_sentence, e.object_index) for e in video.expressions
        ]
        assert [e["exp_id"] for e in entry["expressions"]] == [str(i) for i in range(len(video.expressions))]
        for object_index, masks in enumerate(video.masks):
            folder = out / "Annotations" / f"synthetic_{video.name}_{object_index}"
            read = np.stack([np.asarray(Image.open(folder / f"{name}.png")) for name in video.frame_names])
            assert set(np.unique(read)) <= {0, 255}
            assert np.array_equal(read == 255, masks)
        assert len(list((out / "JPEGImages" / video.name).glob("*.jpg"))) == video.num_frames


def test_custom_layout_is_read_by_the_custom_data_reader(tmp_path: Path) -> None:
    from videolisa.data.custom import CustomDataset
    from videolisa.data.sample import SampleConfig

    out = write_synthetic_dataset(
        tmp_path / "custom", layout="custom", num_videos=2, seed=5, config=SMALL, progress=False
    )
    expected = list(generate_videos(5, 2, SMALL))
    settings = SampleConfig(num_frames_sparse=6, num_frames_dense=2, clip_image_size=28, sam_image_size=64)
    dataset = CustomDataset(settings, [out / synthetic.CUSTOM_FILE])
    pairs = [(video, expression) for video in expected for expression in video.expressions]
    assert len(dataset) == len(pairs)
    rng = np.random.default_rng(0)
    for index, (video, expression) in enumerate(pairs):
        record = dataset.records[index]
        referent = video.objects[expression.object_index]
        assert (record.instruction, record.is_sentence) == (expression.text, expression.is_sentence)
        assert record.answer == f"Sure, [SEG] {referent.color} {referent.size} {referent.shape}."
        sample = dataset.build_sample(index, rng)
        dense = sample.metadata["dense"]
        assert sample.conversation[-1] == ("assistant", record.answer)
        assert np.array_equal(sample.target_masks[0].numpy().astype(bool), video.masks[expression.object_index][dense])


def test_custom_layout_also_writes_text_only_questions_that_name_the_referents(tmp_path: Path) -> None:
    from videolisa.data.custom import CustomDataset
    from videolisa.data.sample import SampleConfig

    config = SyntheticConfig(**{**SMALL.__dict__, "extra_kinds": ("multi", "absent")})
    out = write_synthetic_dataset(
        tmp_path / "custom", layout="custom", num_videos=2, seed=5, config=config, progress=False
    )
    settings = SampleConfig(num_frames_sparse=6, num_frames_dense=2, clip_image_size=28, sam_image_size=64)
    questions = CustomDataset(settings, [out / synthetic.QUESTIONS_FILE])
    annotations = CustomDataset(settings, [out / synthetic.CUSTOM_FILE])
    pairs = [(video, expression) for video in generate_videos(5, 2, config) for expression in video.expressions]
    assert len(questions) == len(annotations) == len(pairs)
    kinds = set()
    for index, (video, expression) in enumerate(pairs):
        record, masked = questions.records[index], annotations.records[index]
        assert not record.has_masks and (record.instruction, record.video) == (masked.instruction, masked.video)
        names = [f"the {o.color} {o.size} {o.shape}" for o in (video.objects[i] for i in expression.targets)]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + ", and " + names[-1] if names else ""
        assert record.answer == ("Sure, " + listed + "." if names else "There is none in the video.")
        # The same words as the answer with masks, "the" where [SEG] stands.
        if expression.targets:
            assert record.answer == masked.answer.replace("[SEG]", "the")
        kinds.add(expression.kind)
    assert {"multi", "absent"} <= kinds
    sample = questions.build_sample(0, np.random.default_rng(0))
    assert sample.target_masks.shape[0] == 0 and sample.conversation[-1] == ("assistant", questions.records[0].answer)
    # With custom_targets, a text-only question brings other text-only questions of its clip (never masked ones).
    grouped = CustomDataset(settings, [out / synthetic.QUESTIONS_FILE, out / synthetic.CUSTOM_FILE], 3)
    sample = grouped.build_sample(0, np.random.default_rng(0))
    where = {record.where: record for record in grouped.records}
    asked = [where[name] for name in sample.metadata["records"]]
    assert len(asked) == 3 and len(set(sample.metadata["records"])) == 3 and sample.target_masks.shape[0] == 0
    assert all(not record.has_masks and record.video == asked[0].video for record in asked)
    assert [message for role, message in sample.conversation if role == "assistant"] == [r.answer for r in asked]


def test_custom_samples_can_ask_about_several_targets_of_one_video(tmp_path: Path) -> None:
    from videolisa.constants import VIDEO_PLACEHOLDER
    from videolisa.data.custom import CustomDataset
    from videolisa.data.sample import SampleConfig

    out = write_synthetic_dataset(
        tmp_path / "custom", layout="custom", num_videos=2, seed=6, config=SMALL, progress=False
    )
    expected = {video.name: video for video in generate_videos(6, 2, SMALL)}
    settings = SampleConfig(num_frames_sparse=6, num_frames_dense=2, clip_image_size=28, sam_image_size=64)
    dataset = CustomDataset(settings, [out / synthetic.CUSTOM_FILE], targets_per_sample=3)
    sample = dataset.build_sample(0, np.random.default_rng(1))
    lines = {f"{out / synthetic.CUSTOM_FILE}:{number}": number - 1 for number in range(1, len(dataset) + 1)}
    targets = [dataset.records[lines[where]] for where in sample.metadata["records"]]
    assert len(targets) == 3 and len(set(sample.metadata["records"])) == 3
    assert len({target.video for target in targets}) == 1
    video = expected[targets[0].video.name]
    questions = [message for role, message in sample.conversation if role == "user"]
    answers = [message for role, message in sample.conversation if role == "assistant"]
    assert questions[0].startswith(VIDEO_PLACEHOLDER) and not any(VIDEO_PLACEHOLDER in q for q in questions[1:])
    assert answers == [target.answer for target in targets]
    by_text = {expression.text: expression for expression in video.expressions}
    for row, target in enumerate(targets):
        expected_masks = video.masks[by_text[target.instruction].object_index][sample.metadata["dense"]]
        assert np.array_equal(sample.target_masks[row].numpy().astype(bool), expected_masks)
    with pytest.raises(InvalidInputError, match="custom_targets"):
        CustomDataset(settings, [out / synthetic.CUSTOM_FILE], targets_per_sample=0)
    # A text-only record of the same video stays a single exchange without masks.
    text_only = {"video": f"JPEGImages/{video.name}", "instruction": "How many shapes are there?", "answer": "Two."}
    with open(out / synthetic.CUSTOM_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(text_only) + "\n")
    dataset = CustomDataset(settings, [out / synthetic.CUSTOM_FILE], targets_per_sample=3)
    sample = dataset.build_sample(len(dataset) - 1, np.random.default_rng(1))
    assert len(sample.conversation) == 2 and sample.target_masks.shape[0] == 0


def test_mp4_layout(tmp_path: Path) -> None:
    import av

    out = write_synthetic_dataset(tmp_path / "mp4", layout="mp4", num_videos=1, seed=2, config=SMALL, progress=False)
    video = next(generate_videos(2, 1, SMALL))
    folder = out / video.name
    with av.open(str(folder / f"{video.name}.mp4")) as container:
        decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    assert decoded.shape == video.frames.shape
    assert np.abs(decoded.astype(int) - video.frames).mean() < 6.0
    instructions = json.loads((folder / "instructions.json").read_text())
    assert [e["text"] for e in instructions["expressions"]] == [e.text for e in video.expressions]
    assert [o["shape"] for o in instructions["objects"]] == [o.shape for o in video.objects]
    masks = np.stack([np.asarray(Image.open(folder / "masks" / "0" / f"{name}.png")) for name in video.frame_names])
    assert np.array_equal(masks == 255, video.masks[0])


def test_mp4_layout_needs_even_sizes(tmp_path: Path) -> None:
    config = SyntheticConfig(min_frames=10, max_frames=10, sizes=((64, 95),))
    with pytest.raises(InvalidInputError, match="even"):
        write_synthetic_dataset(tmp_path / "odd", layout="mp4", num_videos=1, config=config, progress=False)
    assert not (tmp_path / "odd").exists()


# -------------------------------------------------------------------------------------- atomic writing, CLI


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("videolisa.synthetic.writers.write_mevis_layout", fail)
    with pytest.raises(OSError, match="disk full"):
        write_synthetic_dataset(tmp_path / "out", num_videos=1, config=SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_refuses_and_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    args = ["synth", "--out", str(out), "--videos", "2", "--seed", "1", "--min-frames", "10", "--max-frames", "12"]
    assert main([*args, "--sizes", "64x96"]) == 0
    first = _files(out)
    assert (out / "valid_u" / "meta_expressions.json").is_file()
    first_frame = Image.open(out / "valid_u" / "JPEGImages" / "synthetic-0000" / "00000.jpg")
    assert (first_frame.height, first_frame.width) == (64, 96)

    assert main([*args, "--sizes", "72x72"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _files(out) == first

    assert main([*args, "--sizes", "72x72", "--overwrite"]) == 0
    assert _files(out) != first
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]  # no staging folders left


def test_overwrite_replaces_only_a_folder_that_synth_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "mine"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "sub" / "keep.txt").write_text("keep")
    args = ["synth", "--videos", "1", "--min-frames", "10", "--max-frames", "10", "--sizes", "64x64", "--overwrite"]
    assert main([*args, "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not written by videolisa synth" in err and str(foreign) in err
    assert (foreign / "sub" / "keep.txt").read_text() == "keep"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine"]

    ours = tmp_path / "ours"
    write_synthetic_dataset(ours, num_videos=1, seed=0, config=SMALL, progress=False)
    assert (ours / synthetic.SYNTH_MARKER).is_file()
    assert main([*args, "--out", str(ours)]) == 0
    assert (ours / synthetic.SYNTH_MARKER).is_file() and (ours / "valid_u" / "meta_expressions.json").is_file()


def test_cli_reports_an_unwritable_parent_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only parent folder (injected: the tests run as root, where chmod does not stop writes)."""
    parent = tmp_path / "readonly"
    parent.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.parent == parent:
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert (
        main(
            [
                "synth",
                "--out",
                str(parent / "data"),
                "--videos",
                "1",
                "--min-frames",
                "10",
                "--max-frames",
                "10",
                "--sizes",
                "64x64",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err  # the progress bar's lines, then one error line
    (line,) = re.findall(r"error: [^\n]*", err)
    assert "Permission denied" in line and str(parent) in line and "Traceback" not in err
    assert list(parent.iterdir()) == []


def test_cli_rejects_split_outside_mevis_and_bad_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path / "x"), "--layout", "mp4", "--split", "valid"]) == 2
    assert "--split" in capsys.readouterr().err
    assert parse_sizes("128x128, 160x224") == ((128, 128), (160, 224))
    with pytest.raises(Exception, match="HEIGHTxWIDTH"):
        parse_sizes("128x")
