"""Tokenizers: chunk-wise tokenization around the video placeholder, the ``[SEG]`` token, and the
in-memory tokenizer of the tiny preset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from videolisa.constants import DEFAULT_SEG_TOKEN, IMAGE_TOKEN_INDEX, VIDEO_PLACEHOLDER

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Specials of the tiny tokenizer, spelled like Phi-3's so the same chat template applies.
_TINY_SPECIAL_TOKENS = ("<unk>", "<s>", "<|endoftext|>", "<|system|>", "<|end|>", "<|user|>", "<|assistant|>")
_TINY_VOCAB_SIZE = 480

# A fixed corpus for the tiny tokenizer's BPE merges: the chat/question/answer templates and the words of the
# synthetic data generator. Training on a fixed corpus is deterministic, so the ids are stable.
_TINY_CORPUS = (
    "You are a helpful AI assistant.",
    "Please segment the {} in this scene. Please segment the {} in this image. Can you segment the {} in this image?",
    "What is {} in this image? Please respond with segmentation mask. Please output segmentation mask.",
    "What is {} in this video? Please output the segmentation masks. Please output segmentation mask and explain why.",
    "It is. Sure, it is. Sure, the segmentation result is. Sure,",
    "the red green blue yellow orange purple cyan magenta white black gray pink brown",
    "circle square triangle star diamond ball shape object one that which",
    "small large big tiny moving left right up down stops halfway appears last first leaves enters frame edge",
    "would reach first segment it the shape moving to the left the object that appears last",
    "the person the dog the cat the car the animal that gets scared and jumps",
)


def build_tiny_tokenizer(seg_token: str = DEFAULT_SEG_TOKEN) -> PreTrainedTokenizerBase:
    """Build the tiny preset's tokenizer in memory (no download): byte-level BPE with Phi-3-style specials.

    Ids: 0 ``<unk>`` (also pad), 1 ``<s>`` (BOS, prepended like Llama), 2 ``<|endoftext|>`` (EOS), 3-6 chat
    specials, then bytes and merges; ``seg_token`` is added last as a normal (non-special) token, like the
    original's ``tokenizer.add_tokens("[SEG]")``. Any text can be encoded (byte fallback).
    """
    return train_bpe_tokenizer(template_corpus() * 4, _TINY_VOCAB_SIZE, seg_token)


def train_bpe_tokenizer(
    corpus: Iterable[str], vocab_size: int, seg_token: str = DEFAULT_SEG_TOKEN
) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer trained on ``corpus`` with at most ``vocab_size`` tokens (fewer when the corpus
    has no more merges to offer), the specials and ids of :func:`build_tiny_tokenizer`, ``seg_token`` added last.

    Deterministic for a given corpus. A corpus of a small closed world (the synthetic generator's instructions
    and answers) with a large enough ``vocab_size`` gives every word one token, so a from-scratch LLM copies and
    names words as single tokens (the built-in model's recipe, ``train/builtin_recipe.py``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus), trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<unk>",
        padding_side="right",
        model_max_length=512,
    )
    tokenizer.add_tokens([seg_token])
    return tokenizer


def template_corpus() -> list[str]:
    """The chat, question and answer templates (and a few generic words) the tiny tokenizer is trained on, with
    ``{}`` filled: a corpus to extend with one's own texts for :func:`train_bpe_tokenizer`."""
    return [line.replace("{}", "thing") for line in _TINY_CORPUS]


def seg_token_id(tokenizer: PreTrainedTokenizerBase, seg_token: str = DEFAULT_SEG_TOKEN) -> int:
    """Id of the segmentation token; the last id of its encoding, like the original (a SentencePiece
    tokenizer may emit a word-boundary piece first). Raises ``ValueError`` if the tokenizer lacks it."""
    if seg_token not in tokenizer.get_vocab():
        raise ValueError(
            f"the tokenizer has no {seg_token!r} token; add it with videolisa.tokenization.add_seg_token()"
        )
    return tokenizer(seg_token, add_special_tokens=False).input_ids[-1]


def add_seg_token(tokenizer: PreTrainedTokenizerBase, seg_token: str = DEFAULT_SEG_TOKEN) -> int:
    """Add the segmentation token as a normal added token if missing (the original ``add_tokens``) and
    return its id. The model's embeddings must then be resized to ``len(tokenizer)``."""
    if seg_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([seg_token])
    return seg_token_id(tokenizer, seg_token)


def tokenize_with_video_placeholder(
    tokenizer: PreTrainedTokenizerBase, prompt: str, image_token_index: int = IMAGE_TOKEN_INDEX
) -> list[int]:
    """Tokenize ``prompt`` chunk-wise around ``<image>``, inserting ``image_token_index`` for each placeholder.

    Exactly the original ``tokenizer_image_token`` (docs/original.md §1.3): every chunk is tokenized on its own (each
    gets a BOS), one BOS is kept at the very front and stripped from later chunks. Chunk-wise tokenization
    matters for exact ids because SentencePiece restarts at every chunk.

    Example: ``"<s>"`` = 1, ``"A<image>B"`` -> ``[1, id("A"), -200, id("B")]``.
    """
    # verbose=False: no "sequence length is longer than the maximum" warning from transformers; callers check
    # the length against the model's context themselves and raise a clear error.
    chunks = [tokenizer(chunk, verbose=False).input_ids for chunk in prompt.split(VIDEO_PLACEHOLDER)]
    bos = tokenizer.bos_token_id
    keeps_bos = bool(chunks and chunks[0] and bos is not None and chunks[0][0] == bos)
    offset = 1 if keeps_bos else 0
    input_ids: list[int] = [bos] if keeps_bos else []
    for index, chunk in enumerate(chunks):
        if index > 0:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[offset:])
    return input_ids
