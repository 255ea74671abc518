"""Chunked SAM streaming of ``VideoLisaPredictor``: results do not depend on the chunk size, on the background
decoding thread or on the SAM fast path; decoding overlaps SAM; a decoding error raised in the background
thread surfaces exactly like the same error in the foreground path."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_fixtures import write_png_frames

from videolisa.errors import VideoReadError
from videolisa.predictor import VideoLisaPredictor
from videolisa.processing import video_io

INSTRUCTION = "the red square"
NUM_FRAMES = 10


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory(seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    from videolisa.tokenization import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory, frames_factory) -> Path:
    return write_png_frames(tmp_path_factory.mktemp("video") / "frames", frames_factory(NUM_FRAMES, 40, 56, 3))


def segment(model, tokenizer, video, **predictor_options):
    predictor = VideoLisaPredictor(model, tokenizer, device="cpu", **predictor_options)
    return predictor.segment(video, INSTRUCTION, return_logits=True)


@pytest.fixture(scope="module")
def baseline(model, tokenizer, video_dir):
    return segment(model, tokenizer, video_dir, chunk_size=2, prefetch=False)


@pytest.mark.parametrize(("chunk_size", "prefetch"), [(1, True), (3, True), (3, False), (NUM_FRAMES + 5, True)])
@pytest.mark.slow
def test_results_do_not_depend_on_chunk_size_or_background_decoding(
    model, tokenizer, video_dir, baseline, chunk_size, prefetch
):
    result = segment(model, tokenizer, video_dir, chunk_size=chunk_size, prefetch=prefetch)
    assert result.masks.shape == (NUM_FRAMES, 40, 56)
    np.testing.assert_allclose(result.mask_logits, baseline.mask_logits, atol=1e-5)
    decided = np.abs(baseline.mask_logits) > 1e-4
    assert np.array_equal(result.masks[decided], baseline.masks[decided])


def test_fast_and_stock_sam_paths_agree(model, tokenizer, video_dir, baseline):
    stock = segment(model, tokenizer, video_dir, chunk_size=4, fast_sam=False)
    np.testing.assert_allclose(stock.mask_logits, baseline.mask_logits, atol=1e-4)
    decided = np.abs(baseline.mask_logits) > 1e-4
    assert np.array_equal(stock.masks[decided], baseline.masks[decided])


def test_next_chunk_is_decoded_while_sam_runs_on_the_current_one(model, tokenizer, video_dir, monkeypatch):
    """SAM on chunk 0 waits until chunk 1 starts decoding: only a background decoder lets it proceed."""
    chunk_size = 3
    reader = video_io.open_video(video_dir)
    next_chunk_started = threading.Event()
    decode = reader._decode_sorted

    def recording_decode(indices: list[int]) -> np.ndarray:
        if indices[0] == chunk_size:
            next_chunk_started.set()
        return decode(indices)

    monkeypatch.setattr(reader, "_decode_sorted", recording_decode)
    predictor = VideoLisaPredictor(model, tokenizer, device="cpu", chunk_size=chunk_size, prefetch=True)
    encode = predictor.model.encode_images
    overlapped = []

    def waiting_encode(pixels: torch.Tensor) -> torch.Tensor:
        if not overlapped:
            overlapped.append(next_chunk_started.wait(timeout=30))
        return encode(pixels)

    monkeypatch.setattr(predictor.model, "encode_images", waiting_encode)
    items = list(predictor.iter_segment(reader, [INSTRUCTION]))
    assert overlapped == [True]
    assert [item.index for item in items] == list(range(NUM_FRAMES))


def corrupt_video(tmp_path: Path, frames: np.ndarray, bad_index: int) -> Path:
    """A frame folder whose frame ``bad_index`` has a valid PNG header but truncated pixel data (so the
    folder opens, and only decoding that frame fails)."""
    folder = write_png_frames(tmp_path / "frames", frames)
    bad = folder / f"{bad_index:05d}.png"
    bad.write_bytes(bad.read_bytes()[:200])
    return folder


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.slow
def test_decoding_error_surfaces_the_same_in_background_and_foreground(
    model, tokenizer, tmp_path, frames_factory, monkeypatch, prefetch
):
    bad_index, chunk_size = 13, 4
    folder = corrupt_video(tmp_path, frames_factory(20, 40, 56, 5), bad_index)
    decoding_threads = {}
    read_image = video_io._read_rgb_image

    def recording_read(path: Path) -> np.ndarray:
        decoding_threads[path.name] = threading.current_thread().name
        return read_image(path)

    monkeypatch.setattr(video_io, "_read_rgb_image", recording_read)
    predictor = VideoLisaPredictor(model, tokenizer, device="cpu", chunk_size=chunk_size, prefetch=prefetch)
    sparse, _ = predictor.sample_frames(20, frames_sparse=4, frames_dense=1)
    assert bad_index not in sparse  # so the bad frame is first decoded by the SAM stream, not for CLIP
    yielded = []
    with pytest.raises(VideoReadError) as raised:
        for item in predictor.iter_segment(folder, [INSTRUCTION], frames_sparse=4, frames_dense=1):
            yielded.append(item.index)
    message = str(raised.value)
    assert message.startswith(f"cannot decode image {folder / f'{bad_index:05d}.png'}")
    assert yielded == list(range(12))  # every frame of the chunks before the bad one
    bad_thread = decoding_threads[f"{bad_index:05d}.png"]
    if prefetch:
        assert bad_thread.startswith("videolisa-decode")
    else:
        assert bad_thread == threading.main_thread().name
    # Same type and message as the other path.
    other = VideoLisaPredictor(model, tokenizer, device="cpu", chunk_size=chunk_size, prefetch=not prefetch)
    with pytest.raises(VideoReadError) as raised_other:
        list(other.iter_segment(folder, [INSTRUCTION], frames_sparse=4, frames_dense=1))
    assert str(raised_other.value) == message


def test_background_writes_run_in_order_with_a_bounded_queue():
    from videolisa.commands.infer import write_in_background

    produced, written, lags = [], [], []

    def items():
        for index in range(20):
            produced.append(index)
            yield index

    def slow_write(index: int) -> None:
        lags.append(len(produced) - index - 1)  # items produced beyond the one being written
        time.sleep(0.002)
        written.append((index, threading.current_thread().name))

    write_in_background(items(), slow_write, max_pending=3)
    assert [index for index, _ in written] == list(range(20))
    assert all(name.startswith("videolisa-write") for _, name in written)
    assert max(lags) <= 3 + 1  # the queue, plus the item the producer holds
    assert max(lags) >= 1  # the producer did run ahead of the writer


def test_a_failing_background_write_raises_its_error_and_stops_writing():
    from videolisa.commands.infer import write_in_background

    written = []

    def write(index: int) -> None:
        if index == 3:
            raise OSError("disk full")
        written.append(index)

    with pytest.raises(OSError, match="disk full"):
        write_in_background(iter(range(10)), write, max_pending=4)
    assert written == [0, 1, 2]


def test_a_producer_error_propagates_through_the_background_writer():
    from videolisa.commands.infer import write_in_background

    def items():
        yield from range(2)
        raise VideoReadError("frame 2 of video.mp4 could not be decoded")

    written = []
    with pytest.raises(VideoReadError, match="frame 2"):
        write_in_background(items(), written.append, max_pending=4)
    assert written in ([], [0], [0, 1])  # never a write after the error


@pytest.mark.slow
def test_infer_writes_the_same_masks_with_and_without_the_fast_path(tiny_model_dir, video_dir, tmp_path):
    from videolisa.cli import main
    from videolisa.mask_io import read_png_masks

    outputs = {}
    for name, flags in {"fast": [], "stock": ["--no-fast-sam"]}.items():
        out = tmp_path / name
        status = main(
            [
                "infer",
                "--model",
                str(tiny_model_dir),
                "--video",
                str(video_dir),
                "--prompt",
                INSTRUCTION,
                "--out",
                str(out),
                "--device",
                "cpu",
                "--chunk-size",
                "3",
                "--format",
                "png",
                *flags,
            ]
        )
        assert status == 0
        outputs[name] = read_png_masks(out / "masks")
    assert outputs["fast"].shape == (NUM_FRAMES, 40, 56)
    assert (outputs["fast"] == outputs["stock"]).mean() > 0.999
