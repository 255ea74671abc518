"""Tests of videolisa.processing.video_io: files (decord and PyAV), frame folders, images, arrays, errors."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videolisa.errors import VideoReadError
from videolisa.processing import video_io
from videolisa.processing.video_io import VideoReader, _frames_decoded_by_seeking, natural_sort_key, open_video

NUM_FRAMES, HEIGHT, WIDTH, FPS = 40, 180, 320, 25


def make_frames(num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Smooth moving colour waves plus a soft-edged yellow disc that moves every frame: [T, H, W, 3] uint8."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for t in range(num_frames):
        red = 128 + 80 * np.sin(xx / 40 + t / 5)
        green = 128 + 80 * np.cos(yy / 30 - t / 7)
        blue = 128 + 60 * np.sin((xx + yy) / 50 + t / 3)
        image = np.stack([red, green, blue], axis=-1)
        centre_x, centre_y = 40 + 6 * t, height / 2 + 40 * np.sin(t / 4)
        weight = np.clip((25 - np.hypot(xx - centre_x, yy - centre_y)) / 3, 0, 1)[..., None]
        image = image * (1 - weight) + np.array([250, 240, 30]) * weight
        frames.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_video(path: Path, frames: np.ndarray, codec: str, fps: int = FPS, **container_options: str) -> Path:
    """Encode RGB frames with PyAV."""
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12"}
        else:
            stream.bit_rate = 8_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def packet_spans(path: Path) -> list[tuple[int, int]]:
    """(file offset, size) of every video packet, in presentation order."""
    with av.open(str(path)) as container:
        packets = [(p.pts, p.pos, p.size) for p in container.demux(video=0) if p.size > 0]
    return [(pos, size) for _, pos, size in sorted(packets)]


def zero_packets(source: Path, target: Path, frame_indices: list[int]) -> Path:
    """Copy of ``source`` with the data of the given frames' packets overwritten by zeros."""
    data = bytearray(source.read_bytes())
    spans = packet_spans(source)
    for index in frame_indices:
        position, size = spans[index]
        data[position : position + size] = bytes(size)
    target.write_bytes(bytes(data))
    return target


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return make_frames()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, frames: np.ndarray) -> dict[str, Path]:
    """The test video as an H.264 mp4, an MJPEG avi and a PNG folder named 0.png .. 39.png (not zero-padded)."""
    root = tmp_path_factory.mktemp("media")
    folder = root / "frames"
    folder.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index}.png")
    return {
        "mp4": write_video(root / "video.mp4", frames, "libx264"),
        "mjpeg": write_video(root / "mjpeg.avi", frames, "mjpeg"),
        "folder": folder,
    }


def decode_all(reader: VideoReader) -> np.ndarray:
    return reader.get_frames(range(reader.num_frames))


def assert_close_to_source(decoded: np.ndarray, frames: np.ndarray, min_psnr: float) -> None:
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert psnr(decoded, frames) > min_psnr
    # Every decoded frame is nearest to its own source frame: no shift, drop or duplicate (every 4th pixel).
    small_decoded, small_frames = (x[:, ::4, ::4].astype(np.int16) for x in (decoded, frames))
    errors = np.abs(small_decoded[:, None] - small_frames[None]).mean(axis=(2, 3, 4))
    assert np.array_equal(errors.argmin(axis=1), np.arange(len(frames)))


# ----------------------------------------------------------------------------------------------------------
# Video files


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_mp4_reports_metadata_and_decodes_what_was_written(media, frames, backend):
    with open_video(media["mp4"], backend=backend) as reader:
        assert reader.backend == ("decord" if backend == "auto" else "pyav")
        assert (reader.num_frames, reader.height, reader.width, reader.fps) == (NUM_FRAMES, HEIGHT, WIDTH, FPS)
        assert len(reader) == NUM_FRAMES
        assert reader.frame_names[:2] == ["00000", "00001"] and reader.frame_names[-1] == "00039"
        assert_close_to_source(decode_all(reader), frames, min_psnr=38)


