"""Exact and fast segmentation scores: J, F, J&F (DAVIS / MeViS / ReasonVOS / Ref-DAVIS), cIoU, gIoU.

Every number equals what the official toolkits compute (``docs/metrics.md``); the per-frame
measures come from integer counts made by a compiled kernel on bit-packed rows, so scoring is much
faster than the originals.

Typical use after writing predictions::

    from videolisa.metrics import score_benchmark, write_report
    report = score_benchmark("mevis", "MeViS/valid_u", "outputs/mevis", workers=8)
    write_report(report, "outputs/mevis/score.json")   # + .csv and .png beside it
    print(report.overall)                              # {"J": .., "F": .., "JF": ..}

Importing this package loads nothing else: each name below is imported on first use (so that
``videolisa score`` can start its worker processes before it loads numpy and OpenCV); the scoring
modules load numpy, OpenCV and Pillow only (never torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_EXPORTS = {
    "BENCHMARKS": "videolisa.metrics.names",
    "MISSING_POLICIES": "videolisa.metrics.names",
    "DavisStatistics": "videolisa.metrics.sequences",
    "ScoreReport": "videolisa.metrics.report",
    "boundary_tolerance": "videolisa.metrics.frame",
    "ciou_giou": "videolisa.metrics.images",
    "compute_jf": "videolisa.metrics.frame",
    "davis_statistics": "videolisa.metrics.sequences",
    "disk_footprint": "videolisa.metrics.frame",
    "format_table": "videolisa.metrics.report",
    "frame_jf": "videolisa.metrics.frame",
    "mask_counts": "videolisa.metrics.images",
    "merge_refdavis_predictions": "videolisa.metrics.refdavis",
    "read_mask": "videolisa.metrics.io",
    "score_benchmark": "videolisa.metrics.benchmarks",
    "score_davis": "videolisa.metrics.davis",
    "score_refdavis": "videolisa.metrics.refdavis",
    "score_refseg": "videolisa.metrics.images",
    "write_report": "videolisa.metrics.report",
}

__all__ = list(_LAZY_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'videolisa.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
