"""The shipped builtin:synthetic model: loads offline and segments the shipped example clip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videolisa.builtin import available_builtin_models, builtin_model_dir
from videolisa.errors import MissingFilesError
from videolisa.metrics import compute_jf
from videolisa.outputs import read_png_masks

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "demo" / "examples" / "shapes"
# The README's quick-start instruction (an expression of the example's instructions.json).
README_INSTRUCTION = "Please segment the {} in this image."


def example_expression() -> dict:
    """The example's showcased expression: the first one in its instructions.json."""
    return json.loads((EXAMPLE / "instructions.json").read_text())["expressions"][0]


def test_builtin_registry_lists_the_synthetic_model() -> None:
    assert "synthetic" in available_builtin_models()
    assert (builtin_model_dir("synthetic") / "MODEL_CARD.md").is_file()
    with pytest.raises(MissingFilesError, match="builtin:synthetic"):
        builtin_model_dir("nonexistent")


@pytest.fixture(scope="module")
def builtin_predictor():
    from videolisa.predictor import VideoLisaPredictor

    return VideoLisaPredictor.from_pretrained("builtin:synthetic", device="cpu")


def test_builtin_model_segments_the_shipped_example(builtin_predictor) -> None:
    expression = example_expression()
    result = builtin_predictor.segment(EXAMPLE / "shapes.mp4", README_INSTRUCTION.format(expression["text"]))
    gt = read_png_masks(EXAMPLE / "masks" / str(expression["obj_id"]), result.frame_names)
    region, boundary = compute_jf(result.masks, gt)
    jf = (float(np.mean(region)) + float(np.mean(boundary))) / 2
    assert jf >= 0.7, f"J&F {jf:.3f} on the shipped example"


def test_infer_help_names_the_builtin_model() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "videolisa.cli", "infer", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "builtin:synthetic" in output
