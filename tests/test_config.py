"""Tests of videolisa.config: presets, overrides, validation errors, save/load round trip, derived sizes."""

from __future__ import annotations

import json

import pytest
from transformers import CLIPVisionConfig, Phi3Config

from videolisa.config import PRESETS, SamConfig, VideoLisaConfig


def test_release_preset_has_the_released_shapes():
    config = VideoLisaConfig.from_preset("videolisa-3.8b")
    text = config.text_config
    assert isinstance(text, Phi3Config)
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (3072, 8192, 32)
    assert (text.num_attention_heads, text.num_key_value_heads, text.vocab_size) == (32, 32, 32012)
    # Original 2047 (transformers 4.41: keys i-2047..i) is 2048 keys including the query in transformers 5.
    assert text.sliding_window == 2048
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (1, 32000, 0)
    assert text.tie_word_embeddings is False
    vision = config.vision_config
    assert isinstance(vision, CLIPVisionConfig)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size, vision.patch_size) == (1024, 24, 336, 14)
    sam = config.sam
    assert (sam.variant, sam.encoder_embed_dim, sam.encoder_depth, sam.encoder_num_heads) == ("vit_h", 1280, 32, 16)
    assert sam.encoder_global_attn_indexes == [7, 15, 23, 31]
    assert (sam.prompt_embed_dim, sam.image_embedding_size) == (256, 64)
    assert (config.seg_token, config.seg_token_id, config.image_token_index) == ("[SEG]", 32011, -200)
    assert (config.num_frames_sparse, config.num_frames_dense) == (32, 4)
    assert (config.ce_loss_weight, config.bce_loss_weight, config.dice_loss_weight) == (1.0, 2.0, 0.5)
    assert (config.dice_scale, config.dice_eps) == (1000.0, 1e-6)
    assert config.vision_tower_name == "openai/clip-vit-large-patch14-336"
    assert config.vision_feature_layer == -2


def test_tiny_preset_builds_with_a_window_shorter_than_its_sequences(tiny_config):
    config = tiny_config
    assert config.llm_hidden_size == 64
    assert config.seg_token_id < config.text_config.vocab_size
    assert config.sam.variant == "tiny"
    # The tiny preset must exercise the sliding window: the video tokens alone fill it.
    assert config.text_config.sliding_window <= config.num_video_tokens


