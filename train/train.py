"""Train VideoLISA with DeepSpeed (the original recipe, docs/original.md §4).

    deepspeed --num_gpus 8 train/train.py --config train/configs/videolisa_3.8b.yaml model.sam_checkpoint=... ...
    deepspeed --hostfile hostfile train/train.py --config train/configs/videolisa_3.8b.yaml ...   # many nodes
    deepspeed --num_gpus 1 train/train.py --resume runs/videolisa_3.8b                           # continue
    deepspeed --num_gpus 2 train/train.py --config train/configs/tiny_cpu.yaml data.roots.mevis=DATA  # CPU
    python train/train.py --config train/configs/builtin_stage1_sam.yaml data.custom_files=[...]   # no launcher

A YAML whose top-level ``task`` is ``promptable_sam`` (stage 1 of the built-in recipe: the preset's SAM as a
promptable segmenter, :mod:`videolisa.training.promptable_sam`) runs on this process without DeepSpeed, with the
same ``--config`` / ``--resume`` / override arguments.

``key=value`` arguments override the YAML (``train.total_steps=100``, ``data.rates.custom=1``,
``data.custom_files=[my.jsonl]``, ``optim.lr_scales={sam.image_encoder: 0.1}``); they are checked against
:class:`videolisa.training.config.TrainingConfig`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from videolisa.cli import reports_errors
from videolisa.training import prepare_run, run_training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``--config`` or ``--resume``, then ``key=value`` overrides."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="training YAML (train/configs/*.yaml)")
    parser.add_argument(
        "--resume",
        type=Path,
        help="run directory to continue from its last checkpoint. Resume only run folders you trust: "
        "DeepSpeed loads the optimizer states with torch.load(weights_only=False), which can run "
        "code stored in a checkpoint. Settings the run cannot honour (other than logging, "
        "checkpointing, workers, micro-batch and validation; another process count or DeepSpeed "
        "config) are refused; what was logged after the checkpoint is cut, so no step is logged "
        "twice",
    )
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the launcher
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser.parse_args(argv)


def _task(args: argparse.Namespace) -> str | None:
    """The top-level ``task`` of the YAML of a new run (``--config``) or of a resumed run's saved config."""
    from videolisa.training.promptable_sam import CONFIG_FILE, config_task

    if args.config is not None:
        return config_task(args.config)
    return config_task(args.resume / CONFIG_FILE) if args.resume is not None else None


@reports_errors
def main(argv: list[str] | None = None) -> int:
    """Prepare the run (config, resume checks), train on this process, report."""
    args = parse_args(argv)
    if _task(args) == "promptable_sam":
        from videolisa.training.promptable_sam import run_promptable_sam

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        summary = run_promptable_sam(args.config, args.resume, args.overrides)
        logging.getLogger("train").info(
            "finished at step %d; held-out: %s; run folder %s", summary["step"], summary["heldout"], summary["run_dir"]
        )
        return 0
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    run = prepare_run(args.config, args.resume, args.overrides)
    summary = run_training(run)
    if rank == 0:
        logging.getLogger("train").info(
            "finished at step %d; best: %s; run folder %s", summary["step"], summary["best"], run.run_dir
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
