"""Real-world encodings (tests/video_corpus.py): every clip opens with the frames a player shows, upright, the
same through decord and PyAV, and ``videolisa infer`` writes one mask per shown frame and an overlay that
shows them in order and orientation. Also: every accepted extension is read, undecodable files are one error.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video_corpus import CORPUS, Clip, assert_square_path, draw_frames, encode, replace_codec_tag

from videolisa.processing import video_io
from videolisa.processing.video_io import DECORD_PIXEL_TOLERANCE, VIDEO_EXTENSIONS, open_video

# The console script of this interpreter's environment, not whatever is first on PATH.
VIDEOLISA = Path(sys.executable).parent / "videolisa"
# The clips the "done when" names run in the fast tier; the CLI on the others is slow (about 9 s each).
FAST_CLI_CLIPS = ("edit_list", "rotate_90")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    """Clips are written on first use, once per module."""
    root = tmp_path_factory.mktemp("corpus")

    class LazyCorpus(dict):
        def __missing__(self, name: str) -> Clip:
            self[name] = CORPUS[name](root)
            return self[name]

    return LazyCorpus()


def assert_warned(lines: list[str], clip: Clip) -> None:
    """``lines`` (warnings naming the clip's file) are the clip's one expected warning, or none."""
    if clip.warning is None:
        assert lines == []
    else:
        assert len(lines) == 1 and clip.warning in lines[0], lines


@pytest.mark.parametrize("name", list(CORPUS))
def test_reader_shows_the_frames_a_player_shows(corpus, name, caplog):
    clip = corpus[name]
    decoded = {}
    for backend in ("auto", "pyav"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=video_io.__name__):
            reader = open_video(clip.path, backend=backend)
        assert_warned([record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING], clip)
        assert (reader.num_frames, reader.height, reader.width) == clip.displayed.shape[:3]
        frames = np.concatenate([chunk for _, chunk in reader.iter_chunks(4)])
        assert np.array_equal(reader.get_frames(range(reader.num_frames)), frames)
        assert_square_path(frames, clip.displayed, f"{name} ({reader.backend})")
        assert np.abs(frames.astype(np.int16) - clip.displayed).mean() <= clip.max_mean_error
        decoded[reader.backend] = reader.get_frames(range(reader.num_frames))
    if "decord" in decoded:
        # Where decord is chosen, it agrees with PyAV on every frame (it is compared on frame 0 only when opening).
        assert np.abs(decoded["decord"].astype(np.int16) - decoded["pyav"]).max() <= DECORD_PIXEL_TOLERANCE


def test_predictor_paths_segment_the_displayed_frames(corpus, tiny_model, tiny_tokenizer):
    """segment and segment_many on a rotated and on an edit-listed file give exactly the masks of the displayed
    frames passed as an array (sampling over the shown frames, frames upright)."""
    from videolisa.predictor import VideoLisaPredictor

    predictor = VideoLisaPredictor(tiny_model, tiny_tokenizer, device="cpu")
    for name in ("rotate_90", "edit_list"):
        clip = corpus[name]
        displayed = open_video(clip.path, backend="pyav").get_frames(range(clip.num_frames))
        expected = predictor.segment(displayed, "square")
        from_file = predictor.segment(clip.path, "square")
        (from_many,) = predictor.segment_many(clip.path, ["square"])
        assert expected.masks.shape == clip.displayed.shape[:3]
        assert from_file.sparse_indices == expected.sparse_indices
        assert np.array_equal(from_file.masks, expected.masks) and np.array_equal(from_many.masks, expected.masks)


def run_infer(video: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [
        str(VIDEOLISA),
        "infer",
        "--model",
        "builtin:synthetic",
        "--video",
        str(video),
        "--prompt",
        "square",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--save-overlay",
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "name", [name if name in FAST_CLI_CLIPS else pytest.param(name, marks=pytest.mark.slow) for name in CORPUS]
)
@pytest.mark.launcher
def test_infer_writes_one_mask_per_shown_frame_upright(corpus, name, tmp_path):
    clip = corpus[name]
    num_frames, height, width = clip.displayed.shape[:3]
    completed = run_infer(clip.path, tmp_path / "out")
    assert completed.returncode == 0, completed.stderr
    assert_warned([line for line in completed.stderr.splitlines() if clip.path.name in line], clip)

    masks = sorted((tmp_path / "out/masks").glob("*.png"))
    assert len(masks) == num_frames
    for path in masks:
        with Image.open(path) as mask:
            assert mask.size == (width, height)
    record = json.loads((tmp_path / "out/masks.json").read_text())
    assert (record["num_frames"], record["height"], record["width"], len(record["rles"])) == (
        num_frames,
        height,
        width,
        num_frames,
    )
    assert all(rle["size"] == [height, width] for rle in record["rles"])

    with open_video(tmp_path / "out/overlay.mp4", backend="pyav") as overlay:
        assert overlay.num_frames == num_frames
        frames = overlay.get_frames(range(num_frames))[:, :height, :width]  # the overlay pads to even sizes
    assert_square_path(frames, clip.displayed, f"{name} overlay")


@pytest.mark.launcher
def test_undecodable_video_is_one_error_line(corpus, tmp_path):
    path = replace_codec_tag(corpus["one_frame"].path, tmp_path / "unknown_codec.mp4", b"avc1", b"zzzz")
    completed = run_infer(path, tmp_path / "out")
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [completed.stderr.strip()]
    assert completed.stderr.startswith(f"error: {path}: ") and "no decoder for its video codec" in completed.stderr
    assert not (tmp_path / "out").exists()


# An encoder and muxer for every accepted extension: the list of extensions cannot grow without a test.
EXTENSION_CODECS = {
    ".mp4": ("libx264", None),
    ".avi": ("mpeg4", None),
    ".mov": ("libx264", None),
    ".webm": ("libvpx-vp9", None),
    ".mkv": ("libx264", None),
    ".m4v": ("libx264", None),
    ".gif": ("gif", None),
    ".3gp": ("libx264", None),
    ".mpg": ("mpeg2video", "mpeg"),
    ".mpeg": ("mpeg1video", "mpeg"),
    ".ts": ("libx264", None),
    ".mts": ("libx264", "mpegts"),
    ".m2ts": ("libx264", None),
    ".wmv": ("wmv2", "asf"),
    ".flv": ("flv", None),
}


def test_every_extension_has_a_codec_here():
    assert sorted(EXTENSION_CODECS) == sorted(VIDEO_EXTENSIONS)


@pytest.mark.parametrize("suffix", VIDEO_EXTENSIONS)
def test_every_accepted_extension_is_read(tmp_path, suffix):
    codec, container_format = EXTENSION_CODECS[suffix]
    frames = draw_frames(5, 96, 128)
    pixel_format = "pal8" if codec == "gif" else "yuv420p"
    path = encode(tmp_path / f"clip{suffix}", frames, codec, pixel_format, container_format=container_format)
    reader = open_video(path)
    assert (reader.num_frames, reader.height, reader.width) == (5, 96, 128)
    assert_square_path(reader.get_frames(range(5)), frames, suffix)
