"""The generation-mode options shared by ``videolisa infer`` and ``videolisa eval`` (``--generate`` and its
settings, ``--presence-threshold``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from videolisa.errors import InvalidInputError

if TYPE_CHECKING:
    from videolisa.generation import GenerationConfig

# Mirrors videolisa.generation.GenerationConfig's defaults (not imported here: argument parsing must not import
# torch).
_DEFAULT_MAX_NEW_TOKENS, _DEFAULT_TEMPERATURE = 64, 0.0


def add_answer_arguments(parser: argparse.ArgumentParser, generate_help: str) -> None:
    """``--generate`` (``generate_help`` says what it writes), its settings and ``--presence-threshold``."""
    group = parser.add_argument_group("answers, several objects and absent targets")
    group.add_argument("--generate", action="store_true", help=generate_help)
    group.add_argument(
        "--max-new-tokens",
        type=int,
        default=_DEFAULT_MAX_NEW_TOKENS,
        help=f"longest generated answer (default {_DEFAULT_MAX_NEW_TOKENS})",
    )
    group.add_argument(
        "--temperature", type=float, default=_DEFAULT_TEMPERATURE, help="0 (default): greedy; above 0: sampling"
    )
    group.add_argument("--seed", type=int, default=None, help="seed of the sampling (with --temperature)")
    group.add_argument(
        "--presence-threshold",
        type=float,
        default=None,
        help="empty a frame's mask when its presence score (0..1) is below this; default: off, "
        "or the calibrated default with --generate",
    )


def check_answer_arguments(args: argparse.Namespace) -> None:
    """The generation options need ``--generate``; checked before anything is loaded."""
    changed = (
        args.max_new_tokens != _DEFAULT_MAX_NEW_TOKENS
        or args.temperature != _DEFAULT_TEMPERATURE
        or args.seed is not None
    )
    if not args.generate and changed:
        raise InvalidInputError("--max-new-tokens, --temperature and --seed need --generate")
    if args.presence_threshold is not None and not 0.0 <= args.presence_threshold <= 1.0:
        raise InvalidInputError(f"--presence-threshold must be in [0, 1] (0: off), got {args.presence_threshold}")


def generation_settings(args: argparse.Namespace) -> GenerationConfig | None:
    """The :class:`~videolisa.generation.GenerationConfig` of ``--generate``; None when teacher-forced."""
    from videolisa.generation import GenerationConfig

    if not args.generate:
        return None
    return GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)


def presence_threshold(args: argparse.Namespace) -> float:
    """The presence threshold this run uses (0: off)."""
    from videolisa.tracks import resolve_presence_threshold

    return resolve_presence_threshold(args.presence_threshold, generating=args.generate)
