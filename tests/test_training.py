"""The training library: config parsing, DeepSpeed config, LoRA / freezing, LLaVA-Phi-3 base loading, resume
rules, checkpoint bookkeeping. The launcher runs are in test_training_launcher.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from videolisa.builder import build_empty_model, build_model_and_tokenizer, load_llava_phi3_base
from videolisa.config import SamConfig, VideoLisaConfig
from videolisa.errors import CheckpointError, InvalidInputError, MissingFilesError
from videolisa.training import LoraConfig, ModelConfig, TrainingConfig, load_training_config, prepare_run
from videolisa.training.config import check_resume_changes
from videolisa.training.engine import build_deepspeed_config, gradient_accumulation_steps
from videolisa.training.export import resolve_export_tag
from videolisa.training.loop import micro_batch_seed
from videolisa.training.model import (
    apply_freezing_and_lora,
    lora_target_pattern,
    trainable_parameter_count,
    unwrap_model,
)
from videolisa.training.optim import build_parameter_groups, optimizer_parameter_groups, scale_schedule
from videolisa.training.run import (
    CHECKPOINT_DIR,
    check_resumed_deepspeed_config,
    remove_old_checkpoints,
    tensorboard_writer,
    truncate_run_logs,
)
from videolisa.training.validation import default_metric

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "train" / "configs"


# ============================================================================================ config
def test_tiny_config_with_overrides():
    config = load_training_config(
        CONFIGS / "tiny_cpu.yaml",
        ["data.roots.mevis=/data/mevis", "train.total_steps=9", "optim.lr=3e-4", "data.mevis_splits=[train, valid_u]"],
    )
    assert config.model.source == "scratch" and config.model.preset == "tiny"
    assert config.data.roots["mevis"] == "/data/mevis"
    assert config.data.roots["ade20k"] is None  # dicts merge onto the defaults
    assert config.train.total_steps == 9 and config.optim.lr == pytest.approx(3e-4)
    assert config.data.mevis_splits == ["train", "valid_u"]
    assert config.train.deepspeed_config == str(CONFIGS / "ds_zero2.json")


def test_original_recipe_config_matches_the_spec():
    config = load_training_config(
        CONFIGS / "videolisa_3.8b.yaml",
        ["model.sam_checkpoint=/ckpt/sam_vit_h_4b8939.pth", "validation.root=/data/ReasonSeg"],
    )
    assert config.model.source == "llava_phi3" and config.model.path == "MBZUAI/LLaVA-Phi-3-mini-4k-instruct"
    assert (config.lora.r, config.lora.alpha, config.lora.dropout, config.lora.target_modules) == (
        8,
        16,
        0.05,
        ["qkv_proj"],
    )
    assert (config.optim.lr, config.optim.betas, config.optim.weight_decay) == (3e-4, [0.9, 0.95], 0.0)
    assert (config.optim.warmup_steps, config.optim.gradient_clipping) == (100, 1.0)
    assert (config.train.total_steps, config.train.global_batch_size, config.train.micro_batch_size) == (6000, 128, 2)
    assert config.data.rates == {
        "sem_seg": 8,
        "refer_seg": 4,
        "reason_seg": 3,
        "ytvos": 4,
        "refytvos": 6,
        "mevis": 6,
        "refdavis": 1,
        "vqa": 0,
        "custom": 0,
    }
    assert config.data.explanatory == 0.1 and config.data.mevis_splits == ["train", "valid_u"]
    assert (config.validation.benchmark, config.validation.split, config.validation.metric) == (
        "reasonseg",
        "val",
        "gIoU",
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.total_step=3"], r"train has unknown keys \['total_step'\]"),
        (["train.total_steps=many"], "train.total_steps must be int, got 'many'"),
        (["train.total_steps=true"], "train.total_steps must be int"),
        (["lora.target_modules=qkv_proj"], "lora.target_modules must be a list"),
        (["train.global_batch_size=3", "train.micro_batch_size=2"], "must be a multiple of train.micro_batch_size"),
        (["model.source=llava_phi3", "model.path=/x"], "model.sam_checkpoint"),
        (["optim.warmup_steps=100"], r"optim.warmup_steps \(100\) must be in \[0, train.total_steps=6\]"),
        (["validation.benchmark=mevis"], "validation.root must be set"),
        (["data.rates.kinetics=1"], r"data.rates has unknown entries \['kinetics'\]"),
        (["train"], "must look like section.key=value"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(InvalidInputError, match=message):
        load_training_config(CONFIGS / "tiny_cpu.yaml", overrides)


def test_resume_may_only_change_safe_keys():
    saved = load_training_config(CONFIGS / "tiny_cpu.yaml")
    check_resume_changes(
        saved, load_training_config(CONFIGS / "tiny_cpu.yaml", ["train.save_every=1", "validation.limit=3"])
    )
    with pytest.raises(InvalidInputError, match=r"cannot change \['optim.lr', 'train.seed'\]"):
        check_resume_changes(saved, load_training_config(CONFIGS / "tiny_cpu.yaml", ["optim.lr=0.1", "train.seed=5"]))


def test_prepare_run_checks_the_resume_folder(tmp_path):
    with pytest.raises(InvalidInputError, match="--config"):
        prepare_run(None, None, [])
    with pytest.raises(MissingFilesError, match="train_config.yaml not found"):
        prepare_run(None, tmp_path, [])
    (tmp_path / "train_config.yaml").write_text("{}")
    with pytest.raises(MissingFilesError, match="no checkpoint"):
        prepare_run(None, tmp_path, [])


def test_resume_cuts_the_metrics_and_validations_logged_after_the_checkpoint(tmp_path):
    """A run killed at step 5 after its step-3 checkpoint resumes at step 4: steps 4 and 5 are logged again, so
    their old lines and validation outputs go, and no step appears twice."""
    lines = [json.dumps({"step": step, "loss": 1.0 / step}) for step in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 6, "lo')  # killed mid-line
    for step in (3, 4):
        (tmp_path / "validation" / f"step_{step:06d}").mkdir(parents=True)
    truncate_run_logs(tmp_path, 3)
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(line + "\n" for line in lines[:3])
    assert sorted(path.name for path in (tmp_path / "validation").iterdir()) == ["step_000003"]


def test_resumed_tensorboard_has_every_step_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = tensorboard_writer(tmp_path, 0)
    for step in range(1, 6):  # the killed run got to step 5; its checkpoint is at step 3
        writer.add_scalar("loss", float(step), step)
    writer.close()
    writer = tensorboard_writer(tmp_path, 3)
    for step in range(4, 7):
        writer.add_scalar("loss", 10.0 + step, step)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("loss")] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 14.0),
        (5, 15.0),
        (6, 16.0),
    ]


def test_resume_refuses_what_deepspeed_cannot_honour(tmp_path):
    def deepspeed_config(world_size, precision="fp32", template=CONFIGS / "ds_zero2.json", overrides=()):
        config = load_training_config(CONFIGS / "tiny_cpu.yaml", list(overrides))
        return build_deepspeed_config(template, config, world_size, precision)

    (tmp_path / "deepspeed_config.json").write_text(json.dumps(deepspeed_config(1)))  # micro-batch 1 x 2 steps
    # Another micro-batch split of the same global batch is honoured.
    check_resumed_deepspeed_config(tmp_path, deepspeed_config(1, overrides=["train.micro_batch_size=2"]), 1)
    with pytest.raises(InvalidInputError, match="trained on 1 processes, this launch has 2"):
        check_resumed_deepspeed_config(tmp_path, deepspeed_config(2), 2)
    with pytest.raises(InvalidInputError, match=r"bf16.enabled: False then, True now"):
        check_resumed_deepspeed_config(tmp_path, deepspeed_config(1, "bf16"), 1)
    template = json.loads((CONFIGS / "ds_zero2.json").read_text())
    template["zero_optimization"]["stage"] = 1
    (tmp_path / "edited.json").write_text(json.dumps(template))
    with pytest.raises(InvalidInputError, match=r"zero_optimization.stage: 2 then, 1 now.*restore the template"):
        check_resumed_deepspeed_config(tmp_path, deepspeed_config(1, template=tmp_path / "edited.json"), 1)


@pytest.mark.parametrize("script", ["train.py", "export.py"])
def test_help_says_only_trusted_run_folders_are_loaded(script, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"train_{script[:-3]}", CONFIGS.parent / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "weights_only=False" in text and "trust" in text


# ============================================================================================ DeepSpeed config
@pytest.mark.parametrize(("world_size", "accumulation"), [(1, 64), (8, 8), (64, 1)])
def test_deepspeed_config_is_filled_from_the_yaml(world_size, accumulation):
    config = load_training_config(
        CONFIGS / "videolisa_3.8b.yaml", ["model.sam_checkpoint=/s.pth", "validation.root=/r"]
    )
    ds = build_deepspeed_config(CONFIGS / "ds_zero2.json", config, world_size, "bf16")
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"]) == (128, 2)
    assert ds["gradient_accumulation_steps"] == accumulation
    assert ds["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.9, 0.95], "weight_decay": 0.0, "torch_adam": True}
    assert ds["scheduler"] == {
        "type": "WarmupDecayLR",
        "params": {
            "total_num_steps": 6000,
            "warmup_min_lr": 0,
            "warmup_max_lr": 3e-4,
            "warmup_num_steps": 100,
            "warmup_type": "linear",
        },
    }
    assert ds["bf16"] == {"enabled": True} and ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"]["stage"] == 2
    assert "auto" not in json.dumps(ds)


def test_deepspeed_values_may_not_be_stated_twice(tmp_path):
    config = load_training_config(CONFIGS / "tiny_cpu.yaml")
    template = json.loads((CONFIGS / "ds_zero2.json").read_text())
    template["optimizer"]["params"]["lr"] = 0.01
    (tmp_path / "ds.json").write_text(json.dumps(template))
    with pytest.raises(InvalidInputError, match=r'optimizer.params.lr must be "auto"'):
        build_deepspeed_config(tmp_path / "ds.json", config, 1, "fp32")
    template["optimizer"]["params"]["lr"] = "auto"
    template["zero_optimization"]["reduce_bucket_size"] = "auto"
    (tmp_path / "ds.json").write_text(json.dumps(template))
    with pytest.raises(InvalidInputError, match=r"'auto' at \['zero_optimization.reduce_bucket_size'\]"):
        build_deepspeed_config(tmp_path / "ds.json", config, 1, "fp32")


def test_accumulation_must_divide():
    config = load_training_config(CONFIGS / "tiny_cpu.yaml")
    assert gradient_accumulation_steps(config.train, 2) == 1
    with pytest.raises(InvalidInputError, match="multiple of train.micro_batch_size x processes"):
        gradient_accumulation_steps(config.train, 3)


# ============================================================================================ LoRA and freezing
def test_lora_pattern_matches_only_llm_modules():
    import re

    pattern = re.compile(lora_target_pattern(["qkv_proj"]))
    assert pattern.fullmatch("llm.model.layers.31.self_attn.qkv_proj")
    assert not pattern.fullmatch("llm.model.layers.0.self_attn.o_proj")
    assert not pattern.fullmatch("sam.mask_decoder.transformer.layers.0.self_attn.q_proj")
    assert not re.compile(lora_target_pattern(["q_proj"])).fullmatch(
        "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj"
    )


def tiny_model_and_tokenizer():
    torch.manual_seed(0)
    return build_model_and_tokenizer(ModelConfig(source="scratch", preset="tiny", tokenizer="tiny"), torch.float32)


def test_freezing_and_lora_on_the_tiny_model():
    model, tokenizer = tiny_model_and_tokenizer()
    assert model.config.seg_token_id == tokenizer.convert_tokens_to_ids("[SEG]") == len(tokenizer) - 1
    wrapped = apply_freezing_and_lora(model, LoraConfig())
    trainable = {name.removeprefix("base_model.model.") for name, p in wrapped.named_parameters() if p.requires_grad}
    lora = sorted(name for name in trainable if "lora_" in name)
    assert lora == [
        f"llm.model.layers.{i}.self_attn.qkv_proj.lora_{ab}.default.weight" for i in range(2) for ab in "AB"
    ]
    others = trainable - set(lora)
    assert all(
        name.startswith(("llm.model.embed_tokens.", "llm.lm_head.", "sam.mask_decoder.", "prompt_head."))
        for name in others
    )
    assert any(name.startswith("sam.mask_decoder.") for name in others) and "llm.lm_head.weight" in others
    assert unwrap_model(wrapped) is model
    other_targets = apply_freezing_and_lora(
        tiny_model_and_tokenizer()[0], LoraConfig(target_modules=["o_proj", "down_proj"])
    )
    assert sum("lora_A" in name for name, _ in other_targets.named_parameters()) == 4
    with pytest.raises(InvalidInputError, match="matches no LLM module"):
        apply_freezing_and_lora(tiny_model_and_tokenizer()[0], LoraConfig(target_modules=["nothing_here"]))
    no_lora = apply_freezing_and_lora(tiny_model_and_tokenizer()[0], LoraConfig(r=0))
    assert not any("lora" in name for name, _ in no_lora.named_parameters())


def test_original_trainable_parameter_count_on_the_meta_device():
    """Spec §1.8: 214,112,740 trainable parameters (LoRA r 8 on 32 fused qkv_proj, embeddings and LM head of
    32012 rows, SAM mask decoder, prompt head)."""
    model = build_empty_model(VideoLisaConfig.from_preset("videolisa-3.8b"))
    wrapped = apply_freezing_and_lora(model, LoraConfig())
    assert trainable_parameter_count(wrapped)[0] == 214_112_740
    qkv = unwrap_model(wrapped).llm.model.layers[0].self_attn.qkv_proj
    assert qkv.lora_A["default"].weight.shape == (8, 3072) and qkv.lora_B["default"].weight.shape == (9216, 8)
    assert qkv.scaling["default"] == 2.0


# ============================================================================================ LLaVA-Phi-3 base
def write_fake_llava_phi3(root: Path, extra_key: bool = False) -> dict[str, torch.Tensor]:
    """A tiny LLaVA-Phi-3 folder (config, LLM + mm_projector weights, tokenizer without [SEG]) and its CLIP."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionModel

    from videolisa.modeling.vision import build_projector
    from videolisa.tokenization import build_tiny_tokenizer

    tiny = VideoLisaConfig.from_preset("tiny")
    torch.manual_seed(1)
    CLIPVisionModel(tiny.vision_config).save_pretrained(root / "clip")
    phi3 = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=512,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        sliding_window=95,
        hidden_act="silu",
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attention_dropout=0.0,
        embd_pdrop=0.0,
        resid_pdrop=0.0,
        use_cache=False,
    )
    llm = AutoModelForCausalLM.from_config(AutoConfig.for_model("phi3", **phi3))
    tensors = {name: tensor.contiguous() for name, tensor in llm.state_dict().items()}
    projector = build_projector("mlp2x_gelu", 32, 64)
    tensors.update({f"model.mm_projector.{name}": tensor for name, tensor in projector.state_dict().items()})
    if extra_key:
        tensors["model.unrelated_head.weight"] = torch.zeros(2)
    save_file(tensors, str(root / "model.safetensors"))
    config = {
        **phi3,
        "architectures": ["LlavaPhiForCausalLM"],
        "model_type": "llava_phi",
        "rope_scaling": None,
        "torch_dtype": "bfloat16",
        "mm_vision_tower": str(root / "clip"),
        "mm_hidden_size": 32,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "flat",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "square",
        "tokenizer_model_max_length": 512,
        "tokenizer_padding_side": "right",
        "use_mm_proj": True,
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
    }
    (root / "config.json").write_text(json.dumps(config))
    build_tiny_tokenizer(seg_token="<unused>").save_pretrained(root)  # 481 tokens, no [SEG]
    from videolisa.modeling.sam import build_sam

    torch.save(build_sam(SamConfig.from_variant("tiny")).state_dict(), root / "sam_tiny.pth")
    return tensors


