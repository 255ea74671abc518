"""Tests of videolisa.mask_io: PNG / RLE JSON / overlay mp4 writers, read back and compared."""

from __future__ import annotations

import errno
import io
import json
import os
import stat

import av
import cv2
import numpy as np
import pytest
from faults import FullDisk, make_read_only
from PIL import Image
from pycocotools import mask as mask_utils

from videolisa import mask_io
from videolisa.errors import InvalidInputError
from videolisa.mask_io import (
    RLE_FORMAT,
    MaskWriter,
    atomic_path,
    make_overlay_image,
    read_png_masks,
    read_rle_json,
    tint_masks,
)
from videolisa.processing.video_io import open_video

NUM_FRAMES, HEIGHT, WIDTH = 12, 121, 160  # odd height: the mp4 must pad it


@pytest.fixture(scope="module")
def video() -> tuple[np.ndarray, np.ndarray]:
    """Grey frames with low noise and a moving rectangle mask: frames [T, H, W, 3] uint8, masks [T, H, W] bool."""
    rng = np.random.default_rng(0)
    frames = (110 + rng.integers(0, 20, (NUM_FRAMES, HEIGHT, WIDTH, 3))).astype(np.uint8)
    masks = np.zeros((NUM_FRAMES, HEIGHT, WIDTH), dtype=bool)
    for t in range(NUM_FRAMES):
        masks[t, 70:110, 10 + 8 * t : 50 + 8 * t] = True
    masks[3] = False  # a frame with an empty mask
    masks[4] = False
    masks[4, 0, 0] = True  # a single pixel in the corner
    return frames, masks


def write_all(tmp_path, frames, masks, chunk_size=5, **options):
    names = [f"{index:05d}" for index in range(len(frames))]
    with MaskWriter(
        names,
        frames.shape[1],
        frames.shape[2],
        png_dir=tmp_path / "png",
        rle_path=tmp_path / "masks.json",
        overlay_path=tmp_path / "overlay.mp4",
        instruction="the box that slides to the right",
        fps=8,
        **options,
    ) as writer:
        for start in range(0, len(frames), chunk_size):
            writer.write(masks[start : start + chunk_size], frames[start : start + chunk_size])
        assert writer.frames_written == len(frames)
    return names


def test_outputs_read_back_and_agree(tmp_path, video):
    frames, masks = video
    names = write_all(tmp_path, frames, masks)

    png_masks = read_png_masks(tmp_path / "png")
    assert png_masks.dtype == bool and np.array_equal(png_masks, masks)
    assert sorted(path.name for path in (tmp_path / "png").iterdir()) == [f"{name}.png" for name in names]
    with Image.open(tmp_path / "png" / "00000.png") as first:
        assert first.mode == "L"
        assert set(np.unique(np.asarray(first))) == {0, 255}

    record = read_rle_json(tmp_path / "masks.json")
    assert np.array_equal(record.masks, masks) and np.array_equal(record.masks, png_masks)
    assert record.frame_names == names
    assert record.instruction == "the box that slides to the right"
    assert record.fps == 8

    raw = json.loads((tmp_path / "masks.json").read_text())
    assert raw["format"] == RLE_FORMAT and (raw["height"], raw["width"], raw["num_frames"]) == (121, 160, 12)
    # Plain COCO RLE: pycocotools decodes each entry on its own.
    third = mask_utils.decode({"size": raw["rles"][2]["size"], "counts": raw["rles"][2]["counts"].encode()})
    assert np.array_equal(third.astype(bool), masks[2])
    assert mask_utils.area({"size": raw["rles"][4]["size"], "counts": raw["rles"][4]["counts"].encode()}) == 1

    # No temporary files are left behind.
    assert not [path for path in tmp_path.rglob(".*") if path.is_file()]


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_overlay_video_frames_size_and_tint(tmp_path, video, monkeypatch, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    monkeypatch.setattr(mask_io, "overlay_codec", lambda: codec)
    frames, masks = video
    write_all(tmp_path, frames, masks, overlay_color=(0, 255, 0), overlay_alpha=0.6)
    path = tmp_path / "overlay.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == {"libx264": "h264", "mpeg4": "mpeg4"}[codec]
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.height, stream.codec_context.width) == (122, 160)  # padded to even
    reader = open_video(path)
    assert reader.num_frames == NUM_FRAMES and (reader.height, reader.width) == (122, 160)
    assert reader.fps == pytest.approx(8)
    decoded = reader.get_frames(range(NUM_FRAMES))[:, :HEIGHT].astype(np.int16)
    # Below the caption band, masked pixels turn green and the others keep the grey frame.
    expected = tint_masks(frames, masks, (0, 255, 0), 0.6).astype(np.int16)
    body = slice(60, HEIGHT)
    for t in (0, 5, 11):
        inside = masks[t, body] & _eroded(masks[t, body])
        outside = ~masks[t, body] & ~_dilated(masks[t, body])
        assert np.abs(decoded[t, body][inside] - expected[t, body][inside]).mean() < 8
        assert (decoded[t, body][inside][:, 1] - decoded[t, body][inside][:, 0]).mean() > 100  # green
        assert np.abs(decoded[t, body][outside] - frames[t, body][outside].astype(np.int16)).mean() < 8
    # The caption darkens the top rows and puts white text there.
    top = decoded[:, :12]
    assert top.mean() < frames[:, :12].mean() - 30 and top.max() > 200


