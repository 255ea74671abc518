"""The shipped builtin:synthetic model: loads offline and segments the shipped example clip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from videolisa.builtin import available_builtin_models, builtin_model_dir
from videolisa.errors import MissingFilesError
from videolisa.mask_io import read_png_masks
from videolisa.metrics import compute_jf

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


@pytest.mark.launcher
def test_infer_help_names_the_builtin_model() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "videolisa.cli", "infer", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "builtin:synthetic" in output


def test_model_class_loads_builtin_names_like_the_predictor(builtin_predictor) -> None:
    from videolisa.modeling.videolisa import VideoLisaForSegmentation

    model = VideoLisaForSegmentation.from_pretrained("builtin:synthetic")
    expected = builtin_predictor.model.state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(tensor, expected[name].to(tensor.dtype)) for name, tensor in model.state_dict().items())


@pytest.mark.launcher
def test_modeling_imports_nothing_above_it() -> None:
    """``videolisa.modeling`` sits below the builder, the predictor, training and evaluation: importing it must
    not import them (no import cycle through the checkpoint layer)."""
    code = (
        "import sys, videolisa.modeling.videolisa\n"
        "above = ('videolisa.builder', 'videolisa.predictor', 'videolisa.training', 'videolisa.evaluation')\n"
        "print(sorted(name for name in sys.modules if name.startswith(above)))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
