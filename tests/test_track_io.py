"""Several objects on disk (issue 20 item 2): the track writer and ``videolisa infer --generate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_fixtures import write_png_frames
from conftest import build_tiny_model, make_frames
from PIL import Image

from videolisa.cli import main as cli_main
from videolisa.errors import InvalidInputError
from videolisa.generation import GENERATE, GenerationConfig
from videolisa.predictor import VideoLisaPredictor
from videolisa.processing.video_io import open_video
from videolisa.tokenization import build_tiny_tokenizer
from videolisa.track_io import TrackWriter, palette_indices, read_tracks_json, tint_tracks, track_color

QUERY = "Please segment the red square."
NUM_FRAMES, HEIGHT, WIDTH = 6, 40, 56


def random_tracks(num_tracks: int, seed: int = 0) -> np.ndarray:
    """``[T, K, H, W] bool`` with some empty frames."""
    rng = np.random.default_rng(seed)
    masks = rng.random((NUM_FRAMES, num_tracks, HEIGHT, WIDTH)) > 0.7
    masks[1, 0] = False
    return masks


def test_track_writer_round_trip(tmp_path):
    masks, frames = random_tracks(2), make_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=1)
    scores = np.linspace(0, 1, NUM_FRAMES * 2, dtype=np.float32).reshape(NUM_FRAMES, 2)
    names = [f"{i:05d}" for i in range(NUM_FRAMES)]
    with TrackWriter(
        names,
        HEIGHT,
        WIDTH,
        [(1, "the red circle"), (2, None)],
        tracks_dir=tmp_path / "tracks",
        palette_dir=tmp_path / "palette",
        rle_path=tmp_path / "masks.json",
        overlay_path=tmp_path / "overlay.mp4",
        instruction="circles",
        answer="a [SEG1] b [SEG2]",
        presence_threshold=0.5,
    ) as writer:
        writer.write(masks[:4], scores[:4], frames[:4])
        writer.write(masks[4:], scores[4:], frames[4:])
    header, tracks = read_tracks_json(tmp_path / "masks.json")
    assert header["answer"] == "a [SEG1] b [SEG2]" and header["presence_threshold"] == 0.5
    assert [(track.id, track.phrase) for track in tracks] == [(1, "the red circle"), (2, None)]
    for k, track in enumerate(tracks):
        assert np.array_equal(track.masks, masks[:, k])
        np.testing.assert_allclose(track.scores, scores[:, k], atol=1e-6)
        assert track.present_frames == np.flatnonzero(masks[:, k].any(axis=(1, 2))).tolist()
        for t, name in enumerate(names):
            with Image.open(tmp_path / "tracks" / str(k + 1) / f"{name}.png") as image:
                assert np.array_equal(np.asarray(image), np.where(masks[t, k], 255, 0))
    assert 1 not in tracks[0].present_frames
    for t, name in enumerate(names):
        with Image.open(tmp_path / "palette" / f"{name}.png") as image:
            assert image.mode == "P" and tuple(image.getpalette()[3:6]) == track_color(1)
            expected = np.where(masks[t, 0], 1, np.where(masks[t, 1], 2, 0))  # track 1 wins where both are
            assert np.array_equal(np.asarray(image), expected)
    with open_video(tmp_path / "overlay.mp4", backend="pyav") as overlay:
        assert overlay.num_frames == NUM_FRAMES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.json", "overlay.mp4", "palette", "tracks"]


def test_track_writer_threads_write_the_same_files(tmp_path):
    """The outputs written in parallel (default) are the ones one thread writes, byte for byte (the overlay as
    decoded pixels)."""
    masks, frames = random_tracks(3, seed=4), make_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=2)
    names = [f"{i:05d}" for i in range(NUM_FRAMES)]
    for threads in (1, None):
        out = tmp_path / str(threads)
        with TrackWriter(
            names,
            HEIGHT,
            WIDTH,
            [(1, "a"), (2, "b"), (3, None)],
            tracks_dir=out / "tracks",
            palette_dir=out / "palette",
            rle_path=out / "masks.json",
            overlay_path=out / "overlay.mp4",
            threads=threads,
        ) as writer:
            for start in range(0, NUM_FRAMES, 4):
                writer.write(masks[start : start + 4], None, frames[start : start + 4])
    one, many = tmp_path / "1", tmp_path / "None"
    files = sorted(path.relative_to(one) for path in one.rglob("*.png")) + [Path("masks.json")]
    assert len(files) == NUM_FRAMES * 4 + 1
    for path in files:
        assert (one / path).read_bytes() == (many / path).read_bytes(), path
    with open_video(one / "overlay.mp4", backend="pyav") as a, open_video(many / "overlay.mp4", backend="pyav") as b:
        assert np.array_equal(a.get_frames(range(NUM_FRAMES)), b.get_frames(range(NUM_FRAMES)))
    with pytest.raises(InvalidInputError, match="threads must be a positive integer"):
        TrackWriter(names, HEIGHT, WIDTH, [], rle_path=tmp_path / "x.json", threads=0)


def test_track_overlay_can_be_scaled_down(tmp_path):
    names = [f"{i:05d}" for i in range(NUM_FRAMES)]
    side = max(HEIGHT, WIDTH) // 2
    with TrackWriter(
        names, HEIGHT, WIDTH, [(1, "circle")], overlay_path=tmp_path / "overlay.mp4", overlay_max_side=side
    ) as writer:
        writer.write(random_tracks(1), None, make_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=2))
    with open_video(tmp_path / "overlay.mp4", backend="pyav") as overlay:
        assert overlay.num_frames == NUM_FRAMES and max(overlay.height, overlay.width) <= side


def test_tracks_get_their_own_colours():
    frames = np.full((1, 4, 4, 3), 100, dtype=np.uint8)
    masks = np.zeros((1, 2, 4, 4), dtype=bool)
    masks[0, 0, 0, 0] = masks[0, 1, 3, 3] = True
    tinted = tint_tracks(frames, masks)
    assert tuple(tinted[0, 0, 0]) == tuple(round(50 + c / 2) for c in track_color(1))
    assert tuple(tinted[0, 3, 3]) == tuple(round(50 + c / 2) for c in track_color(2))
    assert tuple(tinted[0, 1, 1]) == (100, 100, 100)
    assert palette_indices(masks[0])[3, 3] == 2


def test_track_writer_without_tracks_and_wrong_shapes(tmp_path):
    names = [f"{i:05d}" for i in range(NUM_FRAMES)]
    with TrackWriter(names, HEIGHT, WIDTH, [], palette_dir=tmp_path / "palette", rle_path=tmp_path / "m.json") as w:
        w.write(np.zeros((NUM_FRAMES, 0, HEIGHT, WIDTH), dtype=bool))
    assert read_tracks_json(tmp_path / "m.json")[1] == []
    with Image.open(tmp_path / "palette" / "00000.png") as image:
        assert not np.asarray(image).any()
    writer = TrackWriter(names, HEIGHT, WIDTH, [(1, None)], rle_path=tmp_path / "n.json")
    with pytest.raises(InvalidInputError, match=r"expected bool \[F, 1, 40, 56\]"):
        writer.write(np.zeros((1, 2, HEIGHT, WIDTH), dtype=bool))
    with pytest.raises(InvalidInputError, match="closed after 0 of 6 frames"):
        writer.close()
    assert not (tmp_path / "n.json").exists()


@pytest.fixture(scope="module")
def seg_happy_model_dir(tmp_path_factory):
    """A saved tiny model whose greedy answer mixes text and several [SEG] (its [SEG] LM-head row favoured), with
    sharpened mask logits (so that presence scores are not all 0)."""
    model = build_tiny_model(seed=0)
    with torch.no_grad():
        model.llm.get_output_embeddings().weight[model.config.seg_token_id] *= 3.0
        for mlp in model.sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight *= 30.0
            mlp.layers[-1].bias *= 30.0
    directory = tmp_path_factory.mktemp("seg-happy")
    model.save_pretrained(directory, tokenizer=build_tiny_tokenizer())
    return directory


def test_infer_generate_writes_one_folder_per_track(seg_happy_model_dir, tmp_path, capsys):
    frames = make_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=3)
    folder = write_png_frames(tmp_path / "frames", frames)
    out = tmp_path / "out"
    argv = [
        "infer",
        "--model",
        str(seg_happy_model_dir),
        "--video",
        str(folder),
        "--prompt",
        QUERY,
        "--out",
        str(out),
        "--device",
        "cpu",
        "--generate",
        "--max-new-tokens",
        "8",
        "--presence-threshold",
        "0.44",
        "--save-overlay",
    ]
    assert cli_main(argv) == 0
    predictor = VideoLisaPredictor.from_pretrained(seg_happy_model_dir, device="cpu")
    expected = predictor.segment(
        folder, QUERY, answer=GENERATE, generation=GenerationConfig(max_new_tokens=8), presence_threshold=0.44
    )
    assert len(expected.tracks) >= 2 and expected.answer.count("[SEG") == len(expected.tracks)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer"] == expected.answer and summary["presence_threshold"] == 0.44
    assert summary["tracks"] == [
        {"id": t.id, "phrase": t.phrase, "present_frames": t.present_frames} for t in expected.tracks
    ]
    assert summary["present_frames"] == expected.present_frames
    assert 0 < len(summary["present_frames"]) < NUM_FRAMES  # the threshold emptied some frames, not all
    header, tracks = read_tracks_json(out / "masks.json")
    for written, track in zip(tracks, expected.tracks):
        assert np.array_equal(written.masks, track.masks)
        np.testing.assert_allclose(written.scores, track.scores, atol=1e-6)
        for name in ("00000", "00005"):
            assert (out / "tracks" / str(track.id) / f"{name}.png").is_file()
    assert f"answer: {expected.answer}" in capsys.readouterr().out
    # --overwrite removes exactly what the run wrote, per-track folders included.
    assert cli_main([*argv[:-1], "--overwrite", "--format", "rle"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".videolisa-infer.json", "masks.json", "summary.json"]


def test_infer_generation_options_need_generate(tiny_model_dir, tmp_path, capsys):
    folder = write_png_frames(tmp_path / "frames", make_frames(2, HEIGHT, WIDTH, seed=3))
    base = [
        "infer",
        "--model",
        str(tiny_model_dir),
        "--video",
        str(folder),
        "--prompt",
        QUERY,
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    ]
    assert cli_main([*base, "--temperature", "0.7"]) == 2
    assert "--temperature and --seed need --generate" in capsys.readouterr().err
    assert cli_main([*base, "--presence-threshold", "2"]) == 2
    assert "--presence-threshold must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_demo_generate_lists_the_tracks(seg_happy_model_dir, tmp_path):
    """The demo's generate switch: the answer, every track with its present frames, a zip of per-track folders."""
    import zipfile

    from videolisa.demo import DemoConfig, segment_for_demo

    frames = make_frames(1, HEIGHT, WIDTH, seed=3)
    image = tmp_path / "frame.png"
    Image.fromarray(frames[0]).save(image)
    predictor = VideoLisaPredictor.from_pretrained(seg_happy_model_dir, device="cpu")
    result = segment_for_demo(predictor, image, QUERY, tmp_path / "out", DemoConfig(generate=True))
    expected = predictor.segment(image, QUERY, answer=GENERATE)
    assert result.answer == {
        "answer": expected.answer,
        "tracks": [{"id": t.id, "phrase": t.phrase, "present_frames": t.present_frames} for t in expected.tracks],
    }
    assert len(expected.tracks) >= 2
    with zipfile.ZipFile(result.masks_zip) as archive:
        names = sorted(archive.namelist())
    assert names == sorted(["masks.json", "palette/frame.png", *(f"tracks/{t.id}/frame.png" for t in expected.tracks)])
