"""Installing like a user: build the sdist and the wheel, install them into a fresh virtual environment with no C
compiler on PATH, and run the README's quick start and ``videolisa score`` from it.

Slow tier (about two to three minutes; pip fetches the dependencies once, then from its cache). The environment is a
plain ``python -m venv`` (no ``--system-site-packages``): every dependency is installed into it by pip, except the
PyTorch stack (torch, torchvision, triton and the CUDA wheels torch depends on, several GB), which is made visible
from this interpreter's site-packages through a ``.pth`` file listing a folder of links to exactly those
distributions. Downloading and unpacking them would make the test take many minutes and most of its disk, and it
would test PyTorch's packaging rather than ours.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "demo/examples/shapes"
HEAVY_PREFIXES = ("torch", "torchvision", "triton", "nvidia-", "cuda-")
FALLBACK_NOTE = "slower exact NumPy fallback"

pytestmark = [pytest.mark.slow, pytest.mark.launcher]


def run(command: list[str | Path], env: dict[str, str], cwd: Path, timeout: float = 600) -> str:
    """Run ``command``; its stdout + stderr, or a failure that shows them."""
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def link_heavy_distributions(folder: Path) -> None:
    """Links in ``folder`` to the files of this interpreter's PyTorch-stack distributions (see the module doc)."""
    folder.mkdir()
    for distribution in importlib.metadata.distributions():
        if not distribution.metadata["Name"].lower().startswith(HEAVY_PREFIXES):
            continue
        for top in {Path(str(file)).parts[0] for file in distribution.files or ()} - {".."}:
            if not (folder / top).exists():
                (folder / top).symlink_to(Path(distribution.locate_file(top)))


def fresh_venv(root: Path) -> tuple[Path, dict[str, str]]:
    """A plain virtual environment and the environment variables to run it with: its bin folder alone on PATH
    (so no compiler), offline Hugging Face access."""
    subprocess.run([sys.executable, "-m", "venv", root / "venv"], check=True)
    bin_dir = root / "venv" / ("Scripts" if os.name == "nt" else "bin")
    link_heavy_distributions(root / "heavy")
    site_packages = Path(
        subprocess.check_output(
            [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (site_packages / "pytorch_stack.pth").write_text(f"{root / 'heavy'}\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=str(bin_dir), HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    assert not any(shutil.which(name, path=env["PATH"]) for name in (compiler, "cc", "gcc", "clang"))
    return bin_dir, env


def score_layout(root: Path, masks: Path) -> tuple[Path, Path]:
    """The example's ground truth and ``masks`` as ``folders`` layouts: ``<root>/{gt,pred}/shapes/square/*.png``."""
    gt, pred = root / "gt" / "shapes" / "square", root / "pred" / "shapes" / "square"
    shutil.copytree(SHAPES / "masks" / "0", gt)
    shutil.copytree(masks, pred)
    return root / "gt", root / "pred"


def test_wheel_and_sdist_install_without_a_compiler_and_run_the_quick_start(tmp_path):
    pytest.importorskip("build", reason="python -m build is in the dev extra")
    run([sys.executable, "-m", "build", "--outdir", tmp_path / "dist", REPO], dict(os.environ), tmp_path)
    (sdist,), (wheel,) = (tmp_path / "dist").glob("*.tar.gz"), (tmp_path / "dist").glob("*.whl")
    bin_dir, env = fresh_venv(tmp_path)
    try:
        # From source without a compiler: the optional extension is skipped, the NumPy fallback is used.
        run([bin_dir / "python", "-m", "pip", "install", sdist], env, tmp_path, timeout=900)
        find_extension = "import importlib.util as u; print(u.find_spec('videolisa.metrics._kernels'))"
        probe = [bin_dir / "python", "-c", find_extension]
        assert run(probe, env, tmp_path).strip() == "None"
        output = run(
            [
                bin_dir / "videolisa",
                "infer",
                "--model",
                "builtin:synthetic",
                "--video",
                SHAPES / "shapes.mp4",
                "--prompt",
                "Please segment the square in this image.",
                "--out",
                tmp_path / "shapes",
                "--save-overlay",
            ],
            env,
            tmp_path,
        )
        assert "segmented 28 frames" in output and (tmp_path / "shapes" / "overlay.mp4").is_file()
        gt, pred = score_layout(tmp_path, tmp_path / "shapes" / "masks")
        reports = {}
        for name in ("fallback", "extension"):
            if name == "extension":  # the wheel built with a compiler, installed over it
                reinstall = ["install", "--force-reinstall", "--no-deps", wheel]
                run([bin_dir / "python", "-m", "pip", *reinstall], env, tmp_path)
                assert run(probe, env, tmp_path).strip() != "None"
            output = run(
                [
                    bin_dir / "videolisa",
                    "score",
                    "--benchmark",
                    "folders",
                    "--gt",
                    gt,
                    "--pred",
                    pred,
                    "--workers",
                    "2",
                    "--out",
                    tmp_path / f"{name}.json",
                ],
                env,
                tmp_path,
            )
            assert output.count(FALLBACK_NOTE) == (name == "fallback"), output
            reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
        assert reports["fallback"]["sequences"] == reports["extension"]["sequences"]
        assert reports["fallback"]["overall"] == reports["extension"]["overall"]
        assert reports["extension"]["overall"]["JF"] > 0.5  # the built-in model finds the square
    finally:
        shutil.rmtree(tmp_path / "venv", ignore_errors=True)  # about a GB of dependencies