@pytest.mark.slow
def test_llava_phi3_base_loads_every_piece(tmp_path):
    from safetensors.torch import load_file

    tensors = write_fake_llava_phi3(tmp_path)
    model, tokenizer = load_llava_phi3_base(tmp_path, tmp_path / "sam_tiny.pth", None, torch.float32)
    assert len(tokenizer) == 482 and model.config.seg_token_id == tokenizer.convert_tokens_to_ids("[SEG]") == 481
    state = model.state_dict()
    # [SEG] reuses the padded row 481 of the base model: the 512 rows shrink to 482.
    torch.testing.assert_close(state["llm.model.embed_tokens.weight"], tensors["model.embed_tokens.weight"][:482])
    torch.testing.assert_close(state["llm.lm_head.weight"], tensors["lm_head.weight"][:482])
    torch.testing.assert_close(
        state["llm.model.layers.1.self_attn.qkv_proj.weight"], tensors["model.layers.1.self_attn.qkv_proj.weight"]
    )
    torch.testing.assert_close(state["projector.2.weight"], tensors["model.mm_projector.2.weight"])
    clip = load_file(str(tmp_path / "clip" / "model.safetensors"))
    (clip_key,) = [name for name in clip if name.endswith("post_layernorm.weight")]
    torch.testing.assert_close(state["vision_tower.post_layernorm.weight"], clip[clip_key])
    sam = torch.load(tmp_path / "sam_tiny.pth", weights_only=True)
    torch.testing.assert_close(state["sam.mask_decoder.iou_token.weight"], sam["mask_decoder.iou_token.weight"])
    assert model.config.sam.variant == "tiny"
    assert model.config.text_config.sliding_window == 96  # transformers-5 semantics of the original 95
    assert all(not p.is_meta and torch.isfinite(p).all() for p in model.prompt_head.parameters())


