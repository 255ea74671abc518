"""Tests of eval/prompt_sensitivity.py, the "does the model follow the instruction" diagnostic."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np

from videolisa.synthetic import SyntheticConfig, write_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("prompt_sensitivity", REPO / "eval" / "prompt_sensitivity.py")
prompt_sensitivity = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(prompt_sensitivity)


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
