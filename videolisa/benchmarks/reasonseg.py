"""ReasonSeg (LISA's reasoning segmentation benchmark; images evaluated as one-frame videos).

Layout under ``root`` (the ``ReasonSeg`` folder): ``<split>/<name>.jpg`` with a LabelMe-style
``<split>/<name>.json`` next to each image: ``{"text": [str, ...], "is_sentence": bool, "shapes": [{"label":
str, "points": [[x, y], ...]}, ...]}``. As in LISA's validation dataset, only the first text of an image is
used; the ground truth is the polygons rasterised with OpenCV, largest first, "ignore" polygons as 255 and
"flag" polygons skipped (``utils/data_processing.get_mask_from_json``). Subsets: "short" (phrases) and
"long" (sentences), the split of ReasonSeg's test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from videolisa.benchmarks.base import BenchmarkItem, ImageBenchmark, image_query, require_unique_keys
from videolisa.benchmarks.layout import (
    read_json,
    require_field,
    require_flag,
    require_plain_name,
    require_string_list,
)
from videolisa.benchmarks.reasonvos import query_subset
from videolisa.errors import InvalidInputError, MissingFilesError, VideoReadError

IGNORE_LABEL = 255
# A LabelMe polygon: (label, ((x, y), ...)).
LabelmeShape = tuple[str, tuple[tuple[float, float], ...]]


@dataclass(frozen=True)
class _Sample:
    image_path: Path
    text: str
    is_sentence: bool
    shapes: tuple[LabelmeShape, ...]


def _parse_shapes(annotation: dict[str, Any], where: str) -> tuple[LabelmeShape, ...]:
    """The ``shapes`` list as (label, points) pairs."""
    shapes = []
    for index, shape in enumerate(require_field(annotation, "shapes", list, where)):
        shape_where = f"{where}, shape #{index}"
        label = require_field(shape, "label", str, shape_where)
        points = require_field(shape, "points", list, shape_where)
        if not points or not all(
            isinstance(point, list) and len(point) == 2 and all(isinstance(value, (int, float)) for value in point)
            for point in points
        ):
            raise InvalidInputError(f"{shape_where}: 'points' must be a non-empty list of [x, y] numbers")
        shapes.append((label, tuple((float(x), float(y)) for x, y in points)))
    return tuple(shapes)


def rasterise_labelme_shapes(shapes: tuple[LabelmeShape, ...], height: int, width: int) -> np.ndarray:
    """LISA's ``get_mask_from_json``: polygons -> ``[H, W]`` uint8 with 1 = target, 255 = ignore, 0 = other.

    Polygons are drawn largest first (so smaller ones win where they overlap), each as its outline plus
    its filling; points are truncated to integers as ``np.array(points, dtype=np.int32)`` does.
    """
    import cv2

    polygons = [(label, np.array([points], dtype=np.int32)) for label, points in shapes if label.lower() != "flag"]
    areas = []
    for _, polygon in polygons:
        canvas = np.zeros((height, width), dtype=np.uint8)
        cv2.polylines(canvas, polygon, True, 1, 1)
        cv2.fillPoly(canvas, polygon, 1)
        areas.append(canvas.sum())
    mask = np.zeros((height, width), dtype=np.uint8)
    # Same call as the original (default sort kind), so ties between equal areas resolve identically.
    for index in np.argsort(areas)[::-1].astype(np.int32):
        label, polygon = polygons[index]
        value = IGNORE_LABEL if "ignore" in label.lower() else 1
        cv2.polylines(mask, polygon, True, value, 1)
        cv2.fillPoly(mask, polygon, value)
    return mask


class ReasonSegBenchmark(ImageBenchmark):
    """ReasonSeg ``val`` (200 images) or ``test`` (779 images); ``train`` works too."""

    name = "reasonseg"
    default_split = "val"
    splits = ("train", "val", "test")

    @property
    def split_dir(self) -> Path:
        """``<root>/<split>``."""
        return self.root / str(self.split)

    @cached_property
    def _samples(self) -> dict[str, _Sample]:
        if not self.split_dir.is_dir():
            raise MissingFilesError(f"ReasonSeg split folder not found: {self.split_dir}")
        image_paths = sorted(path for path in self.split_dir.iterdir() if path.name.endswith(".jpg"))
        if not image_paths:
            raise MissingFilesError(f"no .jpg images in {self.split_dir}")
        samples = {}
        for image_path in image_paths:
            require_plain_name(image_path.stem, "image name", str(self.split_dir))
            annotation_path = image_path.with_suffix(".json")
            where = str(annotation_path)
            annotation = read_json(annotation_path, "ReasonSeg annotation", encodings=("utf-8", "cp1252"))
            texts = require_string_list(annotation, "text", where)
            samples[image_path.stem] = _Sample(
                image_path=image_path,
                text=texts[0].strip(),
                is_sentence=require_flag(annotation, "is_sentence", where),
                shapes=_parse_shapes(annotation, where),
            )
        return samples

    def validate(self) -> None:
        """Every image has a well-formed annotation file."""
        require_unique_keys(self.items(), self.name)

    def items(self) -> list[BenchmarkItem]:
        """One item per image (its first text), sorted by image name."""
        return [
            BenchmarkItem(
                key=stem,
                video_id=stem,
                video_path=sample.image_path,
                frame_names=(stem,),
                query=image_query(sample.text, sample.is_sentence),
                answer=self.answer,
                output_dir=stem,
                subset=query_subset(sample.is_sentence),
            )
            for stem, sample in self._samples.items()
        ]

    def ground_truth(self, item: BenchmarkItem) -> np.ndarray:
        """``[H, W]`` uint8: 1 target, 0 background, 255 ignore; H, W of the decoded image (as LISA's cv2 read)."""
        import cv2

        sample = self._samples.get(item.key)
        if sample is None:
            raise InvalidInputError(f"item {item.key!r} is not part of {self!r}")
        # The decoded size, not the header size: OpenCV applies the EXIF orientation, as in the original.
        image = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise VideoReadError(f"cannot decode image {sample.image_path}")
        return rasterise_labelme_shapes(sample.shapes, image.shape[0], image.shape[1])