def test_llava_phi3_base_rejects_unknown_keys(tmp_path):
    write_fake_llava_phi3(tmp_path, extra_key=True)
    with pytest.raises(CheckpointError, match="model.unrelated_head.weight"):
        load_llava_phi3_base(tmp_path, tmp_path / "sam_tiny.pth", None, torch.float32)
    with pytest.raises(MissingFilesError, match="model.sam_checkpoint"):
        load_llava_phi3_base(tmp_path, tmp_path / "missing.pth", None, torch.float32)


# ============================================================================================ bookkeeping
def write_checkpoint_dirs(run_dir: Path, tags: list[str], best: str | None = None, latest: str | None = None) -> None:
    checkpoints = run_dir / CHECKPOINT_DIR
    for tag in tags:
        (checkpoints / tag).mkdir(parents=True)
    if latest:
        (checkpoints / "latest").write_text(latest)
    if best:
        (checkpoints / "best.json").write_text(json.dumps({"tag": best, "step": 1, "metric": "JF", "score": 0.5}))


def test_rotation_keeps_the_newest_and_the_best(tmp_path):
    write_checkpoint_dirs(tmp_path, ["step_000001", "step_000002", "step_000003", "step_000004"], best="step_000001")
    assert remove_old_checkpoints(tmp_path, keep_last=2) == ["step_000002"]
    assert sorted(p.name for p in (tmp_path / CHECKPOINT_DIR).glob("step_*")) == [
        "step_000001",
        "step_000003",
        "step_000004",
    ]


