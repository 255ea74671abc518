"""Model cards (checked with huggingface_hub's parser) and pushing to the Hub (offline here: one error line)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from videolisa.cli import main
from videolisa.hub import CARD_FILE, build_model_card, read_score_report, write_run_model_card
from videolisa.training.config import load_training_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_dir(tiny_model_dir, tmp_path) -> Path:
    """A copy of the saved tiny model (tests write cards into it)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "videolisa-tiny-ft"))


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A training run folder as the trainer leaves it: config, tracking record, checkpoints with a validated best."""
    run = tmp_path / "run"
    config = load_training_config(
        REPO / "train/configs/tiny_cpu.yaml",
        [
            "model.source=pretrained",
            "model.path=ZechenBai/VideoLISA-3.8B",
            "validation.benchmark=mevis",
            "validation.root=/data/mevis",
            "validation.split=valid_u",
        ],
    )
    (run / "checkpoints" / "step_000003").mkdir(parents=True)
    (run / "checkpoints" / "step_000006").mkdir()
    (run / "checkpoints" / "latest").write_text("step_000006")
    best = {"tag": "step_000003", "step": 3, "metric": "JF", "score": 0.4321}
    (run / "checkpoints" / "best.json").write_text(json.dumps(best))
    (run / "train_config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    command = "train/train.py --config train/configs/tiny_cpu.yaml data.roots.mevis=/data/mevis"
    (run / "tracking.json").write_text(
        json.dumps({"git_commits": [{"step": 0, "commit": "0123abc", "command": command}], "run_ids": {}})
    )
    return run


def write_eval_results(path: Path) -> Path:
    """A ``videolisa eval`` results.json with a score."""
    path.write_text(
        json.dumps(
            {
                "benchmark": "reasonvos",
                "split": None,
                "score": {"overall": {"J": 0.5, "F": 0.625, "JF": 0.5625}, "notes": []},
            }
        )
    )
    return path


def test_exported_run_card_parses_with_metadata_results_command_and_config(run_dir, model_dir, tmp_path):
    report = write_eval_results(tmp_path / "results.json")
    path = write_run_model_card(run_dir, model_dir, "best", [report])
    card = ModelCard.load(path)
    data = card.data
    assert (data.license, data.library_name, data.pipeline_tag) == ("apache-2.0", "videolisa", "image-segmentation")
    assert data.base_model == "ZechenBai/VideoLISA-3.8B"
    assert data.datasets == ["mevis"]
    assert "videolisa" in data.tags
    results = {(r.dataset_type, r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert results == {
        ("mevis", "valid_u", "J&F"): 43.21,
        ("reasonvos", None, "J"): 50.0,
        ("reasonvos", None, "F"): 62.5,
        ("reasonvos", None, "J&F"): 56.25,
    }
    assert "train/train.py --config train/configs/tiny_cpu.yaml" in card.text
    assert "0123abc" in card.text and "total_steps: 6" in card.text
    assert 'AutoModel.from_pretrained("REPO_OR_DIR")' in card.text


def test_validation_result_only_for_the_exported_best_checkpoint(run_dir, model_dir):
    card = ModelCard.load(write_run_model_card(run_dir, model_dir, "latest"))
    assert card.data.eval_results is None and "## Results" not in card.text


def test_reports_must_be_videolisa_reports(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"accuracy": 1}))
    with pytest.raises(Exception, match="is not a videolisa evaluation report"):
        read_score_report(tmp_path / "other.json")
    score_json = tmp_path / "score.json"
    score_json.write_text(json.dumps({"benchmark": "refseg", "overall": {"cIoU": 0.25, "gIoU": 0.5}}))
    assert [(s.metric, s.value) for s in read_score_report(score_json)] == [("cIoU", 25.0), ("gIoU", 50.0)]


def test_converted_folder_card_without_a_run(model_dir):
    card = build_model_card(model_dir, base_model="ZechenBai/VideoLISA-3.8B")
    parsed = ModelCard(str(card))
    assert parsed.data.base_model == "ZechenBai/VideoLISA-3.8B" and parsed.data.datasets is None
    assert "## Training" not in parsed.text


def test_push_offline_is_one_error_line_after_writing_the_card(model_dir, tmp_path, capsys):
    report = write_eval_results(tmp_path / "results.json")
    assert main(["push", str(model_dir), "someone/videolisa-tiny", "--private", "--eval-report", str(report)]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: cannot push") and "someone/videolisa-tiny" in line and "offline" in line.lower()
    assert ModelCard.load(model_dir / CARD_FILE).data.eval_results[0].metric_value == 50.0
    # The card is now there: it is pushed as it is, so options that would rebuild it are refused.
    assert main(["push", str(model_dir), "someone/videolisa-tiny", "--eval-report", str(report)]) == 2
    assert "exists" in capsys.readouterr().err
