"""Referring image segmentation as pseudo-videos (original ``ReferSegPseudoVidDataset``, docs/original.md §4.5).

Layout under ``data.roots.refer_seg`` (LISA's ``refer_seg`` folder, the refer API's data root):
``<dataset>/refs(<split_by>).p`` and ``<dataset>/instances.json`` for refclef, refcoco, refcoco+ (split by
``unc``) and refcocog (``umd``); images in ``images/saiapr_tc-12/`` (refCLEF) and
``images/mscoco/images/train2014/`` (the others). The refs pickle is read with the restricted unpickler of
:mod:`videolisa.benchmarks.refcoco` (plain containers only).

One item per training image that has refs; a sample draws one sentence among all its refs' sentences,
asks a SHORT question with it lower-cased, and targets the referred annotation's mask (polygons or RLE,
union of its parts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videolisa.benchmarks.layout import read_json, require_field
from videolisa.benchmarks.refcoco import decode_coco_segmentation, load_container_pickle
from videolisa.data.base import DataRoot, TrainingDataset, draw_index
from videolisa.data.prompts import segmentation_conversation, short_question
from videolisa.data.sample import SampleConfig, TrainingSample, build_image_sample, read_rgb_image
from videolisa.errors import InvalidInputError

# dataset -> (split_by, image folder under the root)
REFER_DATASETS: dict[str, tuple[str, str]] = {
    "refclef": ("unc", "images/saiapr_tc-12"),
    "refcoco": ("unc", "images/mscoco/images/train2014"),
    "refcoco+": ("unc", "images/mscoco/images/train2014"),
    "refcocog": ("umd", "images/mscoco/images/train2014"),
}
TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class _ReferImage:
    path: Path
    height: int
    width: int
    sentences: tuple[tuple[str, int], ...]  # (sentence, annotation id)


class ReferSegDataset(TrainingDataset):
    """One of refCLEF, refCOCO, refCOCO+, refCOCOg (train split)."""

    def __init__(self, settings: SampleConfig, root: DataRoot, dataset: str) -> None:
        super().__init__(settings)
        if dataset not in REFER_DATASETS:
            raise InvalidInputError(f"unknown referring dataset {dataset!r}; expected one of {list(REFER_DATASETS)}")
        self.name = dataset
        split_by, images_relative = REFER_DATASETS[dataset]
        refs_path = root.file(f"{dataset}/refs({split_by}).p")
        instances_path = root.file(f"{dataset}/instances.json")
        images_dir = root.dir(images_relative)
        instances = read_json(instances_path, f"{dataset} instances file")
        self.annotations = {
            int(annotation["id"]): annotation
            for annotation in require_field(instances, "annotations", list, str(instances_path))
        }
        images = require_field(instances, "images", list, str(instances_path))
        image_infos = {int(image["id"]): image for image in images}
        self.images = self._collect_images(load_container_pickle(refs_path), image_infos, images_dir, refs_path)

    def _collect_images(
        self, refs: Any, image_infos: dict[int, dict[str, Any]], images_dir: Path, refs_path: Path
    ) -> list[_ReferImage]:
        if not isinstance(refs, list):
            raise InvalidInputError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
        sentences: dict[int, list[tuple[str, int]]] = {}
        for ref in refs:
            if require_field(ref, "split", str, str(refs_path)) != TRAIN_SPLIT:
                continue
            where = f"{refs_path}: ref {ref.get('ref_id')}"
            image_id = require_field(ref, "image_id", int, where)
            ann_id = require_field(ref, "ann_id", int, where)
            if ann_id not in self.annotations:
                raise InvalidInputError(f"{where}: annotation {ann_id} is not in the instances file")
            for sentence in require_field(ref, "sentences", list, where):
                sentences.setdefault(image_id, []).append((require_field(sentence, "sent", str, where), ann_id))
        if not sentences:
            raise InvalidInputError(f"{refs_path} has no {TRAIN_SPLIT!r} refs")
        images = []
        for image_id in sorted(sentences):
            if image_id not in image_infos:
                raise InvalidInputError(f"{refs_path}: image {image_id} is not in the instances file")
            info = image_infos[image_id]
            images.append(
                _ReferImage(
                    images_dir / info["file_name"], int(info["height"]), int(info["width"]), tuple(sentences[image_id])
                )
            )
        return images

    def __len__(self) -> int:
        return len(self.images)

    def build_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        image_entry = self.images[index]
        sentence, ann_id = image_entry.sentences[draw_index(len(image_entry.sentences), rng)]
        conversation = segmentation_conversation(
            short_question(sentence.strip().lower(), rng), rng, self.settings.seg_token
        )
        image = read_rgb_image(image_entry.path)
        mask = decode_coco_segmentation(
            self.annotations[ann_id].get("segmentation"), image_entry.height, image_entry.width
        )
        metadata = {"dataset": self.name, "image": str(image_entry.path), "annotation": ann_id, "sentence": sentence}
        return build_image_sample(image, mask[None], conversation, self.settings, metadata)