def _eroded(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 5x5 neighbourhood is all inside (away from chroma-subsampled edges)."""
    padded = np.pad(mask, 2)
    return np.all([padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] for dy in range(5) for dx in range(5)], 0)


def _dilated(mask: np.ndarray) -> np.ndarray:
    return ~_eroded(~mask)


def test_png_only_writer_needs_no_frames_and_custom_value(tmp_path, video):
    _, masks = video
    names = [f"frame_{index}" for index in range(NUM_FRAMES)]
    with MaskWriter(names, HEIGHT, WIDTH, png_dir=tmp_path, png_foreground_value=100) as writer:
        writer.write(masks[:7])
        writer.write(masks[7:])
    with Image.open(tmp_path / "frame_4.png") as image:
        assert set(np.unique(np.asarray(image))) == {0, 100}
    assert np.array_equal(read_png_masks(tmp_path), masks)  # natural order: frame_2 before frame_10
    assert np.array_equal(read_png_masks(tmp_path, names[::-1]), masks[::-1])


def test_writer_accepts_torch_masks(tmp_path, video):
    torch = pytest.importorskip("torch")
    _, masks = video
    with MaskWriter([str(i) for i in range(NUM_FRAMES)], HEIGHT, WIDTH, rle_path=tmp_path / "m.json") as writer:
        writer.write(torch.from_numpy(masks))
    assert np.array_equal(read_rle_json(tmp_path / "m.json").masks, masks)


def test_failed_or_incomplete_writes_leave_no_partial_files(tmp_path, video):
    frames, masks = video
    names = [str(index) for index in range(NUM_FRAMES)]
    (tmp_path / "masks.json").write_text("previous result")
    with (
        pytest.raises(RuntimeError, match="model crashed"),
        MaskWriter(names, HEIGHT, WIDTH, rle_path=tmp_path / "masks.json", overlay_path=tmp_path / "o.mp4") as writer,
    ):
        writer.write(masks[:4], frames[:4])
        raise RuntimeError("model crashed")
    assert (tmp_path / "masks.json").read_text() == "previous result"  # untouched
    assert sorted(path.name for path in tmp_path.iterdir()) == ["masks.json"]

    writer = MaskWriter(names, HEIGHT, WIDTH, rle_path=tmp_path / "short.json")
    writer.write(masks[:5])
    with pytest.raises(InvalidInputError, match="after 5 of 12 frames"):
        writer.close()
    assert not (tmp_path / "short.json").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["masks.json"]


def test_writer_rejects_bad_input(tmp_path, video):
    frames, masks = video
    names = [str(index) for index in range(NUM_FRAMES)]
    with pytest.raises(InvalidInputError, match="at least one of"):
        MaskWriter(names, HEIGHT, WIDTH)
    with pytest.raises(InvalidInputError, match="distinct"):
        MaskWriter(["a", "a"], HEIGHT, WIDTH, png_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="cannot be a file name"):
        MaskWriter(["../escape"], HEIGHT, WIDTH, png_dir=tmp_path)
    writer = MaskWriter(names, HEIGHT, WIDTH, png_dir=tmp_path / "p", overlay_path=tmp_path / "o.mp4")
    with pytest.raises(InvalidInputError, match=r"expected bool \[K, 121, 160\]"):
        writer.write(masks.astype(np.float32))
    with pytest.raises(InvalidInputError, match=r"expected bool \[K, 121, 160\]"):
        writer.write(masks[:, :10])
    with pytest.raises(InvalidInputError, match="needs the frames"):
        writer.write(masks[:2])
    with pytest.raises(InvalidInputError, match="matching the masks"):
        writer.write(masks[:2], frames[:3])
    writer.write(masks[:2], frames[:2])
    with pytest.raises(InvalidInputError, match="has 12 frames"):
        writer.write(masks, frames)
    writer.abort()
    with pytest.raises(InvalidInputError, match="already closed"):
        writer.write(masks[:1], frames[:1])
    assert not (tmp_path / "o.mp4").exists()


def test_tint_and_overlay_image():
    frame = np.full((4, 6, 3), 100, dtype=np.uint8)
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, 2:5] = True
    tinted = tint_masks(frame[None], mask[None], color=(255, 0, 0), alpha=0.5)[0]
    assert np.array_equal(tinted[mask], np.tile([178, 50, 50], (6, 1)))  # rint(0.5 * 100 + 0.5 * 255) = 178
    assert np.array_equal(tinted[~mask], frame[~mask])
    assert np.array_equal(make_overlay_image(frame, mask, (255, 0, 0), 0.5), tinted)
    assert np.array_equal(make_overlay_image(frame, mask, alpha=0.0), frame)
    with pytest.raises(InvalidInputError, match="alpha"):
        tint_masks(frame[None], mask[None], alpha=1.5)
    with pytest.raises(InvalidInputError, match="color"):
        tint_masks(frame[None], mask[None], color=(300, 0, 0))
    with pytest.raises(InvalidInputError, match="mask"):
        make_overlay_image(frame, mask[:2])


def test_overlay_image_caption_wraps_inside_the_frame():
    frame = np.full((240, 320, 3), 128, dtype=np.uint8)
    mask = np.zeros((240, 320), dtype=bool)
    caption = "the small dog on the left that jumps over the fence and then runs away from the camera " * 3
    overlay = make_overlay_image(frame, mask, caption=caption)
    changed_rows = np.flatnonzero(np.any(overlay != frame, axis=(1, 2)))
    assert changed_rows[0] == 0 and 10 < changed_rows[-1] < 120  # a band at the top, at most 3 lines
    assert overlay[changed_rows].max() > 200  # white text
    assert np.array_equal(overlay[changed_rows[-1] + 1 :], frame[changed_rows[-1] + 1 :])


def test_readers_reject_bad_files(tmp_path):
    with pytest.raises(InvalidInputError, match="not a folder"):
        read_png_masks(tmp_path / "missing")
    with pytest.raises(InvalidInputError, match="no .png masks"):
        read_png_masks(tmp_path)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "0.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "1.png")
    with pytest.raises(InvalidInputError, match="one size"):
        read_png_masks(tmp_path)
    with pytest.raises(InvalidInputError, match=r"cannot read mask .*7\.png"):
        read_png_masks(tmp_path, ["0", "7"])
    (tmp_path / "x.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InvalidInputError, match="is not a videolisa-masks-rle file"):
        read_rle_json(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{ not json")
    with pytest.raises(InvalidInputError, match="cannot read mask file"):
        read_rle_json(tmp_path / "y.json")


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_path(target) as temp:
        temp.write_text("half")
        raise ValueError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp != target
        temp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


# ------------------------------------------------------------------------------------ file-system faults


def _temp_files(root):
    return sorted(str(path.relative_to(root)) for path in root.rglob("*.tmp"))


def test_full_disk_discards_every_unfinished_output_and_names_the_file(tmp_path, video, monkeypatch):
    """The disk fills while masks.json is written: closing that file fails again (its buffer cannot be flushed),
    and the overlay's temporary file must still go; the error names masks.json, not a temporary name."""
    frames, masks = video
    disk = FullDisk(600, affects=lambda path: path.name.startswith(".masks.json.")).install(monkeypatch)
    with pytest.raises(OSError) as raised:
        write_all(tmp_path, frames, masks, chunk_size=2)
    assert raised.value.errno == errno.ENOSPC and disk.failures >= 1
    assert raised.value.filename == str(tmp_path / "masks.json")
    assert _temp_files(tmp_path) == []
    assert not (tmp_path / "masks.json").exists() and not (tmp_path / "overlay.mp4").exists()


def test_a_read_only_mask_folder_is_an_error_naming_the_png(tmp_path, video, monkeypatch):
    frames, masks = video
    (tmp_path / "png").mkdir()
    make_read_only(monkeypatch, tmp_path / "png")
    with pytest.raises(PermissionError) as raised:
        write_all(tmp_path, frames, masks)
    assert raised.value.filename == str(tmp_path / "png" / "00000.png")
    assert _temp_files(tmp_path) == []


def test_a_rerun_sweeps_the_temporary_files_a_killed_run_left_and_nothing_else(tmp_path, video):
    frames, masks = video
    (tmp_path / "png" / "sub").mkdir(parents=True)
    left_by_killed_run = [".masks.json.k3j4h5g6.tmp", ".overlay.mp4.0123abcd.tmp", "png/.00003.png.9f8e7d6c.tmp"]
    not_ours = [
        ".notes.txt.0123abcd.tmp",  # not a file this writer writes
        ".masks.json.tmp",  # another naming pattern
        "png/.00099.png.9f8e7d6c.tmp",  # a frame this video does not have
        "png/sub/.00003.png.9f8e7d6c.tmp",  # not directly in the output folder
    ]
    for name in left_by_killed_run + not_ours:
        (tmp_path / name).write_text("partial")
    write_all(tmp_path, frames, masks)
    assert _temp_files(tmp_path) == sorted(not_ours)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_final_files_get_the_mode_the_umask_allows(tmp_path, video, umask):
    frames, masks = video
    previous = os.umask(umask)
    try:
        write_all(tmp_path, frames, masks)
        with atomic_path(tmp_path / "plain.txt") as temp:
            temp.write_text("x")
        (tmp_path / "reference.txt").write_text("x")  # what open() gives under this umask
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "reference.txt").stat().st_mode) == expected
    for path in [
        tmp_path / "masks.json",
        tmp_path / "overlay.mp4",
        tmp_path / "png" / "00000.png",
        tmp_path / "plain.txt",
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# ------------------------------------------------------------------------- fast paths against references


def reference_overlay(frames, masks, color, alpha, caption_rgba=None):
    """The overlay as the writers first rendered it: per-pixel float32 blends over whole frames."""
    overlay = frames.copy()
    blended = frames[masks].astype(np.float32) * (1.0 - alpha) + np.asarray(color, np.float32) * alpha
    overlay[masks] = np.rint(blended).astype(np.uint8)
    if caption_rgba is not None:
        rows, opacity = caption_rgba.shape[0], caption_rgba[..., 3:].astype(np.float32) / 255.0
        top = overlay[:, :rows].astype(np.float32)
        overlay[:, :rows] = np.rint(top * (1.0 - opacity) + caption_rgba[..., :3] * opacity).astype(np.uint8)
    return overlay


def random_masks(rng, count, height, width):
    """Blobs, an empty mask, a full mask and a single pixel: ``[count, H, W] bool``."""
    rows, cols = np.ogrid[:height, :width]
    masks = np.stack(
        [
            (rows - rng.integers(height)) ** 2 + (cols - rng.integers(width)) ** 2 < rng.integers(1, height) ** 2
            for _ in range(count)
        ]
    )
    masks[1], masks[2], masks[3] = False, True, False
    masks[3, height - 1, width - 1] = True
    return masks


@pytest.mark.parametrize("height, width", [(121, 160), (37, 5), (720, 1280)])
def test_fast_tint_and_caption_equal_the_per_pixel_blend(height, width):
    rng = np.random.default_rng(height)
    frames = rng.integers(0, 256, (5, height, width, 3), dtype=np.uint8)
    masks = random_masks(rng, 5, height, width)
    for color, alpha in [
        ((255, 0, 0), 0.5),
        ((0, 255, 0), 0.6),
        ((12, 200, 99), 0.33),
        ((1, 2, 3), 1.0),
        ((9, 9, 9), 0.0),
    ]:
        assert np.array_equal(tint_masks(frames, masks, color, alpha), reference_overlay(frames, masks, color, alpha))
    for caption in ["the red ball", "the small dog on the left that jumps over the fence " * 4]:
        band = mask_io._CaptionBand(caption, height, width)
        expected = reference_overlay(frames, masks, (255, 0, 0), 0.5, band.rgba)
        assert np.array_equal(make_overlay_image(frames[0], masks[0], caption=caption), expected[0])
        rendered = tint_masks(frames, masks)
        band.apply(rendered)
        assert np.array_equal(rendered, expected)


@pytest.mark.parametrize("chunk_size, threads", [(1, 1), (5, 4), (12, 2)])
def test_pngs_and_rles_are_byte_identical_to_the_reference_encoders(tmp_path, video, chunk_size, threads):
    """Written in parallel (outputs at once, a chunk's PNGs on several threads), every PNG has the bytes Pillow
    writes for the 0/255 image at compression level 1, and every RLE is pycocotools' of its frame."""
    frames, masks = video
    names = write_all(tmp_path, frames, masks, chunk_size=chunk_size, threads=threads)
    for name, mask in zip(names, masks):
        expected = io.BytesIO()
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(
            expected, format="PNG", compress_level=1
        )
        assert (tmp_path / "png" / f"{name}.png").read_bytes() == expected.getvalue()
    rles = json.loads((tmp_path / "masks.json").read_text())["rles"]
    for rle, mask in zip(rles, masks, strict=True):
        reference = mask_utils.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))[0]
        assert rle == {"size": [HEIGHT, WIDTH], "counts": reference["counts"].decode("ascii")}