@pytest.mark.parametrize(
    ("suffix", "codec", "min_psnr"),
    [(".mkv", "libx264", 38), (".webm", "libvpx-vp9", 35), (".avi", "mpeg4", 35), (".mov", "libx264", 38)],
)
def test_other_containers(tmp_path, frames, suffix, codec, min_psnr):
    path = write_video(tmp_path / f"video{suffix}", frames, codec)
    reader = open_video(path)
    assert (reader.num_frames, reader.height, reader.width, reader.fps) == (NUM_FRAMES, HEIGHT, WIDTH, FPS)
    assert_close_to_source(decode_all(reader), frames, min_psnr)


def test_decord_and_pyav_decode_the_same_pixels(media):
    decord_frames = decode_all(open_video(media["mp4"]))
    pyav_frames = decode_all(open_video(media["mp4"], backend="pyav"))
    # Both run FFmpeg's decoder and RGB conversion; allow one level for a different swscale build.
    assert np.abs(decord_frames.astype(int) - pyav_frames.astype(int)).max() <= 1


def test_get_frames_keeps_order_and_repeats(media):
    reader = open_video(media["mp4"])
    everything = decode_all(reader)
    indices = [5, 3, 3, 39, 0]
    assert np.array_equal(reader.get_frames(indices), everything[indices])
    assert reader.get_frames([]).shape == (0, HEIGHT, WIDTH, 3)
    for bad in ([40], [-1]):
        with pytest.raises(IndexError, match="out of range"):
            reader.get_frames(bad)


