"""Helpers shared by the ``eval/perf`` benchmarks: measured child processes, tables, the ``RATIO`` line."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ChildRun:
    """A finished child process: its stdout, wall seconds, CPU seconds (user + system, all its threads)
    and peak resident memory in MiB."""

    stdout: str
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mib: float


def run_measured(command: Sequence[str], env: dict[str, str] | None = None) -> ChildRun:
    """Run ``command`` to completion and measure it with ``wait4`` (this child's own rusage, not the
    aggregate of all children). Raises ``RuntimeError`` with the end of its stderr if it fails."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(
            list(command),
            stdout=stdout,
            stderr=stderr,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode:
            raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr.read()[-4000:]}")
        return ChildRun(stdout.read(), wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def python_command(script: Path, *args: str) -> list[str]:
    """``[python, script, *args]`` with this interpreter."""
    return [sys.executable, str(script), *args]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain-text table with right-aligned columns."""
    cells = [[str(h) for h in headers]] + [[_format(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(value.rjust(width) for value, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def ratio_line(ratios: dict[str, float]) -> str:
    """``RATIO name=value name=value`` (3 significant digits), the last line every benchmark prints."""
    return "RATIO " + " ".join(f"{name}={value:.3g}" for name, value in ratios.items())


def parse_ratio_line(output: str) -> dict[str, float]:
    """The ``name=value`` pairs of the last ``RATIO`` line of a benchmark's output."""
    line = next(line for line in reversed(output.splitlines()) if line.startswith("RATIO "))
    return {name: float(value) for name, value in (pair.split("=") for pair in line.split()[1:])}


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
