"""File-system faults injected into a test: a disk that fills up, a folder that refuses new files.

The tests run as root in CI, where ``chmod`` does not stop writes, and a real full disk needs a tmpfs; so the
faults are injected where Python opens files (``builtins.open``, which Pillow and ``open()`` use, and ``os.open``,
which creates the writers' temporary files). What the code under test then sees is what the kernel gives it:
``OSError(ENOSPC)`` from a write and again from the flush when the file is closed, ``PermissionError(EACCES)``
when a file is created.
"""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path
from typing import Any, Callable

import pytest


class _FillingFile:
    """A writable file whose writes fail with ENOSPC once the disk's byte budget is spent; closing it after
    a failed write fails again (the buffered rest cannot be flushed), after closing the real file."""

    def __init__(self, handle: Any, disk: "FullDisk") -> None:
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

    def __enter__(self) -> "_FillingFile":
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

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "FullDisk":
        real_open = builtins.open

        def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = real_open(file, mode, *args, **kwargs)
            writing = any(flag in mode for flag in "wax+")
            if writing and isinstance(file, (str, os.PathLike)) and self._affects(Path(file)):
                return _FillingFile(handle, self)
            return handle

        monkeypatch.setattr(builtins, "open", fake_open)
        return self


def refuse_new_files(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``folder`` behaves as read-only: creating a file or folder directly inside it fails with EACCES."""
    real_os_open, real_open, real_mkdir = os.open, builtins.open, Path.mkdir

    def denied(path: Any) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def inside(path: Any) -> bool:
        return isinstance(path, (str, os.PathLike)) and Path(path).parent == folder

    def fake_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT and inside(path):
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wax+") and inside(file):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if inside(self) and not self.is_dir():
            raise denied(self)
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(Path, "mkdir", fake_mkdir)
