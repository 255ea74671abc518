"""Segment Anything built from the ``segment_anything`` package, and decoding with a text prompt.

The module tree is the stock ``Sam`` (``image_encoder``, ``prompt_encoder``, ``mask_decoder``), so the
original checkpoint's ``visual_model.*`` keys map 1:1 to ``sam.*``. The original VideoLISA extended the
prompt encoder with a ``text_embeds`` argument that is concatenated to the (empty) sparse prompt; here
the same tensors are built outside the stock module (:func:`prompt_tensors`).
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from videolisa.config import SamConfig


def build_sam(config: SamConfig) -> Sam:
    """Build a randomly initialised SAM exactly like ``segment_anything.build_sam._build_sam``."""
    grid = config.image_embedding_size
    image_encoder = ImageEncoderViT(
        depth=config.encoder_depth,
        embed_dim=config.encoder_embed_dim,
        img_size=config.image_size,
        mlp_ratio=config.encoder_mlp_ratio,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=config.encoder_num_heads,
        patch_size=config.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=tuple(config.encoder_global_attn_indexes),
        window_size=config.encoder_window_size,
        out_chans=config.prompt_embed_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=config.mask_in_chans,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=config.num_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=config.decoder_depth,
            embedding_dim=config.prompt_embed_dim,
            mlp_dim=config.decoder_mlp_dim,
            num_heads=config.decoder_num_heads,
            attention_downsample_rate=config.decoder_attention_downsample_rate,
        ),
        transformer_dim=config.prompt_embed_dim,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=list(config.pixel_mean),
        pixel_std=list(config.pixel_std),
    )


def prompt_tensors(sam: Sam, prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse and dense prompts for K segmentation embeddings ``[K, C]``.

    Returns ``sparse [K, 1, C]`` (the embedding is the only sparse prompt: no points, no boxes) and
    ``dense [K, C, h, w]`` (``no_mask_embed`` broadcast over the embedding grid), as the original does.
    """
    prompt_encoder = sam.prompt_encoder
    sparse = prompt_embeddings[:, None, :].to(prompt_encoder.no_mask_embed.weight.dtype)
    height, width = prompt_encoder.image_embedding_size
    dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(sparse.shape[0], -1, height, width)
    return sparse, dense


def decode_low_res_logits(sam: Sam, image_embeddings: torch.Tensor, prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """Single-mask decoder output for every (frame, prompt) pair.

    Args:
        image_embeddings: ``[F, C, h, w]`` SAM image-encoder outputs.
        prompt_embeddings: ``[K, C]`` segmentation prompts (one per ``[SEG]``).

    Returns:
        ``[F, K, 4h, 4w]`` low-resolution mask logits (mask token 0, ``multimask_output=False``; the IoU
        prediction is not used). The same prompt is used on every frame ("One-Token-Seg-All").
    """
    sparse, dense = prompt_tensors(sam, prompt_embeddings)
    image_pe = sam.prompt_encoder.get_dense_pe()
    logits = []
    for frame_embedding in image_embeddings.split(1):
        low_res, _ = sam.mask_decoder(
            image_embeddings=frame_embedding,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits.append(low_res[:, 0])
    return torch.stack(logits)


def upscale_mask_logits(
    sam: Sam, low_res_logits: torch.Tensor, resized_hw: tuple[int, int], original_hw: tuple[int, int]
) -> torch.Tensor:
    """``Sam.postprocess_masks``: ``[F, K, h, w]`` -> ``[F, K, H, W]`` logits at the original frame size
    (bilinear to the SAM input size, crop the padding, bilinear to the original size)."""
    return sam.postprocess_masks(low_res_logits, input_size=tuple(resized_hw), original_size=tuple(original_hw))
