"""LLaVA-style visual question answering as pseudo-videos (original ``VQADataset``; optional, rate 0 in the
final recipe).

``data.roots.vqa`` is the conversation file (e.g. ``llava_instruct_150k.json``): a JSON list of
``{"id", "image": "<file name>", "conversations": [{"from": "human" | "gpt", "value": str}, ...]}``; images
are ``<data.roots.coco>/train2017/<image>``. As in LLaVA's ``preprocess_multimodal``, the ``<image>`` tag is
moved to the front of its message (``"<image>\\n" + text``). Every answer is supervised; there is no mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videolisa.benchmarks.layout import read_json, require_field
from videolisa.constants import VIDEO_PLACEHOLDER
from videolisa.data.base import DataRoot, TrainingDataset
from videolisa.data.sample import Conversation, SampleConfig, TrainingSample, build_image_sample, read_rgb_image
from videolisa.errors import InvalidInputError

ROLES = {"human": "user", "gpt": "assistant"}


@dataclass(frozen=True)
class _VqaItem:
    image: Path
    conversation: tuple[tuple[str, str], ...]


def convert_llava_conversation(turns: list[dict[str, str]], where: str) -> Conversation:
    """LLaVA ``conversations`` -> (role, message) turns, alternating user / assistant from the user, with
    exactly one ``<image>`` tag, moved to the front of its message."""
    conversation: Conversation = []
    for position, turn in enumerate(turns):
        turn_where = f"{where}, turn #{position}"
        speaker = require_field(turn, "from", str, turn_where)
        if speaker not in ROLES:
            raise InvalidInputError(f"{turn_where}: 'from' must be one of {list(ROLES)}, got {speaker!r}")
        expected = "user" if position % 2 == 0 else "assistant"
        if ROLES[speaker] != expected:
            raise InvalidInputError(f"{turn_where}: expected a {expected} turn (turns alternate from the user)")
        value = require_field(turn, "value", str, turn_where)
        if VIDEO_PLACEHOLDER in value:
            value = f"{VIDEO_PLACEHOLDER}\n{value.replace(VIDEO_PLACEHOLDER, '').strip()}"
        conversation.append((ROLES[speaker], value))
    tags = sum(message.count(VIDEO_PLACEHOLDER) for _, message in conversation)
    if tags != 1 or not conversation or conversation[-1][0] != "assistant":
        raise InvalidInputError(
            f"{where}: expected user/assistant turns ending with an answer and one {VIDEO_PLACEHOLDER} tag, "
            f"found {tags} tags"
        )
    return conversation


class VqaDataset(TrainingDataset):
    """LLaVA-Instruct style conversations about COCO images."""

    name = "vqa"

    def __init__(self, settings: SampleConfig, conversations_file: DataRoot, coco: DataRoot) -> None:
        super().__init__(settings)
        path = conversations_file.file()
        images_dir = coco.dir("train2017")
        entries = read_json(path, "VQA conversation file")
        if not isinstance(entries, list) or not entries:
            raise InvalidInputError(f"{path}: expected a non-empty JSON list of conversations")
        self.items = []
        for index, entry in enumerate(entries):
            where = f"{path}: entry #{index}"
            image = require_field(entry, "image", str, where)
            turns = require_field(entry, "conversations", list, where)
            self.items.append(_VqaItem(images_dir / image, tuple(convert_llava_conversation(turns, where))))

    def __len__(self) -> int:
        return len(self.items)

    def build_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        item = self.items[index]
        image = read_rgb_image(item.image)
        no_masks = np.zeros((0, *image.shape[:2]), dtype=np.uint8)
        metadata = {"dataset": self.name, "image": str(item.image)}
        return build_image_sample(image, no_masks, list(item.conversation), self.settings, metadata)
