"""``videolisa synth``: generate synthetic referring-VOS videos with exact masks (see videolisa.synthetic)."""

from __future__ import annotations

import argparse
from pathlib import Path

from videolisa.errors import InvalidInputError
from videolisa.synthetic import (
    DEFAULT_SIZES,
    EXTRA_EXPRESSION_KINDS,
    LAYOUTS,
    SYNTH_MARKER,
    SyntheticConfig,
    write_synthetic_dataset,
)

# Layouts whose benchmark has these expression types: their extra kinds are on unless --extra-kinds says otherwise.
_EXTRA_KINDS_BY_DEFAULT = {"revos": EXTRA_EXPRESSION_KINDS}


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"128x128,160x224"`` (HEIGHTxWIDTH pairs) into ``((128, 128), (160, 224))``."""
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
            raise argparse.ArgumentTypeError(f"invalid size {item!r}; expected HEIGHTxWIDTH such as 160x224")
        sizes.append((int(parts[0]), int(parts[1])))
    return tuple(sizes)


def parse_extra_kinds(text: str) -> tuple[str, ...]:
    """Parse ``"multi,absent"`` (or ``"none"``) into the opt-in expression kinds."""
    if text.strip().lower() == "none":
        return ()
    kinds = tuple(part.strip() for part in text.split(","))
    for kind in kinds:
        if kind not in EXTRA_EXPRESSION_KINDS:
            raise argparse.ArgumentTypeError(
                f"unknown expression kind {kind!r}; expected a comma-separated subset of "
                f"{','.join(EXTRA_EXPRESSION_KINDS)} or none"
            )
    return kinds


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` options."""
    default_sizes = ",".join(f"{height}x{width}" for height, width in DEFAULT_SIZES)
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    parser.add_argument("--layout", choices=LAYOUTS, default="mevis", help="dataset layout (default: mevis)")
    parser.add_argument("--videos", type=int, default=8, help="number of videos (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--split",
        default=None,
        help="split folder of the mevis layout (default: valid_u), or the split in the name of the "
        "revos layout's meta_expressions_<split>_.json (default: valid)",
    )
    parser.add_argument(
        "--extra-kinds",
        type=parse_extra_kinds,
        default=None,
        help="also write instructions that name several objects (multi: 'all the red shapes') and/or "
        "none of the video's (absent: 'green circle' without one), e.g. multi,absent; "
        "default: multi,absent for --layout revos, none for the others",
    )
    parser.add_argument("--min-frames", type=int, default=16, help="fewest frames per video (default: 16)")
    parser.add_argument("--max-frames", type=int, default=48, help="most frames per video (default: 48)")
    parser.add_argument("--min-objects", type=int, default=2, help="fewest objects per video (default: 2)")
    parser.add_argument("--max-objects", type=int, default=5, help="most objects per video (default: 5)")
    parser.add_argument(
        "--sizes", type=parse_sizes, default=DEFAULT_SIZES, help=f"HEIGHTxWIDTH frame sizes (default: {default_sizes})"
    )
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of the mp4 layout (default: 10)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an output folder that an earlier videolisa synth wrote (it holds a "
        f"{SYNTH_MARKER} file); any other non-empty folder is refused",
    )


def run(args: argparse.Namespace) -> int:
    """Generate and write the dataset; returns the exit status."""
    if args.split is not None and args.layout not in ("mevis", "revos"):
        raise InvalidInputError(f"--split applies to the mevis and revos layouts only, not to --layout {args.layout}")
    extra_kinds = args.extra_kinds if args.extra_kinds is not None else _EXTRA_KINDS_BY_DEFAULT.get(args.layout, ())
    config = SyntheticConfig(
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        sizes=args.sizes,
        min_objects=args.min_objects,
        max_objects=args.max_objects,
        extra_kinds=extra_kinds,
    )
    out_dir = write_synthetic_dataset(
        args.out,
        layout=args.layout,
        num_videos=args.videos,
        seed=args.seed,
        config=config,
        split=args.split,
        fps=args.fps,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.videos} synthetic videos ({args.layout} layout, seed {args.seed}) to {out_dir}")
    return 0
