"""Experiment tracking: the run's scalars, resolved config and git commit in the trackers ``train.report_to``
names, next to ``metrics.jsonl``.

* ``tensorboard`` (default): ``<run>/tensorboard/``; the config (YAML) and the commit as text.
* ``wandb``: ``wandb.init(dir=<run>, config=<resolved config>)``, resumed under the same id; the project, entity
  and mode come from wandb's environment (``WANDB_PROJECT``, ``WANDB_MODE=offline``...).
* ``mlflow``: a run in ``MLFLOW_TRACKING_URI`` (default the SQLite store ``<run>/mlflow.db``, artifacts in
  ``<run>/mlartifacts``), the flattened config as parameters, the commit as tag ``git_commit`` and the config file
  as an artifact; resumed under the same run id.

Only the main process (rank 0) tracks. Each tracker is imported only when named.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from videolisa.errors import InvalidInputError
from videolisa.training.config import TRACKERS, TrainingConfig
from videolisa.training.run import RUN_CONFIG_FILE, tensorboard_writer, write_text_atomic

# The git commit and command line of each start of the run and the ids of its wandb / mlflow runs (a resumed run
# continues them).
TRACKING_FILE = "tracking.json"
MLFLOW_DATABASE = "mlflow.db"  # the mlflow store when MLFLOW_TRACKING_URI is not set
MLFLOW_EXPERIMENT = "videolisa"  # its experiment, with artifacts in <run>/mlartifacts
MLFLOW_ARTIFACTS = "mlartifacts"


def check_trackers(report_to: list[str]) -> None:
    """Raise :class:`InvalidInputError` for an unknown tracker or one whose package is not installed."""
    for name in report_to:
        if name not in TRACKERS:
            raise InvalidInputError(f"train.report_to: {name!r} is not one of {list(TRACKERS)}")
        if importlib.util.find_spec(name) is None:
            raise InvalidInputError(f"train.report_to names {name} but it is not installed: pip install {name}")


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the git checkout holding ``path`` (default: this package's source), with ``-dirty`` when it
    has uncommitted changes; None outside a checkout (an installed wheel) or without git."""
    folder = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (lists and None as their JSON text)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat


class Tracker(Protocol):
    """One tracking backend."""

    def log_scalars(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class _TensorBoard:
    def __init__(self, run_dir: Path, config_yaml: str, commit: str | None, step: int) -> None:
        self.writer = tensorboard_writer(run_dir, step)
        if not step:
            self.writer.add_text("config", f"```yaml\n{config_yaml}\n```", 0)
            self.writer.add_text("git_commit", commit or "unknown", 0)

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, config: dict[str, Any], commit: str | None, run_id: str | None) -> None:
        import wandb

        self.run = wandb.init(
            dir=str(run_dir),
            name=run_dir.name,
            config={**config, "git_commit": commit},
            id=run_id,
            resume="allow" if run_id else None,
        )
        self.id = self.run.id

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, run_dir: Path, config: dict[str, Any], commit: str | None, run_id: str | None) -> None:
        import mlflow

        experiment_id = None
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # MLflow's recommended local store, in the run folder
            mlflow.set_tracking_uri(f"sqlite:///{run_dir / MLFLOW_DATABASE}")
            # The default experiment keeps artifacts in ./mlruns of the working directory: keep them in the run.
            experiment = mlflow.get_experiment_by_name(MLFLOW_EXPERIMENT)
            experiment_id = (
                experiment.experiment_id
                if experiment
                else mlflow.create_experiment(
                    MLFLOW_EXPERIMENT, artifact_location=(run_dir / MLFLOW_ARTIFACTS).resolve().as_uri()
                )
            )
        self.mlflow = mlflow
        self.run = mlflow.start_run(
            run_id=run_id, experiment_id=experiment_id, run_name=None if run_id else run_dir.name
        )
        self.id = self.run.info.run_id
        if run_id is None:
            mlflow.log_params(flatten(config))
            mlflow.set_tag("git_commit", commit or "unknown")
            mlflow.log_artifact(str(run_dir / RUN_CONFIG_FILE))

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({name.replace("/", "_"): value for name, value in values.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class Trackers:
    """The trackers of ``config.train.report_to`` for a run starting (or resuming) at ``step``.

    The resolved config and the git commit are logged when a run starts; ``tracking.json`` in the run folder
    lists the commit of every start and remembers the wandb / mlflow run ids so that ``--resume`` continues the
    same runs.
    """

    def __init__(self, run_dir: Path, config: TrainingConfig, step: int) -> None:
        import yaml

        check_trackers(config.train.report_to)
        values = asdict(config)
        commit = git_commit()
        path = run_dir / TRACKING_FILE
        record = json.loads(path.read_text()) if path.is_file() else {"git_commits": [], "run_ids": {}}
        record["git_commits"].append({"step": step, "commit": commit, "command": shlex.join(sys.argv)})
        self.trackers: dict[str, Tracker] = {}
        for name in config.train.report_to:
            if name == "tensorboard":
                self.trackers[name] = _TensorBoard(run_dir, yaml.safe_dump(values, sort_keys=False), commit, step)
            else:
                tracker = (_WandB if name == "wandb" else _MLflow)(run_dir, values, commit, record["run_ids"].get(name))
                record["run_ids"][name] = tracker.id
                self.trackers[name] = tracker
        write_text_atomic(path, json.dumps(record, indent=2))

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        """Log ``{"loss/loss": 0.3, ...}`` at ``step`` to every tracker."""
        for tracker in self.trackers.values():
            tracker.log_scalars(values, step)

    def close(self) -> None:
        """Flush and finish every tracker."""
        for tracker in self.trackers.values():
            tracker.close()
