"""refCOCO, refCOCO+ and refCOCOg (referring image segmentation; images evaluated as one-frame videos).

Layout under ``root`` (LISA's ``refer_seg`` folder, the refer API's data root):

* ``<dataset>/refs(<split_by>).p``: the refer API's pickled list of refs ``{"ref_id", "ann_id", "image_id",
  "split", "sentences": [{"sent_id", "sent"}, ...]}``; ``split_by`` is ``unc`` for refCOCO / refCOCO+ and
  ``umd`` for refCOCOg;
* ``<dataset>/instances.json``: COCO ``images`` (``id``, ``file_name``, ``height``, ``width``) and
  ``annotations`` (``id``, ``segmentation``);
* ``images/mscoco/images/train2014/<file_name>``.

The pickle is loaded with a restricted unpickler that only rebuilds built-in containers (lists, dicts,
tuples, sets) and plain values, and refuses any other global, so a tampered file cannot run code.

One item per (ref, sentence) of the split; the sentence is stripped and lower-cased, the query is
``" What is {sentence} in this video? Please output segmentation mask."`` and the answer ``"[SEG]."``
(VideoLISA ``utils/dataset.py``).
"""

from __future__ import annotations

import builtins
import pickle
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from videolisa.benchmarks.base import BenchmarkItem, ImageBenchmark, image_query, require_unique_keys
from videolisa.benchmarks.layout import (
    image_size,
    read_json,
    require_field,
    require_mapping,
    require_plain_name,
)
from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.processing.video_io import natural_sort_key

# Globals a pickle of plain containers may reference (protocol <= 2 pickles build sets with REDUCE).
_SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset"})


class _ContainerUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild built-in containers and plain values."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 pickles name the builtins module "__builtin__".
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def load_container_pickle(path: Path) -> Any:
    """Load a pickle that may only contain built-in containers and plain values (the refer API's refs files)."""
    if not path.is_file():
        raise MissingFilesError(f"refer annotations not found: {path}")
    with path.open("rb") as stream:
        try:
            return _ContainerUnpickler(stream, encoding="utf-8").load()
        except (pickle.UnpicklingError, EOFError, ValueError, UnicodeDecodeError) as error:
            raise InvalidInputError(f"cannot load {path} as a pickle of plain containers: {error}") from error


@dataclass(frozen=True)
class _Expression:
    image_path: Path
    image_id: int
    ann_id: int
    text: str


