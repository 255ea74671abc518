"""Tests of videolisa.checkpoint: the original release's key layout, strict loading, this package's save/load
round trip (single file, shards, .bin), SAM-dimension inference, hub errors offline, stock SAM weights, and the
[SEG] token / embedding-size handling of docs/original.md §4.2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from videolisa.checkpoint import (
    ORIGINAL_KEY_MAP,
    infer_sam_config,
    load_sam_checkpoint,
    load_state_dict_strict,
    load_tokenizer,
    map_key,
    prepare_tokenizer_and_embeddings,
    resolve_model_dir,
)
from videolisa.config import SamConfig, VideoLisaConfig
from videolisa.errors import CheckpointError, MissingFilesError
from videolisa.modeling.sam import build_sam
from videolisa.modeling.videolisa import VideoLisaForSegmentation
from videolisa.tokenization import build_tiny_tokenizer

STATE_DICT_TSV = Path(__file__).resolve().parent / "assets" / "videolisa-3.8b-state-dict.tsv"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def batch(tiny_model, tokenizer, tiny_batch_factory):
    return tiny_batch_factory(tiny_model.config, tokenizer, original_hw=(40, 56))


@torch.no_grad()
def model_outputs(model: VideoLisaForSegmentation, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt embeddings ``[K, C]`` and mask logits ``[T_d, K, H, W]`` of the batch's single conversation."""
    video_tokens = model.build_video_tokens(batch.pixel_values_clip, batch.dense_positions)
    prompts = model.compute_prompts(batch.input_ids, video_tokens).prompt_embeddings
    image_embeddings = model.encode_images(batch.pixel_values_sam[0])
    logits = model.decode_masks(image_embeddings, prompts, batch.resized_sizes[0], batch.original_sizes[0])
    return prompts, logits


def assert_same_state(first: torch.nn.Module, second: torch.nn.Module) -> None:
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for name, tensor in first_state.items():
        assert second_state[name].dtype == tensor.dtype, name
        assert torch.equal(second_state[name], tensor), name


# ============================================================================ (a) original key layout
def read_state_dict_tsv() -> list[dict[str, str]]:
    lines = STATE_DICT_TSV.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]


@pytest.fixture(scope="module")
def release_state_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = VideoLisaForSegmentation(VideoLisaConfig.from_preset("videolisa-3.8b"))
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def map_rows(rows: list[dict[str, str]], model_shapes: dict[str, tuple[int, ...]]) -> set[str]:
    """Map every row's name; each must land on a distinct model tensor of the same shape."""
    covered = set()
    for row in rows:
        target = map_key(row["name"], ORIGINAL_KEY_MAP)
        assert target is not None, f"{row['name']} has no mapping"
        assert target in model_shapes, f"{row['name']} -> {target} is not in the model"
        assert model_shapes[target] == tuple(json.loads(row["shape"])), row["name"]
        assert target not in covered, f"two checkpoint keys map to {target}"
        covered.add(target)
    return covered


def test_original_release_keys_map_onto_the_release_preset(release_state_shapes):
    rows = [row for row in read_state_dict_tsv() if row["in_merged_ckpt"] == "yes"]
    assert len(rows) == 797
    covered = map_rows(rows, release_state_shapes)
    leftover = set(release_state_shapes) - covered
    assert leftover == {name for name in release_state_shapes if name.startswith("vision_tower.")}
    assert len(leftover) == 391


def test_original_clip_keys_map_onto_the_vision_tower(release_state_shapes):
    """The merge script dropped CLIP, but an unmerged original state dict holds it under model.vision_tower."""
    rows = [
        row for row in read_state_dict_tsv() if row["name"].startswith("model.vision_tower.") and row["kind"] == "param"
    ]
    covered = map_rows(rows, release_state_shapes)
    assert covered == {name for name in release_state_shapes if name.startswith("vision_tower.")}
    assert map_key("base_model.model.lm_head.weight", ORIGINAL_KEY_MAP) is None  # pre-merge PEFT names


# ============================================================================ (b) strict loading
def state_items(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, tensor.clone()) for name, tensor in model.state_dict().items()]


def test_strict_load_accepts_a_complete_state_dict(tiny_model, tiny_model_factory):
    other = tiny_model_factory(seed=3)
    load_state_dict_strict(other, iter(state_items(tiny_model)))
    assert_same_state(other, tiny_model)


def test_strict_load_rejects_an_extra_key(tiny_model, tiny_model_factory):
    items = state_items(tiny_model) + [("sam.mask_decoder.extra_head.weight", torch.zeros(3))]
    with pytest.raises(CheckpointError, match=r"model does not have: sam\.mask_decoder\.extra_head\.weight"):
        load_state_dict_strict(tiny_model_factory(seed=3), iter(items))