def test_num_video_tokens_counts_sparse_plus_dense():
    release = VideoLisaConfig.from_preset("videolisa-3.8b")
    assert release.tokens_per_frame == 576
    assert release.num_video_tokens == 32 + 4 * 576 == 2336
    tiny = VideoLisaConfig.from_preset("tiny")
    assert tiny.tokens_per_frame == (56 // 14) ** 2 == 16
    assert tiny.num_video_tokens == 32 + 4 * 16


def test_from_preset_applies_keyword_overrides():
    config = VideoLisaConfig.from_preset("tiny", num_frames_dense=2, dice_loss_weight=0.25)
    assert config.num_frames_dense == 2
    assert config.dice_loss_weight == 0.25
    assert config.num_video_tokens == 32 + 2 * 16


def test_from_preset_merges_nested_overrides_into_the_preset():
    config = VideoLisaConfig.from_preset(
        "tiny",
        text_config={"num_hidden_layers": 3},
        vision_config={"num_hidden_layers": 3},
        sam_config={"encoder_depth": 3},
    )
    assert isinstance(config.text_config, Phi3Config)
    assert config.text_config.num_hidden_layers == 3
    assert config.text_config.hidden_size == 64  # the rest of the preset's text config is kept
    assert config.text_config.vocab_size == 512
    assert config.vision_config.num_hidden_layers == 3
    assert config.vision_config.hidden_size == 32
    assert config.sam.encoder_depth == 3
    assert config.sam.encoder_embed_dim == 32  # tiny SAM dims kept
    # The preset table itself is not modified by overrides.
    fresh = VideoLisaConfig.from_preset("tiny")
    assert fresh.text_config.num_hidden_layers == 2
    assert PRESETS["tiny"]["text_config"]["num_hidden_layers"] == 2


@pytest.mark.parametrize(
    "overrides, names",
    [
        ({"projector_type": "linear"}, ["projector_type", "mlp2x_gelu", "linear"]),
        ({"chat_template": "llama_2"}, ["chat_template", "phi3_instruct", "llama_2"]),
        ({"vision_feature_select": "cls_patch"}, ["vision_feature_select", "patch"]),
        ({"num_frames_dense": 33}, ["num_frames_dense", "num_frames_sparse", "33"]),
        ({"num_frames_sparse": 0}, ["num_frames_sparse", "positive"]),
        ({"num_frames_dense": 1.5}, ["num_frames_dense", "positive integer"]),
        ({"sam_config": {"variant": "vit_x"}}, ["sam_config.variant", "vit_h", "vit_b", "vit_x"]),
        ({"sam_config": {"encoder_global_attn_indexes": [5]}}, ["encoder_global_attn_indexes", "0..1"]),
        ({"sam_config": {"decoder_num_heads": 0}}, ["sam_config.decoder_num_heads"]),
        ({"sam_config": {"encoder_num_heads": 3}}, ["encoder_embed_dim", "encoder_num_heads"]),
        ({"sam_config": {"kernel": 3}}, ["sam_config", "unknown", "kernel"]),
        ({"bce_loss_weight": -1.0}, ["bce_loss_weight", ">= 0"]),
        ({"ce_loss_weight": -0.5}, ["ce_loss_weight", ">= 0"]),
        ({"dice_loss_weight": -2}, ["dice_loss_weight", ">= 0"]),
        ({"seg_token_id": 512}, ["seg_token_id", "vocab_size", "512"]),
        ({"seg_token_id": -1}, ["seg_token_id", ">= 0"]),
        ({"seg_token": " "}, ["seg_token", "non-empty"]),
        ({"seg_hidden_offset": 1}, ["seg_hidden_offset", "<= 0"]),
        ({"image_token_index": 5}, ["image_token_index", "negative"]),
        ({"vision_feature_layer": -4}, ["vision_feature_layer", "-3..2"]),
        ({"model_max_length": 0}, ["model_max_length"]),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(overrides, names):
    with pytest.raises(ValueError) as error:
        VideoLisaConfig.from_preset("tiny", **overrides)
    for name in names:
        assert name in str(error.value)


def test_unknown_preset_is_rejected_with_the_known_names():
    with pytest.raises(ValueError, match=r"preset.*videolisa-3\.8b.*tiny.*'huge'"):
        VideoLisaConfig.from_preset("huge")


def test_text_config_dict_needs_a_model_type():
    with pytest.raises(ValueError, match="model_type"):
        VideoLisaConfig(text_config={"hidden_size": 64, "vocab_size": 600})


def test_sam_config_from_variant_gives_stock_dims_and_accepts_overrides():
    vit_b = SamConfig.from_variant("vit_b")
    assert (vit_b.encoder_embed_dim, vit_b.encoder_depth, vit_b.encoder_num_heads) == (768, 12, 12)
    assert vit_b.encoder_global_attn_indexes == [2, 5, 8, 11]
    assert vit_b.prompt_embed_dim == 256  # prompt encoder / decoder are the same in every stock SAM
    vit_l = SamConfig.from_variant("vit_l", decoder_mlp_dim=1024)
    assert (vit_l.encoder_embed_dim, vit_l.encoder_depth, vit_l.decoder_mlp_dim) == (1024, 24, 1024)
    with pytest.raises(ValueError, match="sam_config.variant"):
        SamConfig.from_variant("custom")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_save_and_load_round_trip(tmp_path, preset):
    config = VideoLisaConfig.from_preset(preset, num_frames_dense=3, bce_loss_weight=1.5)
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "videolisa"

    loaded = VideoLisaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert type(loaded.text_config) is type(config.text_config) is Phi3Config
    assert type(loaded.vision_config) is CLIPVisionConfig
    assert loaded.sam == config.sam
    assert (loaded.num_frames_dense, loaded.bce_loss_weight) == (3, 1.5)
    assert loaded.text_config.sliding_window == config.text_config.sliding_window
    assert loaded.num_video_tokens == config.num_video_tokens
