"""``videolisa push``: upload a model folder (exported by ``train/export.py`` or converted by ``videolisa convert``)
to a Hugging Face Hub model repository, with a model card.

A folder without a ``README.md`` gets a card first (from its ``config.json`` and any ``--eval-report``); an
existing card is uploaded as it is. The token is the usual Hugging Face one (``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from videolisa.errors import InvalidInputError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``videolisa push``."""
    from videolisa.hub import DEFAULT_LICENSE

    parser.add_argument("model_dir", metavar="MODEL_DIR", type=Path, help="the model folder (config.json, weights)")
    parser.add_argument("repo", metavar="REPO", help="Hub model repository, e.g. my-name/videolisa-ft")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument(
        "--eval-report",
        action="append",
        default=[],
        type=Path,
        metavar="JSON",
        help="results.json of videolisa eval (or a videolisa score report) for the card's results; "
        "repeatable; only for a folder without a README.md",
    )
    parser.add_argument("--license", default=DEFAULT_LICENSE, help=f"license of a new card (default {DEFAULT_LICENSE})")
    parser.add_argument("--base-model", default=None, metavar="HUB_ID", help="base model of a new card")


def run(args: argparse.Namespace) -> int:
    """Write a card if the folder has none, push, print the repository's URL."""
    from videolisa.hub import CARD_FILE, build_model_card, push_to_hub, read_score_report, write_model_card

    if (args.model_dir / CARD_FILE).is_file():
        if args.eval_report or args.base_model:
            raise InvalidInputError(
                f"{args.model_dir / CARD_FILE} exists; --eval-report and --base-model only build a new card "
                "(remove the README.md to rebuild it, or edit it)"
            )
    else:
        scores = [score for path in args.eval_report for score in read_score_report(path)]
        card = build_model_card(args.model_dir, scores=scores, license=args.license, base_model=args.base_model)
        print(f"wrote {write_model_card(args.model_dir, card)}")
    print(push_to_hub(args.model_dir, args.repo, private=args.private))
    return 0