def test_strict_load_rejects_a_missing_key(tiny_model, tiny_model_factory):
    items = [(name, tensor) for name, tensor in state_items(tiny_model) if name != "prompt_head.2.bias"]
    with pytest.raises(CheckpointError, match=r"1 model tensors missing from the checkpoint: prompt_head\.2\.bias"):
        load_state_dict_strict(tiny_model_factory(seed=3), iter(items))


def test_strict_load_rejects_a_wrong_shape(tiny_model, tiny_model_factory):
    items = [
        (name, torch.zeros(64, 63) if name == "prompt_head.0.weight" else tensor)
        for name, tensor in state_items(tiny_model)
    ]
    with pytest.raises(CheckpointError, match=re.escape("prompt_head.0.weight: checkpoint (64, 63) vs model (64, 64)")):
        load_state_dict_strict(tiny_model_factory(seed=3), iter(items))


def test_strict_load_rejects_an_unmapped_original_key(tiny_model_factory):
    items = [("model.unknown_module.weight", torch.zeros(2))]
    with pytest.raises(CheckpointError, match=r"no mapping: model\.unknown_module\.weight"):
        load_state_dict_strict(tiny_model_factory(seed=3), iter(items), ORIGINAL_KEY_MAP)


def test_from_pretrained_names_the_extra_key_of_a_file(tmp_path, tiny_model, tokenizer):
    tiny_model.save_pretrained(tmp_path, tokenizer=tokenizer)
    weights = {name: tensor.contiguous() for name, tensor in tiny_model.state_dict().items()}
    weights["llm.model.layers.9.mlp.down_proj.weight"] = torch.zeros(2, 2)
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"llm\.model\.layers\.9\.mlp\.down_proj\.weight"):
        VideoLisaForSegmentation.from_pretrained(tmp_path)


# ============================================================================ (c) save / load round trip
@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, tiny_model, tokenizer) -> Path:
    directory = tmp_path_factory.mktemp("tiny-saved")
    tiny_model.save_pretrained(directory, tokenizer=tokenizer)
    return directory


