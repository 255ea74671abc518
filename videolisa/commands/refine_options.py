"""The ``--refine`` options shared by ``videolisa infer`` and ``videolisa eval`` (temporal refinement, SAM 2)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from videolisa.refine import RefineConfig

# Mirrors videolisa.refine.settings (not imported here: argument parsing must not import torch).
_DEFAULT_MODEL, _ANCHOR_MODES = "facebook/sam2.1-hiera-large", ("dense", "top-k")


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--refine sam2`` and its settings (defaults: :class:`videolisa.refine.RefineConfig`)."""
    group = parser.add_argument_group("temporal refinement (the paper's post-optimization, with SAM 2)")
    group.add_argument(
        "--refine",
        choices=["sam2"],
        default=None,
        help="propagate the masks of anchor frames through the video with SAM 2 (default: off)",
    )
    group.add_argument(
        "--refine-model",
        default=_DEFAULT_MODEL,
        help=f"SAM 2 checkpoint: Hub id (facebook/sam2.1-hiera-{{tiny,small,base-plus,large}}) or "
        f"directory (default {_DEFAULT_MODEL})",
    )
    group.add_argument(
        "--refine-anchors",
        choices=_ANCHOR_MODES,
        default="dense",
        help="anchor frames: the dense frames (default) or each track's top-k by presence score",
    )
    group.add_argument("--refine-top-k", type=int, default=4, help="anchors per track for --refine-anchors top-k")
    group.add_argument(
        "--refine-min-score",
        type=float,
        default=0.5,
        help="an anchor mask is used only with at least this presence (stability) score, 0..1",
    )


def refine_settings_from_args(args: argparse.Namespace) -> RefineConfig | None:
    """The parsed ``--refine*`` options as :class:`~videolisa.refine.RefineConfig` (None without --refine)."""
    if args.refine is None:
        return None
    from videolisa.refine import RefineConfig

    return RefineConfig(
        model=args.refine_model, anchors=args.refine_anchors, top_k=args.refine_top_k, min_score=args.refine_min_score
    )
