"""Collation into VideoLisaBatch and label masking (only the answers and their <|end|> are supervised)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videolisa.config import VideoLisaConfig
from videolisa.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from videolisa.data.collate import VideoLisaCollator, tokenize_conversation
from videolisa.data.sample import SampleConfig, build_image_sample
from videolisa.errors import InvalidInputError
from videolisa.tokenization import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def config():
    return VideoLisaConfig.from_preset("tiny")


def supervised(input_ids: list[int], labels: list[int]) -> list[int]:
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(input_ids, labels))
    return [token for token, label in zip(input_ids, labels) if label != IGNORE_INDEX]


def test_single_turn_supervises_exactly_the_answer_and_end(tokenizer):
    conversation = [("user", "<image>\nPlease segment the red ball in this image."), ("assistant", "Sure, [SEG].")]
    input_ids, labels = tokenize_conversation(tokenizer, conversation)
    tokens = tokenizer.convert_ids_to_tokens(supervised(input_ids, labels))
    assert tokens == ["Su", "re", ",", "Ġ", "[SEG]", ".", "<|end|>"]
    # The supervised span is the tail of the sequence, right after "<|assistant|>\n".
    start = len(input_ids) - len(tokens)
    assert all(label == IGNORE_INDEX for label in labels[:start])
    assert tokenizer.convert_ids_to_tokens(input_ids[start - 2 : start]) == ["<|assistant|>", "Ċ"]
    assert input_ids.count(IMAGE_TOKEN_INDEX) == 1 and labels[input_ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX


@pytest.mark.parametrize(
    "answer", ["It is [SEG].", "[SEG].", "Sure, the segmentation result is [SEG]. The cup is left."]
)
def test_supervised_ids_are_the_answer_tokenized_alone(tokenizer, answer):
    conversation = [
        ("user", "<image>\nWhat is cup in this image? Please output segmentation mask."),
        ("assistant", answer),
    ]
    input_ids, labels = tokenize_conversation(tokenizer, conversation)
    alone = tokenizer(answer + "<|end|>", add_special_tokens=False).input_ids
    assert supervised(input_ids, labels) == alone


def supervised_spans(labels: list[int]) -> list[list[int]]:
    """Runs of consecutive supervised labels."""
    spans: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                spans.append([])
            spans[-1].append(label)
        previous = label
    return spans


def test_multi_turn_supervises_every_answer_only(tokenizer):
    conversation = [
        ("user", "<image>\nWhat is this?"),
        ("assistant", "A cat."),
        ("user", "Color?"),
        ("assistant", "Grey."),
    ]
    input_ids, labels = tokenize_conversation(tokenizer, conversation)
    spans = supervised_spans(labels)
    assert [tokenizer.decode(span) for span in spans] == ["A cat.<|end|>", "Grey.<|end|>"]
    assert labels[-1] != IGNORE_INDEX  # the last answer ends the sequence


def make_sample(conversation, num_masks: int, size=(10, 12)):
    settings = SampleConfig(num_frames_sparse=32, num_frames_dense=4, clip_image_size=56, sam_image_size=256)
    image = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    masks = np.ones((num_masks, *size), dtype=np.uint8)
    return build_image_sample(image, masks, conversation, settings, {"dataset": "test"})


def test_collator_pads_right_and_builds_the_batch(tokenizer, config):
    short = make_sample([("user", "<image>\nPlease segment the cat in this image."), ("assistant", "[SEG].")], 1)
    long = make_sample(
        [
            ("user", "<image>\nThe object that would reach the left edge first. Please output segmentation mask."),
            ("assistant", "Sure, it is [SEG]."),
        ],
        1,
        size=(14, 9),
    )
    text = make_sample([("user", "<image>\nWhat is it?"), ("assistant", "A red ball.")], 0)
    batch = VideoLisaCollator(tokenizer, config)([short, long, text])
    lengths = batch.attention_mask.sum(1).tolist()
    assert batch.input_ids.shape == (3, max(lengths))
    for row, length in enumerate(lengths):
        assert (batch.input_ids[row, length:] == tokenizer.pad_token_id).all()
        assert (batch.labels[row, length:] == IGNORE_INDEX).all()
        assert (batch.input_ids[row, :length] == IMAGE_TOKEN_INDEX).sum() == 1
    assert batch.pixel_values_clip.shape == (3, 32, 3, 56, 56)
    assert batch.pixel_values_sam.shape == (3, 4, 3, 256, 256)
    assert batch.dense_positions.tolist() == [[0, 1, 2, 3]] * 3
    assert [tuple(m.shape) for m in batch.target_masks] == [(1, 4, 10, 12), (1, 4, 14, 9), (0, 4, 10, 12)]
    assert batch.original_sizes == [(10, 12), (14, 9), (10, 12)]
    seg = config.seg_token_id
    assert [(batch.input_ids[row] == seg).sum().item() for row in range(3)] == [1, 1, 0]


@pytest.mark.slow
def test_tiny_model_trains_on_a_collated_batch(tokenizer, config):
    from videolisa.modeling.videolisa import VideoLisaForSegmentation

    torch.manual_seed(0)
    model = VideoLisaForSegmentation(config)
    sample = make_sample([("user", "<image>\nPlease segment the cat in this image."), ("assistant", "Sure, [SEG].")], 1)
    batch = VideoLisaCollator(tokenizer, config)([sample])
    output = model(batch)
    assert torch.isfinite(output.loss) and output.bce_loss > 0
    output.loss.backward()
    assert model.prompt_head[0].weight.grad.abs().sum() > 0


def test_mask_count_must_match_segmentation_tokens(tokenizer, config):
    sample = make_sample([("user", "<image>\nPlease segment the cat in this image."), ("assistant", "A cat.")], 1)
    with pytest.raises(InvalidInputError, match="0 segmentation tokens .* for 1 target masks"):
        VideoLisaCollator(tokenizer, config)([sample])


def test_truncation_that_cuts_the_answer_is_an_error(tokenizer, config):
    sample = make_sample([("user", "<image>\n" + "very long question " * 20), ("assistant", "Sure, [SEG].")], 1)
    with pytest.raises(InvalidInputError, match="first 30 tokens"):
        VideoLisaCollator(tokenizer, config, max_text_tokens=30)([sample])
    default = VideoLisaCollator(tokenizer, config)
    assert default.max_text_tokens == config.model_max_length - 255


def test_collator_rejects_a_tokenizer_with_another_seg_id(config):
    tokenizer = build_tiny_tokenizer(seg_token="<TRK>")
    with pytest.raises(InvalidInputError, match="maps '\\[SEG\\]' to None"):
        VideoLisaCollator(tokenizer, config)
