"""Tiny benchmark datasets in each official layout, shared by the reader tests and the evaluation tests.

Every ``write_<benchmark>(root, ...)`` writes a small dataset under ``root`` and returns ``root``. Video frames
show a bright square moving right over a textured background (:func:`paint_frame`); the ground truth of
object 1 is that square (:func:`square_mask`), of object 2 a fixed block in the top-left corner
(:func:`corner_mask`). :func:`write_png_frames` writes any given frames as a frame folder.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FRAME_SIZE = (12, 16)  # height, width
FRAMES = ("00000", "00001", "00002")
# ReasonSeg polygons: a target rectangle and a smaller "ignore" square inside it.
RECTANGLE = [[2, 3], [10, 3], [10, 8], [2, 8]]
IGNORE_SQUARE = [[4.7, 4.2], [6, 4], [6, 6], [4, 6]]
REASONSEG_IMAGE_SIZE = (12, 14)
COCO_IMAGE_SIZE = (20, 30)


# ------------------------------------------------------------------------------------------------- pixels
def _square(index: int, size: tuple[int, int]) -> tuple[int, int, int]:
    """(top, left, side) of the moving square in frame ``index``."""
    height, width = size
    side = max(3, min(height, width) // 3)
    return height // 3, min(width - side, 1 + 2 * index), side


def paint_frame(index: int, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """Frame ``index`` of a synthetic video: ``[H, W, 3] uint8``, a diagonal texture and a red square."""
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    texture = ((rows * 7 + cols * 5 + 23 * index) % 90 + 20).astype(np.uint8)
    frame = np.stack([texture, texture // 2 + 30, 110 - texture // 2], axis=-1)
    top, left, side = _square(index, size)
    frame[top : top + side, left : left + side] = (250, 60, 40)
    return frame


def square_mask(index: int, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """Ground truth of the moving square in frame ``index``: ``[H, W] bool``."""
    mask = np.zeros(size, dtype=bool)
    top, left, side = _square(index, size)
    mask[top : top + side, left : left + side] = True
    return mask


def corner_mask(size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """A second object: a fixed block in the top-left corner, ``[H, W] bool``."""
    mask = np.zeros(size, dtype=bool)
    mask[: max(2, size[0] // 4), : max(2, size[1] // 4)] = True
    return mask


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a ``[H, W]`` mask as stored in MeViS ``mask_dict.json`` (counts as a str)."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(value) for value in rle["size"]], "counts": rle["counts"].decode()}


# ------------------------------------------------------------------------------------------------- files
def write_json(path: Path, data: Any, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(data, ensure_ascii=False).encode(encoding))


def write_image(path: Path, size: tuple[int, int] = FRAME_SIZE, value: int = 90) -> None:
    """A uniform RGB image of ``size`` (height, width)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def write_frames(folder: Path, names: Sequence[str], size: tuple[int, int] = FRAME_SIZE) -> None:
    """``<folder>/<name>.jpg`` for each name, painted as frame 0, 1, ... of :func:`paint_frame`."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        Image.fromarray(paint_frame(index, size)).save(folder / f"{name}.jpg", quality=95)


def write_png_frames(folder: Path, frames: np.ndarray) -> Path:
    """``[T, H, W, 3] uint8`` frames as ``<folder>/00000.png``, ``00001.png``, ... (the names a video's frames
    get); returns ``folder``, which must not exist yet."""
    folder.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:05d}.png")
    return folder


def write_masks(folder: Path, names: Sequence[str], size: tuple[int, int] = FRAME_SIZE) -> None:
    """0/255 grayscale PNGs of :func:`square_mask` for frames 0, 1, ... named ``<name>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        Image.fromarray(square_mask(index, size).astype(np.uint8) * 255).save(folder / f"{name}.png")


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    """``[H, W] uint8`` object ids as an indexed (palette) PNG, as DAVIS stores them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # putpalette turns the grayscale image into a palette image whose indices are the ids.
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    image.save(path)


# ------------------------------------------------------------------------------------------------- datasets
def write_reasonvos(root: Path, frames: Sequence[str] = FRAMES, size: tuple[int, int] = FRAME_SIZE) -> Path:
    """ReasonVOS: videos ``vid_a`` (objects 1 and 2, 3 expressions) and ``vidB`` (object 0, 2 expressions)."""
    videos = {
        "vid_a": {
            "source": "MeViS",
            "frames": list(frames),
            "expressions": [
                {"obj_id": 1, "exp_id": "0", "exp_text": "The Red Car", "is_sent": False},
                {"obj_id": 1, "exp_id": "1", "exp_text": "Which car stops first", "is_sent": True},
                {"obj_id": 2, "exp_id": "2", "exp_text": "Dog", "is_sent": 0},
            ],
        },
        "vidB": {
            "source": "BURST",
            "frames": list(frames),
            "expressions": [
                {"obj_id": 0, "exp_id": 10, "exp_text": "The animal that is scared", "is_sent": True},
                {"obj_id": 0, "exp_id": 2, "exp_text": "cat", "is_sent": False},
            ],
        },
    }
    write_json(root / "meta_expressions.json", {"videos": videos})
    for name in videos:
        write_frames(root / "JPEGImages" / name, frames, size)
    for mask_folder in ("MeViS_vid_a_1", "MeViS_vid_a_2", "BURST_vidB_0"):
        write_masks(root / "Annotations" / mask_folder, frames, size)
    return root


def write_mevis(
    root: Path,
    frames: Sequence[str] = FRAMES,
    size: tuple[int, int] = FRAME_SIZE,
    split: str = "valid_u",
    ground_truth: bool = True,
) -> Path:
    """MeViS ``<split>``: videos ``v2`` (1 expression) and ``v1`` (2 expressions, one with two objects).

    Annotation 5 and 6 are the moving square, 7 the corner block; frame 1 of each has a null RLE (an empty
    mask, as MeViS stores frames where the object is absent). ``ground_truth=False`` omits ``mask_dict.json``
    (the online ``valid`` split).
    """
    split_dir = root / split
    videos = {
        "v2": {
            "frames": list(frames),
            "expressions": {"0": {"exp": "Bird Flying Away", "obj_id": [0], "anno_id": [5]}},
        },
        "v1": {
            "frames": list(frames),
            "expressions": {
                "10": {"exp": "two cats", "obj_id": [0, 1], "anno_id": [6, 7]},
                "2": {"exp": "The cat on the left", "obj_id": [0], "anno_id": [6]},
            },
        },
    }
    write_json(split_dir / "meta_expressions.json", {"videos": videos})
    for name in videos:
        write_frames(split_dir / "JPEGImages" / name, frames, size)
    if ground_truth:
        moving_square = [square_mask(index, size) for index in range(len(frames))]
        shapes = {"5": moving_square, "6": moving_square, "7": [corner_mask(size)] * len(frames)}
        mask_dict = {
            anno: [None if index == 1 else encode_rle(mask) for index, mask in enumerate(masks)]
            for anno, masks in shapes.items()
        }
        write_json(split_dir / "mask_dict.json", mask_dict)
    return root


def write_refytvos(root: Path, frames: Sequence[str] = FRAMES, size: tuple[int, int] = FRAME_SIZE) -> Path:
    """Ref-YouTube-VOS: valid videos ``aaa`` and ``bbb`` (2 expressions each); ``ccc`` is listed in the valid
    meta file but is a test video (in the test meta file, no frames), as in the competition release."""
    videos = {
        name: {"frames": list(frames), "expressions": {"0": {"exp": f"A {name} Person"}, "1": {"exp": "dog"}}}
        for name in ("bbb", "aaa", "ccc")
    }
    write_json(root / "meta_expressions" / "valid" / "meta_expressions.json", {"videos": videos})
    write_json(root / "meta_expressions" / "test" / "meta_expressions.json", {"videos": {"ccc": videos["ccc"]}})
    for name in ("aaa", "bbb"):
        write_frames(root / "valid" / "JPEGImages" / name, frames, size)
    return root


def write_refdavis(
    root: Path,
    frames: Sequence[str] = FRAMES,
    size: tuple[int, int] = FRAME_SIZE,
    videos: Sequence[str] = ("blackswan",),
    objects: int = 2,
) -> Path:
    """Ref-DAVIS17 (ReferFormer layout): ``objects`` objects per video, 4 annotators' expressions each, in
    the object-major order of the release (expression i is object i // 4 + 1, annotator i % 4)."""
    expressions = {
        str(index): {"exp": f"Expression {index}", "obj_id": str(index // 4 + 1)} for index in range(4 * objects)
    }
    meta = {"videos": {video: {"frames": list(frames), "expressions": expressions} for video in videos}}
    write_json(root / "meta_expressions" / "valid" / "meta_expressions.json", meta)
    for video in videos:
        write_frames(root / "valid" / "JPEGImages" / video, frames, size)
    return root


def write_davis_unsupervised(
    root: Path,
    videos: Sequence[str],
    frames: Sequence[str] = FRAMES,
    size: tuple[int, int] = FRAME_SIZE,
    objects: int = 2,
) -> Path:
    """A DAVIS-2017 root for Ref-DAVIS scoring: ``Annotations_unsupervised/480p/<video>/<frame>.png`` indexed
    PNGs (object 1 = the moving square, object 2 = the corner block when ``objects`` is 2) and
    ``ImageSets/2017/val.txt``."""
    for video in videos:
        for index, name in enumerate(frames):
            labels = np.zeros(size, dtype=np.uint8)
            if objects == 2:
                labels[corner_mask(size)] = 2
            labels[square_mask(index, size)] = 1
            write_palette_png(root / "Annotations_unsupervised" / "480p" / video / f"{name}.png", labels)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{video}\n" for video in videos))
    return root


def write_reasonseg(root: Path) -> Path:
    """ReasonSeg ``val``: ``b_image`` (a sentence; target, ignore and flag polygons) and ``a_image`` (a phrase,
    its annotation in cp1252 as some LISA files are)."""
    write_image(root / "val" / "b_image.jpg", size=REASONSEG_IMAGE_SIZE)
    write_json(
        root / "val" / "b_image.json",
        {
            "text": ["  What would you use to cut paper?  ", "unused second text"],
            "is_sentence": True,
            "shapes": [
                {"label": "target", "points": RECTANGLE},
                {"label": "ignore", "points": IGNORE_SQUARE},
                {"label": "flag", "points": [[0, 0], [13, 0], [13, 11]]},
            ],
        },
    )
    write_image(root / "val" / "a_image.jpg", size=REASONSEG_IMAGE_SIZE)
    write_json(
        root / "val" / "a_image.json",
        {"text": ["the café sign"], "is_sentence": False, "shapes": [{"label": "target", "points": RECTANGLE}]},
        encoding="cp1252",
    )
    return root


def coco_image(root: Path, image_id: int) -> Path:
    """Where the refer layout keeps COCO train2014 image ``image_id``."""
    return root / "images" / "mscoco" / "images" / "train2014" / f"COCO_train2014_00000000000{image_id}.jpg"


def write_refer(root: Path) -> Path:
    """refCOCO, refCOCO+ and refCOCOg (refer API layout) sharing two images: ``val`` has 3 sentences on 2
    images (a polygon and an uncompressed RLE target), ``testA`` one sentence."""
    refs = [
        {
            "ref_id": 0,
            "ann_id": 100,
            "image_id": 1,
            "split": "val",
            "sentences": [{"sent_id": 7, "sent": " Man On The Left  "}, {"sent_id": 3, "sent": "guy"}],
        },
        {"ref_id": 1, "ann_id": 101, "image_id": 2, "split": "testA", "sentences": [{"sent_id": 8, "sent": "x"}]},
        {"ref_id": 2, "ann_id": 102, "image_id": 2, "split": "val", "sentences": [{"sent_id": 9, "sent": "umbrella"}]},
    ]
    height, width = COCO_IMAGE_SIZE
    instances = {
        "images": [
            {"id": image_id, "file_name": coco_image(root, image_id).name, "height": height, "width": width}
            for image_id in (1, 2)
        ],
        "annotations": [
            {"id": 100, "image_id": 1, "segmentation": [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]]},
            {"id": 101, "image_id": 2, "segmentation": []},
            # Uncompressed column-major RLE: 25 background, 10 foreground (column 1, rows 5..14), the rest background.
            {"id": 102, "image_id": 2, "segmentation": {"size": [height, width], "counts": [25, 10, 565]}},
        ],
        "categories": [],
    }
    for dataset, split_by in (("refcoco", "unc"), ("refcoco+", "unc"), ("refcocog", "umd")):
        (root / dataset).mkdir(parents=True)
        (root / dataset / f"refs({split_by}).p").write_bytes(pickle.dumps(refs, protocol=2))
        write_json(root / dataset / "instances.json", instances)
    for image_id in (1, 2):
        write_image(coco_image(root, image_id), COCO_IMAGE_SIZE)
    return root
