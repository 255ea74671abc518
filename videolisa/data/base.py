"""The interface of every training dataset and the checks of its data root.

A dataset lists its items when it is built (reading only annotation files, so a wrong root fails at start)
and decodes images and masks only in :meth:`TrainingDataset.build_sample`, which receives the item index
and a numpy Generator for every random choice: the same (index, generator seed) always gives the same
sample, which is what makes training resumable with the same data order.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from videolisa.data.sample import SampleConfig, TrainingSample
from videolisa.errors import MissingFilesError


class TrainingDataset(abc.ABC):
    """A training dataset: ``len(dataset)`` items, each turned into a sample by :meth:`build_sample`."""

    name: str

    def __init__(self, settings: SampleConfig) -> None:
        self.settings = settings

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of items (images, referring expressions, video clips, ...)."""

    @abc.abstractmethod
    def build_sample(self, index: int, rng: np.random.Generator) -> TrainingSample:
        """The sample of item ``index``; every random choice comes from ``rng``.

        Raises :class:`~videolisa.data.sample.NoTargetError` when the item has nothing to segment.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items)"


class DataRoot:
    """A dataset folder named by a config key; every missing file is reported with that key.

    Example: ``DataRoot("data.roots.ade20k", "/data/ADEChallengeData2016").dir("images/training")``.
    """

    def __init__(self, key: str, path: str | Path | None, description: str) -> None:
        if path is None or str(path) == "":
            raise MissingFilesError(f"{key} is not set; it must point to {description}")
        self.key = key
        self.path = Path(path).expanduser()
        self.description = description
        if not self.path.exists():
            raise MissingFilesError(f"{key}={self.path} does not exist; it must point to {description}")

    def _missing(self, relative: str, what: str) -> MissingFilesError:
        return MissingFilesError(
            f"{self.key}={self.path}: {what} {relative!r} not found; the folder must be {self.description}"
        )

    def dir(self, relative: str = "") -> Path:
        """``<root>/<relative>``, which must be a folder."""
        path = self.path / relative if relative else self.path
        if not path.is_dir():
            raise self._missing(relative or ".", "folder")
        return path

    def file(self, relative: str = "") -> Path:
        """``<root>/<relative>``, which must be a file (``""``: the root itself is a file)."""
        path = self.path / relative if relative else self.path
        if not path.is_file():
            raise self._missing(relative or str(self.path), "file")
        return path

    def glob(self, relative: str, pattern: str) -> list[Path]:
        """Sorted files matching ``pattern`` in ``<root>/<relative>``; at least one must exist."""
        matches = sorted(self.dir(relative).glob(pattern))
        if not matches:
            raise self._missing(f"{relative}/{pattern}", "files")
        return matches


def draw_index(count: int, rng: np.random.Generator) -> int:
    """A uniform index in ``[0, count)``."""
    return int(rng.integers(count))
