"""Files written atomically: a temporary name in the same folder, then ``os.replace`` onto the final name.

Every writer of this package goes through here, so that all of them (1) give final files the permissions the
umask allows, as a plain ``open()`` would, (2) raise ``OSError`` naming the final file, never a temporary name,
and (3) use one temporary-name pattern, ``.<name>.<8 characters>.tmp``, that a later run can recognise and
sweep away (:func:`sweep_temp_files`) when a killed run left one. Standard library only: ``videolisa score``
imports this without paying for anything else.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

PathLike = str | os.PathLike[str]

# The temporary name of a final file ``<name>``: ``.<name>.<8 characters>.tmp`` in the same folder. Files of
# this exact form, for the names a writer is about to write, are what a killed run can leave; writers remove them
# (:func:`sweep_temp_files`). Eight characters of [a-z0-9_] also match the names tempfile.mkstemp gave earlier.
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def _create_temp_file(path: Path) -> Path:
    """Create an empty ``.<name>.<random>.tmp`` next to ``path`` and return its path.

    Created with mode 0o666 so that the umask decides the final file's permissions exactly as for a plain
    ``open(path, "w")`` (``tempfile.mkstemp`` would make every output 0600).
    """
    for _ in range(100):
        temp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        except OSError as error:
            error.filename = os.fspath(path)  # the temporary name would mean nothing to the user
            raise
        return temp_path
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.fspath(path))


def sweep_temp_files(folder: PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files an interrupted writer left in ``folder`` for the final file ``names``.

    Only files named ``.<name>.<8 characters>.tmp`` (this module's temporary names) for one of ``names`` are
    removed, and only directly inside ``folder``. Returns the paths removed.
    """
    folder, wanted = Path(folder), set(names)
    if not folder.is_dir():
        return []
    removed = []
    for entry in os.scandir(folder):
        match = _TEMP_NAME.fullmatch(entry.name)
        if match and match["name"] in wanted and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


@contextmanager
def naming_errors(path: PathLike, *temporary: PathLike) -> Iterator[None]:
    """Let an ``OSError`` raised in the block name ``path``: one that names no file (a full disk while writing
    to an open handle) or one of the ``temporary`` names, which mean nothing to the user."""
    try:
        yield
    except OSError as error:
        if error.filename is None or os.fsdecode(error.filename) in {os.fspath(name) for name in temporary}:
            error.filename = os.fspath(path)
        raise


class AtomicFile:
    """A temporary file next to ``path`` that becomes ``path`` on :meth:`commit` (``os.replace``)."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        with naming_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.temp_path = _create_temp_file(self.path)

    def commit(self) -> None:
        """Move the finished temporary file onto the final path."""
        os.replace(self.temp_path, self.path)

    def discard(self) -> None:
        """Delete the temporary file; the final path is untouched."""
        self.temp_path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; it replaces ``path`` only if the block succeeds.

    Example: ``with atomic_path("out/a.png") as tmp: image.save(tmp, format="PNG")``. The temporary name does
    not end in the final extension, so writers must be told the format. An ``OSError`` in the block names
    ``path`` (see :func:`naming_errors`); the final file gets the permissions the umask allows.
    """
    target = AtomicFile(path)
    try:
        with naming_errors(target.path, target.temp_path):
            yield target.temp_path
    except BaseException:
        target.discard()
        raise
    target.commit()


def write_atomically(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as temp_path:
        temp_path.write_bytes(data)
