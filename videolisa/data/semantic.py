"""Semantic and part segmentation datasets as pseudo-videos (original ``SemSegPseudoVidDataset``,
docs/original.md §4.5).

Each sample picks one class present in an image (label-map datasets) or one annotated instance (part
datasets) and asks a SHORT question about its lower-cased name; the target is that class's / instance's mask.

Layouts (one config key each, see :mod:`videolisa.data.mixture`):

* ADE20K (``data.roots.ade20k``), the ``ADEChallengeData2016`` release: ``images/training/*.jpg``,
  ``annotations/training/*.png`` (0 = other, 1..150 = classes), class names from ``objectInfo150.txt`` /
  ``objectInfo150.csv`` (first synonym of the ``Name`` column) or a JSON list (LISA's ``ade20k_classes.json``,
  given as ``data.class_names.ade20k``). Label 0 is ignored and labels shift by -1.
* COCO-Stuff (``data.roots.cocostuff``): ``train2017/*.png`` label maps (0..181, 255 unlabeled) and
  ``labels.txt`` (``"0: unlabeled"``, ``"1: person"``, ... as in the COCO-Stuff release and LISA's
  ``cocostuff_classes.txt``: label ``k - 1`` is line ``k``); images ``<data.roots.coco>/train2017/<name>.jpg``.
  Classes whose name contains ``-`` (``wall-brick``, ``floor-other`` ...) are ignored, as in the original.
* PASCAL-Part (``data.roots.pascal_part``, LISA's ``vlpart/pascal_part``): ``train.json`` (COCO format,
  categories ``"object:part"``) and ``VOCdevkit/VOC2010/JPEGImages/<file_name>``.
* PACO-LVIS (``data.roots.paco_lvis``, LISA's ``vlpart/paco``): ``annotations/paco_lvis_v1_train.json``;
  images ``<data.roots.coco>/<file_name>`` (file names start with ``train2017/``). Category names lose
  their ``_(...)`` suffix; ``"object:part"`` names are parts.

Parts are named ``"{object} {part}"`` or ``"the {part} of the {object}"`` with equal probability.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from videolisa.data.base import DataRoot, TrainingDataset, draw_index
from videolisa.data.prompts import segmentation_conversation, short_question
from videolisa.data.sample import NoTargetError, SampleConfig, TrainingSample, build_image_sample, read_rgb_image
from videolisa.errors import InvalidInputError, MissingFilesError

IGNORE_LABEL = 255


# ---------------------------------------------------------------------------------------------- class names
def _read_json_names(path: Path) -> list[str]:
    names = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InvalidInputError(f"{path}: expected a JSON list of class names")
    return names


def read_ade20k_class_names(path: Path) -> list[str]:
    """The 150 ADE20K class names (index = label - 1) from ``objectInfo150.txt`` / ``.csv`` or a JSON list.

    ``objectInfo150`` rows name a class by its synonyms (``"building, edifice"`` or ``"building;edifice"``);
    the first synonym is used, as in LISA's class list.
    """
    if path.suffix == ".json":
        names = _read_json_names(path)
    else:
        text = path.read_text(encoding="utf-8")
        delimiter = "\t" if "\t" in text.splitlines()[0] else ","
        rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
        if not rows or "Name" not in rows[0]:
            raise InvalidInputError(f"{path}: expected a table with a 'Name' column (objectInfo150 format)")
        names = [row["Name"].replace(";", ",").split(",")[0].strip() for row in rows]
    if len(names) != 150:
        raise InvalidInputError(f"{path}: expected 150 ADE20K class names, found {len(names)}")
    return names


def read_cocostuff_class_names(path: Path) -> dict[int, str]:
    """COCO-Stuff label value -> class name from ``labels.txt`` (``"k: name"``, label ``k - 1``; line 0 is
    ``unlabeled``) or from a JSON list (index = label)."""
    if path.suffix == ".json":
        return dict(enumerate(_read_json_names(path)))
    names = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        number, separator, name = line.partition(":")
        if not separator or not number.strip().isdigit():
            raise InvalidInputError(f"{path}:{line_number}: expected 'k: name', got {line!r}")
        if int(number) > 0:
            names[int(number) - 1] = name.strip()
    return names


# ---------------------------------------------------------------------------------------------- label maps
class LabelMapDataset(TrainingDataset):
    """Images with a label map per image; one sample = one class present in the image."""

    def __init__(
        self,
        settings: SampleConfig,
        pairs: list[tuple[Path, Path]],
        class_names: dict[int, str],
        to_class_ids: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        super().__init__(settings)
        self.pairs = pairs
        self.class_names = class_names
        self.to_class_ids = to_class_ids

    def __len__(self) -> int:
        return len(self.pairs)

    def build_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        from videolisa.metrics.io import read_label_png

        image_path, label_path = self.pairs[index]
        labels = self.to_class_ids(read_label_png(label_path).astype(np.int64))
        present = [int(value) for value in np.unique(labels) if value != IGNORE_LABEL]
        unknown = [value for value in present if value not in self.class_names]
        if unknown:
            raise InvalidInputError(f"{label_path}: label values {unknown} have no class name")
        if not present:
            raise NoTargetError(f"{label_path} has no labelled class")
        class_id = present[draw_index(len(present), rng)]
        name = self.class_names[class_id]
        conversation = segmentation_conversation(short_question(name.lower(), rng), rng, self.settings.seg_token)
        image = read_rgb_image(image_path)
        metadata = {"dataset": self.name, "image": str(image_path), "class": name}
        return build_image_sample(image, (labels == class_id)[None], conversation, self.settings, metadata)


def _ade20k_class_ids(labels: np.ndarray) -> np.ndarray:
    """ADE20K: 0 (other) -> ignore, class k -> k - 1."""
    return np.where(labels == 0, IGNORE_LABEL, labels - 1)


class ADE20KDataset(LabelMapDataset):
    """ADE20K (SceneParsing / ``ADEChallengeData2016``) training images."""

    name = "ade20k"

    def __init__(self, settings: SampleConfig, root: DataRoot, class_names_file: Path | None = None) -> None:
        images = root.glob("images/training", "*.jpg")
        annotations = root.dir("annotations/training")
        pairs = [(image, annotations / f"{image.stem}.png") for image in images]
        if class_names_file is None:
            candidates = [root.path / "objectInfo150.txt", root.path / "objectInfo150.csv"]
            class_names_file = next((path for path in candidates if path.is_file()), None)
            if class_names_file is None:
                raise MissingFilesError(
                    f"{root.key}={root.path} has no objectInfo150.txt / objectInfo150.csv; add it (it ships with "
                    "ADEChallengeData2016) or set data.class_names.ade20k to a class-name file"
                )
        names = read_ade20k_class_names(class_names_file)
        super().__init__(settings, pairs, dict(enumerate(names)), _ade20k_class_ids)


class CocoStuffDataset(LabelMapDataset):
    """COCO-Stuff 164k label maps on COCO train2017 images."""

    name = "cocostuff"

    def __init__(
        self, settings: SampleConfig, root: DataRoot, coco: DataRoot, class_names_file: Path | None = None
    ) -> None:
        labels = root.glob("train2017", "*.png")
        images = coco.dir("train2017")
        pairs = [(images / f"{label.stem}.jpg", label) for label in labels]
        names = read_cocostuff_class_names(class_names_file or root.file("labels.txt"))
        ignored = np.array(sorted(value for value, name in names.items() if "-" in name), dtype=np.int64)

        def to_class_ids(label_map: np.ndarray) -> np.ndarray:
            return np.where(np.isin(label_map, ignored), IGNORE_LABEL, label_map)

        kept = {value: name for value, name in names.items() if "-" not in name}
        super().__init__(settings, pairs, kept, to_class_ids)


# ---------------------------------------------------------------------------------------------- part datasets
def load_coco_api(path: Path) -> Any:
    """A ``pycocotools.coco.COCO`` index of an annotation file (its progress prints are silenced)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _strip_lvis_suffix(name: str) -> str:
    """``"bottle_(drink)"`` -> ``"bottle"`` (PACO / LVIS disambiguation suffixes)."""
    return name.split("_(")[0]


