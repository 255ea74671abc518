"""Stage 1 of the built-in recipe: the preset's SAM trained as a promptable segmenter
(videolisa/training/promptable_sam.py, dispatched by train/train.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from videolisa.builder import build_model
from videolisa.checkpoint import load_sam_checkpoint
from videolisa.config import VideoLisaConfig
from videolisa.errors import InvalidInputError
from videolisa.synthetic import CUSTOM_FILE, SyntheticConfig, write_synthetic_dataset
from videolisa.training.promptable_sam import (
    PromptableSamTrainer,
    load_promptable_sam_config,
    run_promptable_sam,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stage1")
    files = {}
    for name, videos, seed in (("one", 1, 0), ("train", 2, 1)):
        out = write_synthetic_dataset(
            root / name,
            layout="custom",
            num_videos=videos,
            seed=seed,
            config=SyntheticConfig(min_frames=8, max_frames=8, min_objects=2, max_objects=3, sizes=((64, 80),)),
            progress=False,
        )
        files[name] = out / CUSTOM_FILE
    return files


def write_config(path: Path, data_file: Path, output_dir: Path, **sections) -> Path:
    values = {
        "task": "promptable_sam",
        "model": {"preset": "synthetic"},
        "data": {"custom_files": [str(data_file)]},
        "optim": {"lr": 2e-3, "warmup_steps": 2},
        "train": {
            "steps": 4,
            "seed": 3,
            "output_dir": str(output_dir),
            "log_every": 1,
            "save_every": 2,
            "progress": False,
        },
    }
    for section, update in sections.items():
        values.setdefault(section, {}).update(update)
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_loss_decreases_on_one_clip(data, tmp_path):
    torch.set_num_threads(1)
    path = write_config(tmp_path / "c.yaml", data["one"], tmp_path / "run", train={"steps": 24})
    trainer = PromptableSamTrainer(load_promptable_sam_config(path))
    dice = [trainer.train_step()["dice"] for _ in range(24)]
    assert sum(dice[-6:]) / 6 < sum(dice[:6]) / 6 - 0.1, dice


def test_run_writes_loadable_sam_and_resume_is_exact(data, tmp_path):
    torch.set_num_threads(1)
    held = {"custom_file": str(data["train"]), "clips": 2}  # semantic prompts need trained appearances
    full = write_config(tmp_path / "full.yaml", data["train"], tmp_path / "full", heldout=held)
    summary = run_promptable_sam(full)
    run_dir = tmp_path / "full"
    assert summary["step"] == 4
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    heldout = json.loads((run_dir / "heldout.json").read_text())
    assert {"point_iou", "box_iou", "semantic_iou", "semantic_cross_object_iou"} <= set(heldout)
    assert all(0 <= heldout[key] <= 1 for key in ("point_iou", "box_iou", "semantic_iou"))

    # sam.safetensors loads strictly into a fresh model and equals the trained weights (the last checkpoint).
    model = build_model(VideoLisaConfig.from_preset("synthetic"))
    load_sam_checkpoint(model, run_dir / "sam.safetensors")
    trained = torch.load(run_dir / "checkpoints" / "step_000004.pt", weights_only=True)["sam"]
    loaded = model.sam.state_dict()
    assert trained.keys() == loaded.keys()
    assert all(torch.equal(trained[name], loaded[name]) for name in trained)
    fresh = build_model(VideoLisaConfig.from_preset("synthetic")).sam.state_dict()
    assert not torch.equal(fresh["mask_decoder.iou_token.weight"], loaded["mask_decoder.iou_token.weight"])

    # Interrupted after step 2 (its checkpoint), then resumed: the same weights as the uninterrupted run.
    part = write_config(tmp_path / "part.yaml", data["train"], tmp_path / "part", train={"steps": 2})
    run_promptable_sam(part)
    saved = yaml.safe_load((tmp_path / "part" / "train_config.yaml").read_text())
    saved["train"]["steps"] = 4  # as if the first run had been killed after its step-2 checkpoint
    (tmp_path / "part" / "train_config.yaml").write_text(yaml.safe_dump(saved))
    with (tmp_path / "part" / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": 3, "loss": 0}\n{"step": 4, "lo')  # logged by the killed run after the checkpoint
    run_promptable_sam(None, tmp_path / "part")
    resumed = torch.load(tmp_path / "part" / "checkpoints" / "step_000004.pt", weights_only=True)["sam"]
    assert all(torch.equal(trained[name], resumed[name]) for name in trained)
    steps = [json.loads(line)["step"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(InvalidInputError, match="optim.lr"):
        run_promptable_sam(None, tmp_path / "part", ["optim.lr=0.1"])


def test_bad_keys_and_existing_output_dir_are_refused(data, tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", data["one"], tmp_path / "run", optim={"learning_rate": 1e-3})
    with pytest.raises(InvalidInputError, match="learning_rate"):
        load_promptable_sam_config(path)
    path = write_config(tmp_path / "c.yaml", data["one"], tmp_path / "run")
    with pytest.raises(InvalidInputError, match="prompts has unknown keys"):
        load_promptable_sam_config(path, ["prompts.mask=0.5"])
    with pytest.raises(InvalidInputError, match="prompts.point"):
        load_promptable_sam_config(path, ["prompts.point=0", "prompts.box=0", "prompts.semantic=0"])

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    spec = importlib.util.spec_from_file_location("train_script", REPO / "train" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--config", str(path)]) == 2  # the promptable_sam task, without the DeepSpeed launcher
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error:") and "--resume" in error[0], error
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_records_about_several_objects_or_none_are_left_out(tmp_path, caplog):
    """Data written with --extra-kinds trains stage 1 on exactly the single-object records of the same clips."""
    config = SyntheticConfig(min_frames=8, max_frames=8, min_objects=2, max_objects=3, sizes=((64, 80),))
    files = {}
    for name, extra in (("plain", ()), ("extra", ("multi", "absent"))):
        settings = SyntheticConfig(**{**config.__dict__, "extra_kinds": extra})
        out = write_synthetic_dataset(tmp_path / name, layout="custom", num_videos=2, seed=1, config=settings)
        files[name] = out / CUSTOM_FILE
    trainers = {}
    for name, file in files.items():
        with caplog.at_level(logging.INFO, logger="videolisa.training.promptable_sam"):
            caplog.clear()
            trainers[name] = PromptableSamTrainer(
                load_promptable_sam_config(write_config(tmp_path / f"{name}.yaml", file, tmp_path / f"run_{name}"))
            )
        left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
        assert bool(left_out) == (name == "extra"), left_out
    plain, extra = (trainers[name].dataset.records for name in ("plain", "extra"))
    assert [(r.instruction, r.answer) for r in plain] == [(r.instruction, r.answer) for r in extra]
    lines = files["extra"].read_text().splitlines()
    assert trainers["extra"].dataset.num_left_out == len(lines) - len(plain) > 0
