"""Tests of the Gradio demo (videolisa.demo, demo/app.py).

The seed-0 tiny model (conftest's ``tiny_model_dir``) serves the real app on a free local port;
``gradio_client`` calls it the way a remote user would, and the answers are checked against
:class:`VideoLisaPredictor` run directly. ``write_example_videos`` and ``running_demo`` are shared with the
browser test.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from videolisa import demo as demo_module
from videolisa.demo import (
    AUTH_ENV,
    DemoExample,
    DemoLimits,
    build_demo,
    find_examples,
    launch_demo,
    parse_auth,
    segment_for_demo,
)
from videolisa.errors import InvalidInputError
from videolisa.mask_io import MaskWriter, make_overlay_image, read_png_masks, read_rle_json
from videolisa.predictor import VideoLisaPredictor
from videolisa.processing.video_io import open_video

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FRAMES = 12
EXAMPLE_SIZE = (64, 96)  # (height, width)
EXAMPLE_FPS = 10.0
# The example (1.2 s, 12 frames of 64x96 = 0.006 megapixels, 0.074 in all) fits; a 25-frame video at 10 fps
# (2.5 s) does not; nor do 200x200 frames (0.04 megapixels) or 19 frames of 128x128 (0.31 megapixels in all);
# uploads over 0.2 MB are refused.
TEST_LIMITS = DemoLimits(
    max_upload_mb=0.2, max_video_seconds=2.0, max_frames=100, max_frame_megapixels=0.03, max_video_megapixels=0.2
)


# ----------------------------------------------------------------------------------------------------------
# Helpers shared with test_demo_browser.py


def write_example_videos(folder: Path) -> Path:
    """One synthetic video of ``EXAMPLE_FRAMES`` frames of ``EXAMPLE_SIZE`` in the layout of
    ``videolisa synth --layout mp4``."""
    from videolisa.synthetic import SyntheticConfig, write_synthetic_dataset

    config = SyntheticConfig(min_frames=EXAMPLE_FRAMES, max_frames=EXAMPLE_FRAMES, sizes=(EXAMPLE_SIZE,))
    return write_synthetic_dataset(
        folder, layout="mp4", num_videos=1, seed=3, config=config, fps=EXAMPLE_FPS, progress=False
    )


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
    return Client(app_url, verbose=False, download_files=tmp_path_factory.mktemp("downloads"), analytics_enabled=False)


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


@pytest.mark.slow
def test_segment_returns_overlay_and_masks_matching_the_predictor(
    client: Client, predictor: VideoLisaPredictor, example: DemoExample, tmp_path: Path
) -> None:
    overlay, gallery, masks_zip, indices, timings, answer = client.predict(
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
    assert answer == {"answer": None, "tracks": [{"id": 1, "phrase": None, "present_frames": expected.present_frames}]}

    # The overlay is what MaskWriter makes of the predictor's own masks (up to H.264 rounding).
    frames = all_frames(example.video)
    reference = tmp_path / "reference.mp4"
    with MaskWriter(
        expected.frame_names,
        *frames.shape[1:3],
        overlay_path=reference,
        instruction=example.instruction,
        fps=EXAMPLE_FPS,
    ) as writer:
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


@pytest.mark.slow
def test_advanced_settings_reach_the_predictor_and_the_overlay(
    client: Client, predictor: VideoLisaPredictor, example: DemoExample, tmp_path: Path
) -> None:
    _, gallery, masks_zip, indices, _, _ = client.predict(
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
@pytest.mark.slow
def test_unreadable_upload_is_a_friendly_error(client: Client, tmp_path: Path, name: str, content: bytes) -> None:
    upload = tmp_path / name
    upload.write_bytes(content)
    message = segment_error(client, upload, "the red square")
    assert name in message and "expected" in message


@pytest.mark.slow
def test_empty_instruction_is_a_friendly_error(client: Client, example: DemoExample) -> None:
    assert "instruction is empty" in segment_error(client, example.video, "   ")


@pytest.mark.slow
def test_video_over_the_length_limit_is_a_friendly_error(client: Client, tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, size=(25, 64, 64, 3), dtype=np.uint8)
    long_video = write_mp4(tmp_path / "long.mp4", frames, fps=EXAMPLE_FPS)
    message = segment_error(client, long_video, "the red square")
    assert "long.mp4 is too long: 25 frames, 2.5 s" in message and "up to 2 s" in message


@pytest.mark.parametrize(
    "frames, height, width, message",
    [
        (2, 200, 200, "frames of 200x200 (0.04 megapixels); this demo accepts frames up to 0.03 megapixels"),
        (
            19,
            128,
            128,
            "19 frames of 128x128, 0.311 megapixels in all; this demo accepts up to 0.2 megapixels per video",
        ),
    ],
    ids=["frame", "video"],
)
@pytest.mark.slow
def test_videos_over_the_pixel_limits_are_refused_before_their_frames_are_decoded(
    client: Client,
    predictor: VideoLisaPredictor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    frames: int,
    height: int,
    width: int,
    message: str,
) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    video = write_mp4(tmp_path / "big.mp4", pixels, fps=EXAMPLE_FPS)
    assert message in segment_error(client, video, "the red square")
    out = tmp_path / "out"
    out.mkdir()
    if height * width / 1e6 > TEST_LIMITS.max_frame_megapixels:
        # Over-large frames are refused from the file's header, before open_video decodes a first frame.
        def open_video(*args: object, **kwargs: object) -> None:
            raise AssertionError("open_video ran for a video whose header already shows frames over the limit")

        monkeypatch.setattr(demo_module, "open_video", open_video)
    with pytest.raises(InvalidInputError, match="big.mp4 has"):
        segment_for_demo(predictor, video, "the red square", out, limits=TEST_LIMITS)
    assert list(out.iterdir()) == []  # refused before the first frame reached the writers


@pytest.mark.slow
def test_a_request_over_its_time_budget_is_stopped_and_its_folder_removed(
    predictor: VideoLisaPredictor,
    examples_dir: Path,
    example: DemoExample,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the app keeps its request folders
    limits = replace(TEST_LIMITS, max_request_seconds=1e-6)  # spent before the first frame is written
    with running_demo(predictor, examples_dir, limits) as url:
        client = Client(url, verbose=False, download_files=tmp_path / "downloads", analytics_enabled=False)
        message = segment_error(client, example.video, example.instruction)
        assert f"stopped after 1e-06 s, the time this demo allows one request, with 1 of {EXAMPLE_FRAMES}" in message
        (root,) = tmp_path.glob("videolisa-demo-*")
        assert list(root.iterdir()) == []


@pytest.mark.slow
def test_the_page_shows_every_limit(app_url: str) -> None:
    config = httpx.get(f"{app_url.rstrip('/')}/config", timeout=10).json()
    (text,) = [c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "limits"]
    for shown in (
        "2 s",
        "100 frames",
        "0.2 MB",
        "frames up to 0.03 megapixels",
        "0.2 megapixels in all",
        "a request may take 600 s",
    ):
        assert shown in text, text


@pytest.mark.slow
def test_upload_over_the_size_limit_is_refused(client: Client, tmp_path: Path) -> None:
    upload = tmp_path / "huge.mp4"
    upload.write_bytes(bytes(int(TEST_LIMITS.max_upload_bytes * 1.5)))
    # gradio_client reads the limit from the app's config and refuses before sending (the server would too).
    with pytest.raises(ValueError, match="exceeds the maximum file size of 200000 bytes"):
        client.predict(handle_file(str(upload)), "the red square", api_name="/segment")


@pytest.mark.slow
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


@pytest.mark.launcher
def test_importing_the_demo_module_does_not_import_gradio_or_torch() -> None:
    code = "import sys, videolisa.demo; print(sorted({'gradio', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_app_binds_to_localhost_by_default_and_collects_example_folders() -> None:
    spec = importlib.util.spec_from_file_location("demo_app", REPO_ROOT / "demo" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    defaults = app.parse_args([])
    assert (defaults.host, defaults.port, defaults.device, defaults.auth) == ("127.0.0.1", 7860, "auto", None)
    custom = app.parse_args(
        [
            "--examples",
            "a",
            "--examples",
            "b",
            "--port",
            "8000",
            "--max-frames",
            "50",
            "--max-frame-megapixels",
            "2",
            "--max-video-megapixels",
            "90",
            "--max-request-seconds",
            "30",
            "--auth",
            "ann:s3:cret",
        ]
    )
    assert custom.examples == [Path("a"), Path("b")] and custom.port == 8000 and custom.max_frames == 50
    assert (custom.max_frame_megapixels, custom.max_video_megapixels, custom.max_request_seconds) == (2, 90, 30)
    assert parse_auth(custom.auth) == ("ann", "s3:cret")
    for bad in ("ann", "ann:", ":secret"):
        with pytest.raises(InvalidInputError, match="USER:PASSWORD"):
            parse_auth(bad)


@pytest.mark.slow
def test_serving_the_network_without_a_login_warns_and_auth_adds_one(
    predictor: VideoLisaPredictor, examples_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for host, auth, warned in (("127.0.0.1", None, False), ("0.0.0.0", None, True), ("0.0.0.0", ("ann", "pw"), False)):
        demo = build_demo(predictor, examples_dirs=[examples_dir], limits=TEST_LIMITS)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="videolisa.demo"):
            url = launch_demo(demo, limits=TEST_LIMITS, host=host, port=None, auth=auth, block=False, quiet=True)
        try:
            warnings = [record.getMessage() for record in caplog.records if "without a login" in record.getMessage()]
            assert len(warnings) == warned, (host, auth)
            if warned:
                assert "--auth USER:PASSWORD" in warnings[0] and AUTH_ENV in warnings[0]
            status = httpx.get(f"{url.rstrip('/')}/config", timeout=10).status_code
            assert status == (401 if auth else 200)
        finally:
            demo.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert process.poll() is None, process.communicate()[1]
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.5)
    raise AssertionError(f"the demo did not start serving {url} within {timeout} s")


@pytest.mark.slow
@pytest.mark.launcher
def test_app_takes_its_login_from_the_environment_and_sigterm_removes_the_request_folders(
    tiny_model_dir: Path, example: DemoExample, tmp_path: Path
) -> None:
    """``demo/app.py`` as a user starts it; SIGTERM (what ``docker stop`` and systemd send) ends it like Ctrl-C."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = _free_port()
    env = dict(os.environ, TMPDIR=str(temp), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **{AUTH_ENV: "ann:pw"})
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "demo" / "app.py"),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_serving(url, process)
        assert httpx.get(f"{url}config", timeout=10).status_code == 401  # the login is required
        client = Client(
            url, auth=("ann", "pw"), verbose=False, download_files=tmp_path / "downloads", analytics_enabled=False
        )
        client.predict(handle_file(str(example.video)), example.instruction, api_name="/segment")
        (root,) = temp.glob("videolisa-demo-*")
        assert len(list(root.glob("request-*"))) == 1
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert list(temp.glob("videolisa-demo-*")) == [], stderr
