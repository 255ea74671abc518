"""The recipe through the ``deepspeed`` launcher on CPU: 1 and 2 processes, kill-and-resume, export.

One uninterrupted single-process run (module fixture) is the reference for the other checks. Runs use
``train/configs/tiny_cpu.yaml`` on synthetic MeViS-layout videos.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.launcher]

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "train" / "train.py"
DEEPSPEED = Path(sys.executable).parent / "deepspeed"
STEPS = 6
LAUNCH_TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launcher_command(num_processes: int, *args: str) -> list[str]:
    # The launcher installed with this interpreter: a virtual environment need not be activated (not on PATH).
    return [str(DEEPSPEED), "--num_gpus", str(num_processes), "--master_port", str(free_port()), str(TRAIN), *args]


def launcher_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}


def launch(num_processes: int, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        launcher_command(num_processes, *args),
        cwd=REPO,
        env=launcher_env(),
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def run_args(data: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    """Every run has two optimizer groups (the mask decoder at half the lr), so resume and multi-process
    equality are checked with per-group schedules too."""
    return [
        "--config",
        str(REPO / "train/configs/tiny_cpu.yaml"),
        f"data.roots.mevis={data['train']}",
        f"train.output_dir={run_dir}",
        f"train.total_steps={STEPS}",
        "optim.lr_scales={sam.mask_decoder: 0.5}",
        *extra,
    ]


def read_metrics(run_dir: Path) -> dict[int, dict]:
    """Step -> metrics; every step is logged once, also by a killed run and its resumption."""
    entries = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [entry["step"] for entry in entries]
    assert steps == sorted(set(steps)), f"steps logged out of order or twice: {steps}"
    return {entry["step"]: entry for entry in entries}


def fp32_weights(run_dir: Path, tag: str) -> dict[str, torch.Tensor]:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(run_dir / "checkpoints"), tag=tag)


def assert_loss_decreases(metrics: dict[int, dict]) -> None:
    losses = [metrics[step]["loss"] for step in range(1, STEPS + 1)]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05, losses


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from videolisa.synthetic import SyntheticConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    small = SyntheticConfig(min_frames=8, max_frames=12, sizes=((64, 80),))
    write_synthetic_dataset(root / "train", num_videos=2, seed=0, split="train", config=small, progress=False)
    write_synthetic_dataset(root / "val", num_videos=1, seed=7, split="valid_u", config=small, progress=False)
    return {"train": root / "train", "val": root / "val"}


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory) -> Path:
    """1 process, 6 steps, checkpoints every 3 steps, validation on the synthetic benchmark every 3 steps."""
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    launch(
        1,
        *run_args(
            data,
            run_dir,
            "validation.benchmark=synthetic",
            f"validation.root={data['val']}",
            "validation.every=3",
            "validation.limit=1",
        ),
    )
    return run_dir


def test_one_process_trains_logs_validates_and_keeps_checkpoints(reference_run):
    metrics = read_metrics(reference_run)
    assert sorted(metrics) == list(range(1, STEPS + 1))
    assert_loss_decreases(metrics)
    assert [metrics[step]["lr"] for step in (1, 2, 3)] == [0.0, 5e-4, 1e-3]  # linear warm-up (DeepSpeed: >= 2 steps)
    assert metrics[STEPS]["lr"] < metrics[4]["lr"]  # then linear decay
    checkpoints = reference_run / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_000003", "step_000006"]
    assert (checkpoints / "latest").read_text() == "step_000006"
    best = json.loads((checkpoints / "best.json").read_text())
    assert best["metric"] == "JF" and best["tag"] in ("step_000003", "step_000006") and 0 <= best["score"] <= 1
    for tag in ("step_000003", "step_000006"):
        assert json.loads((reference_run / "validation" / tag / "results.json").read_text())["items"] == 1
    assert list((reference_run / "tensorboard").glob("events.out.tfevents.*"))
    assert (reference_run / "model" / "config.json").is_file() and (reference_run / "deepspeed_config.json").is_file()
    schedule = json.loads((reference_run / "deepspeed_config.json").read_text())["scheduler"]["params"]
    assert (schedule["warmup_min_lr"], schedule["warmup_max_lr"]) == ([0, 0], [1e-3, 5e-4])


def test_killed_and_resumed_run_equals_the_uninterrupted_one(data, reference_run, tmp_path):
    run_dir = tmp_path / "killed"
    # Validation at step 4 keeps the run busy for seconds after the step-3 checkpoint: the kill lands in it.
    args = run_args(
        data,
        run_dir,
        "validation.benchmark=synthetic",
        f"validation.root={data['val']}",
        "validation.every=4",
        "validation.limit=1",
    )
    process = subprocess.Popen(
        launcher_command(1, *args),
        cwd=REPO,
        env=launcher_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while not (latest.is_file() and latest.read_text() == "step_000003"):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = latest.read_text()
    assert killed_at != f"step_{STEPS:06d}", "the run finished before it was killed"
    launch(1, "--resume", str(run_dir))
    resumed = fp32_weights(run_dir, f"step_{STEPS:06d}")
    reference = fp32_weights(reference_run, f"step_{STEPS:06d}")
    assert resumed.keys() == reference.keys()
    different = [name for name in reference if not torch.equal(resumed[name], reference[name])]
    if different:
        # Seen once in seven runs on a loaded 2-core VM. Tell a resume that lost state (a bug: fail) from a machine
        # whose training is not bit-reproducible at all (an uninterrupted rerun differs too: nothing to compare).
        again_dir = tmp_path / "uninterrupted"
        launch(1, *run_args(data, again_dir, *args[-4:]))
        again = fp32_weights(again_dir, f"step_{STEPS:06d}")
        if any(not torch.equal(again[name], reference[name]) for name in reference):
            pytest.skip("training is not bit-reproducible on this machine (an uninterrupted rerun differs too)")
    assert not different, f"resumed from {killed_at}; weights differ: {different[:5]}"
    metrics, reference_metrics = read_metrics(run_dir), read_metrics(reference_run)
    assert [metrics[s]["loss"] for s in range(1, STEPS + 1)] == [
        reference_metrics[s]["loss"] for s in range(1, STEPS + 1)
    ]


def test_two_processes_train_on_the_same_global_batches(data, reference_run, tmp_path):
    run_dir = tmp_path / "two"
    launch(2, *run_args(data, run_dir))
    metrics = read_metrics(run_dir)
    assert_loss_decreases(metrics)
    checkpoint = run_dir / "checkpoints" / f"step_{STEPS:06d}"
    assert len(list(checkpoint.glob("zero_pp_rank_*_optim_states.pt"))) == 2  # ZeRO-2 partitions
    # 1 process x 2 micro-batches and 2 processes x 1 micro-batch: same samples, same dropout, same optimizer steps.
    reference = read_metrics(reference_run)
    for step in range(1, STEPS + 1):
        assert metrics[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-4)
    weights, reference_weights = fp32_weights(run_dir, checkpoint.name), fp32_weights(reference_run, checkpoint.name)
    for name, tensor in reference_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-3, atol=1e-4)


def load_export_script():
    spec = importlib.util.spec_from_file_location("videolisa_train_export", REPO / "train" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_then_from_pretrained_matches_the_trained_weights(data, reference_run, tmp_path):
    from huggingface_hub import ModelCard

    from videolisa.builder import build_model_skeleton
    from videolisa.checkpoint import load_tokenizer
    from videolisa.data import MixtureDataset, SampleConfig, VideoLisaCollator, build_dataset_groups
    from videolisa.modeling.videolisa import VideoLisaForSegmentation
    from videolisa.training import load_training_config
    from videolisa.training.model import apply_freezing_and_lora

    out = tmp_path / "exported"
    assert load_export_script().main([str(reference_run), str(out), "--tag", "latest", "--dtype", "fp32"]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in out.iterdir()}
    card = ModelCard.load(out / "README.md")  # the model card parses, with the run's datasets and config
    assert card.data.library_name == "videolisa" and card.data.datasets == ["mevis"]
    assert "total_steps: 6" in card.text
    exported = VideoLisaForSegmentation.from_pretrained(out)
    # The engine's module at the last step, LoRA unmerged, as DeepSpeed saved it.
    config = load_training_config(reference_run / "train_config.yaml")
    trained = apply_freezing_and_lora(build_model_skeleton(reference_run / "model", torch.float32), config.lora)
    module_state = torch.load(reference_run / "checkpoints/step_000006/mp_rank_00_model_states.pt", weights_only=False)
    trained.load_state_dict(module_state["module"], strict=True)
    trained.eval()
    tokenizer = load_tokenizer(out)
    settings = SampleConfig.from_model_config(exported.config)
    dataset = MixtureDataset(build_dataset_groups(config.data, settings), config.data.rates, seed=5, length=2)
    batch = VideoLisaCollator(tokenizer, exported.config)([dataset[0], dataset[1]])
    with torch.no_grad():
        expected, actual = trained(batch), exported(batch)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=1e-5)
    for got, want in zip(actual.mask_logits, expected.mask_logits):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not any("lora" in name for name in exported.state_dict())
