"""The transformers Auto classes know videolisa's config and model after ``import videolisa``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def test_auto_classes_round_trip_save_and_load(tiny_model, tiny_tokenizer, tmp_path):
    from transformers import AutoConfig, AutoModel

    from videolisa.config import VideoLisaConfig
    from videolisa.modeling.videolisa import VideoLisaForSegmentation

    tiny_model.save_pretrained(tmp_path / "first", tokenizer=tiny_tokenizer)
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "first"), VideoLisaConfig)
    loaded = AutoModel.from_pretrained(tmp_path / "first")
    assert type(loaded) is VideoLisaForSegmentation
    loaded.save_pretrained(tmp_path / "second", tokenizer=tiny_tokenizer)
    again = AutoModel.from_pretrained(tmp_path / "second")
    expected = tiny_model.state_dict()
    for model in (loaded, again):
        state = model.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[name], expected[name]) for name in expected)
    assert again.config.to_dict() == tiny_model.config.to_dict() | {"_name_or_path": again.config._name_or_path}


def test_auto_model_rejects_what_it_cannot_honour(tiny_model_dir):
    from transformers import AutoModel

    from videolisa.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="revision is not supported"):
        AutoModel.from_pretrained(tiny_model_dir, revision="main")
    with pytest.raises(InvalidInputError, match="cache_dir is not supported"):
        AutoModel.from_pretrained(tiny_model_dir, cache_dir="/somewhere")


@pytest.mark.parametrize("order", ["videolisa first", "transformers first", "another model first"])
@pytest.mark.launcher
def test_import_videolisa_is_enough_for_auto_model(tiny_model_dir, order):
    # A fresh interpreter: nothing but `import videolisa` and transformers' own import registers the classes.
    # "another model first": Sam2VideoModel imports the Auto classes while transformers' own modules are half
    # initialised, so registering then would fail.
    imports = {
        "videolisa first": ["import videolisa", "from transformers import AutoModel"],
        "transformers first": ["from transformers import AutoModel", "import videolisa"],
        "another model first": ["import videolisa", "from transformers import Sam2VideoModel, AutoModel"],
    }
    code = "\n".join(
        [
            *imports[order],
            f"model = AutoModel.from_pretrained({str(tiny_model_dir)!r})",
            "print(type(model).__module__, type(model).__name__)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["videolisa.modeling.videolisa", "VideoLisaForSegmentation"]


@pytest.mark.launcher
def test_import_videolisa_imports_neither_transformers_nor_torch():
    code = "import sys, videolisa; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