def test_save_writes_config_safetensors_and_tokenizer(saved_dir):
    names = {path.name for path in saved_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(name.startswith(".saving-") for name in names)  # staging directory removed
    assert json.loads((saved_dir / "config.json").read_text())["model_type"] == "videolisa"
    with safe_open(str(saved_dir / "model.safetensors"), framework="pt") as handle:
        assert any(name.startswith("vision_tower.") for name in handle.keys())  # noqa: SIM118 (a safetensors handle)


@pytest.mark.slow
def test_round_trip_is_bit_identical(saved_dir, tiny_model, batch):
    loaded = VideoLisaForSegmentation.from_pretrained(saved_dir)
    assert not loaded.training
    assert loaded.config.to_dict() == tiny_model.config.to_dict()
    assert_same_state(loaded, tiny_model)
    prompts, logits = model_outputs(loaded, batch)
    reference_prompts, reference_logits = model_outputs(tiny_model, batch)
    assert torch.equal(prompts, reference_prompts)
    assert torch.equal(logits, reference_logits)


def test_saved_tokenizer_keeps_the_seg_token(saved_dir, tokenizer):
    loaded = load_tokenizer(saved_dir)
    assert loaded.convert_tokens_to_ids("[SEG]") == 480
    text = "<|user|>\nPlease segment the red ball.<|end|>\n<|assistant|>\nSure, [SEG].<|end|>"
    assert loaded(text).input_ids == tokenizer(text).input_ids
    assert load_tokenizer(saved_dir.parent) is None  # no tokenizer files there


def test_sharded_save_loads_and_replaces_stale_shards(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path, max_shard_size="300KB")
    shards = sorted(path.name for path in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert_same_state(VideoLisaForSegmentation.from_pretrained(tmp_path), tiny_model)

    tiny_model.save_pretrained(tmp_path)  # unsharded into the same directory: old shards must go
    assert not list(tmp_path.glob("model-*.safetensors"))
    assert not (tmp_path / "model.safetensors.index.json").exists()
    assert_same_state(VideoLisaForSegmentation.from_pretrained(tmp_path), tiny_model)


def test_missing_shard_is_reported(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path, max_shard_size="300KB")
    victim = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(MissingFilesError, match=re.escape(victim.name)):
        VideoLisaForSegmentation.from_pretrained(tmp_path)


def test_pytorch_bin_weights_load(tmp_path, tiny_model):
    tiny_model.config.save_pretrained(tmp_path)
    torch.save(tiny_model.state_dict(), tmp_path / "pytorch_model.bin")
    assert_same_state(VideoLisaForSegmentation.from_pretrained(tmp_path), tiny_model)


class _NotAllowedInWeightsOnlyPickles:
    pass


def test_pytorch_bin_with_arbitrary_objects_is_refused(tmp_path, tiny_model):
    tiny_model.config.save_pretrained(tmp_path)
    torch.save({"payload": _NotAllowedInWeightsOnlyPickles()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights-only"):
        VideoLisaForSegmentation.from_pretrained(tmp_path)


def test_bf16_load_keeps_rope_frequencies_in_float32(saved_dir):
    loaded = VideoLisaForSegmentation.from_pretrained(saved_dir, dtype=torch.bfloat16)
    assert loaded.llm.model.embed_tokens.weight.dtype == torch.bfloat16
    assert loaded.sam.mask_decoder.mask_tokens.weight.dtype == torch.bfloat16
    assert loaded.vision_tower.pre_layrnorm.weight.dtype == torch.bfloat16
    inv_freq = loaded.llm.model.rotary_emb.inv_freq
    head_dim = 64 // 4
    expected = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    assert inv_freq.dtype == torch.float32
    assert torch.equal(inv_freq, expected)


def test_config_json_is_required(tmp_path):
    with pytest.raises(MissingFilesError, match="config.json"):
        VideoLisaForSegmentation.from_pretrained(tmp_path)


def test_unknown_model_type_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model_type 'llama'.*'videolisa'.*llava_phi"):
        VideoLisaForSegmentation.from_pretrained(tmp_path)


# ============================================================================ (d) SAM dimensions
def test_infer_sam_config_recovers_vit_b_from_shapes():
    expected = SamConfig.from_variant("vit_b")
    with torch.device("meta"):
        sam = build_sam(expected)
    shapes = {f"sam.{name}": tuple(tensor.shape) for name, tensor in sam.state_dict().items()}
    assert infer_sam_config(shapes) == expected


def test_infer_sam_config_recovers_the_tiny_variant(tiny_model):
    shapes = {name: tuple(tensor.shape) for name, tensor in tiny_model.state_dict().items()}
    assert infer_sam_config(shapes) == tiny_model.config.sam


def test_infer_sam_config_reads_the_parity_checkpoint(parity_dir):
    sam_json = json.loads((parity_dir / "sam_config.json").read_text())
    encoder, decoder = sam_json["image_encoder"], sam_json["mask_decoder"]
    with safe_open(str(parity_dir / "videolisa_tiny_merged.safetensors"), framework="pt") as handle:
        shapes = {map_key(name, ORIGINAL_KEY_MAP): tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    config = infer_sam_config(shapes)
    assert config.variant == "custom"
    assert (config.image_size, config.patch_size) == (encoder["img_size"], encoder["patch_size"])
    assert (config.encoder_embed_dim, config.encoder_depth) == (encoder["embed_dim"], encoder["depth"])
    assert config.encoder_num_heads == encoder["num_heads"]
    assert config.encoder_global_attn_indexes == encoder["global_attn_indexes"]
    assert config.encoder_window_size == encoder["window_size"]
    assert config.prompt_embed_dim == encoder["out_chans"] == sam_json["prompt_encoder"]["embed_dim"]
    assert config.mask_in_chans == sam_json["prompt_encoder"]["mask_in_chans"]
    assert config.decoder_depth == decoder["transformer_depth"]
    assert config.decoder_mlp_dim == decoder["transformer_mlp_dim"]
    assert config.decoder_num_heads == decoder["transformer_num_heads"]
    assert config.num_multimask_outputs == decoder["num_multimask_outputs"]
    assert config.iou_head_depth == decoder["iou_head_depth"]
    assert config.iou_head_hidden_dim == decoder["iou_head_hidden_dim"]


def test_infer_sam_config_names_a_missing_tensor():
    with pytest.raises(CheckpointError, match=r"sam\.image_encoder\.patch_embed\.proj\.weight is missing"):
        infer_sam_config({"sam.image_encoder.pos_embed": (1, 64, 64, 32)})


# ============================================================================ (e) hub access offline
def test_uncached_repo_offline_explains_how_to_pass_a_directory():
    repo = "videolisa-tests/not-a-cached-repo"
    with pytest.raises(MissingFilesError) as error:
        resolve_model_dir(repo)
    message = str(error.value)
    assert repo in message
    assert "HF_HUB_OFFLINE" in message
    assert "--local-dir" in message and "pass that directory" in message
    with pytest.raises(MissingFilesError, match=re.escape(repo)):
        VideoLisaForSegmentation.from_pretrained(repo)


def test_path_that_is_neither_a_directory_nor_a_repo_id(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(MissingFilesError, match="neither an existing directory nor a Hugging Face repository id"):
        resolve_model_dir(missing)
    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(MissingFilesError, match="is a file; expected a model directory"):
        resolve_model_dir(a_file)
    assert resolve_model_dir(tmp_path) == tmp_path


# ============================================================================ (f) stock SAM weights
def test_stock_sam_pth_loads_into_model_sam(tmp_path, tiny_model, tiny_model_factory):
    path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_model.sam.state_dict(), path)
    model = tiny_model_factory(seed=7)
    head_before = model.prompt_head.state_dict()
    head_before = {name: tensor.clone() for name, tensor in head_before.items()}
    assert not torch.equal(model.sam.mask_decoder.mask_tokens.weight, tiny_model.sam.mask_decoder.mask_tokens.weight)
    load_sam_checkpoint(model, path)
    assert_same_state(model.sam, tiny_model.sam)
    for name, tensor in model.prompt_head.state_dict().items():  # nothing outside SAM is touched
        assert torch.equal(tensor, head_before[name])


def test_sam_pth_of_another_vit_is_rejected(tmp_path, tiny_model_factory):
    torch.manual_seed(0)
    other = build_sam(SamConfig.from_variant("tiny", encoder_embed_dim=48, encoder_num_heads=2))
    path = tmp_path / "sam_other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"wrong shape: image_encoder\.pos_embed: checkpoint \(1, 16, 16, 48\)"):
        load_sam_checkpoint(tiny_model_factory(seed=7), path)


def test_missing_sam_checkpoint(tmp_path, tiny_model):
    with pytest.raises(MissingFilesError, match="sam_vit_h.pth does not exist"):
        load_sam_checkpoint(tiny_model, tmp_path / "sam_vit_h.pth")


# ============================================================================ (g) [SEG] token and embeddings
def test_seg_token_is_added_and_embeddings_grow(tiny_model_factory):
    tokenizer = build_tiny_tokenizer(seg_token="<trk>")  # a tokenizer without [SEG]
    assert "[SEG]" not in tokenizer.get_vocab() and len(tokenizer) == 481
    model = tiny_model_factory(seed=0, text_config={"vocab_size": 481}, seg_token_id=0)
    old_embeddings = model.llm.get_input_embeddings().weight.detach().clone()

    token_id = prepare_tokenizer_and_embeddings(model, tokenizer)

    assert token_id == 481 == tokenizer.convert_tokens_to_ids("[SEG]")
    assert len(tokenizer) == 482
    embeddings = model.llm.get_input_embeddings().weight
    assert embeddings.shape == (482, 64)
    assert model.llm.get_output_embeddings().weight.shape == (482, 64)
    assert torch.equal(embeddings[:481], old_embeddings)
    assert (model.config.seg_token_id, model.config.text_config.vocab_size) == (481, 482)


@pytest.mark.slow
def test_padded_embeddings_shrink_and_seg_keeps_its_old_row(tmp_path, tiny_model_factory, tiny_batch_factory):
    """Like Phi-3 (32064 padded rows -> 32012): the model has more rows than the tokenizer will have."""
    tokenizer = build_tiny_tokenizer(seg_token="<trk>")
    model = tiny_model_factory(seed=0)
    assert model.llm.get_input_embeddings().weight.shape[0] == 512
    old_input = model.llm.get_input_embeddings().weight.detach().clone()
    old_output = model.llm.get_output_embeddings().weight.detach().clone()

    token_id = prepare_tokenizer_and_embeddings(model, tokenizer)

    assert token_id == 481
    new_input = model.llm.get_input_embeddings().weight
    new_output = model.llm.get_output_embeddings().weight
    assert new_input.shape == new_output.shape == (482, 64)
    assert torch.equal(new_input, old_input[:482])  # row 481 ([SEG]) is the old padding row 481
    assert torch.equal(new_output, old_output[:482])
    assert (model.config.seg_token_id, model.config.text_config.vocab_size) == (481, 482)

    # The resized model still runs, and saves / loads with the new vocabulary.
    batch = tiny_batch_factory(model.config, tokenizer)
    assert batch.input_ids[0].tolist().count(481) == 1
    prompts, _ = model_outputs(model, batch)
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    loaded = VideoLisaForSegmentation.from_pretrained(tmp_path)
    assert loaded.config.seg_token_id == 481
    assert loaded.llm.get_input_embeddings().weight.shape == (482, 64)
    assert torch.equal(model_outputs(loaded, batch)[0], prompts)


def test_tokenizer_with_seg_keeps_its_id(tiny_model_factory, tiny_tokenizer):
    model = tiny_model_factory(seed=0)
    assert prepare_tokenizer_and_embeddings(model, tiny_tokenizer) == 480
    assert len(tiny_tokenizer) == 481
    assert model.llm.get_input_embeddings().weight.shape == (481, 64)
