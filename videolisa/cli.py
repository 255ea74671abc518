"""The ``videolisa`` console command.

Every sub-command lives in its own module under :mod:`videolisa.commands` and exposes
``configure_parser(parser)`` and ``run(args) -> int``. Modules are imported only when their
sub-command runs, so ``videolisa score`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from videolisa import __version__
from videolisa.errors import VideoLisaError

# name -> (module, one-line help). The order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "infer": ("videolisa.commands.infer", "segment a video (or image) from a text instruction"),
    "eval": ("videolisa.commands.eval", "run batch evaluation on a benchmark and score it"),
    "score": ("videolisa.commands.score", "score predicted masks against ground truth (J, F, J&F, cIoU, gIoU)"),
    "convert": ("videolisa.commands.convert", "convert an original VideoLISA checkpoint to this package's format"),
    "synth": ("videolisa.commands.synth", "generate synthetic referring-VOS videos with exact masks"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the top-level parser; only the sub-command named in ``argv`` is imported."""
    parser = argparse.ArgumentParser(prog="videolisa", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"videolisa {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    requested = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == requested:
            importlib.import_module(module_name).configure_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``videolisa`` command; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except VideoLisaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
