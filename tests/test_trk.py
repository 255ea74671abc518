"""Tests of videolisa.modeling.trk: where the [SEG] (<TRK>) hidden state is read, gathering it, the prompt head."""

from __future__ import annotations

import pytest
import torch

from videolisa.constants import IMAGE_TOKEN_INDEX
from videolisa.modeling.trk import build_prompt_head, extract_trk_embeddings, find_seg_read_positions

SEG = 32011


def prompt_ids(length: int, placeholder: int, seg_positions: list[int], filler: int = 7) -> list[int]:
    ids = [filler] * length
    ids[0] = 1
    ids[placeholder] = IMAGE_TOKEN_INDEX
    for position in seg_positions:
        ids[position] = SEG
    return ids


def test_read_position_is_before_seg_in_the_expanded_sequence():
    # Spec §1.6 / parity case A: 35 unexpanded ids, <image> at 14, [SEG] at 32, 2336 video tokens.
    ids = torch.tensor([prompt_ids(35, placeholder=14, seg_positions=[32])])
    batch_index, positions = find_seg_read_positions(ids, SEG, IMAGE_TOKEN_INDEX, num_video_tokens=2336)
    assert batch_index.tolist() == [0]
    assert positions.tolist() == [2366]  # [SEG] lands at 32 + 2335 = 2367 once expanded; read one before


def test_offset_zero_reads_the_token_itself():
    ids = torch.tensor([prompt_ids(35, placeholder=14, seg_positions=[32])])
    _, positions = find_seg_read_positions(ids, SEG, IMAGE_TOKEN_INDEX, num_video_tokens=2336, offset=0)
    assert positions.tolist() == [2367]


def test_several_seg_tokens_and_rows_in_row_major_order():
    ids = torch.tensor(
        [
            prompt_ids(20, placeholder=3, seg_positions=[10, 15]),
            prompt_ids(20, placeholder=5, seg_positions=[18]),
            prompt_ids(20, placeholder=2, seg_positions=[]),
            prompt_ids(20, placeholder=1, seg_positions=[4]),
        ]
    )
    batch_index, positions = find_seg_read_positions(ids, SEG, IMAGE_TOKEN_INDEX, num_video_tokens=10)
    assert batch_index.tolist() == [0, 0, 1, 3]
    assert positions.tolist() == [10 + 9 - 1, 15 + 9 - 1, 18 + 9 - 1, 4 + 9 - 1]


def test_seg_before_the_video_is_not_shifted():
    ids = torch.tensor([prompt_ids(12, placeholder=8, seg_positions=[5])])
    _, positions = find_seg_read_positions(ids, SEG, IMAGE_TOKEN_INDEX, num_video_tokens=100)
    assert positions.tolist() == [4]


def test_read_positions_agree_with_a_spliced_sequence():
    """Mark every token by its unexpanded position, expand the placeholder, and look up what is read."""
    ids = torch.tensor([prompt_ids(16, placeholder=4, seg_positions=[9, 13])])
    num_video = 7
    expanded = torch.cat([torch.arange(4), torch.full((num_video,), -1), torch.arange(5, 16)])
    _, positions = find_seg_read_positions(ids, SEG, IMAGE_TOKEN_INDEX, num_video_tokens=num_video)
    assert expanded[positions].tolist() == [8, 12]


def test_seg_without_a_preceding_position_is_an_error():
    ids = torch.tensor([[SEG, IMAGE_TOKEN_INDEX, 5]])
    with pytest.raises(ValueError, match="no position -1 before it"):
        find_seg_read_positions(ids, SEG, IMAGE_TOKEN_INDEX, num_video_tokens=4)


def test_rows_need_one_placeholder():
    ids = torch.tensor([[1, 5, SEG]])
    with pytest.raises(ValueError, match="exactly one video placeholder"):
        find_seg_read_positions(ids, SEG, IMAGE_TOKEN_INDEX, num_video_tokens=4)


def test_extract_gathers_rows_and_positions():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    embeddings = extract_trk_embeddings(hidden, torch.tensor([1, 0, 1]), torch.tensor([4, 2, 0]))
    assert torch.equal(embeddings, torch.stack([hidden[1, 4], hidden[0, 2], hidden[1, 0]]))


def test_prompt_head_matches_the_original_layout():
    torch.manual_seed(0)
    head = build_prompt_head(8, 4)
    assert sorted(head.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    x = torch.randn(3, 8)
    expected = torch.relu(x @ head[0].weight.T + head[0].bias) @ head[2].weight.T + head[2].bias
    torch.testing.assert_close(head.eval()(x), expected)
    assert head(x).shape == (3, 4)
