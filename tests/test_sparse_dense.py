"""Tests of videolisa.modeling.sparse_dense: Sparse-Dense token assembly and the splice into the LLM input."""

from __future__ import annotations

import re

import pytest
import torch

from videolisa.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from videolisa.modeling.sparse_dense import assemble_video_tokens, placeholder_positions, splice_video_tokens


def reference_video_tokens(frame_tokens: torch.Tensor, dense_positions: torch.Tensor) -> torch.Tensor:
    """Spec §2.1 written as loops: per video, the mean of every frame's tokens, then the dense frames' tokens."""
    videos = []
    for video, positions in zip(frame_tokens, dense_positions):
        tokens = [video[t].sum(dim=0) / video.shape[1] for t in range(video.shape[0])]
        for position in positions.tolist():
            tokens.extend(video[position][p] for p in range(video.shape[1]))
        videos.append(torch.stack(tokens))
    return torch.stack(videos)


def test_assemble_matches_explicit_loop():
    generator = torch.Generator().manual_seed(0)
    frame_tokens = torch.randn(2, 6, 5, 3, generator=generator, dtype=torch.float64)
    dense_positions = torch.tensor([[0, 2, 5], [1, 3, 4]])
    tokens = assemble_video_tokens(frame_tokens, dense_positions)
    assert tokens.shape == (2, 6 + 3 * 5, 3)
    torch.testing.assert_close(tokens, reference_video_tokens(frame_tokens, dense_positions), rtol=0, atol=1e-12)
    # Dense frames also appear pooled among the sparse tokens, and their full tokens follow in order.
    torch.testing.assert_close(tokens[1, 3], frame_tokens[1, 3].mean(0))
    torch.testing.assert_close(tokens[1, 6 + 5 : 6 + 10], frame_tokens[1, 3])


def test_release_sizes_give_2336_tokens():
    frame_tokens = torch.arange(32, dtype=torch.float32)[None, :, None, None].expand(1, 32, 576, 2)
    tokens = assemble_video_tokens(frame_tokens, torch.tensor([[3, 10, 18, 26]]))
    assert tokens.shape == (1, 2336, 2)
    assert tokens[0, :32, 0].tolist() == list(range(32))  # one mean token per frame, temporal order
    dense_frame_of_token = tokens[0, 32:, 0].reshape(4, 576)
    assert (dense_frame_of_token == torch.tensor([3.0, 10.0, 18.0, 26.0])[:, None]).all()


def test_assemble_keeps_gradients_to_every_frame():
    frame_tokens = torch.randn(1, 4, 3, 2, requires_grad=True)
    assemble_video_tokens(frame_tokens, torch.tensor([[2]])).sum().backward()
    expected = torch.full((1, 4, 3, 2), 1 / 3)
    expected[0, 2] += 1
    torch.testing.assert_close(frame_tokens.grad, expected)


@pytest.mark.parametrize(
    "shape, positions, message",
    [
        ((1, 4, 3, 2), [[4]], r"\[0, 4\)"),
        ((1, 4, 3, 2), [[-1]], r"\[0, 4\)"),
        ((4, 3, 2), [[0]], r"\[B, T_s, P, D\]"),
        ((2, 4, 3, 2), [[0]], r"dense_positions must be \[B=2"),
    ],
)
def test_assemble_rejects_bad_shapes_and_positions(shape, positions, message):
    with pytest.raises(ValueError, match=message):
        assemble_video_tokens(torch.zeros(shape), torch.tensor(positions))


# Two right-padded rows (pad id 0) whose placeholder sits at different positions.
INPUT_IDS = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 6, 7, 0, 0], [1, IMAGE_TOKEN_INDEX, 8, 9, 10, 11, 0]])
ATTENTION_MASK = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0]])
LABELS = torch.tensor([[-100, -100, -100, 6, 7, -100, -100], [-100, -100, -100, 9, 10, 11, -100]])


def spliced_example(num_video: int = 4):
    generator = torch.Generator().manual_seed(1)
    text = torch.randn(2, 7, 3, generator=generator)
    video = torch.randn(2, num_video, 3, generator=generator)
    return text, video, splice_video_tokens(INPUT_IDS, text, video, IMAGE_TOKEN_INDEX, ATTENTION_MASK, LABELS)


def test_splice_places_video_tokens_at_the_placeholder():
    text, video, spliced = spliced_example()
    assert spliced.inputs_embeds.shape == (2, 7 - 1 + 4, 3)
    row0, row1 = spliced.inputs_embeds
    torch.testing.assert_close(row0, torch.cat([text[0, :2], video[0], text[0, 3:]]), rtol=0, atol=0)
    torch.testing.assert_close(row1, torch.cat([text[1, :1], video[1], text[1, 2:]]), rtol=0, atol=0)


def test_splice_labels_ignore_video_positions():
    _, _, spliced = spliced_example()
    assert spliced.labels.tolist() == [
        [-100, -100] + [IGNORE_INDEX] * 4 + [6, 7, -100, -100],
        [-100] + [IGNORE_INDEX] * 4 + [-100, 9, 10, 11, -100],
    ]


def test_splice_attention_mask_keeps_right_padding():
    _, _, spliced = spliced_example()
    assert spliced.attention_mask.tolist() == [
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
    ]


def test_splice_defaults_to_full_attention_and_no_labels():
    text = torch.zeros(1, 3, 2)
    input_ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 2]])
    spliced = splice_video_tokens(input_ids, text, torch.ones(1, 5, 2), IMAGE_TOKEN_INDEX)
    assert spliced.labels is None
    assert spliced.attention_mask.tolist() == [[1] * 7]


def test_splice_keeps_gradients_to_video_and_text():
    text = torch.randn(1, 3, 2, requires_grad=True)
    video = torch.randn(1, 4, 2, requires_grad=True)
    spliced = splice_video_tokens(torch.tensor([[1, IMAGE_TOKEN_INDEX, 2]]), text, video, IMAGE_TOKEN_INDEX)
    spliced.inputs_embeds.sum().backward()
    assert torch.equal(video.grad, torch.ones(1, 4, 2))
    assert torch.equal(text.grad, torch.tensor([[[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]]))


@pytest.mark.parametrize(
    "input_ids, bad_rows",
    [
        ([[1, 2, 3], [1, IMAGE_TOKEN_INDEX, 3]], r"rows \[0\] have \[0\]"),
        ([[1, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX], [1, IMAGE_TOKEN_INDEX, 3]], r"rows \[0\] have \[2\]"),
    ],
)
def test_splice_requires_exactly_one_placeholder_per_row(input_ids, bad_rows):
    ids = torch.tensor(input_ids)
    with pytest.raises(ValueError, match="exactly one video placeholder") as error:
        splice_video_tokens(ids, torch.zeros(2, 3, 2), torch.zeros(2, 4, 2), IMAGE_TOKEN_INDEX)
    assert re.search(bad_rows, str(error.value))


def test_placeholder_positions_per_row():
    assert placeholder_positions(INPUT_IDS, IMAGE_TOKEN_INDEX).tolist() == [2, 1]
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        placeholder_positions(INPUT_IDS[0], IMAGE_TOKEN_INDEX)
