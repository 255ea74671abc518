"""Tests of ``videolisa convert`` (videolisa.commands.convert): an original-layout checkpoint (the parity weights)
becomes a self-contained model of this package's format that behaves exactly like loading the original."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from videolisa.cli import main
from videolisa.modeling.videolisa import VideoLisaForSegmentation

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def original_model(parity_original_layout) -> VideoLisaForSegmentation:
    checkpoint, clip = parity_original_layout
    return VideoLisaForSegmentation.from_pretrained(checkpoint, vision_tower=clip, dtype=torch.float32)


@torch.no_grad()
def prompt_embedding(model: VideoLisaForSegmentation, input_ids: torch.Tensor) -> torch.Tensor:
    """Prompt embedding ``[1, 256]`` of the parity prompt for fixed random CLIP pixels."""
    pixels = torch.randn(1, 32, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    video_tokens = model.build_video_tokens(pixels, torch.tensor([[3, 10, 18, 26]]))
    return model.compute_prompts(input_ids, video_tokens).prompt_embeddings


def parity_input_ids(parity_dir: Path) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.load(parity_dir / "input_ids.npy"))


@pytest.mark.slow  # a fresh interpreter imports torch + transformers (~10-20 s on 2 busy cores)
@pytest.mark.launcher
def test_convert_command_writes_an_equivalent_model(tmp_path, parity_dir, parity_original_layout, original_model):
    checkpoint, clip = parity_original_layout
    out = tmp_path / "converted"
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": python_path}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "videolisa.cli",
            "convert",
            str(checkpoint),
            str(out),
            "--vision-tower",
            str(clip),
            "--dtype",
            "fp32",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert f"-> {out} (fp32" in result.stdout
    assert "model.safetensors" in result.stdout and "config.json" in result.stdout

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "videolisa"
    assert config["text_config"]["sliding_window"] == 2048
    assert config["sam_config"]["encoder_embed_dim"] == 32

    converted = VideoLisaForSegmentation.from_pretrained(out)  # no vision_tower needed: CLIP is inside
    converted_state, original_state = converted.state_dict(), original_model.state_dict()
    assert converted_state.keys() == original_state.keys()
    for name, tensor in original_state.items():
        assert torch.equal(converted_state[name], tensor), name
    input_ids = parity_input_ids(parity_dir)
    assert torch.equal(prompt_embedding(converted, input_ids), prompt_embedding(original_model, input_ids))


@torch.no_grad()
def parity_case_outputs(model: VideoLisaForSegmentation, parity_dir: Path) -> dict[str, torch.Tensor]:
    """The parity case through ``model``: video tokens, prompt embedding, mask logits and masks of frame 0."""
    import numpy as np

    from videolisa.processing.transforms import preprocess_clip, preprocess_sam

    frames = np.load(parity_dir / "frames.npy")
    pixel_values_sam, resized_hw = preprocess_sam(frames[:1])
    video_tokens = model.build_video_tokens(
        preprocess_clip(frames[np.load(parity_dir / "sparse_indices.npy")])[None],
        torch.from_numpy(np.load(parity_dir / "dense_indices.npy"))[None],
    )
    prompts = model.compute_prompts(parity_input_ids(parity_dir), video_tokens).prompt_embeddings
    logits = model.decode_masks(model.encode_images(pixel_values_sam), prompts, resized_hw, frames.shape[1:3])
    return {"video_tokens": video_tokens, "prompt_embedding": prompts, "mask_logits": logits, "masks": logits > 0}


@pytest.mark.slow
def test_convert_is_lossless_by_default(tmp_path, parity_dir, parity_original_layout, original_model, capsys):
    """Each tensor keeps its source dtype (bf16 release weights, float32 CLIP), so the converted model gives
    exactly the outputs of the original layout loaded directly."""
    checkpoint, clip = parity_original_layout
    out = tmp_path / "converted"
    assert main(["convert", str(checkpoint), str(out), "--vision-tower", str(clip)]) == 0
    assert "(source dtypes" in capsys.readouterr().out
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        dtypes = {name: handle.get_slice(name).get_dtype() for name in handle.keys()}  # noqa: SIM118 (safetensors)
    assert {dtype for name, dtype in dtypes.items() if name.startswith("vision_tower.")} == {"F32"}
    assert {dtype for name, dtype in dtypes.items() if not name.startswith("vision_tower.")} == {"BF16"}

    converted = VideoLisaForSegmentation.from_pretrained(out, dtype=torch.float32)
    for name, tensor in original_model.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name
    expected = parity_case_outputs(original_model, parity_dir)
    for name, value in parity_case_outputs(converted, parity_dir).items():
        assert torch.equal(value, expected[name]), name
    assert expected["masks"].any()  # the case has foreground to compare


def test_convert_help_says_it_is_lossless(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "lossless" in " ".join(capsys.readouterr().out.split())


def test_convert_refuses_to_write_into_the_original_directory(parity_original_layout, capsys):
    checkpoint, clip = parity_original_layout
    assert main(["convert", str(checkpoint), str(checkpoint), "--vision-tower", str(clip)]) == 2
    assert "is the original checkpoint directory" in capsys.readouterr().err


def test_convert_rejects_a_checkpoint_that_is_not_original(tmp_path, tiny_model, capsys):
    source = tmp_path / "package-format"
    tiny_model.save_pretrained(source)
    assert main(["convert", str(source), str(tmp_path / "out")]) == 2
    assert "is not an original VideoLISA config" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
