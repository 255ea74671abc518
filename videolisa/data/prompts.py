"""Training questions and answers from the original templates (docs/original.md §4.6), drawn with a numpy Generator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from videolisa.constants import DEFAULT_SEG_TOKEN, VIDEO_PLACEHOLDER
from videolisa.data.sample import Conversation
from videolisa.processing.conversation import (
    ANSWER_TEMPLATES,
    EXPLANATORY_QUESTION_TEMPLATES,
    LONG_QUESTION_TEMPLATES,
    SHORT_QUESTION_TEMPLATES,
)


def choose(options: Sequence[str], rng: np.random.Generator) -> str:
    """One of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]


def short_question(phrase: str, rng: np.random.Generator) -> str:
    """A SHORT question about a phrase (class name or referring expression), e.g.
    ``"<image>\\nPlease segment the red car in this image."``. The caller decides the casing."""
    return choose(SHORT_QUESTION_TEMPLATES, rng).format(class_name=phrase)


def long_question(sentence: str, rng: np.random.Generator) -> str:
    """A LONG question about a reasoning sentence: ``"<image>\\n{sentence} Please output segmentation mask."``."""
    return choose(LONG_QUESTION_TEMPLATES, rng).format(sent=sentence)


def explanatory_question(text: str, rng: np.random.Generator) -> str:
    """The ReasonSeg question asking for a mask and an explanation: ``"<image>\\n{text} Please output
    segmentation mask and explain why."`` (one of three endings)."""
    return f"{VIDEO_PLACEHOLDER}\n{text} {choose(EXPLANATORY_QUESTION_TEMPLATES, rng)}"


def seg_answer(rng: np.random.Generator, seg_token: str = DEFAULT_SEG_TOKEN) -> str:
    """One of the answers with the segmentation token (``"Sure, [SEG]."`` ...), spelled ``seg_token``."""
    return choose(ANSWER_TEMPLATES, rng).replace(DEFAULT_SEG_TOKEN, seg_token)


def single_turn(question: str, answer: str) -> Conversation:
    """``[("user", question), ("assistant", answer)]``."""
    return [("user", question), ("assistant", answer)]


def segmentation_conversation(
    question: str, rng: np.random.Generator, seg_token: str = DEFAULT_SEG_TOKEN
) -> Conversation:
    """A question followed by a random segmentation answer."""
    return single_turn(question, seg_answer(rng, seg_token))
