"""Numerical parity with the ORIGINAL VideoLISA code (fixture ``tests/assets/parity``, case A, see its README).

The original code ran a tiny random instance in float32 on CPU; here the same weights are loaded from the
original merged-checkpoint layout (+ the tiny CLIP) and the same frames, ids and sampling are run through this
package: video tokens, the [SEG] hidden state and prompt, SAM image embedding, every frame's mask logits and
masks, and the training losses must match. The sliding window of the LLM is part of what is checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from videolisa.modeling.batch import VideoLisaBatch
from videolisa.modeling.videolisa import VideoLisaForSegmentation
from videolisa.processing.transforms import preprocess_clip, preprocess_sam

pytestmark = pytest.mark.slow  # SAM on 12 frames at 1024x1024 with a ViT-H-sized decoder: ~20-50 s on 2 cores


@pytest.fixture(scope="module")
def model(parity_original_layout) -> VideoLisaForSegmentation:
    checkpoint, clip = parity_original_layout
    return VideoLisaForSegmentation.from_pretrained(checkpoint, vision_tower=clip, dtype=torch.float32)


@pytest.fixture(scope="module")
def inputs(parity_dir) -> dict:
    frames = np.load(parity_dir / "frames.npy")
    sparse_indices = np.load(parity_dir / "sparse_indices.npy")
    pixel_values_sam, resized_hw = preprocess_sam(frames)
    return {
        "frames": frames,
        "input_ids": torch.from_numpy(np.load(parity_dir / "input_ids.npy")),
        "sparse_indices": sparse_indices,
        "dense_positions": torch.from_numpy(np.load(parity_dir / "dense_indices.npy"))[None],
        "pixel_values_clip": preprocess_clip(frames[sparse_indices])[None],
        "pixel_values_sam": pixel_values_sam,
        "resized_hw": resized_hw,
        "original_hw": frames.shape[1:3],
    }


@pytest.fixture(scope="module")
def outputs(model, inputs) -> dict:
    """One inference pass over the whole video, as the original ``evaluate`` does it."""
    with torch.inference_mode():
        video_tokens = model.build_video_tokens(inputs["pixel_values_clip"], inputs["dense_positions"])
        prompts = model.compute_prompts(inputs["input_ids"], video_tokens)
        image_embeddings = model.encode_images(inputs["pixel_values_sam"])
        mask_logits = model.decode_masks(
            image_embeddings, prompts.prompt_embeddings, inputs["resized_hw"], inputs["original_hw"]
        )
    return {
        "video_tokens": video_tokens[0].numpy(),
        "seg_hidden_state": prompts.seg_hidden_states[0].numpy(),
        "prompt_embedding": prompts.prompt_embeddings.numpy(),
        "sam_image_embedding_f0": image_embeddings[:1].numpy(),
        "mask_logits": mask_logits[:, 0].numpy(),
    }


def reference(parity_dir: Path, name: str) -> np.ndarray:
    return np.load(parity_dir / f"{name}.npy")


def assert_within(actual: np.ndarray, expected: np.ndarray, atol: float) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


# ---------------------------------------------------------------------------------------------- loading
def test_original_config_is_converted(model, parity_original_layout):
    config = model.config
    # Original 2047 in transformers 4.41 semantics (keys i-2047..i) = 2048 keys including the query.
    assert config.text_config.sliding_window == 2048
    assert config.seg_token_id == 32011
    assert config.text_config.vocab_size == 32012
    assert config.vision_tower_name == str(parity_original_layout[1])
    assert config.sam.variant == "custom" and config.sam.encoder_embed_dim == 32 and config.sam.image_size == 1024
    assert config.num_video_tokens == 2336
    assert next(model.parameters()).dtype == torch.float32


def test_inputs_follow_the_fixture(inputs, parity_dir):
    case = json.loads((parity_dir / "case.json").read_text())
    assert inputs["sparse_indices"].tolist() == case["sparse_frame_indices"]
    dense_frames = inputs["sparse_indices"][inputs["dense_positions"][0].numpy()].tolist()
    assert dense_frames == case["train_dense_video_frames"] == [1, 3, 6, 9]
    assert list(inputs["resized_hw"]) == case["sam_resized_hw"]
    stats = case["clip_pixel_values_stats"]
    assert inputs["pixel_values_clip"][0, 0].double().sum().item() == pytest.approx(stats["frame0_sum"], rel=1e-6)
    assert inputs["pixel_values_clip"].double().mean().item() == pytest.approx(stats["mean"], rel=1e-6)
    assert inputs["pixel_values_sam"][0].double().sum().item() == pytest.approx(
        case["sam_pixel_values_f0_stats"]["sum"], rel=1e-6
    )


# ---------------------------------------------------------------------------------------------- inference
def test_video_tokens_match(outputs, parity_dir):
    assert_within(outputs["video_tokens"], reference(parity_dir, "video_tokens"), atol=1e-4)


def test_seg_hidden_state_and_prompt_embedding_match(outputs, parity_dir):
    assert_within(outputs["seg_hidden_state"], reference(parity_dir, "seg_hidden_state"), atol=2e-4)
    assert_within(outputs["prompt_embedding"], reference(parity_dir, "prompt_embedding"), atol=2e-4)


def test_sliding_window_is_what_the_prompt_depends_on(model, inputs, outputs, parity_dir):
    """The check above would not catch an off-by-one window unless it moves the prompt: with the original's
    window 2048 (2049 here) the fixture's alternative embedding is reproduced and the real one is not."""
    case = json.loads((parity_dir / "case.json").read_text())
    llm_config = model.llm.config
    saved = llm_config.sliding_window
    try:
        llm_config.sliding_window = saved + 1
        with torch.inference_mode():
            video_tokens = model.build_video_tokens(inputs["pixel_values_clip"], inputs["dense_positions"])
            wider = model.compute_prompts(inputs["input_ids"], video_tokens).prompt_embeddings[0].numpy()
    finally:
        llm_config.sliding_window = saved
    assert_within(wider, np.asarray(case["prompt_embedding_if_sliding_window_2048"], dtype=np.float32), atol=2e-4)
    assert np.abs(wider - outputs["prompt_embedding"][0]).max() > 1e-3


