"""VideoLisaProcessor: (frames, instruction) -> model inputs, with every number read from the model config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from videolisa.config import VideoLisaConfig
from videolisa.constants import DEFAULT_ANSWER
from videolisa.errors import InvalidInputError
from videolisa.processing.conversation import CHAT_TEMPLATES, build_generation_prompt, build_prompt
from videolisa.processing.sampling import sample_dense_positions, sample_sparse_indices
from videolisa.processing.transforms import preprocess_clip, preprocess_sam
from videolisa.tokenization import tokenize_with_video_placeholder

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class VideoLisaProcessor:
    """Builds the inputs of :class:`~videolisa.modeling.videolisa.VideoLisaForSegmentation`.

    Args:
        tokenizer: the model's tokenizer (must contain ``config.seg_token`` with id ``config.seg_token_id``);
            None when only already-tokenized conversations are used (:meth:`validate_input_ids`).
        config: the model config (sampling sizes, image sizes, chat template, token ids).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase | None, config: VideoLisaConfig) -> None:
        vocab = tokenizer.get_vocab() if tokenizer is not None else {config.seg_token: config.seg_token_id}
        if vocab.get(config.seg_token) != config.seg_token_id:
            raise InvalidInputError(
                f"the tokenizer maps {config.seg_token!r} to {vocab.get(config.seg_token)}, but the model config "
                f"expects id {config.seg_token_id}: use the tokenizer saved with the model"
            )
        self.tokenizer = tokenizer
        self.config = config

    # ------------------------------------------------------------------ text
    def build_input_ids(self, query: str, answer: str = DEFAULT_ANSWER) -> torch.Tensor:
        """Token ids ``[L]`` of the chat prompt ``<video>\\n{query}`` -> ``{answer}`` (teacher-forced answer
        with the segmentation token), tokenized chunk-wise around the video placeholder (docs/original.md §1.3)."""
        if self.tokenizer is None:
            raise InvalidInputError("this processor has no tokenizer: pass tokenized prompt ids instead of text")
        if not isinstance(query, str):
            raise InvalidInputError(f"the instruction must be a string, got {type(query).__name__}")
        prompt = build_prompt(query.strip(), answer, self.config.chat_template, self.config.seg_token)
        ids = tokenize_with_video_placeholder(self.tokenizer, prompt, self.config.image_token_index)
        return self.validate_input_ids(torch.tensor(ids, dtype=torch.long))

    def build_generation_ids(self, query: str) -> torch.Tensor:
        """Token ids ``[L]`` of the chat prompt ``<video>\\n{query}`` up to where the answer starts, for
        generation mode (:mod:`videolisa.generation`); same tokenization as :meth:`build_input_ids`."""
        if self.tokenizer is None:
            raise InvalidInputError("this processor has no tokenizer: generation needs one")
        if not isinstance(query, str):
            raise InvalidInputError(f"the instruction must be a string, got {type(query).__name__}")
        prompt = build_generation_prompt(query.strip(), self.config.chat_template)
        ids = tokenize_with_video_placeholder(self.tokenizer, prompt, self.config.image_token_index)
        return self.validate_input_ids(torch.tensor(ids, dtype=torch.long), require_seg=False)

    def stop_token_ids(self) -> list[int]:
        """Ids that end a generated answer: the chat template's end of turn and the tokenizer's end of text."""
        if self.tokenizer is None:
            raise InvalidInputError("this processor has no tokenizer: generation needs one")
        end_of_turn = self.tokenizer.convert_tokens_to_ids(CHAT_TEMPLATES[self.config.chat_template].separator)
        candidates = (end_of_turn, self.tokenizer.eos_token_id, getattr(self.config.text_config, "eos_token_id", None))
        ids = [i for value in candidates for i in (value if isinstance(value, list) else [value]) if i is not None]
        return sorted({i for i in ids if i != self.tokenizer.unk_token_id})

    def validate_input_ids(
        self, input_ids: Sequence[int] | torch.Tensor | np.ndarray, require_seg: bool = True
    ) -> torch.Tensor:
        """Check a tokenized conversation ``[L]`` (or ``[1, L]``): one video placeholder, at least one
        segmentation token after it (unless not ``require_seg``: a generation prompt), and a length that fits
        the model's context. Returns ``[L]`` int64."""
        ids = torch.as_tensor(input_ids if isinstance(input_ids, torch.Tensor) else np.asarray(input_ids))
        ids = ids.reshape(-1).long()
        config = self.config
        placeholders = torch.nonzero(ids == config.image_token_index).flatten()
        if placeholders.numel() != 1:
            raise InvalidInputError(
                f"prompt ids must contain exactly one video placeholder ({config.image_token_index}); "
                f"found {placeholders.numel()}"
            )
        seg_positions = torch.nonzero(ids == config.seg_token_id).flatten()
        if (require_seg and seg_positions.numel() == 0) or (seg_positions < placeholders[0]).any():
            raise InvalidInputError(
                f"prompt ids must contain the segmentation token {config.seg_token!r} (id {config.seg_token_id}) "
                "after the video placeholder"
            )
        if ids.numel() > config.model_max_length:
            raise InvalidInputError(
                f"the instruction is too long: {ids.numel()} prompt tokens, the model accepts at most "
                f"{config.model_max_length}"
            )
        max_positions = getattr(config.text_config, "max_position_embeddings", None)
        expanded = ids.numel() - 1 + self.num_video_tokens(config.num_frames_sparse, config.num_frames_dense)
        if max_positions is not None and expanded > max_positions:
            raise InvalidInputError(
                f"the instruction is too long: {expanded} tokens with the video, the model's context is {max_positions}"
            )
        return ids

    # ------------------------------------------------------------------ frames
    def num_video_tokens(self, num_sparse: int, num_dense: int) -> int:
        """Visual tokens for the given frame counts: ``T_s + T_d x tokens_per_frame``."""
        return num_sparse + num_dense * self.config.tokens_per_frame

    def sample_frames(
        self, num_frames: int, num_sparse: int | None = None, num_dense: int | None = None
    ) -> tuple[list[int], list[int]]:
        """Inference frame selection (docs/original.md §2.2): sparse video-frame indices and dense positions
        among them.

        Defaults come from the config (32 / 4 for the release).
        """
        num_sparse = self.config.num_frames_sparse if num_sparse is None else num_sparse
        num_dense = self.config.num_frames_dense if num_dense is None else num_dense
        if num_dense > num_sparse:
            raise InvalidInputError(f"frames_dense ({num_dense}) must be <= frames_sparse ({num_sparse})")
        return sample_sparse_indices(num_frames, num_sparse), sample_dense_positions(num_sparse, num_dense)

    def clip_pixels(self, frames: np.ndarray) -> torch.Tensor:
        """CLIP inputs ``[T, 3, S, S]`` of ``[T, H, W, 3] uint8`` RGB frames."""
        return preprocess_clip(frames, self.config.clip_image_size)

    def sam_pixels(
        self, frames: np.ndarray, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """SAM inputs ``[T, 3, S, S]`` and the resized ``(h, w)`` of ``[T, H, W, 3] uint8`` RGB frames."""
        sam = self.config.sam
        return preprocess_sam(frames, sam.image_size, sam.pixel_mean, sam.pixel_std, device=device)