def test_export_tag_resolution(tmp_path):
    write_checkpoint_dirs(tmp_path, ["step_000002", "step_000004"], latest="step_000004")
    assert resolve_export_tag(tmp_path, None) == "step_000004"
    assert resolve_export_tag(tmp_path, "step_000002") == "step_000002"
    with pytest.raises(MissingFilesError, match="no validated best"):
        resolve_export_tag(tmp_path, "best")
    with pytest.raises(MissingFilesError, match="step_000003"):
        resolve_export_tag(tmp_path, "step_000003")
    (tmp_path / CHECKPOINT_DIR / "best.json").write_text(json.dumps({"tag": "step_000002"}))
    assert resolve_export_tag(tmp_path, None) == resolve_export_tag(tmp_path, "best") == "step_000002"
    assert resolve_export_tag(tmp_path, "latest") == "step_000004"


def test_micro_batch_seeds_and_metrics():
    seeds = {micro_batch_seed(0, step, slot) for step in range(4) for slot in range(4)}
    assert len(seeds) == 16 and micro_batch_seed(0, 1, 1) == micro_batch_seed(0, 1, 1)
    assert default_metric("reasonseg") == "gIoU" and default_metric("mevis") == "JF"
    assert TrainingConfig().train.precision == "auto"


def test_pretrained_source_loads_a_saved_model_and_its_tokenizer(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer()
    model.save_pretrained(tmp_path / "saved", tokenizer=tokenizer)
    loaded, loaded_tokenizer = build_model_and_tokenizer(
        ModelConfig(source="pretrained", path=str(tmp_path / "saved")), torch.float32
    )
    assert len(loaded_tokenizer) == len(tokenizer) and loaded.config.seg_token_id == model.config.seg_token_id
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.training


def test_bf16_layout_keeps_buffers_in_float32():
    from videolisa.builder import cast_parameters

    model, _ = tiny_model_and_tokenizer()
    cast_parameters(model, torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    gaussian = model.sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    assert gaussian.dtype == torch.float32


@pytest.mark.slow
def test_validation_leaves_the_trained_model_untouched(tmp_path):
    """In-training validation runs the predictor on the model being trained: afterwards its parameters are
    the same tensors, its buffers the same dtype, and its gradients bit-identical to before."""
    from videolisa.data import MixtureDataset, SampleConfig, VideoLisaCollator, build_dataset_groups
    from videolisa.synthetic import SyntheticConfig, write_synthetic_dataset
    from videolisa.training import ValidationConfig
    from videolisa.training.validation import validate

    small = SyntheticConfig(min_frames=8, max_frames=8, sizes=((48, 64),))
    write_synthetic_dataset(tmp_path / "train", num_videos=1, seed=0, split="train", config=small, progress=False)
    write_synthetic_dataset(tmp_path / "val", num_videos=1, seed=1, split="valid_u", config=small, progress=False)
    config = load_training_config(CONFIGS / "tiny_cpu.yaml", [f"data.roots.mevis={tmp_path / 'train'}"])
    model, tokenizer = tiny_model_and_tokenizer()
    wrapped = apply_freezing_and_lora(model, config.lora)
    settings = SampleConfig.from_model_config(model.config)
    dataset = MixtureDataset(build_dataset_groups(config.data, settings), config.data.rates, seed=0, length=1)
    batch = VideoLisaCollator(tokenizer, model.config)([dataset[0]])

    def gradients() -> dict[str, torch.Tensor]:
        wrapped.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        wrapped(batch).loss.backward()
        return {name: p.grad.clone() for name, p in wrapped.named_parameters() if p.grad is not None}

    before = gradients()
    storage = {name: p.data_ptr() for name, p in wrapped.named_parameters()}
    section = ValidationConfig(benchmark="synthetic", root=str(tmp_path / "val"), limit=1)
    score = validate(model, tokenizer, section, tmp_path / "out", torch.device("cpu"), torch.float32)
    assert 0.0 <= score <= 1.0 and (tmp_path / "out" / "results.json").is_file()
    assert model.training
    assert storage == {name: p.data_ptr() for name, p in wrapped.named_parameters()}
    after = gradients()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_a_new_run_refuses_an_existing_run_folder(tmp_path):
    (tmp_path / "train_config.yaml").write_text("{}")
    with pytest.raises(InvalidInputError, match="already holds a run; continue it with --resume"):
        prepare_run(CONFIGS / "tiny_cpu.yaml", None, [f"train.output_dir={tmp_path}"])
    run = prepare_run(CONFIGS / "tiny_cpu.yaml", None, [f"train.output_dir={tmp_path / 'new'}"])
    assert run.run_dir == tmp_path / "new" and not run.resume


# ============================================================================================ per-module lr
def test_lr_scales_parse_and_reject_bad_values():
    config = load_training_config(CONFIGS / "tiny_cpu.yaml", ["optim.lr_scales={sam.image_encoder: 0.1, llm: 2}"])
    assert config.optim.lr_scales == {"sam.image_encoder": 0.1, "llm": 2.0}
    with pytest.raises(InvalidInputError, match=r"optim.lr_scales.sam must be a finite number > 0, got 0.0"):
        load_training_config(CONFIGS / "tiny_cpu.yaml", ["optim.lr_scales={sam: 0}"])
    with pytest.raises(InvalidInputError, match="'sam.' is not a parameter-name prefix"):
        load_training_config(CONFIGS / "tiny_cpu.yaml", ["optim.lr_scales={'sam.': 0.5}"])


def test_frozen_prefixes_freeze_on_top_of_the_trainable_set_and_typos_are_errors():
    model = apply_freezing_and_lora(
        tiny_model_and_tokenizer()[0], LoraConfig(r=0), "all", ["sam.image_encoder", "sam.prompt_encoder"]
    )
    for name, parameter in model.named_parameters():
        frozen = name.startswith(("sam.image_encoder.", "sam.prompt_encoder."))
        assert parameter.requires_grad is not frozen, name
    # With LoRA, on the original set: the adapters stay trainable, the mask decoder is frozen on request.
    wrapped = apply_freezing_and_lora(tiny_model_and_tokenizer()[0], LoraConfig(), "original", ["sam.mask_decoder"])
    trainable = {name for name, parameter in wrapped.named_parameters() if parameter.requires_grad}
    assert any("lora_" in name for name in trainable) and not any("mask_decoder" in name for name in trainable)
    assert any("prompt_head" in name for name in trainable)
    with pytest.raises(InvalidInputError, match="model.frozen: 'sam.image_encodr' names no parameter"):
        apply_freezing_and_lora(tiny_model_and_tokenizer()[0], LoraConfig(r=0), "all", ["sam.image_encodr"])
    # "sa" is not a module path: a prefix matches whole names only.
    with pytest.raises(InvalidInputError, match="'sa' names no parameter"):
        apply_freezing_and_lora(tiny_model_and_tokenizer()[0], LoraConfig(r=0), "all", ["sa"])
    with pytest.raises(InvalidInputError, match="'sam.' is not a parameter-name prefix"):
        load_training_config(CONFIGS / "tiny_cpu.yaml", ["model.frozen=[sam.]"])
    assert load_training_config(CONFIGS / "tiny_cpu.yaml", ["model.frozen=[sam]"]).model.frozen == ["sam"]


def test_pretrained_source_takes_the_sam_of_another_checkpoint(tmp_path: Path):
    from safetensors.torch import save_file

    from videolisa.checkpoint import save_model

    model, tokenizer = tiny_model_and_tokenizer()
    save_model(model, tmp_path / "stage2", tokenizer=tokenizer)
    from videolisa.builder import build_model

    torch.manual_seed(123)
    other_sam = build_model(model.config).sam
    save_file({name: t.contiguous() for name, t in other_sam.state_dict().items()}, str(tmp_path / "sam.safetensors"))
    source = ModelConfig(
        source="pretrained", path=str(tmp_path / "stage2"), sam_checkpoint=str(tmp_path / "sam.safetensors")
    )
    loaded, _ = build_model_and_tokenizer(source, torch.float32)
    for name, tensor in other_sam.state_dict().items():
        assert torch.equal(loaded.sam.state_dict()[name], tensor), name
    for name, tensor in model.llm.state_dict().items():
        assert torch.equal(loaded.llm.state_dict()[name], tensor), name


def test_parameter_groups_follow_the_longest_prefix_and_name_unknown_ones():
    model = apply_freezing_and_lora(tiny_model_and_tokenizer()[0], LoraConfig(r=0), "all")
    groups = build_parameter_groups(model, {"sam": 0.5, "sam.image_encoder": 0.1})
    assert [(group.prefix, group.scale) for group in groups] == [(None, 1.0), ("sam", 0.5), ("sam.image_encoder", 0.1)]
    names = {id(p): name for name, p in model.named_parameters()}
    grouped = [{names[id(p)] for p in group.parameters} for group in groups]
    assert all(name.startswith("sam.image_encoder.") for name in grouped[2])
    assert all(name.startswith("sam.") and not name.startswith("sam.image_encoder.") for name in grouped[1])
    assert not any(name.startswith("sam.") for name in grouped[0])
    assert set().union(*grouped) == set(names.values())
    assert [d["lr"] for d in optimizer_parameter_groups(groups, 2e-3)] == [2e-3, 1e-3, 2e-4]
    with pytest.raises(InvalidInputError, match=r"\['sam.image_encodr', 'sa'\] match no trainable parameter"):
        build_parameter_groups(model, {"sam.image_encodr": 0.1, "sa": 0.1})
    frozen = apply_freezing_and_lora(tiny_model_and_tokenizer()[0], LoraConfig())
    with pytest.raises(InvalidInputError, match=r"\['sam.image_encoder'\] name only frozen parameters"):
        build_parameter_groups(frozen, {"sam.image_encoder": 0.1})
    decoder_groups = build_parameter_groups(frozen, {"sam.mask_decoder": 3})
    assert [group.prefix for group in decoder_groups] == [None, "sam.mask_decoder"]


def test_scale_schedule_needs_a_per_group_scheduler():
    config = load_training_config(CONFIGS / "tiny_cpu.yaml")
    ds = build_deepspeed_config(CONFIGS / "ds_zero2.json", config, 1, "fp32")
    assert scale_schedule(ds, [1.0]) == ds
    scaled = scale_schedule(ds, [1.0, 0.25])
    assert scaled["scheduler"]["params"]["warmup_max_lr"] == [1e-3, 2.5e-4]
    assert scaled["scheduler"]["params"]["warmup_min_lr"] == [0, 0]
    assert ds["scheduler"]["params"]["warmup_max_lr"] == 1e-3  # the input is not modified
    with pytest.raises(InvalidInputError, match="needs a scheduler with per-group lrs"):
        scale_schedule({**ds, "scheduler": {"type": "OneCycle", "params": {}}}, [1.0, 0.5])


@pytest.mark.slow
def test_every_group_follows_the_scaled_warmup_decay_schedule(monkeypatch):
    """DeepSpeed (ZeRO-2, gloo, one CPU process) with the groups and config the Trainer builds: each group's lr
    is its scale x the linear warm-up / linear decay of optim.lr, step after step."""
    import deepspeed
    import torch.distributed as dist

    from videolisa.distributed import init_distributed

    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    lr, warmup, total, scales = 1e-3, 3, 9, {"sam.image_encoder": 0.1, "prompt_head": 4.0}
    config = load_training_config(
        CONFIGS / "tiny_cpu.yaml",
        [
            "lora.r=0",
            "model.trainable=all",
            f"optim.lr={lr}",
            f"optim.warmup_steps={warmup}",
            f"train.total_steps={total}",
            "train.micro_batch_size=2",
            "optim.lr_scales={sam.image_encoder: 0.1, prompt_head: 4.0}",
        ],
    )
    model = apply_freezing_and_lora(tiny_model_and_tokenizer()[0], config.lora, config.model.trainable)
    groups = build_parameter_groups(model, config.optim.lr_scales)
    assert [group.scale for group in groups] == [1.0, 0.1, 4.0]
    init_distributed()
    try:
        ds = scale_schedule(
            build_deepspeed_config(CONFIGS / "ds_zero2.json", config, 1, "fp32"), [group.scale for group in groups]
        )
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, model_parameters=optimizer_parameter_groups(groups, lr), config=ds
        )
        named = dict(model.named_parameters())
        probes = [
            named["llm.lm_head.weight"],
            named["sam.image_encoder.patch_embed.proj.weight"],
            named["prompt_head.0.weight"],
        ]
        for step in range(1, total + 1):
            used = [group["lr"] for group in optimizer.param_groups]
            before = [probe.detach().clone() for probe in probes]
            loss = sum(p.float().square().sum() for p in model.parameters() if p.requires_grad)
            engine.backward(loss)
            engine.step()
            # WarmupDecayLR, linear, after scheduler iteration i = step - 1: i / warmup during warm-up, then
            # (total - i) / (total - warmup).
            i = step - 1
            base = lr * (i / warmup if i < warmup else (total - i) / (total - warmup))
            expected = [base * scale for scale in (1.0, *scales.values())]
            assert scheduler.get_last_lr() == pytest.approx(expected, abs=1e-12), step
            assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(expected, abs=1e-12), step
            # The gradient of this loss is the same at every step while the lr is 0, so Adam moves the largest
            # weights by about the lr each group had during the step.
            moves = [(probe.detach() - old).abs().max().item() for probe, old in zip(probes, before)]
            assert moves == pytest.approx(used, rel=0.05, abs=1e-9), step
        assert scheduler.get_last_lr() == pytest.approx(
            [lr / (total - warmup) * scale for scale in (1.0, *scales.values())], abs=1e-12
        )
    finally:
        dist.destroy_process_group()
