"""A tiny random SAM 2 built twice: in the official ``sam2`` package (hydra config) and in transformers
(``Sam2VideoModel``), with the official weights converted to transformers' names.

The key mapping follows transformers' own ``convert_sam2_video_to_hf.py`` (not shipped in the wheel, so it
cannot be imported); it is test-only, like the ``sam2`` package itself. The configuration keeps SAM 2.1's
architecture (memory attention over frames and object pointers, occlusion embedding, temporal pointer
encoding) and shrinks the parts whose size does not change the algorithm: a 5-block Hiera of width 8 at 128x128
pixels, one memory-attention layer.
"""

from __future__ import annotations

import re

import torch

IMAGE_SIZE = 128
_TRUNK = {
    "embed_dim": 8,
    "num_heads": 1,
    "stages": [1, 1, 2, 1],
    "global_att_blocks": [3],
    "window_spec": [8, 4, 4, 2],
    "window_pos_embed_bkg_spatial_size": [4, 4],
}
_MEMORY_LAYERS, _MEMORY_FEED_FORWARD = 1, 64
OBJECT_SCORE_BIAS = 4.0
# A short memory (2 previous frames, 4 object pointers) so that a 14-frame clip already exercises the refiner's
# dropping of outputs that fall out of it; SAM 2.1 uses 6 and 16.
NUM_MASKMEM, MAX_OBJECT_POINTERS = 3, 4