def psnr(first, second):
    error = np.mean((first.astype(np.float64) - second.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / max(error, 1e-12))


@pytest.mark.parametrize("max_side", [None, 96, 4000])
def test_overlay_video_matches_the_reference_rendering(tmp_path, max_side):
    """The decoded overlay is the reference rendering (scaled down with ``overlay_max_side``) within H.264's loss."""
    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV build has no libx264 encoder")
    rng = np.random.default_rng(3)
    height, width, count = 144, 256, 10
    rows, cols = np.mgrid[:height, :width]
    smooth = np.stack([cols * 255 // width, rows * 255 // height, np.full_like(cols, 90)], -1).astype(np.uint8)
    frames = np.repeat(smooth[None], count, 0)
    masks = random_masks(rng, count, height, width)
    caption = "the ball that bounces"
    with MaskWriter(
        [str(i) for i in range(count)],
        height,
        width,
        overlay_path=tmp_path / "o.mp4",
        instruction=caption,
        fps=10,
        overlay_max_side=max_side,
    ) as writer:
        for start in range(0, count, 3):
            writer.write(masks[start : start + 3], frames[start : start + 3])
    out_height, out_width = (54, 96) if max_side == 96 else (height, width)
    if max_side == 96:  # the frames and masks scaled down first, then rendered at that size
        size = (out_width, out_height)
        frames = np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])
        masks = np.stack([cv2.resize(m.view(np.uint8), size, interpolation=cv2.INTER_AREA) for m in masks]).astype(bool)
    expected = reference_overlay(
        frames,
        masks,
        mask_io.DEFAULT_OVERLAY_COLOR,
        mask_io.DEFAULT_OVERLAY_ALPHA,
        mask_io._CaptionBand(caption, out_height, out_width).rgba,
    )
    with open_video(tmp_path / "o.mp4", backend="pyav") as reader:
        assert (reader.num_frames, reader.height, reader.width) == (count, out_height, out_width)
        decoded = reader.get_frames(range(count))
    assert min(psnr(decoded[t], expected[t]) for t in range(count)) > 28  # measured: 32-36 dB


def test_overlay_size_and_writer_options_are_checked():
    assert mask_io.overlay_size(1080, 1920, None) == (1080, 1920)
    assert mask_io.overlay_size(1080, 1920, 640) == (360, 640)
    assert mask_io.overlay_size(1920, 1080, 640) == (640, 360)
    assert mask_io.overlay_size(480, 854, 1000) == (480, 854)
    for option in ({"overlay_max_side": 0}, {"threads": 0}, {"threads": 1.5}):
        with pytest.raises(InvalidInputError, match=next(iter(option))):
            MaskWriter(["0"], 4, 4, rle_path="unused.json", **option)
