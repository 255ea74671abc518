"""``videolisa score``: score predicted masks against a benchmark's ground truth.

Prints the overall table (J, F, J&F -- or cIoU, gIoU for ``refseg``) and writes a JSON report, a
CSV of the per-sequence scores and a PNG plot of the sorted per-sequence J&F. This command imports
numpy, its own C kernels, OpenCV and Pillow only (never torch), so it starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

from videolisa.metrics.names import BENCHMARKS, MISSING_POLICIES
from videolisa.metrics.parallel import check_workers, default_workers, start_pool_server

_LAYOUTS = """ground truth (--gt) and prediction (--pred) layouts:
  mevis        --gt split folder with meta_expressions.json and mask_dict.json;
               --pred <pred>/<video>/<exp_id>/<frame>.png
  reasonvos    --gt ReasonVOS root with meta_expressions.json and Annotations/<source>_<video>_<obj_id>/;
               --pred <pred>/<source>_<video>_<obj_id>/<exp_id>/<frame>.png
  revos        --gt ReVOS root with mask_dict.json, mask_dict_foreground.json and meta_expressions_valid_.json
               (--meta for another split); --pred <pred>/<video>/<exp_id>/<frame>.png; J, F, J&F, A, R per type
  davis-semi   --gt DAVIS root (Annotations/480p, ImageSets/2017); --pred <pred>/<sequence>/<frame>.png (indexed)
  davis-unsup  --gt DAVIS root (Annotations_unsupervised/480p, ImageSets/2017); --pred as davis-semi
  refdavis     --gt DAVIS root as davis-unsup; --meta Ref-DAVIS meta_expressions.json;
               --pred <pred>/<video>/<exp_id>/<frame>.png (0/255), merged per annotator, 4 results averaged
  refseg       --gt <gt>/**/<name>.png (0 background, 255 ignore, other values foreground);
               --pred the same relative paths (cIoU, gIoU)
  folders      --gt and --pred <root>/<sequence>/<object>/<frame>.png; the ground truth's PNGs are scored"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``score`` options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _LAYOUTS
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS, help="benchmark layout and rules")
    parser.add_argument("--gt", required=True, type=Path, help="ground-truth root (see below)")
    parser.add_argument("--pred", required=True, type=Path, help="prediction root (see below)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="worker processes (default: all cores)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report JSON path; a .csv and a .png are written beside it (default: <pred>/score_<benchmark>.json)",
    )
    parser.add_argument(
        "--missing",
        choices=MISSING_POLICIES,
        default="error",
        help="missing predictions: error (default, listing them) or zero (score them 0, as MeViS does)",
    )
    parser.add_argument("--meta", type=Path, default=None, help="meta_expressions.json (required for refdavis)")
    parser.add_argument("--set", dest="davis_set", default="val", help="DAVIS image set (default: val)")


def run(args: argparse.Namespace) -> int:
    """Score, print the table, write the report files; returns the exit status."""
    start_pool_server(
        check_workers(args.workers, "--workers")
    )  # it imports the scoring code while this process lists files
    importlib.import_module("cv2")  # for the report's plot: loaded now, while this process has a core to itself

    from videolisa.metrics.benchmarks import score_benchmark
    from videolisa.metrics.report import format_table, write_report

    report = score_benchmark(
        args.benchmark,
        args.gt,
        args.pred,
        workers=args.workers,
        missing=args.missing,
        meta=args.meta,
        davis_set=args.davis_set,
    )
    out = args.out if args.out is not None else args.pred / f"score_{args.benchmark}.json"
    print(format_table(report))
    for path in write_report(report, out):
        print(f"wrote {os.fspath(path)}")
    return 0