def build_official_predictor(seed: int = 0):
    """The official ``SAM2VideoPredictor`` with seeded random weights (no checkpoint), on CPU, eval mode."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2_video_predictor

    feature = IMAGE_SIZE // 16
    channels = [_TRUNK["embed_dim"] * 2**i for i in (3, 2, 1, 0)]
    overrides = [
        f"++model.image_size={IMAGE_SIZE}",
        f"++model.num_maskmem={NUM_MASKMEM}",
        f"++model.max_obj_ptrs_in_encoder={MAX_OBJECT_POINTERS}",
        *(f"++model.image_encoder.trunk.{key}={value}" for key, value in _TRUNK.items()),
        f"++model.image_encoder.neck.backbone_channel_list={channels}",
        f"++model.memory_attention.num_layers={_MEMORY_LAYERS}",
        f"++model.memory_attention.layer.dim_feedforward={_MEMORY_FEED_FORWARD}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feature},{feature}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feature},{feature}]",
    ]
    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("sam2", version_base="1.2")
    torch.manual_seed(seed)
    predictor = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", device="cpu", hydra_overrides_extra=overrides
    )
    _randomize_zero_parameters(predictor, seed)
    with torch.no_grad():
        # Random weights would call the object absent on most frames (masks of -1024 everywhere); a positive
        # object-score bias makes propagation produce masks worth comparing.
        predictor.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(OBJECT_SCORE_BIAS)
    return predictor.eval()


def _randomize_zero_parameters(model: torch.nn.Module, seed: int) -> None:
    """The official model initialises some embeddings to zero (no-memory embedding, occlusion embedding,
    temporal encodings); give every parameter non-trivial values so that the comparison exercises them."""
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(0.02 * torch.randn(parameter.shape, generator=generator))


def build_transformers_config():
    """The matching ``transformers.Sam2VideoConfig``."""
    from transformers import (
        Sam2HieraDetConfig,
        Sam2VideoConfig,
        Sam2VideoMaskDecoderConfig,
        Sam2VideoPromptEncoderConfig,
        Sam2VisionConfig,
    )

    width = _TRUNK["embed_dim"]
    feature = IMAGE_SIZE // 16
    backbone = Sam2HieraDetConfig(
        hidden_size=width,
        num_attention_heads=_TRUNK["num_heads"],
        image_size=[IMAGE_SIZE, IMAGE_SIZE],
        blocks_per_stage=_TRUNK["stages"],
        embed_dim_per_stage=[width * 2**i for i in range(4)],
        num_attention_heads_per_stage=[_TRUNK["num_heads"] * 2**i for i in range(4)],
        window_size_per_stage=_TRUNK["window_spec"],
        global_attention_blocks=_TRUNK["global_att_blocks"],
        window_positional_embedding_background_size=_TRUNK["window_pos_embed_bkg_spatial_size"],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[width * 2**i for i in (3, 2, 1, 0)],
        backbone_feature_sizes=[[feature * 4] * 2, [feature * 2] * 2, [feature] * 2],
    )
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(image_size=IMAGE_SIZE),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(),
        image_size=IMAGE_SIZE,
        num_maskmem=NUM_MASKMEM,
        max_object_pointers_in_encoder=MAX_OBJECT_POINTERS,
        memory_attention_num_layers=_MEMORY_LAYERS,
        memory_attention_feed_forward_hidden_size=_MEMORY_FEED_FORWARD,
        memory_attention_rope_feat_sizes=[feature, feature],
    )


def build_tiny_sam2(seed: int = 0):
    """``(official_predictor, transformers_model)`` with the same random weights."""
    from transformers import Sam2VideoModel

    official = build_official_predictor(seed)
    model = Sam2VideoModel(build_transformers_config()).eval()
    model.load_state_dict(convert_official_state_dict(official.state_dict()), strict=True)
    return official, model


# transformers' convert_sam2_video_to_hf.py: substring replacements, applied in this order.
_RENAMES = {
    "iou_prediction_head.layers.0": "iou_prediction_head.proj_in",
    "iou_prediction_head.layers.1": "iou_prediction_head.layers.0",
    "iou_prediction_head.layers.2": "iou_prediction_head.proj_out",
    "mask_decoder.output_upscaling.0": "mask_decoder.upscale_conv1",
    "mask_decoder.output_upscaling.1": "mask_decoder.upscale_layer_norm",
    "mask_decoder.output_upscaling.3": "mask_decoder.upscale_conv2",
    "mask_downscaling.0": "mask_embed.conv1",
    "mask_downscaling.1": "mask_embed.layer_norm1",
    "mask_downscaling.3": "mask_embed.conv2",
    "mask_downscaling.4": "mask_embed.layer_norm2",
    "mask_downscaling.6": "mask_embed.conv3",
    "dwconv": "depthwise_conv",
    "pwconv": "pointwise_conv",
    "fuser": "memory_fuser",
    "point_embeddings": "point_embed",
    "pe_layer.positional_encoding_gaussian_matrix": "shared_embedding.positional_embedding",
    "obj_ptr_tpos_proj": "temporal_positional_encoding_projection_layer",
    "no_obj_embed_spatial": "occlusion_spatial_embedding_parameter",
    "sam_prompt_encoder": "prompt_encoder",
    "sam_mask_decoder": "mask_decoder",
    "maskmem_tpos_enc": "memory_temporal_positional_encoding",
    "gamma": "scale",
    "image_encoder.neck": "vision_encoder.neck",
    "image_encoder": "vision_encoder.backbone",
    "neck.0": "neck.conv1",
    "neck.1": "neck.layer_norm1",
    "neck.2": "neck.conv2",
    "neck.3": "neck.layer_norm2",
    "pix_feat_proj": "feature_projection",
    "patch_embed.proj": "patch_embed.projection",
    "no_mem_embed": "no_memory_embedding",
    "no_mem_pos_enc": "no_memory_positional_encoding",
    "obj_ptr": "object_pointer",
    ".norm": ".layer_norm",
    "trunk.": "",
    "out_proj": "o_proj",
}
# (pattern, group holding the layer number, {layer number: (old, new)}) after the renames above.
_THREE_LAYER_MLP = {0: ("layers.0", "proj_in"), 1: ("layers.1", "layers.0"), 2: ("layers.2", "proj_out")}
_LAYER_RULES = [
    (
        r"vision_encoder.backbone.blocks.(\d+).mlp.layers.(\d+).*",
        2,
        {0: ("layers.0", "proj_in"), 1: ("layers.1", "proj_out")},
    ),
    (
        r"mask_decoder.transformer.layers.(\d+).mlp.layers.(\d+).*",
        2,
        {0: ("mlp.layers.0", "mlp.proj_in"), 1: ("mlp.layers.1", "mlp.proj_out")},
    ),
    (r"mask_decoder.pred_obj_score_head.layers.(\d+).*", 1, _THREE_LAYER_MLP),
    (r".*.output_hypernetworks_mlps.(\d+).layers.(\d+).*", 2, _THREE_LAYER_MLP),
    (r"object_pointer_proj.layers.(\d+).*", 1, _THREE_LAYER_MLP),
]


def convert_official_key(key: str) -> str:
    """One official ``sam2`` parameter name -> its ``transformers.Sam2VideoModel`` name."""
    for old, new in _RENAMES.items():
        key = key.replace(old, new)
    for pattern, group, replacements in _LAYER_RULES:
        if (match := re.match(pattern, key)) and int(match.group(group)) in replacements:
            key = key.replace(*replacements[int(match.group(group))])
    if re.match(r"vision_encoder.neck.convs.(\d+).conv", key):
        key = key.replace(".conv.", ".")
    if re.match(r"memory_encoder.o_proj.*", key):
        key = key.replace(".o_proj.", ".projection.")
    if match := re.match(r"memory_encoder.mask_downsampler.encoder.(\d+).*", key):
        layer = int(match.group(1))
        if layer == 12:
            key = key.replace(f"encoder.{layer}", "final_conv")
        elif layer % 3 in (0, 1):
            part = "conv" if layer % 3 == 0 else "layer_norm"
            key = key.replace(f"encoder.{layer}", f"layers.{layer // 3}.{part}")
    return key


def convert_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official SAM 2 state dict -> ``Sam2VideoModel``'s (as transformers' conversion script does)."""
    converted = {convert_official_key(key): value.clone() for key, value in state_dict.items()}
    converted["shared_image_embedding.positional_embedding"] = converted[
        "prompt_encoder.shared_embedding.positional_embedding"
    ]
    converted["prompt_encoder.point_embed.weight"] = torch.cat(
        [converted.pop(f"prompt_encoder.point_embed.{i}.weight") for i in range(4)]
    )
    return converted
