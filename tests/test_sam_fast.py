"""The SAM fast path (``videolisa.modeling.sam_fast``) against the stock ``segment_anything`` modules.

fp32: fused attention, blocked bias, the whole encoder and the batched decoder agree with the stock modules
within 1e-4 (parity fixture: with the original's logits). bf16 autocast: masks agree on >= 99.9% of pixels.
The switch is reversible and never touches the weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from segment_anything.modeling.image_encoder import Attention, ImageEncoderViT

from videolisa.config import SamConfig
from videolisa.modeling import sam_fast
from videolisa.modeling.sam import build_sam, decode_low_res_logits
from videolisa.processing.transforms import preprocess_sam


def noisy_sam(variant: str = "tiny", seed: int = 0, **overrides):
    """A stock SAM whose every parameter (rel-pos tables included, zero at init) is perturbed."""
    torch.manual_seed(seed)
    sam = build_sam(SamConfig.from_variant(variant, **overrides)).eval()
    with torch.no_grad():
        for parameter in sam.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return sam


def fast_copy(sam, **settings):
    fast = copy.deepcopy(sam)
    sam_fast.enable_fast_sam(fast, **settings)
    return fast


@pytest.mark.parametrize("grid", [(4, 4), (6, 5)])
def test_fused_attention_matches_stock_attention(grid):
    torch.manual_seed(1)
    stock = Attention(dim=24, num_heads=3, use_rel_pos=True, input_size=grid).eval()
    with torch.no_grad():
        stock.rel_pos_h.normal_()
        stock.rel_pos_w.normal_()
    fused = copy.deepcopy(stock)
    fused.__class__ = sam_fast.FusedRelPosAttention
    x = torch.randn(5, *grid, 24)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), stock(x), atol=1e-5, rtol=1e-5)


def test_rel_pos_terms_rebuild_the_stock_bias():
    """bias_h[q, m] + bias_w[q, n] equals what stock ``add_decomposed_rel_pos`` adds to a zero score."""
    from segment_anything.modeling.image_encoder import add_decomposed_rel_pos

    torch.manual_seed(2)
    q = torch.randn(2, 3, 4 * 5, 8)  # [B, heads, q_h*q_w, C]
    rel_h, rel_w = torch.randn(7, 8), torch.randn(9, 8)
    bias_h, bias_w = sam_fast.decomposed_rel_pos_terms(q, rel_h, rel_w, (4, 5), (4, 5))
    bias = (bias_h[..., :, None] + bias_w[..., None, :]).flatten(-2)
    expected = add_decomposed_rel_pos(torch.zeros(6, 20, 20), q.flatten(0, 1), rel_h, rel_w, (4, 5), (4, 5))
    torch.testing.assert_close(bias.flatten(0, 1), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("budget", [1 << 30, 4096, 300])
def test_blocked_attention_is_exact_for_any_bias_budget(monkeypatch, budget):
    """Blocks over batch items (4096 B) or over queries (300 B) give the one-block result."""
    monkeypatch.setattr(sam_fast, "attention_bias_budget", lambda device: budget)
    torch.manual_seed(3)
    q, k, v = torch.randn(3, 3, 2, 16, 8).unbind(0)
    rel_h, rel_w = torch.randn(7, 8), torch.randn(7, 8)
    out = sam_fast.blocked_rel_pos_attention(q, k, v, rel_h, rel_w, (4, 4))
    bias_h, bias_w = sam_fast.decomposed_rel_pos_terms(q, rel_h, rel_w, (4, 4), (4, 4))
    scores = q @ k.transpose(-2, -1) / 8**0.5 + (bias_h[..., :, None] + bias_w[..., None, :]).flatten(-2)
    torch.testing.assert_close(out, scores.softmax(-1) @ v, atol=1e-5, rtol=1e-5)


def test_fast_encoder_matches_stock_in_fp32():
    sam = noisy_sam()
    fast = fast_copy(sam)
    pixels = torch.randn(3, 3, 256, 256)
    with torch.no_grad():
        expected = sam.image_encoder(pixels)
        torch.testing.assert_close(fast.image_encoder(pixels), expected, atol=1e-4, rtol=1e-4)
        # Frames are independent: a batch of 3 equals each frame alone.
        torch.testing.assert_close(fast.image_encoder(pixels[1:2]), expected[1:2], atol=1e-4, rtol=1e-4)


def test_batched_decoder_matches_the_per_frame_loop():
    sam = noisy_sam(seed=4)
    fast = fast_copy(sam)
    torch.manual_seed(5)
    embeddings, prompts = torch.randn(4, 32, 16, 16), torch.randn(3, 32)
    with torch.no_grad():
        expected = decode_low_res_logits(sam, embeddings, prompts)
        batched = sam_fast.decode_low_res_logits_batched(fast, embeddings, prompts)
    assert batched.shape == (4, 3, 64, 64) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, expected, atol=1e-5, rtol=1e-5)
    assert sam_fast.decode_low_res_logits_auto(sam, embeddings, prompts).equal(expected)


def test_switch_is_reversible_and_keeps_the_weights():
    sam = noisy_sam()
    before = {name: tensor.clone() for name, tensor in sam.state_dict().items()}
    settings = sam_fast.enable_fast_sam(sam, autocast_dtype=torch.bfloat16)
    assert sam_fast.fast_sam_settings(sam) is settings and settings.autocast_dtype == torch.bfloat16
    attentions = [m for m in sam.image_encoder.modules() if isinstance(m, Attention)]
    assert attentions and all(type(m) is sam_fast.FusedRelPosAttention for m in attentions)
    assert isinstance(sam.image_encoder, ImageEncoderViT)
    assert sam.state_dict().keys() == before.keys()
    sam_fast.disable_fast_sam(sam)
    assert sam_fast.fast_sam_settings(sam) is None
    assert type(sam.image_encoder) is ImageEncoderViT and all(type(m) is Attention for m in attentions)
    assert all(sam.state_dict()[name].equal(tensor) for name, tensor in before.items())
    sam_fast.disable_fast_sam(sam)  # a no-op when already off


def test_configure_keeps_float32_weights_and_autocasts_only_the_fast_path():
    sam = noisy_sam().to(torch.bfloat16)
    sam_fast.configure_fast_sam(sam, True, torch.bfloat16)
    assert sam_fast.fast_sam_settings(sam).autocast_dtype == torch.bfloat16
    assert {p.dtype for p in sam.parameters()} == {torch.float32}
    sam_fast.configure_fast_sam(sam, True, torch.float32)
    assert sam_fast.fast_sam_settings(sam).autocast_dtype is None
    sam_fast.configure_fast_sam(sam.to(torch.bfloat16), False, torch.bfloat16)
    assert sam_fast.fast_sam_settings(sam) is None
    assert {p.dtype for p in sam.parameters()} == {torch.float32}


def test_rejects_an_unsupported_autocast_dtype():
    with pytest.raises(ValueError, match="autocast_dtype"):
        sam_fast.enable_fast_sam(noisy_sam(), autocast_dtype=torch.float64)


def test_bf16_autocast_stays_within_bf16_tolerance_on_the_tiny_model(tiny_model_factory, frames_factory):
    """Tiny random weights give logits of ~0.03: compare against the logit scale, and masks where the
    stock logit is decided beyond the bf16 error."""
    model = tiny_model_factory(seed=0)
    fast = copy.deepcopy(model)
    sam_fast.enable_fast_sam(fast.sam, autocast_dtype=torch.bfloat16)
    pixels, resized_hw = preprocess_sam(frames_factory(4, 48, 64, 0), image_size=256)
    prompts = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model.decode_masks(model.encode_images(pixels), prompts, resized_hw, (48, 64))
        logits = fast.decode_masks(fast.encode_images(pixels), prompts, resized_hw, (48, 64))
    error = (logits - expected).abs().max()
    # bf16 keeps 8 significant bits; through the encoder and the decoder's cancelling sums that is a few
    # percent of the logit scale. An error of 0 would mean autocast did not run.
    assert 0 < error <= 2**-4 * expected.abs().max()
    decided = expected.abs() > error
    assert ((logits > 0) == (expected > 0))[decided].all()
    assert decided.float().mean() > 0.9


@pytest.fixture(scope="module")
def parity_sam(parity_original_layout):
    from videolisa.modeling.videolisa import VideoLisaForSegmentation

    checkpoint, clip = parity_original_layout
    return VideoLisaForSegmentation.from_pretrained(checkpoint, vision_tower=clip, dtype=torch.float32)


def parity_logits(model, parity_dir, frame_ids: list[int]) -> np.ndarray:
    """``[F, H, W]`` logits of the fixture's frames, decoded with the fixture's prompt embedding."""
    frames = np.load(parity_dir / "frames.npy")[frame_ids]
    prompt = torch.from_numpy(np.load(parity_dir / "prompt_embedding.npy"))
    pixels, resized_hw = preprocess_sam(frames)
    with torch.inference_mode():
        embeddings = model.encode_images(pixels)
        return model.decode_masks(embeddings, prompt, resized_hw, frames.shape[1:3])[:, 0].numpy()


@pytest.mark.slow
def test_fast_path_matches_the_original_on_the_parity_fixture(parity_sam, parity_dir):
    frame_ids = [0, 7]
    sam_fast.enable_fast_sam(parity_sam.sam)
    try:
        logits = parity_logits(parity_sam, parity_dir, frame_ids)
    finally:
        sam_fast.disable_fast_sam(parity_sam.sam)
    reference = np.load(parity_dir / "mask_logits.npy")[frame_ids]
    np.testing.assert_allclose(logits, reference, atol=2e-4)


@pytest.mark.slow  # bf16 convolutions have no fast CPU kernel: ~12 s per 1024x1024 frame
def test_bf16_fast_path_masks_agree_with_the_original_on_the_parity_fixture(parity_sam, parity_dir):
    frame_ids = [0, 11]
    sam_fast.enable_fast_sam(parity_sam.sam, autocast_dtype=torch.bfloat16)
    try:
        logits = parity_logits(parity_sam, parity_dir, frame_ids)
    finally:
        sam_fast.disable_fast_sam(parity_sam.sam)
    reference = np.load(parity_dir / "mask_logits.npy")[frame_ids]
    assert np.abs(logits - reference).max() < 0.15
    assert ((logits > 0) == (reference > 0)).mean() >= 0.999


@pytest.mark.slow  # inductor compiles C++ kernels: ~1 min on 2 cores
def test_compiled_encoder_matches_stock():
    sam = noisy_sam()
    fast = fast_copy(sam, compile=True)
    pixels = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(fast.image_encoder(pixels), sam.image_encoder(pixels), atol=1e-4, rtol=1e-4)
