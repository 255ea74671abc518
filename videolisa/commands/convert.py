"""``videolisa convert``: turn an original VideoLISA checkpoint (e.g. ``ZechenBai/VideoLISA-3.8B``) into this
package's self-contained format (config with SAM dimensions, safetensors including CLIP, tokenizer).

The conversion is lossless: every tensor is stored in the dtype it had (or in float32 with ``--dtype fp32``),
so the converted model's outputs equal those of the original checkpoint loaded directly."""

from __future__ import annotations

import argparse
from pathlib import Path

from videolisa.errors import InvalidInputError

# "keep": each tensor in its source dtype; "fp32": everything in float32. Both are exact (no rounding).
DTYPES = ("keep", "fp32")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``videolisa convert``."""
    parser.add_argument(
        "original",
        metavar="ORIGINAL_DIR",
        help="original checkpoint: a directory or a Hugging Face id (config.json of model_type llava_phi)",
    )
    parser.add_argument("out", metavar="OUT_DIR", type=Path, help="where to write the converted model")
    parser.add_argument(
        "--vision-tower",
        default=None,
        metavar="ID_OR_DIR",
        help="CLIP vision tower (HF id or directory); default: the one the original config names",
    )
    parser.add_argument(
        "--dtype",
        default="keep",
        choices=DTYPES,
        help="storage dtype of the converted weights. The conversion is lossless: 'keep' (default) "
        "stores each tensor in its source dtype (the release's bf16 LLM, SAM and projector as "
        "bf16, the float32 CLIP tower as float32); 'fp32' stores everything in float32 (twice "
        "the size, same values)",
    )


def run(args: argparse.Namespace) -> int:
    """Convert, then print the files written with their sizes."""
    import torch

    from videolisa.builder import convert_original_checkpoint

    original, out = Path(args.original), Path(args.out)
    if original.exists() and out.exists() and original.resolve() == out.resolve():
        raise InvalidInputError(f"OUT_DIR {out} is the original checkpoint directory; choose another directory")
    dtype = {"keep": None, "fp32": torch.float32}[args.dtype]
    written = convert_original_checkpoint(args.original, out, vision_tower=args.vision_tower, dtype=dtype)
    files = sorted(path for path in written.iterdir() if path.is_file())
    stored = "source dtypes" if dtype is None else "fp32"
    print(f"converted {args.original} -> {written} ({stored}, {len(files)} files)")
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
