"""``videolisa score`` and ``eval/score.py`` end to end, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Every test starts a fresh interpreter (the point: what the command imports, how it exits).
pytestmark = pytest.mark.launcher

REPO = Path(__file__).resolve().parents[1]


def write_folders(root: Path, shift: int) -> None:
    """``<root>/{gt,pred}/<sequence>/<object>/<frame>.png`` with two sequences of three frames."""
    for sequence in ("s1", "s2"):
        for t in range(3):
            gt = np.zeros((40, 50), np.uint8)
            gt[10:30, 10 + t : 30 + t] = 255
            for side, mask in (("gt", gt), ("pred", np.roll(gt, shift, axis=1))):
                folder = root / side / sequence / "obj"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(folder / f"{t:05d}.png")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


SCORE_AND_REPORT_MODULES = (
    "import sys\n"
    "from videolisa.cli import main\n"
    "status = main(['score', *sys.argv[1:]])\n"
    "heavy = sorted(m for m in ('torch', 'transformers', 'deepspeed', 'gradio', 'numba') if m in sys.modules)\n"
    "print('HEAVY', heavy)\n"
    "sys.exit(status)\n"
)


def test_score_folders_prints_table_writes_reports_and_never_imports_torch(tmp_path):
    write_folders(tmp_path, shift=0)
    out = tmp_path / "out" / "report.json"
    result = run_python(
        SCORE_AND_REPORT_MODULES,
        "--benchmark",
        "folders",
        "--gt",
        str(tmp_path / "gt"),
        "--pred",
        str(tmp_path / "pred"),
        "--workers",
        "2",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert "J |" in result.stdout and "100.00" in result.stdout
    report = json.loads(out.read_text())
    assert report["overall"] == {"J": 1.0, "F": 1.0, "JF": 1.0}
    assert set(report["sequences"]) == {"s1/obj", "s2/obj"}
    assert out.with_suffix(".csv").is_file() and out.with_suffix(".png").is_file()


def test_score_command_starts_its_pool_server_before_loading_numpy():
    # The forkserver imports the scoring code while this process imports its own and lists the files.
    result = run_python(
        "import sys, multiprocessing.forkserver as fs\n"
        "from videolisa.cli import build_parser\n"
        "args = build_parser(['score']).parse_args(['score', '--benchmark', 'folders', '--gt', 'g', '--pred', 'p'])\n"
        "print('NUMPY_AFTER_PARSER', 'numpy' in sys.modules)\n"
        "from videolisa.metrics.parallel import start_pool_server\n"
        "start_pool_server(1)\n"
        "print('SERVER_FOR_1', fs._forkserver._forkserver_pid is not None)\n"
        "start_pool_server(2)\n"
        "print('SERVER_FOR_2', fs._forkserver._forkserver_pid is not None, 'numpy' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "NUMPY_AFTER_PARSER False" in result.stdout
    assert "SERVER_FOR_1 False" in result.stdout
    assert "SERVER_FOR_2 True False" in result.stdout


def test_missing_predictions_exit_2_listing_them_and_zero_policy(tmp_path):
    write_folders(tmp_path, shift=3)
    (tmp_path / "pred" / "s2" / "obj" / "00001.png").unlink()
    args = ["--benchmark", "folders", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--workers", "1"]
    result = run_python(SCORE_AND_REPORT_MODULES, *args)
    assert result.returncode == 2
    assert "s2/obj/00001.png" in result.stderr and "Traceback" not in result.stderr
    result = run_python(SCORE_AND_REPORT_MODULES, *args, "--missing", "zero")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "pred" / "score_folders.json").read_text())
    assert "scored 0" in report["notes"][0]
    assert report["sequences"]["s2/obj"]["J"] < report["sequences"]["s1/obj"]["J"]


def test_eval_script_calls_the_same_command(tmp_path):
    write_folders(tmp_path, shift=0)
    result = subprocess.run(
        [
            sys.executable,
            "eval/score.py",
            "--benchmark",
            "folders",
            "--gt",
            str(tmp_path / "gt"),
            "--pred",
            str(tmp_path / "pred"),
            "--workers",
            "1",
            "--out",
            str(tmp_path / "r.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["overall"]["JF"] == 1.0


def test_help_describes_every_layout():
    result = run_python("import sys\nfrom videolisa.cli import main\nsys.exit(main(['score', '--help']))")
    assert result.returncode == 0
    for benchmark in ("mevis", "reasonvos", "davis-semi", "davis-unsup", "refdavis", "refseg", "folders"):
        assert benchmark in result.stdout


BLOCK_EXTENSION = '''import importlib.abc, sys


class NoKernels(importlib.abc.MetaPathFinder):
    """An install where the optional C extension was not built."""

    def find_spec(self, name, path=None, target=None):
        if name == "videolisa.metrics._kernels":
            raise ImportError("no compiled kernels in this test")
        return None


sys.meta_path.insert(0, NoKernels())
'''


def test_score_without_the_c_extension_says_so_once_and_scores_the_same(tmp_path):
    write_folders(tmp_path, shift=3)
    # sitecustomize runs in every interpreter, the pool's server and workers included.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK_EXTENSION)
    reports = {}
    for name, extra_path in (("extension", ""), ("numpy", str(tmp_path / "site"))):
        out = tmp_path / name / "report.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "videolisa.cli",
                "score",
                "--benchmark",
                "folders",
                "--gt",
                str(tmp_path / "gt"),
                "--pred",
                str(tmp_path / "pred"),
                "--workers",
                "2",
                "--out",
                str(out),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (extra_path, str(REPO))))},
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr.count("slower exact NumPy fallback") == (name == "numpy"), result.stderr
        reports[name] = json.loads(out.read_text())
    assert reports["numpy"]["overall"] == reports["extension"]["overall"]
    assert reports["numpy"]["sequences"] == reports["extension"]["sequences"]
    assert 0 < reports["numpy"]["overall"]["JF"] < 1
