"""Tests of the instruction-following diagnostics in eval/diagnostics/: prompt_sensitivity.py and
synthetic_oracle_prompt.py."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from videolisa.synthetic import SyntheticConfig, write_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]


def load_eval_script(name: str):
    """Import ``eval/diagnostics/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "eval" / "diagnostics" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prompt_sensitivity = load_eval_script("prompt_sensitivity")
oracle = load_eval_script("synthetic_oracle_prompt")


def test_pairwise_spread() -> None:
    same = np.ones((3, 4), dtype=np.float32)
    assert prompt_sensitivity.pairwise_spread(same) == 0.0
    orthogonal = np.eye(3, dtype=np.float32)
    assert math.isclose(prompt_sensitivity.pairwise_spread(orthogonal), math.sqrt(2), rel_tol=1e-6)


def test_mask_iou() -> None:
    a = np.zeros((2, 4, 4), dtype=bool)
    b = a.copy()
    assert prompt_sensitivity.mask_iou(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert prompt_sensitivity.mask_iou(a, b) == 4 / 12


@pytest.mark.slow
def test_reports_the_three_numbers_for_a_model(tmp_path: Path, tiny_model, tiny_tokenizer) -> None:
    tiny_model_dir = tmp_path / "model"
    tiny_model.save_pretrained(tiny_model_dir, tokenizer=tiny_tokenizer)
    config = SyntheticConfig(min_frames=8, max_frames=10, sizes=((64, 96),))
    data = write_synthetic_dataset(tmp_path / "data", num_videos=1, seed=1, config=config, progress=False)
    out = tmp_path / "numbers.json"
    code = prompt_sensitivity.main(
        ["--model", str(tiny_model_dir), "--data", str(data), "--videos", "1", "--out", str(out)]
    )
    assert code == 0
    numbers = json.loads(out.read_text())
    assert numbers["videos"] == 1
    assert numbers["prompt_spread"] > 0
    assert 0.0 <= numbers["cross_referent_mask_iou"] <= 1.0
    # Seeded random weights: the decoder responds to its prompt (a trained model that ignores it gives ~0).
    assert numbers["decoder_sensitivity"] > 0.01


def test_missing_data_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = prompt_sensitivity.main(["--model", "builtin:synthetic", "--data", str(tmp_path / "nothing")])
    assert code == 2
    assert "nothing" in capsys.readouterr().err


@pytest.mark.slow
def test_oracle_prompt_run_trains_and_reports(tmp_path: Path, capsys) -> None:
    from videolisa import synthetic

    config = SyntheticConfig(min_frames=8, max_frames=10, sizes=((64, 96),))
    data = write_synthetic_dataset(
        tmp_path / "data", layout="custom", num_videos=2, seed=1, config=config, progress=False
    )
    arguments = ["--data", str(data / synthetic.CUSTOM_FILE), "--steps", "2", "--report-every", "1", "--all-targets"]
    assert oracle.main(arguments) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 1", "step 2"]
    assert all("decoder sensitivity" in line for line in lines)


def test_oracle_prompt_run_needs_answers(tmp_path: Path, capsys) -> None:
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(3):
        Image.new("RGB", (32, 32)).save(frames / f"{index}.jpg")
    masks = tmp_path / "masks"
    masks.mkdir()
    for index in range(3):
        Image.new("L", (32, 32)).save(masks / f"{index}.png")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"video": "frames", "instruction": "cat", "masks": "masks"}) + "\n")
    assert oracle.main(["--data", str(data), "--steps", "1"]) == 2
    assert "answer" in capsys.readouterr().err


@pytest.mark.slow
def test_oracle_prompt_run_encoder_lr_scale_and_colour_prompts(tmp_path: Path) -> None:
    import torch

    from videolisa import synthetic

    config = SyntheticConfig(min_frames=8, max_frames=10, sizes=((64, 96),))
    data = write_synthetic_dataset(
        tmp_path / "data", layout="custom", num_videos=2, seed=1, config=config, progress=False
    )
    args = oracle.parse_args(
        ["--data", str(data / synthetic.CUSTOM_FILE), "--encoder-lr-scale", "0", "--prompt-per", "colour"]
    )
    run = oracle.OracleRun(args)
    assert set(run.prompt_of) <= set(synthetic.COLORS)
    encoder = [p.detach().clone() for p in run.sam.image_encoder.parameters()]
    decoder = [p.detach().clone() for p in run.sam.mask_decoder.parameters()]
    rng = np.random.default_rng(0)
    run.step([run.clip(0, rng)])
    assert all(torch.equal(a, b) for a, b in zip(encoder, run.sam.image_encoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(decoder, run.sam.mask_decoder.parameters()))
    rank = run.embedding_rank(run.image_embeddings(run.clip(0, rng)[0]))
    assert run.config.sam.prompt_embed_dim >= rank >= 1.0  # a participation ratio; NaN if the embedding is constant
