"""``videolisa eval``: batch evaluation on a benchmark (predict in the official layout, then score).

Same as ``python eval/evaluate.py``; launch with ``torchrun --nproc_per_node N`` or the ``deepspeed``
launcher to shard videos over processes and nodes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from videolisa.commands.answer_options import (
    add_answer_arguments,
    check_answer_arguments,
    generation_settings,
    presence_threshold,
)
from videolisa.commands.refine_options import add_refine_arguments, refine_settings_from_args

if TYPE_CHECKING:
    from videolisa.evaluation import EvaluationConfig


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``videolisa eval``."""
    from videolisa.benchmarks import BENCHMARKS

    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS), help="benchmark reader")
    parser.add_argument("--data-root", required=True, type=Path, help="the benchmark's folder in its official layout")
    parser.add_argument("--model", required=True, help="model directory, Hugging Face id, or builtin:NAME")
    parser.add_argument("--out", required=True, type=Path, help="output directory (predictions/, results.json, ...)")
    parser.add_argument("--split", default=None, help="split (default: the benchmark's usual evaluation split)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (each rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument(
        "--score",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score the predictions where ground truth exists (default); --no-score: predictions only",
    )
    parser.add_argument("--chunk-size", type=int, default=8, help="frames per SAM batch")
    parser.add_argument("--frames-sparse", type=int, default=None, help="sparse frames (default: model config)")
    parser.add_argument("--frames-dense", type=int, default=None, help="dense frames (default: model config)")
    parser.add_argument("--workers", type=int, default=None, help="scoring processes (default: all cores)")
    parser.add_argument(
        "--davis-root",
        type=Path,
        default=None,
        help="DAVIS-2017 root with Annotations_unsupervised (to score refdavis)",
    )
    parser.add_argument("--vision-tower", default=None, help="CLIP id or directory for checkpoints without CLIP")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="remove what an earlier evaluation wrote to --out (predictions, ground truth, results, "
        "scores, submission zip) and start over. Without it a rerun resumes, skipping finished "
        "items, and is refused if --out's fingerprint.json shows other settings (model and its "
        "files, dtype, frame counts, threshold, prompt template, package version, ...)",
    )
    # The deepspeed launcher appends --local_rank=N to the script's arguments; the rank is read from the
    # LOCAL_RANK variable that every launcher sets, so the argument is accepted and not used.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    add_refine_arguments(parser)
    add_answer_arguments(
        parser,
        "let the model write its answers instead of the benchmark's teacher-forced one; an item's masks are the "
        "union of the tracks its answer's [SEG]s give (none: empty masks)",
    )


def settings_from_args(args: argparse.Namespace) -> EvaluationConfig:
    """The parsed arguments as :class:`videolisa.evaluation.EvaluationConfig`."""
    from videolisa.evaluation import EvaluationConfig

    return EvaluationConfig(
        benchmark=args.benchmark,
        data_root=args.data_root,
        model=args.model,
        out=args.out,
        split=args.split,
        limit=args.limit,
        device=args.device,
        dtype=args.dtype,
        score=args.score,
        chunk_size=args.chunk_size,
        frames_sparse=args.frames_sparse,
        frames_dense=args.frames_dense,
        workers=args.workers,
        davis_root=args.davis_root,
        vision_tower=args.vision_tower,
        overwrite=args.overwrite,
        refine=refine_settings_from_args(args),
        generation=generation_settings(args),
        presence_threshold=presence_threshold(args),
    )


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; print the markdown summary on rank 0."""
    from videolisa.evaluation import markdown_report, run_evaluation
    from videolisa.metrics.parallel import check_workers

    if args.workers is not None:  # checked now, not after predicting every item
        check_workers(args.workers, "--workers")
    check_answer_arguments(args)
    result = run_evaluation(settings_from_args(args))
    if result:
        print(markdown_report(result))
        print(f"results: {args.out / 'results.json'}")
    return 0
