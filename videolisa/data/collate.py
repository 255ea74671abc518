"""Collation: training samples -> :class:`~videolisa.modeling.batch.VideoLisaBatch`, with label masking.

Label masking has the net effect of the original (docs/original.md §4.7): only every assistant answer and its closing
separator (``<|end|>`` for Phi-3) are supervised; the system prompt, the user turns, the role headers, the
video placeholder and the padding are ``IGNORE_INDEX``. The original reaches this with length arithmetic
that depends on the tokenizer version (and an assertion that fires when it is off, LISA #66); here the
conversation is tokenized once and the supervised spans are located by tokenizing the prompt up to each
answer and up to the end of each answer: their token counts (the common prefix with the full ids, so a
token that straddles a boundary counts as answer) are the span limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from videolisa.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from videolisa.data.sample import Conversation, TrainingSample
from videolisa.errors import InvalidInputError
from videolisa.modeling.batch import VideoLisaBatch
from videolisa.processing.conversation import CHAT_TEMPLATES, render_conversation
from videolisa.tokenization import tokenize_with_video_placeholder

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from videolisa.config import VideoLisaConfig

# The original truncates text ids to model_max_length - 255 (LISA's room for 256 image tokens): 1793 for 2048.
TEXT_LENGTH_MARGIN = 255


def _common_prefix_length(prefix: Sequence[int], ids: Sequence[int]) -> int:
    length = 0
    for left, right in zip(prefix, ids):
        if left != right:
            break
        length += 1
    return length


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    conversation: Conversation,
    chat_template: str = "phi3_instruct",
    image_token_index: int = IMAGE_TOKEN_INDEX,
) -> tuple[list[int], list[int]]:
    """Token ids of a rendered conversation and its labels (answers + separators supervised, rest ignored).

    Args:
        conversation: (role, message) turns, alternating user / assistant.

    Returns:
        ``(input_ids [L], labels [L])``; ``labels[t]`` is ``input_ids[t]`` inside an answer span, else
        ``IGNORE_INDEX``. Example (Phi-3): ``...<|user|>\\n<image>\\nQ<|end|>\\n<|assistant|>\\nSure, [SEG].<|end|>``
        supervises exactly ``Sure, [SEG].<|end|>``.
    """
    template = CHAT_TEMPLATES[chat_template]

    def tokenize(text: str) -> list[int]:
        return tokenize_with_video_placeholder(tokenizer, text, image_token_index)

    input_ids = tokenize(render_conversation(conversation, chat_template))
    labels = [IGNORE_INDEX] * len(input_ids)
    for turn, (role, _) in enumerate(conversation):
        if role != "assistant":
            continue
        before = render_conversation(conversation[:turn], chat_template) + template.assistant_role
        through = render_conversation(conversation[: turn + 1], chat_template)
        start = _common_prefix_length(tokenize(before), input_ids)
        end = _common_prefix_length(tokenize(through), input_ids)
        labels[start:end] = input_ids[start:end]
    return input_ids, labels


class VideoLisaCollator:
    """Collate :class:`TrainingSample` s into a right-padded :class:`VideoLisaBatch`.

    Args:
        tokenizer: the model's tokenizer (its ``seg_token`` must have id ``config.seg_token_id``).
        config: the model config (chat template, token ids, frame counts).
        max_text_tokens: truncate longer conversations (default ``model_max_length - 255``, as the
            original); truncation that would cut the video placeholder or a segmentation token is an error.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, config: VideoLisaConfig, max_text_tokens: int | None = None
    ) -> None:
        token_id = tokenizer.get_vocab().get(config.seg_token)
        if token_id != config.seg_token_id:
            raise InvalidInputError(
                f"the tokenizer maps {config.seg_token!r} to {token_id}, the model config expects {config.seg_token_id}"
            )
        self.tokenizer = tokenizer
        self.config = config
        self.max_text_tokens = max_text_tokens or config.model_max_length - TEXT_LENGTH_MARGIN
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def encode(self, sample: TrainingSample) -> tuple[list[int], list[int]]:
        """Ids and labels of one sample, truncated and checked against its masks."""
        config = self.config
        input_ids, labels = tokenize_conversation(
            self.tokenizer, sample.conversation, config.chat_template, config.image_token_index
        )
        input_ids, labels = input_ids[: self.max_text_tokens], labels[: self.max_text_tokens]
        placeholders = input_ids.count(config.image_token_index)
        seg_tokens = input_ids.count(config.seg_token_id)
        if placeholders != 1 or seg_tokens != sample.target_masks.shape[0]:
            raise InvalidInputError(
                f"sample {sample.metadata}: {placeholders} video placeholders and {seg_tokens} segmentation tokens "
                f"in its first {self.max_text_tokens} tokens, for {sample.target_masks.shape[0]} target masks; "
                "expected 1 placeholder and one token per mask"
            )
        return input_ids, labels

    def __call__(self, samples: Sequence[TrainingSample]) -> VideoLisaBatch:
        """``B`` samples -> one batch (``input_ids``/``labels``/``attention_mask`` ``[B, L_max]``)."""
        if not samples:
            raise InvalidInputError("cannot collate an empty list of samples")
        encoded = [self.encode(sample) for sample in samples]
        length = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, (ids, row_labels) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(ids)] = torch.tensor(row_labels)
            attention_mask[row, : len(ids)] = 1
        return VideoLisaBatch(
            pixel_values_clip=torch.stack([sample.pixel_values_clip for sample in samples]),
            pixel_values_sam=torch.stack([sample.pixel_values_sam for sample in samples]),
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            dense_positions=torch.tensor([sample.dense_positions for sample in samples], dtype=torch.long),
            target_masks=[sample.target_masks for sample in samples],
            resized_sizes=[sample.resized_hw for sample in samples],
            original_sizes=[sample.original_hw for sample in samples],
            metadata=[sample.metadata for sample in samples],
        )
