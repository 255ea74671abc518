"""Constants shared by the model, the processor and the training data.

Values marked "original" must match the released VideoLISA code so the released weights behave as
published (see docs/original.md).
"""

from __future__ import annotations

# Sentinel id that marks where the video tokens go in a tokenized conversation (original LLaVA).
IMAGE_TOKEN_INDEX = -200
# Label value ignored by the cross-entropy loss.
IGNORE_INDEX = -100
# Placeholder text in a prompt that becomes IMAGE_TOKEN_INDEX.
VIDEO_PLACEHOLDER = "<image>"
# The segmentation token. The paper calls it <TRK>; the released tokenizer spells it [SEG] (id 32011).
DEFAULT_SEG_TOKEN = "[SEG]"
DEFAULT_SEG_TOKEN_ID = 32011

# OpenAI CLIP normalisation (openai/clip-vit-large-patch14-336 preprocessor config), 0-1 scale.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# SAM normalisation on the 0-255 scale.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

# Default sizes of the released model.
CLIP_IMAGE_SIZE = 336
SAM_IMAGE_SIZE = 1024
NUM_FRAMES_SPARSE = 32
NUM_FRAMES_DENSE = 4
# Binarisation threshold on mask logits (strictly greater than).
MASK_LOGIT_THRESHOLD = 0.0

# Default answer written into the prompt at inference (teacher forcing, no generation).
DEFAULT_ANSWER = "Sure, [SEG]."
