"""Configuration of a VideoLISA model: the single source of truth for every number.

A :class:`VideoLisaConfig` is saved next to every checkpoint (``config.json``). The predictor, the
evaluation, the training recipe and the demo read sampling, token ids and sizes from it.

Presets:

* ``"videolisa-3.8b"``: the released ``ZechenBai/VideoLISA-3.8B`` shapes (Phi-3-mini 3072 x 32 layers,
  vocab 32012; CLIP ViT-L/14-336; SAM ViT-H).
* ``"tiny"``: the same architecture and code paths at toy sizes (seconds per forward+backward on CPU),
  for tests; it pairs with the in-memory tokenizer of :mod:`videolisa.tokenization`.
* ``"synthetic"``: a small model for CPU training from scratch on synthetic shapes (``builtin:synthetic``);
  same tokenizer as ``"tiny"``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from transformers import AutoConfig, CLIPVisionConfig, PretrainedConfig

from videolisa.constants import (
    DEFAULT_SEG_TOKEN,
    DEFAULT_SEG_TOKEN_ID,
    IMAGE_TOKEN_INDEX,
    NUM_FRAMES_DENSE,
    NUM_FRAMES_SPARSE,
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
)

PROJECTOR_TYPES = ("mlp2x_gelu",)
VISION_FEATURE_SELECTS = ("patch",)
CHAT_TEMPLATES = ("phi3_instruct",)
SAM_VARIANTS = ("vit_h", "vit_l", "vit_b", "tiny", "custom")


@dataclass
class SamConfig:
    """Dimensions of the Segment Anything model (image encoder, prompt encoder, mask decoder).

    The defaults are SAM ViT-H as built by ``segment_anything.build_sam_vit_h``. ``prompt_embed_dim`` is
    also the size of the segmentation prompt produced from the ``[SEG]`` hidden state.
    """

    variant: str = "vit_h"
    image_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 1280
    encoder_depth: int = 32
    encoder_num_heads: int = 16
    encoder_global_attn_indexes: list[int] = field(default_factory=lambda: [7, 15, 23, 31])
    encoder_window_size: int = 14
    encoder_mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    decoder_attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: list[float] = field(default_factory=lambda: list(SAM_PIXEL_MEAN))
    pixel_std: list[float] = field(default_factory=lambda: list(SAM_PIXEL_STD))

    @property
    def image_embedding_size(self) -> int:
        """Side of the square image-embedding grid (64 for a 1024 input with patch 16)."""
        return self.image_size // self.patch_size

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        _check_choice("sam_config.variant", self.variant, SAM_VARIANTS)
        for name in (
            "image_size",
            "patch_size",
            "encoder_embed_dim",
            "encoder_depth",
            "encoder_num_heads",
            "encoder_window_size",
            "prompt_embed_dim",
            "decoder_depth",
            "decoder_mlp_dim",
            "decoder_num_heads",
            "iou_head_depth",
            "iou_head_hidden_dim",
        ):
            _check_positive(f"sam_config.{name}", getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(
                f"sam_config.image_size ({self.image_size}) must be a multiple of sam_config.patch_size "
                f"({self.patch_size})"
            )
        if self.encoder_embed_dim % self.encoder_num_heads:
            raise ValueError(
                f"sam_config.encoder_embed_dim ({self.encoder_embed_dim}) must be divisible by "
                f"sam_config.encoder_num_heads ({self.encoder_num_heads})"
            )
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            raise ValueError(
                f"sam_config.encoder_global_attn_indexes has {bad}; allowed: block indexes 0..{self.encoder_depth - 1}"
            )
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3:
            raise ValueError("sam_config.pixel_mean and sam_config.pixel_std must have 3 values (R, G, B)")

    @classmethod
    def from_variant(cls, variant: str, **overrides: Any) -> SamConfig:
        """Stock dimensions of ``vit_h``, ``vit_l``, ``vit_b`` or ``tiny``, with optional overrides."""
        _check_choice("sam_config.variant", variant, tuple(SAM_ENCODER_VARIANTS))
        return cls.from_dict({**SAM_ENCODER_VARIANTS[variant], **overrides, "variant": variant})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamConfig:
        """Build from a dict (as stored in ``config.json``); unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"sam_config has unknown fields {unknown}; allowed: {sorted(known)}")
        config = cls(**values)
        config.validate()
        return config