def decode_coco_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> ``[H, W]`` bool union of its parts.

    LISA sums the parts into a uint8 map, so pixels shared by two polygons of one annotation become 2,
    which its IoU counts as neither target nor ignore; the union is the intended target.
    """
    from pycocotools import mask as coco_mask

    if not segmentation:
        return np.zeros((height, width), dtype=bool)
    if isinstance(segmentation, list):
        rles = coco_mask.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation.get("counts"), list):
        rles = [coco_mask.frPyObjects(segmentation, height, width)]
    else:
        counts = segmentation["counts"]
        rles = [{"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}]
    return coco_mask.decode(rles).any(axis=2)


class _RefCocoBenchmark(ImageBenchmark):
    """The refer-API layout shared by refCOCO, refCOCO+ and refCOCOg."""

    dataset: ClassVar[str]
    split_by: ClassVar[str]
    default_split = "val"

    @property
    def refs_path(self) -> Path:
        """``<dataset>/refs(<split_by>).p``."""
        return self.root / self.dataset / f"refs({self.split_by}).p"

    @property
    def instances_path(self) -> Path:
        """``<dataset>/instances.json``."""
        return self.root / self.dataset / "instances.json"

    @property
    def images_dir(self) -> Path:
        """COCO train2014 images, where the refer datasets' images come from."""
        return self.root / "images" / "mscoco" / "images" / "train2014"

    @cached_property
    def _instances(self) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
        """(images by id, annotations by id) from ``instances.json``."""
        where = str(self.instances_path)
        instances = read_json(self.instances_path, f"{self.name} instances file")
        images = {}
        for image in require_field(instances, "images", list, where):
            image_id = require_field(image, "id", int, f"{where}: images")
            file_name = require_field(image, "file_name", str, f"{where}: image {image_id}")
            # The stem names the item's prediction folder: "...jpg" would be "..".
            require_plain_name(file_name, "file_name", f"{where}: image {image_id}")
            require_plain_name(Path(file_name).stem, "file_name stem", f"{where}: image {image_id}")
            require_field(image, "height", int, f"{where}: image {image_id}")
            require_field(image, "width", int, f"{where}: image {image_id}")
            images[image_id] = image
        annotations = {}
        for annotation in require_field(instances, "annotations", list, where):
            annotation_id = require_field(annotation, "id", int, f"{where}: annotations")
            require_field(annotation, "segmentation", (list, dict), f"{where}: annotation {annotation_id}")
            annotations[annotation_id] = annotation
        return images, annotations

    def _split_refs(self) -> list[dict[str, Any]]:
        """The refs of the selected split."""
        refs = load_container_pickle(self.refs_path)
        if not isinstance(refs, list):
            raise InvalidInputError(f"{self.refs_path}: expected a list of refs, got {type(refs).__name__}")
        splits = {require_field(ref, "split", str, f"{self.refs_path}: ref") for ref in refs}
        if self.split not in splits:
            raise InvalidInputError(
                f"{self.refs_path} has no {self.split!r} refs; splits present: {', '.join(sorted(splits))}"
            )
        return [ref for ref in refs if ref["split"] == self.split]

    @cached_property
    def _expressions(self) -> dict[str, _Expression]:
        """Item key -> expression, sorted by image then sentence id."""
        images, annotations = self._instances
        expressions = {}
        for ref in self._split_refs():
            ref_id = require_field(ref, "ref_id", int, f"{self.refs_path}: ref")
            where = f"{self.refs_path}: ref {ref_id}"
            image_id = require_field(ref, "image_id", int, where)
            ann_id = require_field(ref, "ann_id", int, where)
            if image_id not in images:
                raise InvalidInputError(f"{where}: image {image_id} is not in {self.instances_path}")
            if ann_id not in annotations:
                raise InvalidInputError(f"{where}: annotation {ann_id} is not in {self.instances_path}")
            image_path = self.images_dir / images[image_id]["file_name"]
            for sentence in require_field(ref, "sentences", list, where):
                sent_id = str(require_field(sentence, "sent_id", (int, str), where))
                require_plain_name(sent_id, "sent_id", where)
                text = require_field(sentence, "sent", str, f"{where}, sentence {sent_id}").strip().lower()
                key = f"{image_path.stem}/{sent_id}"
                if key in expressions:
                    raise InvalidInputError(f"{where}: sentence id {sent_id} of image {image_path.name} is not unique")
                expressions[key] = _Expression(image_path, image_id, ann_id, text)
        # Keys are "<image stem>/<sent_id>": sorted by image, then by sentence id.
        return dict(sorted(expressions.items(), key=lambda pair: natural_sort_key(pair[0])))

    def validate(self) -> None:
        """Refs, instances and every image of the split exist, and each image has its recorded size."""
        images, _ = self._instances
        checked: set[int] = set()
        for expression in self._expressions.values():
            if expression.image_id in checked:
                continue
            checked.add(expression.image_id)
            info = images[expression.image_id]
            size = image_size(expression.image_path)
            if size != (info["height"], info["width"]):
                raise InvalidInputError(
                    f"image {expression.image_path} is {size[0]}x{size[1]} but {self.instances_path} records "
                    f"{info['height']}x{info['width']}"
                )
        require_unique_keys(self.items(), self.name)

    def items(self) -> list[BenchmarkItem]:
        """One item per (ref, sentence) of the split."""
        return [
            BenchmarkItem(
                key=key,
                video_id=expression.image_path.stem,
                video_path=expression.image_path,
                frame_names=(expression.image_path.stem,),
                query=image_query(expression.text, is_sentence=False),
                answer=self.answer,
                output_dir=key,
            )
            for key, expression in self._expressions.items()
        ]

    def ground_truth(self, item: BenchmarkItem) -> np.ndarray:
        """``[H, W]`` uint8 0/1: the referred annotation's mask at the size recorded in ``instances.json``."""
        expression = self._expressions.get(item.key)
        if expression is None:
            raise InvalidInputError(f"item {item.key!r} is not part of {self!r}")
        images, annotations = self._instances
        info = images[expression.image_id]
        segmentation = require_mapping(annotations[expression.ann_id], str(self.instances_path))["segmentation"]
        return decode_coco_segmentation(segmentation, info["height"], info["width"]).astype(np.uint8)


class RefCocoBenchmark(_RefCocoBenchmark):
    """refCOCO (UNC splits: val, testA, testB)."""

    name = "refcoco"
    dataset = "refcoco"
    split_by = "unc"


class RefCocoPlusBenchmark(_RefCocoBenchmark):
    """refCOCO+ (UNC splits: val, testA, testB)."""

    name = "refcoco+"
    dataset = "refcoco+"
    split_by = "unc"


class RefCocogBenchmark(_RefCocoBenchmark):
    """refCOCOg (UMD splits: val, test)."""

    name = "refcocog"
    dataset = "refcocog"
    split_by = "umd"
