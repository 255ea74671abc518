"""Readers of the evaluation benchmarks in their official layouts.

``get_benchmark(name, root, split)`` returns a :class:`Benchmark`; ``validate()`` checks the layout up front,
``items()`` lists the :class:`BenchmarkItem` s to segment, and image benchmarks add ``ground_truth(item)``.
"""

from __future__ import annotations

from pathlib import Path

from videolisa.benchmarks.base import Benchmark, BenchmarkItem, ImageBenchmark, VideoBenchmark
from videolisa.benchmarks.mevis import MeViSBenchmark, SyntheticBenchmark
from videolisa.benchmarks.reasonseg import ReasonSegBenchmark
from videolisa.benchmarks.reasonvos import ReasonVOSBenchmark
from videolisa.benchmarks.refcoco import RefCocoBenchmark, RefCocogBenchmark, RefCocoPlusBenchmark
from videolisa.benchmarks.referformer import RefDAVISBenchmark, RefYouTubeVOSBenchmark
from videolisa.benchmarks.revos import ReVOSBenchmark
from videolisa.errors import InvalidInputError

BENCHMARKS: dict[str, type[Benchmark]] = {
    benchmark.name: benchmark
    for benchmark in (
        ReasonVOSBenchmark,
        MeViSBenchmark,
        ReVOSBenchmark,
        RefYouTubeVOSBenchmark,
        RefDAVISBenchmark,
        ReasonSegBenchmark,
        RefCocoBenchmark,
        RefCocoPlusBenchmark,
        RefCocogBenchmark,
        SyntheticBenchmark,
    )
}


def get_benchmark(name: str, root: Path | str, split: str | None = None) -> Benchmark:
    """The reader of benchmark ``name`` for the dataset under ``root`` (``split`` None: its default split).

    Raises InvalidInputError (a ValueError) listing the valid names for an unknown benchmark.
    """
    benchmark = BENCHMARKS.get(name)
    if benchmark is None:
        raise InvalidInputError(f"unknown benchmark {name!r}; expected one of: {', '.join(BENCHMARKS)}")
    return benchmark(root, split)


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkItem",
    "ImageBenchmark",
    "VideoBenchmark",
    "get_benchmark",
]