# Image-encoder dimensions of the stock SAM models (segment_anything/build_sam.py) and of the tiny test
# variant. The tiny one keeps every code path (windowed + global blocks, rel-pos, neck) at toy sizes.
SAM_ENCODER_VARIANTS: dict[str, dict[str, Any]] = {
    "vit_h": dict(
        encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=[7, 15, 23, 31]
    ),
    "vit_l": dict(
        encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=[5, 11, 17, 23]
    ),
    "vit_b": dict(
        encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=[2, 5, 8, 11]
    ),
    "tiny": dict(
        image_size=256,
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=[1],
        encoder_window_size=4,
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
    ),
}


class VideoLisaConfig(PretrainedConfig):
    """Configuration of :class:`videolisa.modeling.videolisa.VideoLisaForSegmentation`.

    Args:
        text_config: config of the causal LM (any Hugging Face causal-LM config; Phi-3 for the release).
            Note: its ``sliding_window`` uses transformers-5 semantics (a query attends to
            ``sliding_window`` keys including itself); the original's 2047 is 2048 here.
        vision_config: CLIP vision tower config (``CLIPVisionConfig``).
        sam_config: :class:`SamConfig` fields as a dict.
        vision_tower_name: where the CLIP weights come from when a checkpoint carries none (HF id or dir).
        vision_feature_layer: CLIP hidden-state index used as features (-2: output of the second-to-last block).
        vision_feature_select: ``"patch"`` drops the CLS token.
        projector_type: ``"mlp2x_gelu"``: Linear(clip, llm) -> GELU -> Linear(llm, llm).
        num_frames_sparse / num_frames_dense: Sparse-Dense Sampling sizes (32 / 4 for the release).
        seg_token / seg_token_id: the segmentation token (``[SEG]``, id 32011 in the released tokenizer; the
            paper calls it ``<TRK>``).
        seg_hidden_offset: position of the hidden state read for a ``[SEG]`` token, relative to the token
            (-1: the position before it, whose LM output predicts ``[SEG]``, as the original code does).
        image_token_index: sentinel id marking where the video tokens go in ``input_ids``.
        chat_template: conversation format (``"phi3_instruct"``).
        model_max_length: tokenizer context used to reject over-long instructions.
        ce_loss_weight / bce_loss_weight / dice_loss_weight: loss weights (1.0 / 2.0 / 0.5).
        dice_scale / dice_eps: constants of the original DICE loss (1000, 1e-6).
    """

    model_type = "videolisa"
    sub_configs = {"text_config": AutoConfig, "vision_config": CLIPVisionConfig}

    def __init__(
        self,
        text_config: dict[str, Any] | PretrainedConfig | None = None,
        vision_config: dict[str, Any] | CLIPVisionConfig | None = None,
        sam_config: dict[str, Any] | SamConfig | None = None,
        vision_tower_name: str = "openai/clip-vit-large-patch14-336",
        vision_feature_layer: int = -2,
        vision_feature_select: str = "patch",
        projector_type: str = "mlp2x_gelu",
        num_frames_sparse: int = NUM_FRAMES_SPARSE,
        num_frames_dense: int = NUM_FRAMES_DENSE,
        seg_token: str = DEFAULT_SEG_TOKEN,
        seg_token_id: int = DEFAULT_SEG_TOKEN_ID,
        seg_hidden_offset: int = -1,
        image_token_index: int = IMAGE_TOKEN_INDEX,
        chat_template: str = "phi3_instruct",
        model_max_length: int = 2048,
        ce_loss_weight: float = 1.0,
        bce_loss_weight: float = 2.0,
        dice_loss_weight: float = 0.5,
        dice_scale: float = 1000.0,
        dice_eps: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        self.text_config = _build_text_config(text_config)
        self.vision_config = _build_vision_config(vision_config)
        self.sam_config = _sam_config_dict(sam_config)
        self.vision_tower_name = vision_tower_name
        self.vision_feature_layer = vision_feature_layer
        self.vision_feature_select = vision_feature_select
        self.projector_type = projector_type
        self.num_frames_sparse = num_frames_sparse
        self.num_frames_dense = num_frames_dense
        self.seg_token = seg_token
        self.seg_token_id = seg_token_id
        self.seg_hidden_offset = seg_hidden_offset
        self.image_token_index = image_token_index
        self.chat_template = chat_template
        self.model_max_length = model_max_length
        self.ce_loss_weight = ce_loss_weight
        self.bce_loss_weight = bce_loss_weight
        self.dice_loss_weight = dice_loss_weight
        self.dice_scale = dice_scale
        self.dice_eps = dice_eps
        super().__init__(**kwargs)
        self.validate_values()

    # ------------------------------------------------------------------ derived values
    @property
    def sam(self) -> SamConfig:
        """The SAM dimensions as a :class:`SamConfig`."""
        return SamConfig.from_dict(self.sam_config)

    @property
    def clip_image_size(self) -> int:
        """CLIP input side (336 for ViT-L/14-336)."""
        return int(self.vision_config.image_size)

    @property
    def tokens_per_frame(self) -> int:
        """Projected CLIP tokens per frame with the CLS token dropped (576 for 336 / 14)."""
        return (self.vision_config.image_size // self.vision_config.patch_size) ** 2

    @property
    def num_video_tokens(self) -> int:
        """Visual tokens replacing one placeholder: T_sparse + T_dense x tokens_per_frame (2336 for 32/4)."""
        return self.num_frames_sparse + self.num_frames_dense * self.tokens_per_frame

    @property
    def llm_hidden_size(self) -> int:
        """Hidden size of the language model."""
        return int(self.text_config.hidden_size)

    # ------------------------------------------------------------------ validation
    def validate_values(self) -> None:
        """Raise ``ValueError`` naming the first invalid field and the allowed values."""
        _check_choice("projector_type", self.projector_type, PROJECTOR_TYPES)
        _check_choice("vision_feature_select", self.vision_feature_select, VISION_FEATURE_SELECTS)
        _check_choice("chat_template", self.chat_template, CHAT_TEMPLATES)
        _check_positive("num_frames_sparse", self.num_frames_sparse)
        _check_positive("num_frames_dense", self.num_frames_dense)
        _check_positive("model_max_length", self.model_max_length)
        if self.num_frames_dense > self.num_frames_sparse:
            raise ValueError(
                f"num_frames_dense ({self.num_frames_dense}) must be <= num_frames_sparse "
                f"({self.num_frames_sparse}): dense frames are a subset of the sparse ones"
            )
        if not isinstance(self.seg_token, str) or not self.seg_token.strip():
            raise ValueError(f"seg_token must be a non-empty string, got {self.seg_token!r}")
        if self.seg_token_id < 0:
            raise ValueError(f"seg_token_id must be >= 0, got {self.seg_token_id}")
        if self.seg_hidden_offset > 0:
            raise ValueError(
                f"seg_hidden_offset must be <= 0 (the read position cannot follow the token), got "
                f"{self.seg_hidden_offset}"
            )
        if self.image_token_index >= 0:
            raise ValueError(f"image_token_index must be negative (a sentinel), got {self.image_token_index}")
        num_layers = self.vision_config.num_hidden_layers
        if not -num_layers - 1 <= self.vision_feature_layer <= num_layers:
            raise ValueError(
                f"vision_feature_layer ({self.vision_feature_layer}) must index the CLIP hidden states "
                f"({-num_layers - 1}..{num_layers})"
            )
        for name in ("ce_loss_weight", "bce_loss_weight", "dice_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.seg_token_id >= self.text_config.vocab_size:
            raise ValueError(
                f"seg_token_id ({self.seg_token_id}) must be < text_config.vocab_size ({self.text_config.vocab_size})"
            )
        self.sam.validate()

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VideoLisaConfig:
        """Build a preset config (``"videolisa-3.8b"`` or ``"tiny"``), with keyword overrides.

        ``text_config``, ``vision_config`` and ``sam_config`` overrides are dicts merged into the preset's.
        """
        _check_choice("preset", name, tuple(PRESETS))
        values = copy.deepcopy(PRESETS[name])
        for key in ("text_config", "vision_config", "sam_config"):
            if key in overrides:
                values[key] = {**values[key], **overrides.pop(key)}
        values.update(overrides)
        return cls(**values)


def _check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _build_text_config(text_config: dict[str, Any] | PretrainedConfig | None) -> PretrainedConfig:
    if text_config is None:
        text_config = copy.deepcopy(PRESETS["videolisa-3.8b"]["text_config"])
    if isinstance(text_config, PretrainedConfig):
        return text_config
    values = dict(text_config)
    model_type = values.pop("model_type", None)
    if model_type is None:
        raise ValueError("text_config needs a 'model_type' (e.g. 'phi3'), naming a Hugging Face causal-LM config")
    return AutoConfig.for_model(model_type, **values)


def _build_vision_config(vision_config: dict[str, Any] | CLIPVisionConfig | None) -> CLIPVisionConfig:
    if vision_config is None:
        vision_config = copy.deepcopy(PRESETS["videolisa-3.8b"]["vision_config"])
    if isinstance(vision_config, CLIPVisionConfig):
        return vision_config
    values = {k: v for k, v in vision_config.items() if k != "model_type"}
    return CLIPVisionConfig(**values)


def _sam_config_dict(sam_config: dict[str, Any] | SamConfig | None) -> dict[str, Any]:
    if sam_config is None:
        return asdict(SamConfig())
    if isinstance(sam_config, SamConfig):
        sam_config.validate()
        return asdict(sam_config)
    values = dict(sam_config)
    variant = values.pop("variant", "vit_h")
    if variant in SAM_ENCODER_VARIANTS:
        return asdict(SamConfig.from_variant(variant, **values))
    return asdict(SamConfig.from_dict({**values, "variant": variant}))


# Phi-3-mini as fine-tuned in LLaVA-Phi-3-mini and VideoLISA-3.8B (docs/original.md §1.2). The original config's
# sliding_window 2047 (transformers 4.41: keys i-2047..i) is 2048 in transformers-5 semantics.
_PHI3_MINI = dict(
    model_type="phi3",
    hidden_size=3072,
    intermediate_size=8192,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32012,
    max_position_embeddings=4096,
    original_max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    sliding_window=2048,
    hidden_act="silu",
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=32000,
    pad_token_id=0,
    attention_dropout=0.0,
    embd_pdrop=0.0,
    resid_pdrop=0.0,
    use_cache=False,
)
_CLIP_VIT_L_336 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)

PRESETS: dict[str, dict[str, Any]] = {
    "videolisa-3.8b": dict(
        text_config=_PHI3_MINI,
        vision_config=_CLIP_VIT_L_336,
        sam_config={"variant": "vit_h"},
        vision_tower_name="openai/clip-vit-large-patch14-336",
    ),
    # Toy sizes, same code paths: a 2-layer Phi-3 whose sliding window (96) is shorter than a tiny sequence
    # (32 + 4 x 16 visual tokens + text), CLIP 56/14 (16 tokens per frame), SAM 256 input with windowed and
    # global blocks. The vocabulary matches videolisa.tokenization.build_tiny_tokenizer().
    "tiny": dict(
        text_config=dict(
            _PHI3_MINI,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=512,
            sliding_window=96,
            eos_token_id=2,
        ),
        vision_config=dict(
            _CLIP_VIT_L_336,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=56,
            projection_dim=32,
        ),
        sam_config={"variant": "tiny"},
        vision_tower_name="",
        seg_token_id=480,
        model_max_length=512,
    ),
    # The small model trained from scratch on synthetic shapes (train/builtin_recipe.py, shipped as
    # builtin:synthetic): sizes chosen so that its staged recipe fits in an hour on 2 CPU cores. 16 sparse + 4 dense
    # frames of 16 CLIP tokens; SAM at 128 px with patch 8 (a 16x16 embedding grid, 64x64 low-res masks).
    "synthetic": dict(
        text_config=dict(
            _PHI3_MINI,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=512,
            sliding_window=4096,
            eos_token_id=2,
        ),
        vision_config=dict(
            _CLIP_VIT_L_336,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=64,
            patch_size=16,
            projection_dim=64,
        ),
        sam_config=dict(
            variant="custom",
            image_size=128,
            patch_size=8,
            encoder_embed_dim=64,
            encoder_depth=4,
            encoder_num_heads=4,
            encoder_global_attn_indexes=[1, 3],
            encoder_window_size=8,
            prompt_embed_dim=64,
            decoder_mlp_dim=256,
            decoder_num_heads=4,
            iou_head_hidden_dim=64,
        ),
        vision_tower_name="",
        vision_feature_layer=-1,
        num_frames_sparse=16,
        num_frames_dense=4,
        seg_token_id=480,
        model_max_length=512,
    ),
}


# Let AutoConfig (used e.g. by AutoTokenizer on a model directory) recognise this package's config.json.
AutoConfig.register(VideoLisaConfig.model_type, VideoLisaConfig, exist_ok=True)
