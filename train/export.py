"""Export a training run: DeepSpeed checkpoint -> fp32 weights -> LoRA merged -> a model folder.

    python train/export.py runs/videolisa_3.8b exported/videolisa-ft             # best (or latest) checkpoint
    python train/export.py runs/videolisa_3.8b exported/step300 --tag step_000300 --dtype fp32
    python train/export.py runs/videolisa_3.8b exported/ft --eval-report out/mevis/results.json --push-to-hub me/ft

The folder (``config.json``, safetensors, tokenizer, a ``README.md`` model card) loads with
``VideoLisaForSegmentation.from_pretrained`` / ``VideoLisaPredictor.from_pretrained`` / ``videolisa infer`` /
``AutoModel.from_pretrained`` (after ``import videolisa``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from videolisa.cli import reports_errors
from videolisa.hub import DEFAULT_LICENSE, push_to_hub, write_run_model_card
from videolisa.training import export_checkpoint

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Run folder, output folder, checkpoint tag, dtype; model card and Hub options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "run_dir",
        type=Path,
        help="training run folder (train.output_dir). Export only run folders you trust: DeepSpeed "
        "reads its checkpoints with torch.load(weights_only=False), which can run code stored "
        "in them",
    )
    parser.add_argument("out_dir", type=Path, help="where to write the model")
    parser.add_argument(
        "--tag",
        default=None,
        help="'best', 'latest' or a tag like step_000300 (default: best if validated, else latest)",
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weights dtype (default bf16)")
    parser.add_argument(
        "--eval-report",
        action="append",
        default=[],
        type=Path,
        metavar="JSON",
        help="results.json of videolisa eval (or a videolisa score report) whose scores go into the "
        "model card's results (model-index); repeatable",
    )
    parser.add_argument("--license", default=DEFAULT_LICENSE, help=f"the card's license (default {DEFAULT_LICENSE})")
    parser.add_argument(
        "--base-model",
        default=None,
        metavar="HUB_ID",
        help="the card's base model (default: model.path of the run when it is a Hub id)",
    )
    parser.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="then upload the folder to this Hub model repository (token: HF_TOKEN or hf auth login)",
    )
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    args = parser.parse_args(argv)
    if args.private and args.push_to_hub is None:
        parser.error("--private needs --push-to-hub REPO")
    return args


@reports_errors
def main(argv: list[str] | None = None) -> int:
    """Export and report."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = export_checkpoint(args.run_dir, args.out_dir, args.tag, DTYPES[args.dtype])
    write_run_model_card(args.run_dir, out, args.tag, args.eval_report, args.license, args.base_model)
    print(out)
    if args.push_to_hub is not None:
        print(push_to_hub(out, args.push_to_hub, private=args.private))
    return 0


if __name__ == "__main__":
    sys.exit(main())
