"""Exact and fast segmentation scores: J, F, J&F (DAVIS / MeViS / ReasonVOS / Ref-DAVIS), cIoU, gIoU.

Every number equals what the official toolkits compute (``reference/metrics.md``); the per-frame
measures are computed on crops around the masks, so scoring is much faster than the originals.

Typical use after writing predictions::

    from videolisa.metrics import score_benchmark, write_report
    report = score_benchmark("mevis", "MeViS/valid_u", "outputs/mevis", workers=8)
    write_report(report, "outputs/mevis/score.json")   # + .csv and .png beside it
    print(report.overall)                              # {"J": .., "F": .., "JF": ..}

Importing this package loads numpy, OpenCV and Pillow only (never torch).
"""

from videolisa.metrics.benchmarks import BENCHMARKS, score_benchmark
from videolisa.metrics.davis import score_davis
from videolisa.metrics.frame import boundary_tolerance, compute_jf, disk_footprint, frame_jf
from videolisa.metrics.images import ciou_giou, mask_counts, score_refseg
from videolisa.metrics.io import MISSING_POLICIES, read_mask
from videolisa.metrics.refdavis import merge_refdavis_predictions, score_refdavis
from videolisa.metrics.report import ScoreReport, format_table, write_report
from videolisa.metrics.sequences import DavisStatistics, davis_statistics

__all__ = [
    "BENCHMARKS",
    "MISSING_POLICIES",
    "DavisStatistics",
    "ScoreReport",
    "boundary_tolerance",
    "ciou_giou",
    "compute_jf",
    "davis_statistics",
    "disk_footprint",
    "format_table",
    "frame_jf",
    "mask_counts",
    "merge_refdavis_predictions",
    "read_mask",
    "score_benchmark",
    "score_davis",
    "score_refdavis",
    "score_refseg",
    "write_report",
]
