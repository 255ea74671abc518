"""Chat templates and the question/answer templates of the original VideoLISA (docs/original.md §3.3, §4.6).

The released model was trained with the Phi-3 chat format (``phi3_instruct`` in the original
``model/llava/conversation.py``, MPT separator style; shown here on two lines, ``\\n`` is a newline)::

    <|system|>\\nYou are a helpful AI assistant.<|end|>\\n
    <|user|>\\n<image>\\n{query}<|end|>\\n<|assistant|>\\n{answer}<|end|>

The answer containing the segmentation token is written into the prompt (teacher forcing): inference
is a single forward pass, no text is generated (the default; ``videolisa.generation`` generates the answer).
"""

from __future__ import annotations

from dataclasses import dataclass

from videolisa.constants import DEFAULT_SEG_TOKEN, VIDEO_PLACEHOLDER
from videolisa.errors import InvalidInputError


@dataclass(frozen=True)
class ChatTemplate:
    """A single-turn-or-more chat format: ``system + sep + (role + message + sep)*``."""

    system: str
    user_role: str
    assistant_role: str
    separator: str

    def render(self, turns: list[tuple[str, str]]) -> str:
        """Render ``[(role, message), ...]`` with role in {"user", "assistant"} into one prompt string."""
        roles = {"user": self.user_role, "assistant": self.assistant_role}
        parts = [self.system + self.separator]
        for role, message in turns:
            if role not in roles:
                raise ValueError(f"conversation role must be 'user' or 'assistant', got {role!r}")
            parts.append(roles[role] + message + self.separator)
        return "".join(parts)


CHAT_TEMPLATES: dict[str, ChatTemplate] = {
    "phi3_instruct": ChatTemplate(
        system="<|system|>\nYou are a helpful AI assistant.",
        user_role="\n<|user|>\n",
        assistant_role="\n<|assistant|>\n",
        separator="<|end|>",
    ),
}

# Templates of the original utils/utils.py (docs/original.md §4.6), used by the training data. {class_name} / {sent}
# are filled with the referring phrase / reasoning sentence.
SHORT_QUESTION_TEMPLATES = (
    VIDEO_PLACEHOLDER + "\nCan you segment the {class_name} in this image?",
    VIDEO_PLACEHOLDER + "\nPlease segment the {class_name} in this image.",
    VIDEO_PLACEHOLDER + "\nWhat is {class_name} in this image? Please respond with segmentation mask.",
    VIDEO_PLACEHOLDER + "\nWhat is {class_name} in this image? Please output segmentation mask.",
)
LONG_QUESTION_TEMPLATES = (
    VIDEO_PLACEHOLDER + "\n{sent} Please respond with segmentation mask.",
    VIDEO_PLACEHOLDER + "\n{sent} Please output segmentation mask.",
)
EXPLANATORY_QUESTION_TEMPLATES = (
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
)
ANSWER_TEMPLATES = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)


def build_prompt(query: str, answer: str, template: str = "phi3_instruct", seg_token: str = DEFAULT_SEG_TOKEN) -> str:
    """Render the single-turn prompt ``<image>\\n{query}`` -> ``{answer}`` in the chat format.

    ``query`` is the user text that follows the video (e.g. ``"Please segment the red ball in this scene."``);
    ``answer`` must contain the segmentation token (``"Sure, [SEG]."``). ``[SEG]`` in the answer is
    replaced by ``seg_token`` when the model uses another spelling.
    """
    if not query or not query.strip():
        raise InvalidInputError("the instruction is empty: give a text describing what to segment")
    if VIDEO_PLACEHOLDER in query:
        raise InvalidInputError(f"the instruction must not contain the video placeholder {VIDEO_PLACEHOLDER!r}")
    if DEFAULT_SEG_TOKEN not in answer and seg_token not in answer:
        raise InvalidInputError(f"the answer {answer!r} must contain the segmentation token {seg_token!r}")
    answer = answer.replace(DEFAULT_SEG_TOKEN, seg_token)
    return render_conversation([("user", f"{VIDEO_PLACEHOLDER}\n{query}"), ("assistant", answer)], template)


def build_generation_prompt(query: str, template: str = "phi3_instruct") -> str:
    """The single-turn prompt ``<image>\\n{query}`` up to where the assistant's answer starts (generation mode:
    the model writes the answer, :mod:`videolisa.generation`)."""
    question = render_conversation([("user", f"{VIDEO_PLACEHOLDER}\n{query}")], template)
    return question + CHAT_TEMPLATES[template].assistant_role


def render_conversation(turns: list[tuple[str, str]], template: str = "phi3_instruct") -> str:
    """Render a multi-turn conversation; the first user message should start with ``<image>\\n``."""
    if template not in CHAT_TEMPLATES:
        raise ValueError(f"chat_template must be one of {list(CHAT_TEMPLATES)}, got {template!r}")
    return CHAT_TEMPLATES[template].render(turns)


def assistant_prefix(template: str = "phi3_instruct") -> str:
    """The text that precedes every assistant message (``<|end|>\\n<|assistant|>\\n`` for Phi-3)."""
    chat = CHAT_TEMPLATES[template]
    return chat.separator + chat.assistant_role
