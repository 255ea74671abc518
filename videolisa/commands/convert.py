"""``videolisa convert``: turn an original VideoLISA checkpoint (e.g. ``ZechenBai/VideoLISA-3.8B``) into this
package's self-contained format (config with SAM dimensions, safetensors including CLIP, tokenizer)."""

from __future__ import annotations

import argparse
from pathlib import Path

from videolisa.errors import InvalidInputError

DTYPES = ("bf16", "fp32")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``videolisa convert``."""
    parser.add_argument("original", metavar="ORIGINAL_DIR",
                        help="original checkpoint: a directory or a Hugging Face id (config.json of model_type "
                             "llava_phi)")
    parser.add_argument("out", metavar="OUT_DIR", type=Path, help="where to write the converted model")
    parser.add_argument("--vision-tower", default=None, metavar="ID_OR_DIR",
                        help="CLIP vision tower (HF id or directory); default: the one the original config names")
    parser.add_argument("--dtype", default="bf16", choices=DTYPES,
                        help="storage dtype of the converted weights (default bf16, as released)")


def run(args: argparse.Namespace) -> int:
    """Convert, then print the files written with their sizes."""
    import torch

    from videolisa.checkpoint import convert_original_checkpoint

    original, out = Path(args.original), Path(args.out)
    if original.exists() and out.exists() and original.resolve() == out.resolve():
        raise InvalidInputError(f"OUT_DIR {out} is the original checkpoint directory; choose another directory")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    written = convert_original_checkpoint(args.original, out, vision_tower=args.vision_tower, dtype=dtype)
    files = sorted(path for path in written.iterdir() if path.is_file())
    print(f"converted {args.original} -> {written} ({args.dtype}, {len(files)} files)")
    for path in files:
        print(f"  {path.name}  {_format_size(path.stat().st_size)}")
    return 0


def _format_size(num_bytes: int) -> str:
    """Human-readable size: ``512`` -> ``"512 B"``, ``1536`` -> ``"1.5 KB"``."""
    units = ("B", "KB", "MB", "GB", "TB")
    size, index = float(num_bytes), 0
    while size >= 1024 and index < len(units) - 1:
        size /= 1024
        index += 1
    return f"{num_bytes} B" if index == 0 else f"{size:.1f} {units[index]}"