def test_sam_image_embedding_matches(outputs, parity_dir):
    assert_within(outputs["sam_image_embedding_f0"], reference(parity_dir, "sam_image_embedding_f0"), atol=1e-4)


def test_low_res_logits_of_frame_0_match(model, outputs, parity_dir):
    from videolisa.modeling.sam import decode_low_res_logits

    with torch.inference_mode():
        low_res = decode_low_res_logits(
            model.sam,
            torch.from_numpy(outputs["sam_image_embedding_f0"]),
            torch.from_numpy(outputs["prompt_embedding"]),
        )
    assert_within(low_res.numpy(), reference(parity_dir, "low_res_logits_f0"), atol=2e-4)


def test_mask_logits_of_every_frame_match(outputs, parity_dir):
    expected = reference(parity_dir, "mask_logits")
    assert outputs["mask_logits"].shape == expected.shape == (12, 240, 320)
    assert_within(outputs["mask_logits"], expected, atol=2e-4)


def test_binary_masks_match_away_from_the_threshold(outputs, parity_dir):
    expected_logits = reference(parity_dir, "mask_logits")
    expected_masks = reference(parity_dir, "masks")
    masks = outputs["mask_logits"] > 0
    confident = np.abs(expected_logits) >= 1e-3
    assert np.array_equal(masks[confident], expected_masks[confident])
    assert (masks != expected_masks).sum() <= 5  # only near-zero logits may flip
    assert expected_masks.sum() > 0  # the fixture has foreground to compare


# ---------------------------------------------------------------------------------------------- training
def test_training_losses_match(model, inputs, parity_dir):
    expected = json.loads((parity_dir / "train_losses.json").read_text())
    input_ids = inputs["input_ids"]
    dense_frames = [1, 3, 6, 9]
    batch = VideoLisaBatch(
        pixel_values_clip=inputs["pixel_values_clip"],
        pixel_values_sam=inputs["pixel_values_sam"][dense_frames][None],
        input_ids=input_ids,
        attention_mask=(input_ids != 0).long(),
        labels=torch.from_numpy(np.load(parity_dir / "train_labels.npy")),
        dense_positions=inputs["dense_positions"],
        target_masks=[torch.from_numpy(np.load(parity_dir / "train_target_masks.npy")).float()[None]],
        resized_sizes=[inputs["resized_hw"]],
        original_sizes=[inputs["original_hw"]],
    )
    model.train()
    try:
        with torch.no_grad():
            output = model(batch)
    finally:
        model.eval()
    assert output.loss.item() == pytest.approx(expected["loss"], rel=1e-5)
    assert output.ce_loss.item() == pytest.approx(expected["ce_loss"], rel=1e-5)
    assert output.bce_loss.item() == pytest.approx(expected["mask_bce_loss"], rel=1e-5)
    assert output.dice_loss.item() == pytest.approx(expected["mask_dice_loss"], rel=1e-5)
    assert output.mask_loss.item() == pytest.approx(expected["mask_loss"], rel=1e-5)
    assert output.bce_loss_unweighted.item() == pytest.approx(expected["mask_bce_loss_unweighted"], rel=1e-5)
    assert output.dice_loss_unweighted.item() == pytest.approx(expected["mask_dice_loss_unweighted"], rel=1e-5)
