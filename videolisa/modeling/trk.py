"""Finding the ``[SEG]`` (``<TRK>``) hidden states and mapping them to SAM prompts (docs/original.md §1.6)."""

from __future__ import annotations

import torch
from torch import nn

from videolisa.modeling.sparse_dense import placeholder_positions


def find_seg_read_positions(
    input_ids: torch.Tensor,
    seg_token_id: int,
    image_token_index: int,
    num_video_tokens: int,
    offset: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the hidden state of every ``[SEG]`` token is read, in the expanded sequence.

    The original builds the mask on the unexpanded ids ("token j+1 is [SEG]") and shifts it by
    ``N_vis - 1``; so a ``[SEG]`` at unexpanded position j after the placeholder is at ``j + N_vis - 1``
    once the video is spliced in, and the state read is ``offset`` positions from it (-1: the position
    before, whose LM output predicts ``[SEG]``).

    Args:
        input_ids: ``[B, L]`` unexpanded ids, one placeholder per row.
        num_video_tokens: N_vis, tokens replacing the placeholder (2336 for 32/4 at 576 tokens per frame).

    Returns:
        ``(batch_index [K], position [K])`` for the K ``[SEG]`` tokens of the batch, row-major order.

    Example: ids ``[1, -200, 5, SEG]`` with N_vis 10 -> the ``[SEG]`` is at expanded 3 + 9 = 12; read 11.
    """
    placeholders = placeholder_positions(input_ids, image_token_index)
    batch_index, token_position = torch.nonzero(input_ids == seg_token_id, as_tuple=True)
    after_video = token_position > placeholders[batch_index]
    expanded = token_position + after_video.long() * (num_video_tokens - 1)
    read = expanded + offset
    if (read < 0).any():
        raise ValueError(
            f"a [SEG] token at position {token_position[read < 0].tolist()} has no position {offset} before it"
        )
    return batch_index, read


def extract_trk_embeddings(
    hidden_states: torch.Tensor, batch_index: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """Gather ``hidden_states [B, L', D]`` at ``(batch_index [K], positions [K])`` -> ``[K, D]``."""
    return hidden_states[batch_index.to(hidden_states.device), positions.to(hidden_states.device)]


def build_prompt_head(hidden_size: int, prompt_dim: int) -> nn.Sequential:
    """The original ``text_hidden_fcs[0]``: Linear(D, D) -> ReLU -> Linear(D, prompt_dim) -> Dropout(0).

    Indices 0 and 2 hold the weights, so original keys ``text_hidden_fcs.0.{0,2}.*`` map 1:1.
    """
    return nn.Sequential(
        nn.Linear(hidden_size, hidden_size),
        nn.ReLU(),
        nn.Linear(hidden_size, prompt_dim),
        nn.Dropout(0.0),
    )