def part_class_names(categories: list[dict[str, Any]], strip_suffix: bool) -> dict[int, str | tuple[str, str]]:
    """Category id -> object name, or ``(object, part)`` for ``"object:part"`` names."""
    names: dict[int, str | tuple[str, str]] = {}
    for category in categories:
        pieces = category["name"].strip().split(":")
        if strip_suffix:
            pieces = [_strip_lvis_suffix(piece) for piece in pieces]
        if len(pieces) > 2:
            raise InvalidInputError(f"category {category['name']!r}: expected 'object' or 'object:part'")
        names[int(category["id"])] = pieces[0] if len(pieces) == 1 else (pieces[0], pieces[1])
    return names


def render_part_name(name: str | tuple[str, str], rng: np.random.Generator) -> str:
    """An object name as is; a part as ``"{object} {part}"`` or ``"the {part} of the {object}"`` (50/50)."""
    if isinstance(name, str):
        return name
    obj, part = name
    return f"{obj} {part}" if rng.random() < 0.5 else f"the {part} of the {obj}"


class PartDataset(TrainingDataset):
    """COCO-format instance annotations of objects and parts; one sample = one annotation of an image."""

    def __init__(self, settings: SampleConfig, annotation_file: Path, images_dir: Path, strip_suffix: bool) -> None:
        super().__init__(settings)
        self.coco = load_coco_api(annotation_file)
        self.images_dir = images_dir
        self.class_names = part_class_names(self.coco.loadCats(self.coco.getCatIds()), strip_suffix)
        # Images without annotations have nothing to segment (the original fell back to item 0 for them).
        self.image_ids = [image_id for image_id in sorted(self.coco.getImgIds()) if self.coco.imgToAnns[image_id]]
        if not self.image_ids:
            raise InvalidInputError(f"{annotation_file} has no annotated image")

    def __len__(self) -> int:
        return len(self.image_ids)

    def build_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        image_info = self.coco.loadImgs([self.image_ids[index]])[0]
        annotations = self.coco.imgToAnns[image_info["id"]]
        annotation = annotations[draw_index(len(annotations), rng)]
        name = render_part_name(self.class_names[int(annotation["category_id"])], rng)
        conversation = segmentation_conversation(short_question(name.lower(), rng), rng, self.settings.seg_token)
        image_path = self.images_dir / image_info["file_name"]
        image = read_rgb_image(image_path)
        mask = self.coco.annToMask(annotation)
        metadata = {"dataset": self.name, "image": str(image_path), "annotation": annotation["id"], "class": name}
        return build_image_sample(image, mask[None], conversation, self.settings, metadata)


class PascalPartDataset(PartDataset):
    """PASCAL-Part (LISA's ``vlpart/pascal_part``)."""

    name = "pascal_part"

    def __init__(self, settings: SampleConfig, root: DataRoot) -> None:
        super().__init__(
            settings, root.file("train.json"), root.dir("VOCdevkit/VOC2010/JPEGImages"), strip_suffix=False
        )


class PacoLvisDataset(PartDataset):
    """PACO-LVIS (LISA's ``vlpart/paco``) on COCO train2017 images."""

    name = "paco_lvis"

    def __init__(self, settings: SampleConfig, root: DataRoot, coco: DataRoot) -> None:
        super().__init__(settings, root.file("annotations/paco_lvis_v1_train.json"), coco.dir(), strip_suffix=True)
