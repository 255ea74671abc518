"""Video inference end to end (issue #4): every kind of video input, several instructions, streaming, tokenized
prompts, and ``videolisa infer`` with its outputs and its errors.

The tiny preset with seeded weights stands in for the released model: its masks are arbitrary but
deterministic, so two inference paths agree only if they feed the model the same pixels and prompts.
Independence from the SAM chunk size and the background decoder is tested in ``test_predictor_streaming.py``;
reader-level errors (corrupt frames, mixed sizes, ...) in ``test_video_io.py``; the mask writers in
``test_mask_io.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from benchmark_fixtures import write_png_frames
from PIL import Image
from pycocotools import mask as mask_utils

from videolisa.cli import main as cli_main
from videolisa.constants import DEFAULT_ANSWER, VIDEO_PLACEHOLDER
from videolisa.errors import InvalidInputError
from videolisa.mask_io import overlay_codec
from videolisa.predictor import SegmentationResult, VideoLisaPredictor
from videolisa.processing.conversation import build_prompt
from videolisa.processing.video_io import DEFAULT_FPS, open_video

NUM_FRAMES, HEIGHT, WIDTH = 40, 180, 320
MP4_FPS = 12  # not DEFAULT_FPS, so the mp4's own rate is seen to be read
INSTRUCTION = "the red square"
INSTRUCTIONS = [INSTRUCTION, "the blue circle that moves to the left", "the dog"]
TWO_SEG_ANSWER = "Sure, [SEG] and [SEG]."
# Masks are compared exactly where a logit is further than this from the threshold (0): elsewhere float32
# rounding (about 1e-7, from batching a different number of prompts through SAM's decoder) may flip a pixel.
DECIDED_LOGIT = 1e-4
# More tokens than the tiny model's context (config.model_max_length = 512), checked in
# test_python_api_rejects_empty_and_over_long_instructions.
OVER_LONG_INSTRUCTION = " ".join(["the red square that moves to the right"] * 80)


@dataclass(frozen=True)
class Media:
    """The same 40 frames as an mp4, as the frames decoded from that mp4, and as a PNG folder of those."""

    mp4: Path
    frames: np.ndarray
    folder: Path


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> Path:
    """Encode ``[T, H, W, 3] uint8`` RGB frames with the codec of the overlay videos (H.264 when available)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(overlay_codec(), rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def decode_with_pyav(path: Path) -> np.ndarray:
    """Every frame of a video file, decoded by PyAV directly (not through videolisa): ``[T, H, W, 3] uint8``."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def assert_same_segmentation(result: SegmentationResult, reference: SegmentationResult) -> None:
    """Same prompts, same frame sampling, bit-identical masks."""
    np.testing.assert_array_equal(result.prompt_embedding, reference.prompt_embedding)
    assert result.sparse_indices == reference.sparse_indices
    assert result.dense_indices == reference.dense_indices
    assert result.masks.dtype == np.bool_
    np.testing.assert_array_equal(result.masks, reference.masks)


@pytest.fixture(scope="module")
def tokenizer():
    from videolisa.tokenization import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(seed=0)


@pytest.fixture(scope="module")
def predictor(model, tokenizer) -> VideoLisaPredictor:
    return VideoLisaPredictor(model, tokenizer, device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory, frames_factory) -> Media:
    root = tmp_path_factory.mktemp("media")
    mp4 = write_mp4(root / "video.mp4", frames_factory(NUM_FRAMES, HEIGHT, WIDTH, 1), MP4_FPS)
    decoded = decode_with_pyav(mp4)
    assert decoded.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    return Media(mp4=mp4, frames=decoded, folder=write_png_frames(root / "frames", decoded))


@pytest.fixture(scope="module")
def folder_result(predictor, media) -> SegmentationResult:
    """The reference: the PNG folder segmented for :data:`INSTRUCTION`."""
    return predictor.segment(media.folder, INSTRUCTION)


@pytest.fixture(scope="module")
def mp4_result(predictor, media) -> SegmentationResult:
    return predictor.segment(media.mp4, INSTRUCTION)


@pytest.fixture(scope="module")
def short_clip(media) -> np.ndarray:
    """The first 12 decoded frames: enough for the tests that compare API forms, at a third of the cost."""
    return media.frames[:12]


@pytest.fixture(scope="module")
def short_clip_result(predictor, short_clip) -> SegmentationResult:
    return predictor.segment(short_clip, INSTRUCTION)


# ---------------------------------------------------------------------------------------------------- inputs


def test_mp4_and_a_folder_of_its_decoded_frames_give_identical_masks(mp4_result, folder_result):
    assert mp4_result.masks.shape == (NUM_FRAMES, HEIGHT, WIDTH)
    assert 0 < mp4_result.masks.mean() < 1  # neither empty nor full, so the comparison means something
    assert_same_segmentation(mp4_result, folder_result)
    assert mp4_result.frame_names == folder_result.frame_names == [f"{index:05d}" for index in range(NUM_FRAMES)]
    assert mp4_result.fps == pytest.approx(MP4_FPS)
    assert folder_result.fps == DEFAULT_FPS


def test_in_memory_array_equals_the_folder(predictor, media, folder_result):
    array_result = predictor.segment(media.frames, INSTRUCTION)
    assert_same_segmentation(array_result, folder_result)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_single_image_is_a_one_frame_video(predictor, media, tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(media.frames[7]).save(path)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    image_result = predictor.segment(path, INSTRUCTION)
    assert image_result.masks.shape == (1, HEIGHT, WIDTH)
    assert image_result.frame_names == ["photo"]
    assert_same_segmentation(image_result, predictor.segment(pixels[None], INSTRUCTION))


# ---------------------------------------------------------------------------------------------------- API forms


@pytest.mark.parametrize("answer", [DEFAULT_ANSWER, TWO_SEG_ANSWER], ids=["one-seg", "two-seg"])
@pytest.mark.slow
def test_segment_many_equals_segment_per_instruction(predictor, short_clip, answer):
    many = predictor.segment_many(short_clip, INSTRUCTIONS, answer=answer, return_logits=True)
    singles = [predictor.segment(short_clip, text, answer=answer, return_logits=True) for text in INSTRUCTIONS]
    assert [result.instruction for result in many] == INSTRUCTIONS
    for batched, single in zip(many, singles):
        assert batched.prompt_embedding.shape[0] == answer.count("[SEG]")
        np.testing.assert_array_equal(batched.prompt_embedding, single.prompt_embedding)
        np.testing.assert_allclose(batched.mask_logits, single.mask_logits, atol=1e-5)
        decided = np.abs(single.mask_logits) > DECIDED_LOGIT
        assert decided.mean() > 0.99
        np.testing.assert_array_equal(batched.masks[decided], single.masks[decided])
        np.testing.assert_array_equal(single.masks, single.mask_logits > 0)
    # Different instructions give different prompts (else the comparison above would be vacuous).
    assert not np.array_equal(many[0].prompt_embedding, many[1].prompt_embedding)


def test_iter_segment_streams_the_masks_of_segment_frame_by_frame(predictor, media, folder_result):
    items = list(predictor.iter_segment(media.folder, [INSTRUCTION], return_frames=True))
    assert [item.index for item in items] == list(range(NUM_FRAMES))
    assert [item.name for item in items] == folder_result.frame_names
    for item in items:
        assert item.masks.shape == (1, HEIGHT, WIDTH)
        np.testing.assert_array_equal(item.masks[0], folder_result.masks[item.index])
        np.testing.assert_array_equal(item.frame, media.frames[item.index])
        assert item.logits is None


def test_iter_segment_with_several_instructions_equals_segment_many(predictor, short_clip):
    many = predictor.segment_many(short_clip, INSTRUCTIONS)
    streamed = np.stack([item.masks for item in predictor.iter_segment(short_clip, INSTRUCTIONS)], axis=1)
    assert streamed.shape == (len(INSTRUCTIONS), len(short_clip), HEIGHT, WIDTH)
    np.testing.assert_array_equal(streamed, np.stack([result.masks for result in many]))


def tokenized_conversation(tokenizer, instruction: str, image_token_index: int) -> list[int]:
    """The chat prompt of ``instruction`` tokenized the original way (LLaVA's ``tokenizer_image_token``),
    written out here: BOS + text before the video, ``image_token_index`` for the video, text after it."""
    before, after = build_prompt(instruction, DEFAULT_ANSWER).split(VIDEO_PLACEHOLDER)
    return tokenizer(before).input_ids + [image_token_index] + tokenizer(after, add_special_tokens=False).input_ids


@pytest.mark.parametrize(
    "as_prompt_ids",
    [list, lambda ids: np.asarray(ids, dtype=np.int64), lambda ids: torch.tensor([ids])],
    ids=["list", "numpy", "torch-1xL"],
)
def test_prompt_ids_give_the_same_result_as_the_instruction(
    predictor, model, tokenizer, short_clip, short_clip_result, as_prompt_ids: Callable
):
    ids = tokenized_conversation(tokenizer, INSTRUCTION, model.config.image_token_index)
    assert ids.count(-200) == 1 and model.config.seg_token_id in ids
    result = predictor.segment(short_clip, prompt_ids=as_prompt_ids(ids))
    assert result.instruction is None
    assert_same_segmentation(result, short_clip_result)


def test_prompt_ids_need_no_tokenizer(model, tokenizer, short_clip, short_clip_result):
    ids = tokenized_conversation(tokenizer, INSTRUCTION, model.config.image_token_index)
    without_tokenizer = VideoLisaPredictor(model, None, device="cpu")
    assert_same_segmentation(without_tokenizer.segment(short_clip, prompt_ids=ids), short_clip_result)
    with pytest.raises(InvalidInputError, match="no tokenizer"):
        without_tokenizer.segment(short_clip, INSTRUCTION)


@pytest.mark.parametrize("kind", ["empty", "whitespace", "over-long"])
def test_python_api_rejects_empty_and_over_long_instructions(predictor, tokenizer, model, media, kind):
    instruction, message = {
        "empty": ("", "the instruction is empty"),
        "whitespace": (" \t\n ", "the instruction is empty"),
        "over-long": (OVER_LONG_INSTRUCTION, "the instruction is too long"),
    }[kind]
    if kind == "over-long":
        assert len(tokenizer(instruction).input_ids) > model.config.model_max_length
    with pytest.raises(InvalidInputError, match=message):
        predictor.segment(media.frames, instruction)
    with pytest.raises(InvalidInputError, match=message):
        predictor.segment_many(media.frames, [INSTRUCTION, instruction])


# ---------------------------------------------------------------------------------------------------- CLI


def infer_argv(model_dir: Path, video: Path, prompt: str, out: Path, *extra: str) -> list[str]:
    """Arguments of ``videolisa infer`` on CPU."""
    return [
        "infer",
        "--model",
        str(model_dir),
        "--video",
        str(video),
        "--prompt",
        prompt,
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m videolisa.cli ARGV`` in a fresh process (one math thread, the Hub offline)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "videolisa.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.launcher
def test_infer_cli_end_to_end(tiny_model_dir, media, mp4_result, tmp_path):
    """The CLI loads the saved seed-0 model, so it must reproduce the in-memory model's masks exactly."""
    out = tmp_path / "out"
    completed = run_cli(
        infer_argv(tiny_model_dir, media.mp4, INSTRUCTION, out, "--save-overlay", "--format", "png,rle"), cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    expected = mp4_result.masks  # [T, H, W] bool

    pngs = sorted((out / "masks").glob("*.png"))
    assert [path.stem for path in pngs] == [f"{index:05d}" for index in range(NUM_FRAMES)]
    png_masks = []
    for path in pngs:
        with Image.open(path) as image:
            assert image.mode == "L"
            png_masks.append(np.asarray(image))
    np.testing.assert_array_equal(np.stack(png_masks), np.where(expected, 255, 0).astype(np.uint8))

    record = json.loads((out / "masks.json").read_text())
    assert record["instruction"] == INSTRUCTION and record["num_frames"] == NUM_FRAMES
    rles = [{"size": rle["size"], "counts": rle["counts"].encode("ascii")} for rle in record["rles"]]
    np.testing.assert_array_equal(mask_utils.decode(rles).transpose(2, 0, 1).astype(bool), expected)

    with open_video(out / "overlay.mp4", backend="pyav") as overlay:
        assert (overlay.num_frames, overlay.height, overlay.width) == (NUM_FRAMES, HEIGHT, WIDTH)
        assert overlay.fps == pytest.approx(MP4_FPS)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == NUM_FRAMES and summary["size_hw"] == [HEIGHT, WIDTH]
    assert re.search(rf"^segmented {NUM_FRAMES} frames in \d+(\.\d+)? s\b", completed.stdout, re.MULTILINE)
    for location in (out / "masks", out / "masks.json", out / "overlay.mp4", out / "summary.json"):
        assert str(location) in completed.stdout


def missing_video(tmp_path: Path, media: Media) -> tuple[Path, str, Path, str]:
    """(video, prompt, out, text the error must contain) for a video path that does not exist."""
    video = tmp_path / "no-such-video.mp4"
    return video, INSTRUCTION, tmp_path / "out", f"{video} does not exist"


def text_file_named_mp4(tmp_path: Path, media: Media) -> tuple[Path, str, Path, str]:
    video = tmp_path / "notes.mp4"
    video.write_text("these are not video frames\n")
    return video, INSTRUCTION, tmp_path / "out", f"cannot read video file {video}"


def empty_folder(tmp_path: Path, media: Media) -> tuple[Path, str, Path, str]:
    video = tmp_path / "empty-frames"
    video.mkdir()
    return video, INSTRUCTION, tmp_path / "out", f"{video} contains no frames"


def empty_prompt(tmp_path: Path, media: Media) -> tuple[Path, str, Path, str]:
    return media.mp4, "", tmp_path / "out", "--prompt is empty"


def whitespace_prompt(tmp_path: Path, media: Media) -> tuple[Path, str, Path, str]:
    return media.mp4, "  \t ", tmp_path / "out", "--prompt is empty"


def over_long_prompt(tmp_path: Path, media: Media) -> tuple[Path, str, Path, str]:
    """Raised while the masks stream (model loaded, writers open, the background writer thread running)."""
    return media.mp4, OVER_LONG_INSTRUCTION, tmp_path / "out", "the instruction is too long"


def zero_overlay_max_side(tmp_path: Path, media: Media) -> tuple[Path, str, Path, str]:
    return media.mp4, INSTRUCTION, tmp_path / "out", "--overlay-max-side must be a positive number of pixels, got 0"


def output_under_a_regular_file(tmp_path: Path, media: Media) -> tuple[Path, str, Path, str]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    out = blocker / "out"
    return media.mp4, INSTRUCTION, out, f"cannot write to the output directory {out}"


@pytest.mark.parametrize(
    "bad_input",
    [
        missing_video,
        text_file_named_mp4,
        empty_folder,
        empty_prompt,
        whitespace_prompt,
        over_long_prompt,
        output_under_a_regular_file,
        zero_overlay_max_side,
    ],
    ids=lambda case: case.__name__,
)
def test_infer_cli_names_the_bad_input_and_exits_2(tiny_model_dir, media, tmp_path, capsys, bad_input):
    """In-process (``videolisa.cli.main`` is what the console script runs; a fresh process costs ~10 s of
    imports here): any exception other than the user-facing ones would escape ``main`` and fail the test,
    where a real process would print a traceback. No partial outputs are left."""
    video, prompt, out, message = bad_input(tmp_path, media)
    extra = ["--overlay-max-side", "0"] if bad_input is zero_overlay_max_side else []
    status = cli_main(infer_argv(tiny_model_dir, video, prompt, out, *extra))
    captured = capsys.readouterr()
    assert status == 2
    assert "Traceback" not in captured.err
    error_lines = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and message in error_lines[0], captured.err
    assert captured.out == ""
    assert not (out / "masks.json").exists() and not (out / "summary.json").exists()
    if bad_input in (
        missing_video,
        text_file_named_mp4,
        empty_folder,
        empty_prompt,
        whitespace_prompt,
        zero_overlay_max_side,
    ):
        assert not out.exists()  # checked before --out is created
