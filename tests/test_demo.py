"""Tests of the Gradio demo (videolisa.demo, demo/app.py).

The seed-0 tiny model (conftest's ``tiny_model_dir``) serves the real app on a free local port;
``gradio_client`` calls it the way a remote user would, and the answers are checked against
:class:`VideoLisaPredictor` run directly. ``write_example_videos`` and ``running_demo`` are shared with the
browser test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from videolisa.demo import DemoExample, DemoLimits, build_demo, find_examples, launch_demo
from videolisa.errors import InvalidInputError
from videolisa.outputs import MaskWriter, make_overlay_image, read_png_masks, read_rle_json
from videolisa.predictor import VideoLisaPredictor
from videolisa.processing.video_io import open_video

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FRAMES = 12
EXAMPLE_SIZE = (64, 96)  # (height, width)
EXAMPLE_FPS = 10.0
# The example (1.2 s) fits; a 25-frame video at 10 fps (2.5 s) does not; uploads over 0.2 MB are refused.
TEST_LIMITS = DemoLimits(max_upload_mb=0.2, max_video_seconds=2.0, max_frames=100)


# ----------------------------------------------------------------------------------------------------------
# Helpers shared with test_demo_browser.py


def write_example_videos(folder: Path) -> Path:
    """One synthetic video of ``EXAMPLE_FRAMES`` frames of ``EXAMPLE_SIZE`` in the layout of
    ``videolisa synth --layout mp4``."""
    from videolisa.synthetic import SyntheticConfig, write_synthetic_dataset

    config = SyntheticConfig(min_frames=EXAMPLE_FRAMES, max_frames=EXAMPLE_FRAMES, sizes=(EXAMPLE_SIZE,))
    return write_synthetic_dataset(folder, layout="mp4", num_videos=1, seed=3, config=config, fps=EXAMPLE_FPS,
                                   progress=False)


@contextmanager
def running_demo(predictor: VideoLisaPredictor, examples_dir: Path, limits: DemoLimits) -> Iterator[str]:
    """Serve the demo on a free local port; yields its URL and stops the server afterwards."""
    demo = build_demo(predictor, examples_dirs=[examples_dir], limits=limits, model_name="tiny (random weights)")
    url = launch_demo(demo, limits=limits, port=None, block=False, quiet=True)
    try:
        yield url
    finally:
        demo.close()


# ----------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> VideoLisaPredictor:
    """The seed-0 tiny model loaded from its directory, as ``demo/app.py --model DIR`` does."""
    return VideoLisaPredictor.from_pretrained(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_example_videos(tmp_path_factory.mktemp("demo") / "examples")


@pytest.fixture(scope="module")
def example(examples_dir: Path) -> DemoExample:
    return find_examples(examples_dir)[0]


@pytest.fixture(scope="module")
def app_url(predictor: VideoLisaPredictor, examples_dir: Path) -> Iterator[str]:
    with running_demo(predictor, examples_dir, TEST_LIMITS) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(app_url, verbose=False, download_files=tmp_path_factory.mktemp("downloads"),
                  analytics_enabled=False)


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> Path:
    """``[T, H, W, 3] uint8`` RGB -> H.264 mp4."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def all_frames(video: Path | str) -> np.ndarray:
    reader = open_video(video)
    return reader.get_frames(range(reader.num_frames))


def segment_error(client: Client, video: Path, instruction: str) -> str:
    """The message of the error the app answers with (fails if it answers with a result)."""
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(video)), instruction, api_name="/segment")
    message = caught.value.message
    assert "Traceback" not in message and "/tmp/gradio" not in message, message
    return message


# ----------------------------------------------------------------------------------------------------------
# Requests through gradio_client


def test_segment_returns_overlay_and_masks_matching_the_predictor(
    client: Client, predictor: VideoLisaPredictor, example: DemoExample, tmp_path: Path
) -> None:
    overlay, gallery, masks_zip, indices, timings = client.predict(
        handle_file(str(example.video)), example.instruction, api_name="/segment"
    )
    expected = predictor.segment(example.video, example.instruction)
    assert expected.masks.any() and not expected.masks.all()  # the comparison below is not trivial

    with zipfile.ZipFile(masks_zip) as archive:
        assert sorted(archive.namelist()) == ["masks.json", *(f"masks/{name}.png" for name in expected.frame_names)]
        archive.extractall(tmp_path / "unzipped")
    np.testing.assert_array_equal(read_png_masks(tmp_path / "unzipped" / "masks", expected.frame_names), expected.masks)
    rle = read_rle_json(tmp_path / "unzipped" / "masks.json")
    np.testing.assert_array_equal(rle.masks, expected.masks)
    assert rle.instruction == example.instruction

    assert indices == {"sparse": expected.sparse_indices, "dense": expected.dense_indices}
    assert timings["frames"] == EXAMPLE_FRAMES and timings["seconds"] > 0

    # The overlay is what MaskWriter makes of the predictor's own masks (up to H.264 rounding).
    frames = all_frames(example.video)
    reference = tmp_path / "reference.mp4"
    with MaskWriter(expected.frame_names, *frames.shape[1:3], overlay_path=reference,
                    instruction=example.instruction, fps=EXAMPLE_FPS) as writer:
        writer.write(expected.masks, frames)
    served, wanted = all_frames(overlay).astype(np.int16), all_frames(reference).astype(np.int16)
    assert served.shape == wanted.shape == frames.shape
    assert np.abs(served - wanted).mean() < 1.0

    # Key frames: the dense frames, tinted, as lossless PNGs.
    key_indices = sorted(set(expected.dense_indices))
    assert [item["caption"] for item in gallery] == [f"frame {index}" for index in key_indices]
    for item, index in zip(gallery, key_indices):
        served_key_frame = np.asarray(Image.open(item["image"]).convert("RGB"))
        np.testing.assert_array_equal(served_key_frame, make_overlay_image(frames[index], expected.masks[index]))


