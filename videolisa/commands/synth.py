"""``videolisa synth``: generate synthetic referring-VOS videos with exact masks (see videolisa.synthetic)."""

from __future__ import annotations

import argparse
from pathlib import Path

from videolisa.errors import InvalidInputError
from videolisa.synthetic import DEFAULT_SIZES, LAYOUTS, SYNTH_MARKER, SyntheticConfig, write_synthetic_dataset


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"128x128,160x224"`` (HEIGHTxWIDTH pairs) into ``((128, 128), (160, 224))``."""
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
            raise argparse.ArgumentTypeError(f"invalid size {item!r}; expected HEIGHTxWIDTH such as 160x224")
        sizes.append((int(parts[0]), int(parts[1])))
    return tuple(sizes)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` options."""
    default_sizes = ",".join(f"{height}x{width}" for height, width in DEFAULT_SIZES)
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    parser.add_argument("--layout", choices=LAYOUTS, default="mevis", help="dataset layout (default: mevis)")
    parser.add_argument("--videos", type=int, default=8, help="number of videos (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--split", default=None, help="split folder of the mevis layout (default: valid_u)")
    parser.add_argument("--min-frames", type=int, default=16, help="fewest frames per video (default: 16)")
    parser.add_argument("--max-frames", type=int, default=48, help="most frames per video (default: 48)")
    parser.add_argument("--min-objects", type=int, default=2, help="fewest objects per video (default: 2)")
    parser.add_argument("--max-objects", type=int, default=5, help="most objects per video (default: 5)")
    parser.add_argument(
        "--sizes", type=parse_sizes, default=DEFAULT_SIZES, help=f"HEIGHTxWIDTH frame sizes (default: {default_sizes})"
    )
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of the mp4 layout (default: 10)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output folder that an earlier videolisa synth wrote (it holds a "
                             f"{SYNTH_MARKER} file); any other non-empty folder is refused")


def run(args: argparse.Namespace) -> int:
    """Generate and write the dataset; returns the exit status."""
    if args.split is not None and args.layout != "mevis":
        raise InvalidInputError(f"--split applies to the mevis layout only, not to --layout {args.layout}")
    config = SyntheticConfig(
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        sizes=args.sizes,
        min_objects=args.min_objects,
        max_objects=args.max_objects,
    )
    out_dir = write_synthetic_dataset(
        args.out,
        layout=args.layout,
        num_videos=args.videos,
        seed=args.seed,
        config=config,
        split=args.split or "valid_u",
        fps=args.fps,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.videos} synthetic videos ({args.layout} layout, seed {args.seed}) to {out_dir}")
    return 0
