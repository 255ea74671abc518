"""ReasonSeg as pseudo-videos, with the explanatory variant (original ``ReasonSegPseudoVidDataset``,
docs/original.md §4.5).

Layout under ``data.roots.reason_seg`` (the ``ReasonSeg`` folder): ``train/<name>.jpg`` with a LabelMe-style
``train/<name>.json`` (``{"text": [...], "is_sentence": bool, "shapes": [...]}``), and optionally
``explanatory/train.json`` = ``[{"image": "<name>.jpg", "query": str, "outputs": str}, ...]``.

A sample draws one of the image's texts: a sentence goes into a LONG question, a phrase (lower-cased) into a
SHORT one; the target is the rasterised polygons (value 1; "ignore" polygons are not targets). For images
with an explanation and ``explanatory`` = p (0.1 in the original, None disables), the sample is with
probability p a text-only exchange (the raw text as question, the explanation as answer, no mask), else with
equal probability a plain segmentation answer or a segmentation answer followed by the explanation to an
EXPLANATORY question.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videolisa.benchmarks.layout import read_json, require_field, require_flag, require_string_list
from videolisa.benchmarks.reasonseg import LabelmeShape, _parse_shapes, rasterise_labelme_shapes
from videolisa.constants import VIDEO_PLACEHOLDER
from videolisa.data.base import DataRoot, TrainingDataset, draw_index
from videolisa.data.prompts import explanatory_question, long_question, seg_answer, short_question, single_turn
from videolisa.data.sample import Conversation, SampleConfig, TrainingSample, build_image_sample, read_rgb_image
from videolisa.errors import InvalidInputError

TARGET_VALUE = 1
SPLIT = "train"


@dataclass(frozen=True)
class _ReasonImage:
    path: Path
    texts: tuple[str, ...]
    is_sentence: bool
    shapes: tuple[LabelmeShape, ...]
    explanation: str | None


def read_explanations(path: Path) -> dict[str, str]:
    """Image file name -> explanation (``outputs``) from ``explanatory/train.json``."""
    entries = read_json(path, "ReasonSeg explanatory file")
    if not isinstance(entries, list):
        raise InvalidInputError(f"{path}: expected a JSON list of {{'image', 'query', 'outputs'}} entries")
    return {
        require_field(entry, "image", str, f"{path}: entry #{index}"): require_field(
            entry, "outputs", str, f"{path}: entry #{index}"
        )
        for index, entry in enumerate(entries)
    }


class ReasonSegDataset(TrainingDataset):
    """ReasonSeg ``train`` (239 images in the release)."""

    name = "reason_seg"

    def __init__(self, settings: SampleConfig, root: DataRoot, explanatory: float | None = 0.1) -> None:
        super().__init__(settings)
        if explanatory is not None and not 0.0 <= explanatory <= 1.0:
            raise InvalidInputError(f"data.explanatory must be in [0, 1] or null, got {explanatory}")
        self.explanatory = explanatory
        explanations: dict[str, str] = {}
        if explanatory is not None:
            explanations = read_explanations(root.file(f"explanatory/{SPLIT}.json"))
        self.images = [self._read_image(path, explanations) for path in root.glob(SPLIT, "*.jpg")]

    @staticmethod
    def _read_image(path: Path, explanations: dict[str, str]) -> _ReasonImage:
        annotation_path = path.with_suffix(".json")
        where = str(annotation_path)
        annotation = read_json(annotation_path, "ReasonSeg annotation", encodings=("utf-8", "cp1252"))
        return _ReasonImage(
            path=path,
            texts=require_string_list(annotation, "text", where),
            is_sentence=require_flag(annotation, "is_sentence", where),
            shapes=_parse_shapes(annotation, where),
            explanation=explanations.get(path.name),
        )

    def __len__(self) -> int:
        return len(self.images)

    def _conversation(self, entry: _ReasonImage, text: str, rng: np.random.Generator) -> tuple[Conversation, bool]:
        """The conversation and whether it asks for a mask."""
        if entry.is_sentence:
            question = long_question(text, rng)
        else:
            question = short_question(text.lower(), rng)
        if self.explanatory is None or entry.explanation is None:
            return single_turn(question, seg_answer(rng, self.settings.seg_token)), True
        choice = 2 if rng.random() < self.explanatory else int(rng.integers(2))
        if choice == 0:
            return single_turn(question, seg_answer(rng, self.settings.seg_token)), True
        if choice == 1:
            answer = f"{seg_answer(rng, self.settings.seg_token)} {entry.explanation}"
            return single_turn(explanatory_question(text, rng), answer), True
        return single_turn(f"{VIDEO_PLACEHOLDER}\n{text}", entry.explanation), False

    def build_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        entry = self.images[index]
        text = entry.texts[draw_index(len(entry.texts), rng)]
        conversation, has_mask = self._conversation(entry, text, rng)
        image = read_rgb_image(entry.path)
        if has_mask:
            labels = rasterise_labelme_shapes(entry.shapes, image.shape[0], image.shape[1])
            masks = (labels == TARGET_VALUE)[None]
        else:
            masks = np.zeros((0, *image.shape[:2]), dtype=np.uint8)
        metadata = {"dataset": self.name, "image": str(entry.path), "text": text}
        return build_image_sample(image, masks, conversation, self.settings, metadata)
