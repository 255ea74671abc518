"""File-system faults injected into a test: a disk that fills up, a read-only folder.

The tests run as root in CI, where ``chmod`` does not stop writes, and a real full disk needs a tmpfs; so the
faults are injected where Python opens files (``builtins.open``, which Pillow and ``open()`` use, and ``os.open``,
which creates the writers' temporary files). What the code under test then sees is what the kernel gives it:
``OSError(ENOSPC)`` from a write and again from the flush when the file is closed, ``PermissionError(EACCES)``
when a file is created, removed or renamed in a read-only folder.
"""

from __future__ import annotations

import builtins
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class _FillingFile:
    """A writable file whose writes fail with ENOSPC once the disk's byte budget is spent; closing it after
    a failed write fails again (the buffered rest cannot be flushed), after closing the real file."""

    def __init__(self, handle: Any, disk: FullDisk) -> None:
        self._handle = handle
        self._disk = disk
        self._failed = False

    def write(self, data: Any) -> int:
        if self._disk.free < len(data):
            self._failed = True
            self._disk.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.free -= len(data)
        return self._handle.write(data)

    def close(self) -> None:
        self._handle.close()
        if self._failed:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


class FullDisk:
    """Files opened for writing whose path satisfies ``affects`` share ``free_bytes``; then writes fail."""

    def __init__(self, free_bytes: int, affects: Callable[[Path], bool]) -> None:
        self.free = free_bytes
        self.failures = 0
        self._affects = affects

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FullDisk:
        real_open = builtins.open

        def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = real_open(file, mode, *args, **kwargs)
            writing = any(flag in mode for flag in "wax+")
            if writing and isinstance(file, (str, os.PathLike)) and self._affects(Path(file)):
                return _FillingFile(handle, self)
            return handle

        monkeypatch.setattr(builtins, "open", fake_open)
        return self


def make_read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``folder`` behaves as read-only: creating, removing or renaming a file or folder directly inside it fails
    with EACCES (as for a folder without write permission)."""
    real = {
        "os_open": os.open,
        "open": builtins.open,
        "mkdir": Path.mkdir,
        "unlink": os.unlink,
        "replace": os.replace,
        "rmdir": os.rmdir,
    }

    def inside(path: Any) -> bool:
        return isinstance(path, (str, os.PathLike)) and Path(path).parent == folder

    def check(*paths: Any) -> None:
        for path in paths:
            if inside(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def fake_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            check(path)
        return real["os_open"](path, flags, *args, **kwargs)

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wax+"):
            check(file)
        return real["open"](file, mode, *args, **kwargs)

    def fake_mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if not self.is_dir():
            check(self)
        real["mkdir"](self, *args, **kwargs)

    def fake_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        check(path)
        real["unlink"](path, *args, **kwargs)

    def fake_rmdir(path: Any, *args: Any, **kwargs: Any) -> None:
        check(path)
        real["rmdir"](path, *args, **kwargs)

    def fake_replace(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        check(source, target)
        real["replace"](source, target, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(Path, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "unlink", fake_unlink)
    monkeypatch.setattr(os, "remove", fake_unlink)
    monkeypatch.setattr(os, "rmdir", fake_rmdir)
    monkeypatch.setattr(os, "replace", fake_replace)
