"""train/builtin_recipe.py end to end with a handful of steps: data, tokenizer, the three stages, export, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "train" / "builtin_recipe.py"
# A few steps per stage on 6 clips: the path, not the learning.
QUICK = [
    "--videos",
    "6",
    "--stage1",
    "train.steps=4",
    "heldout.clips=2",
    "heldout.every=4",
    "optim.warmup_steps=1",
    "--stage2",
    "train.total_steps=3",
    "optim.warmup_steps=1",
    "--stage3",
    "train.total_steps=3",
    "optim.warmup_steps=1",
    "validation.every=3",
    "validation.limit=2",
]


def run_recipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RECIPE), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.launcher
def test_recipe_trains_every_stage_and_installs_the_model(tmp_path: Path) -> None:
    from videolisa.builder import build_model_and_tokenizer
    from videolisa.checkpoint import load_tokenizer
    from videolisa.modeling.videolisa import VideoLisaForSegmentation
    from videolisa.training import ModelConfig

    work, out = tmp_path / "work", tmp_path / "model"
    out.mkdir()
    (out / "MODEL_CARD.md").write_text("kept\n")
    done = run_recipe("--work", str(work), "--out", str(out), *QUICK)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "MODEL_CARD.md").read_text() == "kept\n" and not (out / "README.md").exists()
    model = VideoLisaForSegmentation.from_pretrained(out)
    # Stage 3 froze the SAM image encoder: the shipped one is stage 1's, bit for bit.
    stage1, _ = build_model_and_tokenizer(
        ModelConfig(
            source="pretrained",
            path=str(work / "stage2_model"),
            sam_checkpoint=str(work / "stage1" / "sam.safetensors"),
        ),
        torch.float32,
    )
    for name, tensor in stage1.sam.image_encoder.state_dict().items():
        assert torch.equal(model.sam.image_encoder.state_dict()[name], tensor), name
    # The corpus tokenizer has one token per word of the synthetic world.
    tokenizer = load_tokenizer(out)
    assert len(tokenizer.tokenize(" purple small triangle")) == 3
    assert model.config.seg_token_id == tokenizer.convert_tokens_to_ids("[SEG]")
    recipe = json.loads((work / "recipe.json").read_text())
    assert {
        "data_train",
        "tokenizer",
        "stage1",
        "stage2",
        "stage2_export",
        "stage3",
        "export",
    } <= set(recipe["steps"])

    # A second invocation without --resume is refused; with it, every finished step is kept.
    again = run_recipe("--work", str(work), "--out", str(out), *QUICK)
    assert again.returncode == 2 and again.stderr.strip().startswith("error:") and "--resume" in again.stderr
    resumed = run_recipe("--work", str(work), "--out", str(out), "--resume", *QUICK)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("done earlier, kept") == 8
