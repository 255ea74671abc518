"""Experiment tracking (``train.report_to``): TensorBoard, and wandb / mlflow in their offline modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from videolisa.errors import InvalidInputError
from videolisa.training.config import load_training_config
from videolisa.training.run import RUN_CONFIG_FILE
from videolisa.training.tracking import MLFLOW_DATABASE, TRACKING_FILE, Trackers, check_trackers, git_commit

TINY_CONFIG = Path(__file__).resolve().parents[1] / "train/configs/tiny_cpu.yaml"


def tiny_config(*overrides: str):
    """The tiny CPU recipe with 4 steps and ``overrides``."""
    return load_training_config(TINY_CONFIG, ["train.total_steps=4", *overrides])


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A run folder with its resolved config, and the trackers' offline settings."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / RUN_CONFIG_FILE).write_text("train: {total_steps: 4}\n")
    return tmp_path


def test_default_is_tensorboard_and_unknown_trackers_are_rejected():
    assert tiny_config().train.report_to == ["tensorboard"]
    with pytest.raises(InvalidInputError, match=r"train.report_to\[\] must be one of"):
        tiny_config("train.report_to=[comet]")
    with pytest.raises(InvalidInputError, match="'comet' is not one of"):
        check_trackers(["comet"])


def test_git_commit_of_this_checkout():
    commit = git_commit()
    assert commit is None or len(commit.removesuffix("-dirty")) == 40


def test_tensorboard_gets_scalars_config_and_commit(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_config()
    trackers = Trackers(run_dir, config, step=0)
    trackers.log_scalars({"loss/loss": 0.5, "lr": 1e-4}, step=1)
    trackers.close()
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert [event.value for event in events.Scalars("loss/loss")] == [0.5]
    assert {"config/text_summary", "git_commit/text_summary"} <= set(events.Tags()["tensors"])
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "total_steps: 4" in config_text
    (started,) = json.loads((run_dir / TRACKING_FILE).read_text())["git_commits"]
    commit_text = events.Tensors("git_commit/text_summary")[0].tensor_proto.string_val[0].decode()
    assert started["step"] == 0 and commit_text == (started["commit"] or "unknown")


@pytest.mark.slow
def test_wandb_offline_run_has_config_commit_and_is_continued_on_resume(run_dir):
    pytest.importorskip("wandb")
    config = tiny_config("train.report_to=[wandb]")
    trackers = Trackers(run_dir, config, step=0)
    trackers.log_scalars({"loss/loss": 0.5}, step=1)
    logged = dict(trackers.trackers["wandb"].run.config)
    trackers.close()
    record = json.loads((run_dir / TRACKING_FILE).read_text())
    assert logged["train"]["total_steps"] == 4 and logged["git_commit"] == record["git_commits"][0]["commit"]
    run_id = record["run_ids"]["wandb"]
    assert list((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    Trackers(run_dir, config, step=1).close()
    record = json.loads((run_dir / TRACKING_FILE).read_text())
    assert record["run_ids"]["wandb"] == run_id and len(record["git_commits"]) == 2


@pytest.mark.slow
def test_mlflow_file_store_run_has_params_commit_metrics_and_is_continued_on_resume(run_dir, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    elsewhere = tmp_path / "elsewhere"  # the working directory: nothing may land there
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = tiny_config("train.report_to=[mlflow]")
    trackers = Trackers(run_dir, config, step=0)
    trackers.log_scalars({"loss/loss": 0.5}, step=1)
    trackers.close()
    resumed = Trackers(run_dir, config, step=1)
    resumed.log_scalars({"loss/loss": 0.25}, step=2)
    resumed.close()
    record = json.loads((run_dir / TRACKING_FILE).read_text())
    run_id = record["run_ids"]["mlflow"]
    run = mlflow.MlflowClient(f"sqlite:///{run_dir / MLFLOW_DATABASE}").get_run(run_id)
    assert run.data.params["train.total_steps"] == "4"
    assert run.data.tags["git_commit"] == (record["git_commits"][0]["commit"] or "unknown")
    history = mlflow.MlflowClient(f"sqlite:///{run_dir / MLFLOW_DATABASE}").get_metric_history(run_id, "loss_loss")
    assert [(metric.step, metric.value) for metric in history] == [(1, 0.5), (2, 0.25)]
    assert list((run_dir / "mlartifacts").rglob("*.yaml")) and not list(elsewhere.iterdir())
