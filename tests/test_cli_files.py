"""What the commands do with their output folders: a used ``infer --out``, file-system faults (a read-only
folder, a full disk) and bad worker counts, each ending in one ``error:`` line that names the path, exit 2."""

from __future__ import annotations

import errno
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from benchmark_fixtures import write_png_frames, write_reasonvos
from faults import FullDisk, make_read_only
from PIL import Image

from videolisa.cli import main

REPO = Path(__file__).resolve().parents[1]
NUM_FRAMES, HEIGHT, WIDTH = 10, 48, 64
INSTRUCTION = "the red square"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, frames_factory) -> dict[str, Path]:
    """Frame folders of 10 and 6 frames."""
    root = tmp_path_factory.mktemp("videos")
    frames = frames_factory(NUM_FRAMES, HEIGHT, WIDTH, 3)
    return {"long": write_png_frames(root / "long", frames), "short": write_png_frames(root / "short", frames[:6])}


def infer(model_dir: Path, video: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "infer",
            "--model",
            str(model_dir),
            "--video",
            str(video),
            "--prompt",
            INSTRUCTION,
            "--out",
            str(out),
            "--device",
            "cpu",
            *extra,
        ]
    )


def error_line(err: str) -> str:
    """The one ``error:`` line of a command's stderr (progress bars aside); no traceback."""
    lines = re.findall(r"error: [^\r\n]*", err)
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def temp_files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.name.endswith(".tmp"))


# -------------------------------------------------------------------------------------------- infer --out


def test_infer_refuses_its_earlier_results_and_overwrite_replaces_exactly_them(
    tiny_model_dir: Path, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert infer(tiny_model_dir, videos["long"], out, "--save-overlay") == 0
    assert len(list((out / "masks").glob("*.png"))) == NUM_FRAMES
    (out / "notes.txt").write_text("mine")  # the user's own file next to the results
    capsys.readouterr()

    assert infer(tiny_model_dir, videos["short"], out) == 2
    line = error_line(capsys.readouterr().err)
    assert str(out) in line and "--overwrite" in line
    assert len(list((out / "masks").glob("*.png"))) == NUM_FRAMES  # untouched

    assert infer(tiny_model_dir, videos["short"], out, "--overwrite") == 0
    assert sorted(path.name for path in (out / "masks").iterdir()) == [f"{index:05d}.png" for index in range(6)]
    assert not (out / "overlay.mp4").exists()  # the earlier run's overlay is not left to be mistaken for this one's
    assert json.loads((out / "masks.json").read_text())["num_frames"] == 6
    assert json.loads((out / "summary.json").read_text())["frames"] == 6
    assert (out / "notes.txt").read_text() == "mine"
    assert temp_files(out) == []


def test_infer_refuses_a_folder_it_did_not_write_even_with_overwrite(
    tiny_model_dir: Path, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "keep.txt").write_text("keep")
    assert infer(tiny_model_dir, videos["short"], out, "--overwrite") == 2
    line = error_line(capsys.readouterr().err)
    assert str(out) in line and "not empty" in line
    assert sorted(str(path.relative_to(out)) for path in out.rglob("*")) == ["sub", "sub/keep.txt"]


# ------------------------------------------------------------------------------------- file-system faults


def test_infer_into_a_read_only_mask_folder_names_the_file(
    tiny_model_dir: Path,
    videos: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    assert infer(tiny_model_dir, videos["short"], out) == 0
    capsys.readouterr()
    make_read_only(monkeypatch, out / "masks")
    assert infer(tiny_model_dir, videos["short"], out, "--overwrite") == 2
    assert error_line(capsys.readouterr().err) == f"error: {out / 'masks' / '00000.png'}: Permission denied"
    assert temp_files(out) == []


def test_infer_on_a_full_disk_names_the_file_and_leaves_no_temporary_files(
    tiny_model_dir: Path,
    videos: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    FullDisk(2_000, affects=lambda path: out in path.parents).install(monkeypatch)
    assert infer(tiny_model_dir, videos["long"], out, "--save-overlay") == 2
    line = error_line(capsys.readouterr().err)
    assert line.endswith(": No space left on device") and str(out) in line and ".tmp" not in line
    assert temp_files(out) == []
    assert not (out / "masks.json").exists() and not (out / "overlay.mp4").exists()


def write_score_folders(root: Path) -> tuple[Path, Path]:
    """``<root>/{gt,pred}/seq/obj/<frame>.png``: ground truth and an identical prediction."""
    for side in ("gt", "pred"):
        folder = root / side / "seq" / "obj"
        folder.mkdir(parents=True)
        for t in range(2):
            mask = np.zeros((20, 30), np.uint8)
            mask[5:15, 5 + t : 15 + t] = 255
            Image.fromarray(mask).save(folder / f"{t:05d}.png")
    return root / "gt", root / "pred"


def test_score_into_an_unwritable_out_names_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, pred = write_score_folders(tmp_path)
    report = tmp_path / "reports" / "score.json"
    report.parent.mkdir()
    make_read_only(monkeypatch, report.parent)
    status = main(
        [
            "score",
            "--benchmark",
            "folders",
            "--gt",
            str(gt),
            "--pred",
            str(pred),
            "--workers",
            "1",
            "--out",
            str(report),
        ]
    )
    assert status == 2
    assert error_line(capsys.readouterr().err) == f"error: {report}: Permission denied"
    assert list(report.parent.iterdir()) == []


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_score_rejects_a_worker_count_below_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    gt, pred = write_score_folders(tmp_path)
    assert main(["score", "--benchmark", "folders", "--gt", str(gt), "--pred", str(pred), "--workers", workers]) == 2
    expected = f"error: --workers must be at least 1 (worker processes), got {workers}"
    assert error_line(capsys.readouterr().err) == expected


def test_eval_into_an_unwritable_out_is_one_error_line(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_reasonvos(tmp_path / "ReasonVOS")
    out = tmp_path / "readonly" / "out"
    out.parent.mkdir()
    make_read_only(monkeypatch, out.parent)
    status = main(
        [
            "eval",
            "--benchmark",
            "reasonvos",
            "--data-root",
            str(data),
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--workers",
            "1",
        ]
    )
    assert status == 2
    line = error_line(capsys.readouterr().err)
    assert str(out) in line and "Permission denied" in line
    assert list(out.parent.iterdir()) == []


SCRIPTS = [
    "train/train.py",
    "train/export.py",
    "demo/app.py",
    "eval/diagnostics/prompt_sensitivity.py",
    "eval/synthetic_learning.py",
    "eval/diagnostics/synthetic_oracle_prompt.py",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_reports_a_file_system_error_in_one_line(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The scripts users run (``eval/evaluate.py`` and ``eval/score.py`` are ``videolisa eval`` / ``score``):
    an ``OSError`` anywhere in ``main`` (injected into its first step) is one line naming the path, exit 2."""
    spec = importlib.util.spec_from_file_location(f"script_{Path(script).stem}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    where = tmp_path / "unwritable" / "file"

    def parse_args(*args: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(where))

    monkeypatch.setattr(module, "parse_args", parse_args)
    assert module.main([]) == 2
    assert error_line(capsys.readouterr().err) == f"error: {where}: Permission denied"
