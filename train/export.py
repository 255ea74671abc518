"""Export a training run: DeepSpeed checkpoint -> fp32 weights -> LoRA merged -> a model folder.

    python train/export.py runs/videolisa_3.8b exported/videolisa-ft             # best (or latest) checkpoint
    python train/export.py runs/videolisa_3.8b exported/step300 --tag step_000300 --dtype fp32

The folder (``config.json``, safetensors, tokenizer) loads with
``VideoLisaForSegmentation.from_pretrained`` / ``VideoLisaPredictor.from_pretrained`` / ``videolisa infer``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from videolisa.cli import reports_errors
from videolisa.training import export_checkpoint

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Run folder, output folder, checkpoint tag, dtype."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path,
                        help="training run folder (train.output_dir). Export only run folders you trust: DeepSpeed "
                             "reads its checkpoints with torch.load(weights_only=False), which can run code stored "
                             "in them")
    parser.add_argument("out_dir", type=Path, help="where to write the model")
    parser.add_argument("--tag", default=None,
                        help="'best', 'latest' or a tag like step_000300 (default: best if validated, else latest)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weights dtype (default bf16)")
    return parser.parse_args(argv)


@reports_errors
def main(argv: list[str] | None = None) -> int:
    """Export and report."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = export_checkpoint(args.run_dir, args.out_dir, args.tag, DTYPES[args.dtype])
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