def test_advanced_settings_reach_the_predictor_and_the_overlay(
    client: Client, predictor: VideoLisaPredictor, example: DemoExample, tmp_path: Path
) -> None:
    _, gallery, masks_zip, indices, _ = client.predict(
        handle_file(str(example.video)), example.instruction, 8, 2, -0.25, "#00ff00", 1.0, api_name="/segment"
    )
    expected = predictor.segment(example.video, example.instruction, frames_sparse=8, frames_dense=2, threshold=-0.25)
    assert len(expected.sparse_indices) == 8 and len(expected.dense_indices) == 2
    assert indices == {"sparse": expected.sparse_indices, "dense": expected.dense_indices}
    with zipfile.ZipFile(masks_zip) as archive:
        served_masks = read_rle_json(archive.extract("masks.json", tmp_path)).masks
    np.testing.assert_array_equal(served_masks, expected.masks)
    assert not np.array_equal(served_masks, predictor.segment(example.video, example.instruction).masks)
    # Opacity 1 paints masked pixels pure green in the key frames.
    key_indices = sorted(set(expected.dense_indices))
    key_frames = np.stack([np.asarray(Image.open(item["image"]).convert("RGB")) for item in gallery])
    masked = key_frames[expected.masks[key_indices]]
    assert masked.size and (masked == [0, 255, 0]).all()


@pytest.mark.parametrize(
    "name, content", [("broken.mp4", b"this is not a video" * 20), ("notes.txt", b"hello")], ids=["corrupt", "text"]
)
def test_unreadable_upload_is_a_friendly_error(client: Client, tmp_path: Path, name: str, content: bytes) -> None:
    upload = tmp_path / name
    upload.write_bytes(content)
    message = segment_error(client, upload, "the red square")
    assert name in message and "expected" in message


def test_empty_instruction_is_a_friendly_error(client: Client, example: DemoExample) -> None:
    assert "instruction is empty" in segment_error(client, example.video, "   ")


def test_video_over_the_length_limit_is_a_friendly_error(client: Client, tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(25, 64, 64, 3), dtype=np.uint8)
    long_video = write_mp4(tmp_path / "long.mp4", frames, fps=EXAMPLE_FPS)
    message = segment_error(client, long_video, "the red square")
    assert "long.mp4 is too long: 25 frames, 2.5 s" in message and "up to 2 s" in message


def test_upload_over_the_size_limit_is_refused(client: Client, tmp_path: Path) -> None:
    upload = tmp_path / "huge.mp4"
    upload.write_bytes(bytes(int(TEST_LIMITS.max_upload_bytes * 1.5)))
    # gradio_client reads the limit from the app's config and refuses before sending (the server would too).
    with pytest.raises(ValueError, match="exceeds the maximum file size of 200000 bytes"):
        client.predict(handle_file(str(upload)), "the red square", api_name="/segment")


def test_page_offers_the_examples(app_url: str, examples_dir: Path) -> None:
    config = httpx.get(f"{app_url.rstrip('/')}/config", timeout=10).json()
    datasets = [c["props"] for c in config["components"] if c["type"] == "dataset"]
    expected = find_examples(examples_dir)
    assert len(datasets) == 1 and [sample[1] for sample in datasets[0]["samples"]] == [e.instruction for e in expected]


# ----------------------------------------------------------------------------------------------------------
# Example discovery


def test_find_examples_reads_sidecars_and_keeps_videos_without_one(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "clip.json").write_text(json.dumps({"instructions": ["the dog", " the cat "]}))
    (tmp_path / "plain.webm").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("not a video")
    assert find_examples(tmp_path) == [
        DemoExample(tmp_path / "clip.mp4", "the dog"),
        DemoExample(tmp_path / "clip.mp4", "the cat"),
        DemoExample(tmp_path / "plain.webm", ""),
    ]


def test_find_examples_reads_the_synthetic_mp4_layout(examples_dir: Path) -> None:
    (video_folder,) = [path for path in examples_dir.iterdir() if path.is_dir()]
    record = json.loads((video_folder / "instructions.json").read_text())
    expected = [DemoExample(video_folder / record["video"], e["text"]) for e in record["expressions"]]
    assert len(expected) >= 4 and find_examples(examples_dir) == expected


@pytest.mark.parametrize("sidecar", ['{"instructions": "the dog"}', '{"prompts": ["the dog"]}', "{not json"])
def test_find_examples_rejects_a_bad_sidecar_naming_it(tmp_path: Path, sidecar: str) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "clip.json").write_text(sidecar)
    with pytest.raises(InvalidInputError, match="clip.json"):
        find_examples(tmp_path)


def test_find_examples_rejects_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        find_examples(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------------------
# Import cost and the launcher


def test_importing_the_demo_module_does_not_import_gradio_or_torch() -> None:
    code = "import sys, videolisa.demo; print(sorted({'gradio', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_app_binds_to_localhost_by_default_and_collects_example_folders() -> None:
    spec = importlib.util.spec_from_file_location("demo_app", REPO_ROOT / "demo" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    defaults = app.parse_args([])
    assert (defaults.host, defaults.port, defaults.device) == ("127.0.0.1", 7860, "auto")
    custom = app.parse_args(["--examples", "a", "--examples", "b", "--port", "8000", "--max-frames", "50"])
    assert custom.examples == [Path("a"), Path("b")] and custom.port == 8000 and custom.max_frames == 50
