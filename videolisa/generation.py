"""Generation mode: the LLM writes its own answer, and every ``[SEG]`` it writes becomes one object track.

The original never generates: the answer ``"Sure, [SEG]."`` is written into the prompt (teacher forcing,
docs/original.md §1.6), which stays the predictor's default. In generation mode the prompt ends with the
assistant's role marker and the LLM continues it token by token with a KV cache over the same multimodal input
embeddings (text embeddings with the Sparse-Dense video tokens spliced in) that teacher forcing builds.

The prompt of each generated ``[SEG]`` is read with the teacher-forcing rule (``config.seg_hidden_offset``, -1:
the final hidden state at the position before ``[SEG]``, the one whose LM output predicted it), by
:func:`videolisa.modeling.trk.find_seg_read_positions` on the prompt ids followed by the generated ids. So for
the same token sequence generation and teacher forcing read the same hidden states, up to float rounding of the
cached attention (tests/test_generation.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from videolisa.errors import InvalidInputError
from videolisa.modeling.sparse_dense import splice_video_tokens
from videolisa.modeling.trk import extract_trk_embeddings, find_seg_read_positions

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from videolisa.modeling.videolisa import VideoLisaForSegmentation

# ``segment(..., answer=GENERATE)`` selects generation mode.
GENERATE = "generate"
# Words an answer puts before ``[SEG]`` that name no object ("Sure, it is [SEG].").
_FILLER = re.compile(
    r"^(?:and|or|sure|yes|it is|it's|they are|this is|these are|here is|the segmentation result is)"
    r"\b[\s,:]*",
    re.IGNORECASE,
)
# A phrase is the text since the last clause boundary before its ``[SEG]``.
_CLAUSE_BOUNDARY = re.compile(r"[.,;:!?\n]")


@dataclass(frozen=True)
class GenerationConfig:
    """How the answer is generated.

    Attributes:
        max_new_tokens: at most this many answer tokens (the stop token not counted).
        temperature: 0 (default) is greedy decoding; above 0 samples from ``softmax(logits / temperature)``.
        seed: seed of the sampling generator (None: PyTorch's global generator); unused when greedy.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not float(self.temperature) >= 0.0:
            raise InvalidInputError(f"temperature must be >= 0 (0: greedy), got {self.temperature!r}")


@dataclass
class GeneratedAnswer:
    """One generated answer.

    Attributes:
        token_ids: ``[N]`` generated ids (without the stop token).
        prompt_embeddings: ``[K, C]`` SAM prompts, one per generated ``[SEG]``, in order (K may be 0).
        seg_hidden_states: ``[K, D]`` the hidden states they were computed from.
    """

    token_ids: torch.Tensor
    prompt_embeddings: torch.Tensor
    seg_hidden_states: torch.Tensor


def _next_token(logits: torch.Tensor, settings: GenerationConfig, generator: torch.Generator | None) -> int:
    """``logits [V]`` -> the next id: argmax when greedy, else a sample at ``settings.temperature``."""
    if settings.temperature == 0.0:
        return int(logits.argmax())
    probabilities = torch.softmax(logits.float() / settings.temperature, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


@torch.inference_mode()
def generate_answer(
    model: VideoLisaForSegmentation,
    input_ids: torch.Tensor,
    video_tokens: torch.Tensor,
    stop_token_ids: Sequence[int],
    settings: GenerationConfig = GenerationConfig(),
) -> GeneratedAnswer:
    """Generate the answer to one conversation and the SAM prompt of every ``[SEG]`` in it.

    Args:
        model: the VideoLISA model.
        input_ids: ``[L]`` prompt ids ending where the answer starts, with one ``config.image_token_index``.
        video_tokens: ``[1, N_vis, D]`` Sparse-Dense tokens of the video.
        stop_token_ids: ids that end the answer (end of turn, end of text).
        settings: :class:`GenerationConfig`.

    Returns:
        :class:`GeneratedAnswer`; its prompts equal ``model.compute_prompts`` of the prompt ids followed by the
        generated ids (teacher forcing of the same sequence).
    """
    config = model.config
    ids = input_ids.reshape(1, -1).to(video_tokens.device)
    embedding = model.llm.get_input_embeddings()
    decoder, head = model.llm.get_decoder(), model.llm.get_output_embeddings()
    spliced = splice_video_tokens(
        ids,
        embedding(ids.masked_fill(ids == config.image_token_index, 0)),
        video_tokens.to(embedding.weight.dtype),
        config.image_token_index,
    )
    output = decoder(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, use_cache=True)
    hidden, cache = [output.last_hidden_state], output.cache
    generator = None
    if settings.seed is not None and settings.temperature > 0.0:
        generator = torch.Generator(device=ids.device).manual_seed(settings.seed)
    stops, generated = {int(i) for i in stop_token_ids}, []
    # Every generated token is fed back once, so that each has its own hidden state (a read offset of 0
    # reads the [SEG] position itself).
    while len(generated) < settings.max_new_tokens:
        token = _next_token(head(hidden[-1][0, -1]), settings, generator)
        if token in stops:
            break
        generated.append(token)
        step = torch.tensor([[token]], device=ids.device)
        output = decoder(inputs_embeds=embedding(step), cache=cache, use_cache=True)
        hidden.append(output.last_hidden_state)
        cache = output.cache
    generated_ids = torch.tensor(generated, dtype=torch.long, device=ids.device)
    batch_index, positions = find_seg_read_positions(
        torch.cat([ids, generated_ids[None]], dim=1),
        config.seg_token_id,
        config.image_token_index,
        video_tokens.shape[1],
        config.seg_hidden_offset,
    )
    seg_hidden = extract_trk_embeddings(torch.cat(hidden, dim=1), batch_index, positions)
    return GeneratedAnswer(generated_ids.cpu(), model.prompt_head(seg_hidden), seg_hidden)


def format_answer(
    tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int], seg_token_id: int
) -> tuple[str, list[str | None]]:
    """The answer text with the k-th ``[SEG]`` shown as ``[SEGk]``, and the phrase attached to each.

    The phrase of a ``[SEG]`` is the text since the last clause boundary (``. , ; : ! ?`` or a newline, or the
    previous ``[SEG]``) before it, without leading filler ("and", "sure", "it is"...); when nothing is left, the
    text after it up to the next boundary (answers that name the object after the token, like the built-in
    model's ``"Sure, [SEG] blue large star."``); None when that is empty too: ``"Sure, [SEG]."`` ->
    ``("Sure, [SEG1].", [None])``; ``"the red circle [SEG] and the blue square [SEG]."`` -> phrases
    ``["the red circle", "the blue square"]``.
    """
    pieces: list[list[int]] = [[]]
    for token in token_ids:
        if int(token) == seg_token_id:
            pieces.append([])
        else:
            pieces[-1].append(int(token))
    return number_segments([tokenizer.decode(piece, skip_special_tokens=True) for piece in pieces])


def number_segments(texts: Sequence[str]) -> tuple[str, list[str | None]]:
    """Join the answer's text pieces between ``[SEG]`` tokens as ``piece0[SEG1]piece1[SEG2]...`` and return the
    phrase of each ``[SEG]`` (see :func:`format_answer`); ``answer.split("[SEG]")`` gives the pieces of a
    teacher-forced answer."""
    answer = "".join(f"{text}[SEG{k}]" for k, text in enumerate(texts[:-1], start=1)) + texts[-1]
    phrases = [_phrase(before, -1) or _phrase(after, 0) for before, after in zip(texts[:-1], texts[1:])]
    return answer.strip(), phrases


def _phrase(text: str, clause_index: int) -> str | None:
    """The clause ``clause_index`` (-1: last, 0: first) of ``text`` without leading filler, or None."""
    clause = _CLAUSE_BOUNDARY.split(text)[clause_index].strip()
    while (stripped := _FILLER.sub("", clause)) != clause:
        clause = stripped.strip()
    return clause or None
