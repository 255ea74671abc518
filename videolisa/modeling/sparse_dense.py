"""Sparse-Dense Sampling token builder and the splice of video tokens into the LLM input (docs/original.md §2.1).

Pure tensor functions, no parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from videolisa.constants import IGNORE_INDEX


def assemble_video_tokens(frame_tokens: torch.Tensor, dense_positions: torch.Tensor) -> torch.Tensor:
    """Build the visual token sequence of each video: sparse tokens then dense tokens.

    Args:
        frame_tokens: ``[B, T_s, P, D]`` projected CLIP tokens of the T_s sampled frames (P per frame).
        dense_positions: ``[B, T_d]`` positions into the T_s frames (ascending) kept at full resolution.

    Returns:
        ``[B, T_s + T_d * P, D]``: one token per sampled frame (the mean over its P tokens; dense frames are
        pooled here too, as in the original), followed by all P tokens of each dense frame, frame-major,
        raster order within a frame. For the release: 32 + 4 x 576 = 2336 tokens.
    """
    if frame_tokens.dim() != 4:
        raise ValueError(f"frame_tokens must be [B, T_s, P, D], got shape {tuple(frame_tokens.shape)}")
    batch, num_sparse, tokens_per_frame, dim = frame_tokens.shape
    if dense_positions.dim() != 2 or dense_positions.shape[0] != batch:
        raise ValueError(f"dense_positions must be [B={batch}, T_d], got shape {tuple(dense_positions.shape)}")
    if dense_positions.numel() and (dense_positions.min() < 0 or dense_positions.max() >= num_sparse):
        raise ValueError(f"dense_positions must lie in [0, {num_sparse}), got {dense_positions.tolist()}")
    sparse = frame_tokens.mean(dim=2)
    index = dense_positions.to(frame_tokens.device)[:, :, None, None].expand(-1, -1, tokens_per_frame, dim)
    dense = torch.gather(frame_tokens, 1, index).reshape(batch, -1, dim)
    return torch.cat([sparse, dense], dim=1)


@dataclass
class SplicedInputs:
    """LLM inputs after the video placeholder of every row was replaced by its video tokens.

    Shapes: ``inputs_embeds [B, L', D]``, ``attention_mask [B, L']``, ``labels [B, L']`` (or None), with
    ``L' = L - 1 + N_vis``.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None


def placeholder_positions(input_ids: torch.Tensor, image_token_index: int) -> torch.Tensor:
    """Position of the single video placeholder in each row of ``input_ids [B, L]`` -> ``[B]``.

    Raises ``ValueError`` if a row has no placeholder or more than one (the original supports exactly one
    video per conversation).
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
    is_placeholder = input_ids == image_token_index
    counts = is_placeholder.sum(dim=1)
    bad_rows = torch.nonzero(counts != 1).flatten().tolist()
    if bad_rows:
        raise ValueError(
            f"every prompt must contain exactly one video placeholder (id {image_token_index}); rows {bad_rows} "
            f"have {counts[bad_rows].tolist()}"
        )
    return is_placeholder.int().argmax(dim=1)


def splice_video_tokens(
    input_ids: torch.Tensor,
    text_embeddings: torch.Tensor,
    video_tokens: torch.Tensor,
    image_token_index: int,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> SplicedInputs:
    """Replace the placeholder of each row by that row's video tokens.

    Args:
        input_ids: ``[B, L]`` token ids with exactly one ``image_token_index`` per row (right padding).
        text_embeddings: ``[B, L, D]`` embeddings of ``input_ids`` (the placeholder row is ignored).
        video_tokens: ``[B, N_vis, D]`` from :func:`assemble_video_tokens`.
        attention_mask: ``[B, L]`` (1 = real token); all ones if None.
        labels: ``[B, L]`` or None; video positions get ``IGNORE_INDEX``.

    Every row grows by the same ``N_vis - 1``, so right padding stays at the right (the original
    re-padded after expansion; the result is the same).
    """
    positions = placeholder_positions(input_ids, image_token_index).tolist()
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids, dtype=torch.long)
    num_video = video_tokens.shape[1]
    embeds, masks, new_labels = [], [], []
    for row, pos in enumerate(positions):
        embeds.append(torch.cat([text_embeddings[row, :pos], video_tokens[row], text_embeddings[row, pos + 1 :]]))
        video_mask = attention_mask.new_ones(num_video)
        masks.append(torch.cat([attention_mask[row, :pos], video_mask, attention_mask[row, pos + 1 :]]))
        if labels is not None:
            ignore = labels.new_full((num_video,), IGNORE_INDEX)
            new_labels.append(torch.cat([labels[row, :pos], ignore, labels[row, pos + 1 :]]))
    return SplicedInputs(
        inputs_embeds=torch.stack(embeds),
        attention_mask=torch.stack(masks),
        labels=torch.stack(new_labels) if labels is not None else None,
    )
