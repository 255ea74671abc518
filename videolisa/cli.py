"""The ``videolisa`` console command.

Every sub-command lives in its own module under :mod:`videolisa.commands` and exposes
``configure_parser(parser)`` and ``run(args) -> int``. Modules are imported only when their
sub-command runs, so ``videolisa score`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import ParamSpec

from videolisa import __version__
from videolisa.errors import VideoLisaError

P = ParamSpec("P")

# name -> (module, one-line help). The order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "infer": ("videolisa.commands.infer", "segment a video (or image) from a text instruction"),
    "eval": ("videolisa.commands.eval", "run batch evaluation on a benchmark and score it"),
    "score": ("videolisa.commands.score", "score predicted masks against ground truth (J, F, J&F, cIoU, gIoU)"),
    "convert": ("videolisa.commands.convert", "convert an original VideoLISA checkpoint to this package's format"),
    "synth": ("videolisa.commands.synth", "generate synthetic referring-VOS videos with exact masks"),
    "push": ("videolisa.commands.push", "upload a model folder to the Hugging Face Hub, with a model card"),
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
    return report_errors(lambda: int(module.run(args) or 0))


def reports_errors(main: Callable[P, int]) -> Callable[P, int]:
    """Decorate a script's ``main`` so that it runs through :func:`report_errors` (one ``error:`` line, exit 2)."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        return report_errors(lambda: main(*args, **kwargs))

    return wrapper


def describe_os_error(error: OSError) -> str:
    """A file-system error as one line naming the path: ``"out/masks/00000.png: No space left on device"``."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return reason
    where = os.fsdecode(error.filename)
    if error.filename2 is not None:
        where = f"{where} -> {os.fsdecode(error.filename2)}"
    return f"{where}: {reason}"


def report_errors(body: Callable[[], int]) -> int:
    """Run a command's ``body`` and return its exit status; the user's errors end it with exit status 2 and one
    ``error:`` line on stderr instead of a traceback: every :class:`VideoLisaError` and every ``OSError`` (a
    read-only folder, a full disk; the line names the path). Ctrl-C prints ``interrupted`` and returns 130.

    Every command-line entry point (``videolisa``, the scripts under ``train/``, ``eval/``, ``demo/``) runs
    through this function.
    """
    try:
        return body()
    except VideoLisaError as error:
        print(f"error: {error}", file=sys.stderr)
    except OSError as error:
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
