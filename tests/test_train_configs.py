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
    "synthetic_cpu.yaml": ["validation.root=/data/synthetic_heldout"],
    "videolisa_3.8b.yaml": ["model.sam_checkpoint=/ckpt/sam_vit_h_4b8939.pth", "validation.root=/data/ReasonSeg"],
}


def test_every_config_is_listed_or_needs_no_paths() -> None:
    assert set(REQUIRED_OVERRIDES) <= {path.name for path in CONFIGS.glob("*.yaml")}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_config_loads(path: Path) -> None:
    config = load_training_config(path, REQUIRED_OVERRIDES.get(path.name, []))
    assert isinstance(config, TrainingConfig)
    deepspeed_config = Path(config.train.deepspeed_config)
    assert deepspeed_config.is_file(), f"{path.name}: train.deepspeed_config {deepspeed_config} does not exist"
    json.loads(deepspeed_config.read_text())
