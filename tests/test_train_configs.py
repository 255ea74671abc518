"""Every training YAML under train/configs/ loads with the package's config loader (unknown keys, wrong types and
invalid values are errors), given only the paths its header says are set on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from videolisa.training import TrainingConfig, load_training_config

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"
# The command-line paths each config documents as required (nothing is read from them when loading).
REQUIRED_OVERRIDES = {
    "builtin_stage3_segmentation.yaml": ["model.path=/runs/builtin/stage2_model", "validation.root=/data/heldout"],
    "videolisa_3.8b.yaml": ["model.sam_checkpoint=/ckpt/sam_vit_h_4b8939.pth", "validation.root=/data/ReasonSeg"],
}


def test_every_config_is_listed_or_needs_no_paths() -> None:
    assert set(REQUIRED_OVERRIDES) <= {path.name for path in CONFIGS.glob("*.yaml")}


def deepspeed_configs() -> list[Path]:
    """The DeepSpeed trainer's configs (a YAML with a top-level ``task`` runs another trainer)."""
    from videolisa.training.promptable_sam import config_task

    return [path for path in sorted(CONFIGS.glob("*.yaml")) if config_task(path) is None]


def test_the_promptable_sam_stage_loads_with_its_own_loader() -> None:
    from videolisa.training.promptable_sam import config_task, load_promptable_sam_config

    path = CONFIGS / "builtin_stage1_sam.yaml"
    assert config_task(path) == "promptable_sam"
    assert (
        load_promptable_sam_config(path, ["data.custom_files=[/data/train/annotations.jsonl]"]).model.preset
        == "synthetic"
    )


@pytest.mark.parametrize("path", deepspeed_configs(), ids=lambda path: path.name)
def test_config_loads(path: Path) -> None:
    config = load_training_config(path, REQUIRED_OVERRIDES.get(path.name, []))
    assert isinstance(config, TrainingConfig)
    deepspeed_config = Path(config.train.deepspeed_config)
    assert deepspeed_config.is_file(), f"{path.name}: train.deepspeed_config {deepspeed_config} does not exist"
    json.loads(deepspeed_config.read_text())