@pytest.mark.launcher
def test_opencv_png_io_still_works_after_decord_opened_a_video(media, tmp_path):
    # decord puts its bundled zlib 1.2.3 into the global symbol scope; an OpenCV loaded after it could no
    # longer read or write PNGs. A fresh process, so that neither library is loaded yet.
    if importlib.util.find_spec("decord") is None:  # not imported here: this process must stay clean
        pytest.skip("decord has no wheel for this platform")
    png = tmp_path / "mask.png"
    Image.fromarray(np.full((6, 9), 255, np.uint8)).save(png)
    script = (
        "import sys\n"
        "from videolisa.processing.video_io import open_video\n"
        "reader = open_video(sys.argv[1])\n"
        "import cv2\n"
        "assert type(reader).__name__ == '_DecordVideo', type(reader)\n"
        "assert cv2.imread(sys.argv[2], cv2.IMREAD_GRAYSCALE) is not None\n"
        "assert cv2.imencode('.png', cv2.imread(sys.argv[2]))[0]\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(media["mp4"]), str(png)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_missing_decord_falls_back_to_pyav_with_a_warning(media, monkeypatch):
    expected = decode_all(open_video(media["mp4"], backend="pyav"))
    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` raise ImportError
    with pytest.warns(RuntimeWarning, match="decord is not available"):
        reader = open_video(media["mp4"])
    assert reader.backend == "pyav"
    assert np.array_equal(decode_all(reader), expected)


def test_decord_with_a_wrong_frame_count_is_not_used(media, monkeypatch, caplog):
    decord = pytest.importorskip("decord")
    real_reader = decord.VideoReader

    class OverCountingReader:
        """decord's reader reporting more frames than the file has (dmlc/decord#373)."""

        def __init__(self, *args, **kwargs):
            self._reader = real_reader(*args, **kwargs)

        def __len__(self):
            return len(self._reader) + 5

    monkeypatch.setattr(decord, "VideoReader", OverCountingReader)
    with caplog.at_level(logging.WARNING, logger=video_io.__name__):
        reader = open_video(media["mp4"])
    assert reader.backend == "pyav" and reader.num_frames == NUM_FRAMES
    assert "decord counts 45 frames" in caplog.text


# ----------------------------------------------------------------------------------------------------------
# Chunked iteration


def open_kind(kind: str, media: dict[str, Path], frames: np.ndarray) -> VideoReader:
    """The test video through one kind of reader: ``mp4-decord``, ``mp4-pyav``, ``folder`` or ``array``."""
    return {
        "mp4-decord": lambda: open_video(media["mp4"]),
        "mp4-pyav": lambda: open_video(media["mp4"], backend="pyav"),
        "folder": lambda: open_video(media["folder"]),
        "array": lambda: open_video(frames),
    }[kind]()


@pytest.mark.parametrize("kind", ["mp4-decord", "mp4-pyav", "folder", "array"])
@pytest.mark.parametrize("chunk_size", [1, 7, 40, 100])
def test_chunked_iteration_equals_full_decode(media, frames, kind, chunk_size):
    reader = open_kind(kind, media, frames)
    chunks = list(reader.iter_chunks(chunk_size))
    assert [start for start, _ in chunks] == list(range(0, NUM_FRAMES, chunk_size))
    assert all(len(chunk) == min(chunk_size, NUM_FRAMES - start) for start, chunk in chunks)
    full = decode_all(reader)
    assert np.array_equal(np.concatenate([chunk for _, chunk in chunks]), full)
    resumed = list(reader.iter_chunks(chunk_size, start=13))
    assert resumed[0][0] == 13
    assert np.array_equal(np.concatenate([chunk for _, chunk in resumed]), full[13:])


@pytest.mark.parametrize("kind", ["mp4-decord", "mp4-pyav", "folder", "array"])
def test_frame_groups_are_the_distinct_indices_in_order(media, frames, kind):
    reader = open_kind(kind, media, frames)
    indices = [30, 2, 17, 2, 39, 0, 5]
    groups = list(reader.iter_frame_groups(indices, 3))
    assert [group for group, _ in groups] == [[0, 2, 5], [17, 30, 39]]
    assert np.array_equal(np.concatenate([chunk for _, chunk in groups]), reader.get_frames([0, 2, 5, 17, 30, 39]))
    assert list(reader.iter_frame_groups([], 3)) == []
    with pytest.raises(IndexError, match="out of range"):
        next(reader.iter_frame_groups([3, NUM_FRAMES], 3))


def test_iter_chunks_rejects_bad_arguments(frames):
    reader = open_video(frames)
    with pytest.raises(ValueError, match="chunk_size"):
        next(reader.iter_chunks(0))
    with pytest.raises(IndexError, match="start"):
        next(reader.iter_chunks(4, start=NUM_FRAMES))


# ----------------------------------------------------------------------------------------------------------
# Frame folders, images, arrays


def test_natural_sort_key():
    names = ["10.jpg", "2.jpg", "1.jpg", "frame_10.png", "frame_9.png", "B1.png", "a2.png"]
    assert sorted(names, key=natural_sort_key) == [
        "1.jpg",
        "2.jpg",
        "10.jpg",
        "a2.png",
        "B1.png",
        "frame_9.png",
        "frame_10.png",
    ]


def test_png_folder_is_exact_and_naturally_ordered(media, frames):
    reader = open_video(media["folder"])
    assert reader.backend == "images"
    assert reader.frame_names == [str(index) for index in range(NUM_FRAMES)]  # 2 before 10
    assert (reader.num_frames, reader.height, reader.width) == (NUM_FRAMES, HEIGHT, WIDTH)
    assert reader.fps == video_io.DEFAULT_FPS
    assert open_video(media["folder"], default_fps=24).fps == 24
    assert np.array_equal(decode_all(reader), frames)


def test_folder_opening_reads_headers_only(media, monkeypatch):
    def fail(path):
        raise AssertionError(f"{path} was decoded while opening")

    monkeypatch.setattr(video_io, "_read_rgb_image", fail)
    assert open_video(media["folder"]).num_frames == NUM_FRAMES


def test_folder_ignores_other_files_with_a_warning(tmp_path, frames, caplog):
    for index in range(3):
        Image.fromarray(frames[index]).save(tmp_path / f"{index:05d}.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub").mkdir()
    with caplog.at_level(logging.WARNING, logger=video_io.__name__):
        reader = open_video(tmp_path)
    assert reader.frame_names == ["00000", "00001", "00002"]
    assert "notes.txt" in caplog.text
    decoded = decode_all(reader)
    assert psnr(decoded, frames[:3]) > 35  # JPEG is lossy


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_images_are_upright_by_their_exif_orientation(tmp_path, frames, orientation, suffix):
    """Phone photos: stored landscape plus an EXIF orientation; shown like Pillow's exif_transpose."""
    from PIL import ImageOps

    stored = Image.fromarray(frames[0, :60, :100])
    exif = stored.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo{suffix}"
    stored.save(path, exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    for source in (path, tmp_path):  # a single image, and a folder holding it
        reader = open_video(source)
        assert (reader.height, reader.width) == expected.shape[:2]  # from the header, before decoding
        assert np.array_equal(reader.get_frames([0])[0], expected)


def test_exif_orientation_matches_opencv_imread(tmp_path, frames):
    """The original read frames with cv2.imread, which applies the EXIF orientation."""
    cv2 = pytest.importorskip("cv2")
    stored = Image.fromarray(frames[0, :60, :100])
    exif = stored.getexif()
    exif[0x0112] = 6  # shown turned a quarter clockwise, like a portrait phone photo
    stored.save(tmp_path / "portrait.jpg", exif=exif, quality=95)
    ours = open_video(tmp_path / "portrait.jpg").get_frames([0])[0]
    assert ours.shape == (100, 60, 3)
    assert np.array_equal(ours, cv2.imread(str(tmp_path / "portrait.jpg"))[..., ::-1])


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_display_matrix_is_applied(tmp_path, frames, degrees, mirror, backend):
    """All eight orientations: a display matrix of ``degrees`` counter-clockwise, then a mirror (PyAV's
    set_display_rotation), shows the stored frames turned and mirrored so."""
    stored = frames[:3, :, :240]
    path = tmp_path / "turned.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "12"})
        stream.height, stream.width, stream.pix_fmt = *stored.shape[1:3], "yuv420p"
        stream.set_display_rotation(degrees, hflip=mirror)
        for image in stored:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    expected = np.rot90(stored, degrees // 90, axes=(1, 2))
    if mirror:
        expected = expected[:, :, ::-1]
    reader = open_video(path, backend=backend)
    assert (reader.num_frames, reader.height, reader.width) == expected.shape[:3]
    assert psnr(reader.get_frames(range(3)), expected) > 38
    chunk = next(reader.iter_chunks(3))[1]
    assert chunk.flags.c_contiguous and np.array_equal(chunk, reader.get_frames(range(3)))


def test_single_image_is_a_one_frame_video(tmp_path, frames):
    path = tmp_path / "photo.png"
    Image.fromarray(frames[7]).save(path)
    reader = open_video(path, default_fps=5)
    assert (reader.num_frames, reader.fps, reader.frame_names) == (1, 5, ["photo"])
    assert np.array_equal(reader.get_frames([0, 0]), frames[[7, 7]])


def test_array_source_is_read_only_view(frames):
    source = frames[:5].copy()
    reader = open_video(source, default_fps=12.5)
    assert (reader.num_frames, reader.fps, reader.backend) == (5, 12.5, "array")
    assert reader.frame_names == ["00000", "00001", "00002", "00003", "00004"]
    chunk = next(reader.iter_chunks(3))[1]
    assert np.shares_memory(chunk, source) and not chunk.flags.writeable
    assert source.flags.writeable  # the caller's array is untouched
    assert np.array_equal(reader.get_frames([4, 1]), source[[4, 1]])
    assert open_video(reader) is reader


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((2, 8, 8, 3), np.float32),
        np.zeros((8, 8, 3), np.uint8),
        np.zeros((2, 8, 8), np.uint8),
        np.zeros((0, 8, 8, 3), np.uint8),
    ],
)
def test_array_source_must_be_uint8_rgb_video(array):
    with pytest.raises(VideoReadError, match=r"in-memory video"):
        open_video(array)


def test_image_modes_become_8bit_rgb(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (6, 9), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 9, 4), dtype=np.uint8)
    palette_indices = rng.integers(0, 4, (6, 9), dtype=np.uint8)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255], [10, 20, 30]], dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (6, 9), dtype=np.uint16)
    bits = rng.integers(0, 2, (6, 9)).astype(bool)

    Image.fromarray(gray, mode="L").save(tmp_path / "0.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "1.png")
    paletted = Image.fromarray(palette_indices, mode="P")
    paletted.putpalette(palette.reshape(-1).tolist())
    paletted.save(tmp_path / "2.png")
    Image.fromarray(gray16).save(tmp_path / "3.png")  # mode I;16
    Image.fromarray(bits).save(tmp_path / "4.png")  # mode 1
    Image.fromarray(gray, mode="L").save(tmp_path / "5.jpg", quality=100)

    decoded = decode_all(open_video(tmp_path))
    assert decoded.dtype == np.uint8 and decoded.shape == (6, 6, 9, 3)
    np.testing.assert_array_equal(decoded[0], np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(decoded[1], rgba[..., :3])
    np.testing.assert_array_equal(decoded[2], palette[palette_indices])
    np.testing.assert_array_equal(decoded[3], np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, axis=2))
    np.testing.assert_array_equal(decoded[4], np.repeat(np.where(bits, 255, 0).astype(np.uint8)[..., None], 3, 2))
    assert np.abs(decoded[5].astype(int) - gray[..., None]).max() <= 3  # grayscale JPEG, lossy
    assert np.array_equal(decoded[5][..., 0], decoded[5][..., 2])


# ----------------------------------------------------------------------------------------------------------
# Errors


def test_missing_path(tmp_path):
    with pytest.raises(VideoReadError, match=r"nothing\.mp4 does not exist; expected a video file"):
        open_video(tmp_path / "nothing.mp4")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(VideoReadError, match=r"notes\.txt has an unsupported extension '\.txt'"):
        open_video(path)


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_text("this is not a video")
    with pytest.raises(VideoReadError, match=r"cannot read video file .*fake\.mp4"):
        open_video(path)


def test_audio_only_file_is_not_a_video(tmp_path):
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoReadError, match=r"sound\.mp4 has no video stream"):
        open_video(path)


def test_video_without_frames(tmp_path):
    path = tmp_path / "empty.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoReadError, match=r"empty\.avi contains no video frames"):
        open_video(path)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_video_without_decodable_frames(media, tmp_path, backend):
    path = zero_packets(media["mjpeg"], tmp_path / "blank.avi", list(range(NUM_FRAMES)))
    with pytest.raises(VideoReadError, match=r"blank\.avi: frame 0 could not be decoded"):
        open_video(path, backend=backend)


def test_truncated_mp4_without_index(media, tmp_path):
    path = tmp_path / "cut.mp4"
    data = media["mp4"].read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the moov index is at the end: gone
    with pytest.raises(VideoReadError, match=r"cannot read video file .*cut\.mp4"):
        open_video(path)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_truncated_mp4_with_index_first(tmp_path, frames, backend, caplog):
    complete = write_video(tmp_path / "fast.mp4", frames, "libx264", movflags="+faststart")
    path = tmp_path / "fast_cut.mp4"
    data = complete.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with caplog.at_level(logging.WARNING, logger=video_io.__name__):
        reader = open_video(path, backend=backend)
        assert f"declares {NUM_FRAMES} frames" in caplog.text
        with pytest.raises(VideoReadError, match=r"fast_cut\.mp4: .*(truncated|could not be decoded)"):
            decode_all(reader)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
@pytest.mark.parametrize("source", ["mjpeg", "mp4"])
def test_corrupt_frame_in_the_middle_is_named(media, tmp_path, source, backend):
    path = zero_packets(media[source], tmp_path / f"corrupt_{source}{media[source].suffix}", [20])
    reader = open_video(path, backend=backend)
    assert np.array_equal(reader.get_frames([3]), open_video(media[source]).get_frames([3]))
    with pytest.raises(VideoReadError, match=r"corrupt_.*: frame 20 could not be decoded"):
        for _ in reader.iter_chunks(8):
            pass


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(VideoReadError, match=r"contains no frames; expected \.jpg, \.jpeg, \.png images"):
        open_video(tmp_path)


def test_folder_with_mixed_sizes_names_the_file_and_both_sizes(tmp_path, frames):
    for index in range(4):
        Image.fromarray(frames[index]).save(tmp_path / f"{index}.png")
    Image.fromarray(frames[4, :100, :200]).save(tmp_path / "2.png")
    Image.fromarray(frames[5, :50, :60]).save(tmp_path / "3.png")
    with pytest.raises(VideoReadError, match=r"frame 2\.png is 100x200 \(HxW\) but 0\.png is 180x320"):
        open_video(tmp_path)


def test_folder_with_two_files_for_one_frame(tmp_path, frames):
    Image.fromarray(frames[0]).save(tmp_path / "00001.png")
    Image.fromarray(frames[1]).save(tmp_path / "00001.jpg")
    with pytest.raises(VideoReadError, match="same frame name '00001'"):
        open_video(tmp_path)


def test_unreadable_image_in_folder(tmp_path, frames):
    Image.fromarray(frames[0]).save(tmp_path / "0.png")
    (tmp_path / "1.png").write_bytes(b"garbage, not a png")
    with pytest.raises(VideoReadError, match=r"cannot read image .*1\.png"):
        open_video(tmp_path)


def test_truncated_image_fails_when_decoded(tmp_path, frames):
    Image.fromarray(frames[0]).save(tmp_path / "0.png")
    data = (tmp_path / "0.png").read_bytes()
    (tmp_path / "1.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    reader = open_video(tmp_path)
    with pytest.raises(VideoReadError, match=r"cannot decode image .*1\.png"):
        reader.get_frames([1])


def test_bad_options(media):
    with pytest.raises(VideoReadError, match="default_fps"):
        open_video(media["folder"], default_fps=0)
    with pytest.raises(VideoReadError, match="backend"):
        open_video(media["mp4"], backend="opencv")  # type: ignore[arg-type]
    with pytest.raises(VideoReadError, match="cannot open a video from a int"):
        open_video(3)  # type: ignore[arg-type]


def test_frames_decoded_by_seeking_follows_the_key_frames():
    assert _frames_decoded_by_seeking([5], [0]) == 6
    assert _frames_decoded_by_seeking([5, 9], [0]) == 10  # onwards from frame 5
    assert _frames_decoded_by_seeking([5, 25], [0, 20]) == 6 + 6  # a seek to the key frame 20
    assert _frames_decoded_by_seeking([25, 27], [0, 20]) == 6 + 2
    assert _frames_decoded_by_seeking([3], []) == 4


@pytest.mark.parametrize(("keyint", "indices", "sequential"), [(250, [2, 9, 17, 30], True), (5, [31, 37], False)])
def test_scattered_frames_are_read_by_the_faster_decoder(tmp_path, frames, keyint, indices, sequential):
    """One key frame: decord would decode from frame 0 for every batch, so one sequential PyAV pass reads the
    frames; a key frame every 5 frames: decord's seeks skip most of the video. The frames are the same."""
    pytest.importorskip("decord")
    path = tmp_path / f"keyint{keyint}.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "12", "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    reader = open_video(path)
    assert reader.backend == "decord"
    decord_batches = []
    decode_with_decord = reader._decode_with_decord
    reader._decode_with_decord = lambda batch: decord_batches.append(batch) or decode_with_decord(batch)
    groups = list(reader.iter_frame_groups(indices, 2))
    assert [group for group, _ in groups] == [indices[:2], indices[2:]][: len(groups)]
    expected = open_video(path, backend="pyav").get_frames(indices)
    assert np.array_equal(np.concatenate([batch for _, batch in groups]), expected)
    assert np.array_equal(reader.get_frames(indices), expected)
    assert (decord_batches == []) == sequential, decord_batches
