"""Tests of videolisa.modeling.videolisa (and videolisa.losses through it): the training forward on the tiny
preset, the freezing policy, mask decoding at the original frame size, the loss formulas of docs/original.md §4.1,
and the parameter counts of the release preset (docs/original.md §1.8, §7.2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from videolisa.config import VideoLisaConfig
from videolisa.constants import IGNORE_INDEX
from videolisa.modeling.videolisa import TRAINABLE_PREFIXES, VideoLisaForSegmentation
from videolisa.processing.conversation import render_conversation
from videolisa.processing.transforms import preprocess_sam
from videolisa.tokenization import build_tiny_tokenizer, tokenize_with_video_placeholder

ORIGINAL_HW = (40, 56)  # non-square on purpose: crop + resize must undo SAM's padding


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def batch(tiny_model, tokenizer, tiny_batch_factory):
    return tiny_batch_factory(tiny_model.config, tokenizer, original_hw=ORIGINAL_HW)


@pytest.fixture(scope="module")
def frozen_step(batch, tiny_model_factory):
    """One forward + backward of a fresh tiny model after ``apply_freezing_policy``."""
    model = tiny_model_factory(seed=0).train()
    trainable = model.apply_freezing_policy()
    output = model(batch)
    output.loss.backward()
    return model, trainable, output


# ---------------------------------------------------------------------------------------------- forward
def test_forward_gives_finite_losses_and_dense_frame_logits(frozen_step, batch):
    _, _, output = frozen_step
    names = ("loss", "ce_loss", "bce_loss", "dice_loss", "mask_loss", "bce_loss_unweighted", "dice_loss_unweighted")
    for name in names:
        value = getattr(output, name)
        assert value.shape == () and torch.isfinite(value), name
    assert output.ce_loss > 0 and output.bce_loss > 0 and output.dice_loss > 0
    assert len(output.mask_logits) == 1
    assert output.mask_logits[0].shape == (1, 4, *ORIGINAL_HW)  # [K, T_d, H, W]


def test_batch_labels_supervise_only_the_answer(batch, tokenizer):
    supervised = batch.labels[batch.labels != IGNORE_INDEX].tolist()
    assert tokenizer.decode(supervised) == "Sure, [SEG].<|end|>"
    assert batch.input_ids[0].tolist().count(480) == 1


def reference_losses(model: VideoLisaForSegmentation, batch, mask_logits: list[torch.Tensor]) -> dict[str, float]:
    """Spec §4.1 written out independently, in float64: next-token CE over the expanded labels, BCE as
    ``max(x, 0) - x t + log(1 + exp(-|x|))`` averaged over pixels, DICE with scale 1000 and eps 1e-6; both mask
    losses averaged over all masks; total = ce_w CE + bce_w BCE + dice_w DICE."""
    config = model.config
    with torch.no_grad():
        video_tokens = model.build_video_tokens(batch.pixel_values_clip, batch.dense_positions)
        prompts = model.compute_prompts(batch.input_ids, video_tokens, batch.attention_mask, return_logits=True)
    log_probs = prompts.logits.double().log_softmax(-1)
    nll = []
    for row in range(batch.input_ids.shape[0]):
        placeholder = batch.input_ids[row].tolist().index(config.image_token_index)
        labels = batch.labels[row].tolist()
        expanded = labels[:placeholder] + [IGNORE_INDEX] * config.num_video_tokens + labels[placeholder + 1 :]
        for t in range(len(expanded) - 1):
            if expanded[t + 1] != IGNORE_INDEX:
                nll.append(-log_probs[row, t, expanded[t + 1]].item())
    ce = sum(nll) / len(nll)

    bce_values, dice_values = [], []
    for logits, targets in zip(mask_logits, batch.target_masks):
        for x, t in zip(logits.detach().double().flatten(0, 1), targets.double().flatten(0, 1)):
            bce_values.append((x.clamp(min=0) - x * t + torch.log1p(torch.exp(-x.abs()))).mean().item())
            p = torch.sigmoid(x)
            numerator = 2 * (p / 1000 * t).sum() + 1e-6
            denominator = (p / 1000).sum() + (t / 1000).sum() + 1e-6
            dice_values.append(1 - (numerator / denominator).item())
    bce = sum(bce_values) / len(bce_values) if bce_values else 0.0
    dice = sum(dice_values) / len(dice_values) if dice_values else 0.0
    return {
        "ce": ce,
        "bce": bce,
        "dice": dice,
        "loss": config.ce_loss_weight * ce + config.bce_loss_weight * bce + config.dice_loss_weight * dice,
    }


@pytest.mark.parametrize("weights", [(1.0, 2.0, 0.5), (0.3, 1.7, 4.0)])
def test_losses_match_the_spec_formulas(tiny_model_factory, batch, weights):
    ce_w, bce_w, dice_w = weights
    model = tiny_model_factory(seed=0, ce_loss_weight=ce_w, bce_loss_weight=bce_w, dice_loss_weight=dice_w)
    with torch.no_grad():
        output = model(batch)
    reference = reference_losses(model, batch, output.mask_logits)
    assert output.ce_loss.item() == pytest.approx(reference["ce"], rel=1e-5)
    assert output.bce_loss_unweighted.item() == pytest.approx(reference["bce"], rel=1e-5)
    assert output.dice_loss_unweighted.item() == pytest.approx(reference["dice"], rel=1e-5)
    assert output.bce_loss.item() == pytest.approx(bce_w * reference["bce"], rel=1e-5)
    assert output.dice_loss.item() == pytest.approx(dice_w * reference["dice"], rel=1e-5)
    assert output.mask_loss.item() == pytest.approx(bce_w * reference["bce"] + dice_w * reference["dice"], rel=1e-5)
    assert output.loss.item() == pytest.approx(reference["loss"], rel=1e-5)


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows])


@pytest.mark.slow
def test_rows_without_masks_contribute_only_cross_entropy(tiny_model, batch, tokenizer):
    """A right-padded batch of 2: row 0 segments, row 1 is a text-only answer (no [SEG], no target masks)."""
    text_only = render_conversation([("user", "<image>\nWhat is in this video?"), ("assistant", "It is red.")])
    text_ids = tokenize_with_video_placeholder(tokenizer, text_only)
    text_labels = [IGNORE_INDEX] * (len(text_ids) - 5) + text_ids[-5:]
    row0 = batch.input_ids[0].tolist()
    combined = type(batch)(
        pixel_values_clip=batch.pixel_values_clip.expand(2, -1, -1, -1, -1),
        pixel_values_sam=batch.pixel_values_sam.expand(2, -1, -1, -1, -1),
        input_ids=pad_rows([row0, text_ids], 0),
        attention_mask=pad_rows([[1] * len(row0), [1] * len(text_ids)], 0),
        labels=pad_rows([batch.labels[0].tolist(), text_labels], IGNORE_INDEX),
        dense_positions=batch.dense_positions.expand(2, -1),
        target_masks=[batch.target_masks[0], torch.zeros(0, 4, *ORIGINAL_HW)],
        resized_sizes=batch.resized_sizes * 2,
        original_sizes=batch.original_sizes * 2,
    )
    with torch.no_grad():
        output = tiny_model(combined)
        single = tiny_model(batch)
    assert output.mask_logits[1].shape == (0, 4, *ORIGINAL_HW)
    torch.testing.assert_close(output.mask_logits[0], single.mask_logits[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(output.bce_loss, single.bce_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(output.dice_loss, single.dice_loss, rtol=1e-5, atol=0)
    reference = reference_losses(tiny_model, combined, output.mask_logits)
    assert output.ce_loss.item() == pytest.approx(reference["ce"], rel=1e-5)
    assert output.ce_loss.item() != pytest.approx(single.ce_loss.item(), rel=1e-3)  # row 1's tokens count


def test_forward_rejects_target_count_different_from_seg_count(tiny_model, batch):
    wrong = type(batch)(**{**batch.__dict__, "target_masks": [batch.target_masks[0].repeat(2, 1, 1, 1)]})
    with torch.no_grad(), pytest.raises(ValueError, match=r"row 0 has 1 \[SEG\] tokens but 2 target masks"):
        tiny_model(wrong)


def test_prompt_is_read_before_seg_for_any_number_of_video_tokens(tiny_model, batch):
    """With fewer video tokens than the config's (a shorter sampling), the read position follows the tokens
    actually spliced in; checked against an LLM run on a hand-spliced sequence."""
    ids = batch.input_ids[0].tolist()
    placeholder, seg = ids.index(-200), ids.index(480)
    num_video = 32 + 2 * 16
    video_tokens = torch.randn(1, num_video, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        prompts = tiny_model.compute_prompts(batch.input_ids, video_tokens)
        embed = tiny_model.llm.get_input_embeddings()
        before, after = embed(torch.tensor([ids[:placeholder]])), embed(torch.tensor([ids[placeholder + 1 :]]))
        hidden = tiny_model.llm.get_decoder()(
            inputs_embeds=torch.cat([before, video_tokens, after], dim=1)
        ).last_hidden_state[0]
        read = seg + num_video - 1 - 1  # [SEG] moves by N_vis - 1; the state read is the one before it
        torch.testing.assert_close(prompts.seg_hidden_states, hidden[read][None], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(prompts.prompt_embeddings, tiny_model.prompt_head(hidden[read][None]))
        assert not torch.allclose(hidden[read], hidden[read + 1], atol=1e-3)
    assert prompts.batch_index.tolist() == [0]
    assert prompts.logits is None


def test_encode_frames_shapes(tiny_model, batch):
    with torch.no_grad():
        frame_tokens = tiny_model.encode_frames(batch.pixel_values_clip)
        video_tokens = tiny_model.build_video_tokens(batch.pixel_values_clip, batch.dense_positions)
    assert frame_tokens.shape == (1, 32, 16, 64)
    assert video_tokens.shape == (1, 96, 64)
    torch.testing.assert_close(video_tokens[0, :32], frame_tokens[0].mean(1))
    torch.testing.assert_close(video_tokens[0, 32 + 16 : 32 + 32], frame_tokens[0, 10])


# ---------------------------------------------------------------------------------------------- freezing
def expected_trainable(name: str) -> bool:
    return name.startswith(("llm.model.embed_tokens.", "llm.lm_head.", "sam.mask_decoder.", "prompt_head."))


def test_freezing_policy_trains_exactly_the_original_modules(frozen_step):
    model, trainable, _ = frozen_step
    names = [name for name, _ in model.named_parameters()]
    assert trainable == [name for name in names if expected_trainable(name)]
    assert {name.split(".")[0] + "." + name.split(".")[1] for name in trainable} == {
        "llm.model",
        "llm.lm_head",
        "sam.mask_decoder",
        "prompt_head.0",
        "prompt_head.2",
    }
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == expected_trainable(name), name


def test_gradients_exist_exactly_on_trainable_parameters(frozen_step):
    model, _, _ = frozen_step
    for name, parameter in model.named_parameters():
        # The IoU head is trainable but its prediction is discarded (multimask_output=False, IoU ignored, as in
        # the original), so it never receives a gradient.
        if expected_trainable(name) and ".iou_prediction_head." not in name:
            assert parameter.grad is not None, f"{name} is trainable but got no gradient"
            assert torch.isfinite(parameter.grad).all(), name
        else:
            assert parameter.grad is None, f"{name} is frozen but got a gradient"
    for module in ("llm.model.embed_tokens", "llm.lm_head", "sam.mask_decoder.transformer", "prompt_head.2"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(module) and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), module


def test_release_preset_trainable_count_matches_the_original(release_model_on_meta):
    release_model_on_meta.apply_freezing_policy()
    trainable = sum(p.numel() for p in release_model_on_meta.parameters() if p.requires_grad)
    # Spec §1.8: 214,112,740 trainable including 3,145,728 LoRA parameters added later by peft.
    assert trainable == 214_112_740 - 3_145_728
    for parameter in release_model_on_meta.parameters():
        parameter.requires_grad_(True)


@pytest.mark.slow
def test_adam_steps_on_one_sample_reduce_the_loss(batch, tiny_model_factory):
    model = tiny_model_factory(seed=1).train()
    frozen_before = {
        name: parameter.detach().clone() for name, parameter in model.named_parameters() if not expected_trainable(name)
    }
    model.apply_freezing_policy()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses, bce_losses = [], []
    for _ in range(3):
        optimizer.zero_grad()
        output = model(batch)
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
        bce_losses.append(output.bce_loss.item())
    assert all(math.isfinite(loss) for loss in losses)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.75 * losses[0], losses
    assert bce_losses[-1] < bce_losses[0], bce_losses  # the mask branch learns too, not only the LM head
    for name, parameter in model.named_parameters():
        if name in frozen_before:
            assert torch.equal(parameter, frozen_before[name]), f"frozen parameter {name} changed"


# ---------------------------------------------------------------------------------------------- decoding
def reference_mask_logits(model, image_embeddings, prompt, resized_hw, original_hw):
    """The original path: stock prompt encoder (empty sparse prompt) + the text embedding appended, decoder with
    ``multimask_output=False``, then bilinear to the SAM input size, crop, bilinear to the original size."""
    sam = model.sam
    sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
    sparse = torch.cat([sparse, prompt[None, None]], dim=1)
    low_res, _ = sam.mask_decoder(
        image_embeddings=image_embeddings[None],
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    size = sam.image_encoder.img_size
    upscaled = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
    cropped = upscaled[..., : resized_hw[0], : resized_hw[1]]
    return F.interpolate(cropped, original_hw, mode="bilinear", align_corners=False)[0, 0]


def test_decode_masks_returns_logits_at_the_original_frame_size(tiny_model, frames_factory):
    frames = frames_factory(3, *ORIGINAL_HW, seed=4)
    pixels, resized_hw = preprocess_sam(frames, image_size=tiny_model.config.sam.image_size)
    assert resized_hw == (183, 256)
    prompts = torch.randn(2, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        image_embeddings = tiny_model.encode_images(pixels)
        logits = tiny_model.decode_masks(image_embeddings, prompts, resized_hw, ORIGINAL_HW)
        assert image_embeddings.shape == (3, 32, 16, 16)
        assert logits.shape == (3, 2, *ORIGINAL_HW)  # [F, K, H, W]
        for frame in range(3):
            for k in range(2):
                expected = reference_mask_logits(
                    tiny_model, image_embeddings[frame], prompts[k], resized_hw, ORIGINAL_HW
                )
                torch.testing.assert_close(logits[frame, k], expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(logits[:, 0], logits[:, 1])  # each prompt gives its own masks


# ---------------------------------------------------------------------------------------------- release preset
@pytest.fixture(scope="module")
def release_model_on_meta():
    with torch.device("meta"):
        return VideoLisaForSegmentation(VideoLisaConfig.from_preset("videolisa-3.8b"))


def test_release_preset_parameter_counts(release_model_on_meta):
    def count(prefix: str) -> int:
        return sum(p.numel() for n, p in release_model_on_meta.named_parameters() if n.startswith(prefix))

    outside_clip = sum(
        p.numel() for n, p in release_model_on_meta.named_parameters() if not n.startswith("vision_tower.")
    )
    assert outside_clip == 4_484_666_672
    saved_values = sum(
        t.numel() for n, t in release_model_on_meta.state_dict().items() if not n.startswith("vision_tower.")
    )
    assert saved_values == 4_484_666_672 + 256 == 4_484_666_928  # + SAM's random-Fourier matrix [2, 128]
    # Spec §1.8 per-module counts.
    assert count("vision_tower.") == 303_507_456
    assert count("projector.") == 12_589_056
    assert count("llm.model.layers.") == 3_624_075_264
    assert count("llm.model.embed_tokens.") == count("llm.lm_head.") == 98_340_864
    assert count("sam.") == 641_090_608
    assert count("sam.mask_decoder.") == 4_058_340
    assert count("prompt_head.") == 10_226_944


def test_trainable_prefixes_constant_names_the_original_groups():
    assert set(TRAINABLE_PREFIXES) == {"llm.model.embed_tokens.", "llm.lm_head.", "sam.mask_decoder.", "prompt_head."}
