"""Distributed batch evaluation: ``torchrun`` with 2 CPU processes (gloo) writes the same predictions and scores
as one process, and an item failing on a rank other than 0 makes the whole run fail with the item listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmark_fixtures import FRAMES, write_reasonvos

from videolisa.cli import main

REPO = Path(__file__).resolve().parents[1]
SIZE = (32, 48)


def eval_arguments(data_root: Path, model_dir: Path, out: Path) -> list[str]:
    return [
        "--benchmark",
        "reasonvos",
        "--data-root",
        str(data_root),
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--workers",
        "1",
    ]


def torchrun_eval(arguments: list[str]) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 eval/evaluate.py ...`` on a free port."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "eval" / "evaluate.py"),
        *arguments,
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600, check=False)


def prediction_files(out: Path) -> dict[str, bytes]:
    root = out / "predictions"
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*.png"))}


@pytest.mark.slow
@pytest.mark.launcher
def test_torchrun_two_processes_match_one_process(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch

    data_root = write_reasonvos(tmp_path / "ReasonVOS", size=SIZE)
    # torchrun gives each of several workers one intra-op thread; one thread here too, so that every
    # floating-point reduction runs in the same order and the masks can be compared bit for bit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["eval", *eval_arguments(data_root, tiny_model_dir, tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)

    completed = torchrun_eval(eval_arguments(data_root, tiny_model_dir, tmp_path / "two"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert prediction_files(tmp_path / "two") == prediction_files(tmp_path / "single")
    assert len(prediction_files(tmp_path / "two")) == 5 * len(FRAMES)
    assert (two["timing"]["ranks"], two["timing"]["videos"], two["written"]) == (2, 2, 5)
    assert two["score"] == single["score"] and two["subsets"] == single["subsets"]
    # Only rank 0 merges and reports.
    assert completed.stdout.count("results: ") == 1


@pytest.mark.slow
@pytest.mark.launcher
def test_torchrun_failure_on_rank_1_fails_the_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    data_root = write_reasonvos(tmp_path / "ReasonVOS", size=SIZE)
    # Videos sorted: ["vidB", "vid_a"]; rank 1 takes vid_a. Validation reads only the first frame's header.
    (data_root / "JPEGImages" / "vid_a" / f"{FRAMES[-1]}.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"

    completed = torchrun_eval(eval_arguments(data_root, tiny_model_dir, out))

    assert completed.returncode != 0
    assert "error: 3 items failed" in completed.stderr
    result = json.loads((out / "results.json").read_text())
    assert sorted(result["failed"]) == ["MeViS_vid_a_1/0", "MeViS_vid_a_1/1", "MeViS_vid_a_2/2"]
    assert sorted({name.split("/")[0] for name in prediction_files(out)}) == ["BURST_vidB_0"]
