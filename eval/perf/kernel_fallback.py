"""Scoring speed without a C compiler: the pure-NumPy fallback kernels against the C extension.

An install that could not build ``videolisa.metrics._kernels`` scores with ``videolisa/metrics/_kernels_numpy.py``
(same J, F and PNG pixels). This measures how much slower that is, on the realistic 480p and 1080p masks of
``scoring.py``:

* metric only: J and F of masks already in memory (``compute_jf``), one process, CPU time;
* PNG decode: every mask file read as the scorer reads it (libdeflate, then the row unfiltering), one process,
  CPU time;
* end to end: ``videolisa score`` on the folders in a fresh process, wall time, with
  ``VIDEOLISA_KERNELS=numpy`` against the default (the extension).

It checks that both give identical results, prints a table and, last, ``RATIO name=value ...`` where each value is
fallback time / extension time (how many times slower the fallback is), the best of ``--repeats`` runs.
About two minutes on 2 cores.

Usage: ``python eval/perf/kernel_fallback.py [--workers N] [--sequences 6] [--frames 30] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import print_table, ratio_line, run_measured
from scoring import RESOLUTIONS, make_sequences, write_folders

from videolisa.metrics import compute_jf, kernels, read_mask
from videolisa.metrics.parallel import default_workers

IMPLEMENTATIONS = ("extension", "numpy")


def best_cpu_seconds(function, repeats: int) -> tuple[float, object]:
    """Least CPU seconds of ``repeats`` calls of ``function()`` and its (last) result."""
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.process_time()
        result = function()
        best = min(best, time.process_time() - start)
    return best, result


def with_kernels(name: str, function):
    """``function`` run with the kernels ``name`` as :data:`videolisa.metrics.kernels.active`."""

    def run():
        saved, kernels.active = kernels.active, kernels.load(name)
        try:
            return function()
        finally:
            kernels.active = saved

    return run


def metric_only(sequences, repeats: int) -> dict[str, float]:
    """CPU seconds of J and F over ``sequences`` for each implementation; asserts identical scores."""
    seconds, scores = {}, {}
    for name in IMPLEMENTATIONS:
        seconds[name], scores[name] = best_cpu_seconds(
            with_kernels(name, lambda: [compute_jf(pred, gt) for pred, gt in sequences]), repeats
        )
    for (j_ext, f_ext), (j_np, f_np) in zip(scores["extension"], scores["numpy"]):
        assert np.array_equal(j_ext, j_np) and np.array_equal(f_ext, f_np), "the fallback's J/F differ"
    return seconds


def png_decode(root: Path, repeats: int) -> dict[str, float]:
    """CPU seconds of reading every PNG under ``root`` as the scorer does, for each implementation."""
    paths = sorted(root.rglob("*.png"))
    seconds, pixels = {}, {}
    for name in IMPLEMENTATIONS:
        seconds[name], pixels[name] = best_cpu_seconds(
            with_kernels(name, lambda: [read_mask(path, binary=False) for path in paths]), repeats
        )
    assert all(np.array_equal(a, b) for a, b in zip(pixels["extension"], pixels["numpy"])), "PNG pixels differ"
    return seconds


def end_to_end(root: Path, workers: int, repeats: int) -> dict[str, float]:
    """Wall seconds of ``videolisa score`` on ``root``'s folders for each implementation (alternating runs, so
    both see the same machine load); asserts identical reports."""
    seconds = dict.fromkeys(IMPLEMENTATIONS, math.inf)
    for _ in range(repeats):
        for name in IMPLEMENTATIONS:
            command = [
                sys.executable,
                "-m",
                "videolisa.cli",
                "score",
                "--benchmark",
                "folders",
                "--gt",
                str(root / "gt"),
                "--pred",
                str(root / "pred"),
                "--workers",
                str(workers),
                "--out",
                str(root / f"{name}.json"),
            ]
            seconds[name] = min(seconds[name], run_measured(command, env={"VIDEOLISA_KERNELS": name}).wall_seconds)
    reports = [json.loads((root / f"{name}.json").read_text()) for name in IMPLEMENTATIONS]
    assert reports[0]["sequences"] == reports[1]["sequences"], "the fallback's report differs"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--sequences", type=int, default=6, help="sequences per resolution")
    parser.add_argument("--frames", type=int, default=30, help="frames per sequence")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        kernels.load("extension")
    except ImportError:
        sys.exit("error: the C extension videolisa.metrics._kernels is not built here; nothing to compare with")

    rows, ratios = [], {}
    rng = np.random.default_rng(0)
    for resolution, (height, width) in RESOLUTIONS.items():
        sequences = make_sequences(rng, height, width, args.frames, args.sequences)
        with tempfile.TemporaryDirectory() as folder:
            root = Path(folder)
            write_folders(root, sequences)
            measured = {
                "metric only (CPU s)": metric_only(sequences, args.repeats),
                "PNG decode (CPU s)": png_decode(root, args.repeats),
                "end to end (wall s)": end_to_end(root, args.workers, args.repeats),
            }
        for (what, seconds), key in zip(measured.items(), ("metric", "png", "e2e")):
            slowdown = seconds["numpy"] / seconds["extension"]
            rows.append((resolution, what, seconds["extension"], seconds["numpy"], slowdown))
            ratios[f"fallback_slowdown_{key}_{resolution}"] = slowdown
    frames = args.sequences * args.frames
    print(f"{frames} frames per resolution, {args.workers} workers end to end; identical J/F and pixels checked")
    print_table(["resolution", "what", "extension", "NumPy fallback", "fallback / extension"], rows)
    print(ratio_line(ratios))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
