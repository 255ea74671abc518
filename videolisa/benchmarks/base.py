"""The benchmark reader interface shared by every benchmark.

A reader turns a benchmark in its official on-disk layout into :class:`BenchmarkItem` s: what to segment
(frames), with which text (the benchmark's query template already applied), and where the predictions go
(the official scorers' folder layout). ``validate()`` checks the whole layout up front so a long evaluation
does not fail half-way on a missing file.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from videolisa.benchmarks.layout import (
    list_frame_names,
    read_json,
    require_field,
    require_listed_frames,
    require_mapping,
    require_plain_name,
    require_string_list,
)
from videolisa.constants import DEFAULT_ANSWER, DEFAULT_SEG_TOKEN
from videolisa.errors import InvalidInputError
from videolisa.processing.video_io import natural_sort_key


@dataclass(frozen=True)
class BenchmarkItem:
    """One (video or image, instruction) pair to segment."""

    key: str  # unique within the benchmark; equal to output_dir
    video_id: str  # items sharing it share one decoded + SAM-encoded video (or image)
    video_path: Path  # frame folder, or a single image file for image benchmarks
    frame_names: tuple[str, ...]  # frame stems in temporal order = names of the prediction PNGs
    query: str  # user text placed after "<image>\n" in the prompt, benchmark template applied
    answer: str  # assistant text with the segmentation token: "Sure, [SEG]." or "[SEG]." (image benchmarks)
    output_dir: str  # prediction folder relative to the prediction root, in the official scorer's layout
    subset: str | None = None  # "short"/"long" (ReasonVOS, ReasonSeg), "anno_k" (Ref-DAVIS), kind (synthetic)
    mask_value: int = 255  # value of foreground pixels in the prediction PNGs (ReVOS: 1, see ReVOSBenchmark)


class Benchmark(abc.ABC):
    """A benchmark in its official layout under ``root``.

    Subclasses set ``name``, ``has_ground_truth``, ``default_split`` and ``splits`` (None: any split name
    the layout has; ``(None,)``: the benchmark has no splits).
    """

    name: ClassVar[str]
    has_ground_truth: bool
    default_split: ClassVar[str | None] = None
    splits: ClassVar[tuple[str | None, ...] | None] = None

    def __init__(self, root: Path | str, split: str | None = None) -> None:
        self.root = Path(root)
        self.split = self.default_split if split is None else split
        if self.splits is not None and self.split not in self.splits:
            allowed = ", ".join(str(value) for value in self.splits)
            raise InvalidInputError(f"{self.name} has no split {self.split!r}; expected one of: {allowed}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r})"

    @abc.abstractmethod
    def validate(self) -> None:
        """Check the layout; raise MissingFilesError / InvalidInputError naming the first problem."""

    @abc.abstractmethod
    def items(self) -> list[BenchmarkItem]:
        """All items in a deterministic order: sorted by video, then by expression."""


# LISA / VideoLISA image evaluation (``utils/dataset.py`` validation datasets): the user turn is
# "<image>\n" + one of these, with the leading space the original has after the newline.
IMAGE_SENTENCE_TEMPLATE = " {} Please output segmentation mask."
IMAGE_PHRASE_TEMPLATE = " What is {} in this video? Please output segmentation mask."
IMAGE_ANSWER = f"{DEFAULT_SEG_TOKEN}."


def image_query(text: str, is_sentence: bool) -> str:
    """The image-benchmark query for a (stripped) sentence or phrase."""
    return (IMAGE_SENTENCE_TEMPLATE if is_sentence else IMAGE_PHRASE_TEMPLATE).format(text.strip())


class ImageBenchmark(Benchmark):
    """An image benchmark (images are pseudo-videos of one frame) scored with cIoU / gIoU."""

    has_ground_truth = True
    answer: ClassVar[str] = IMAGE_ANSWER

    @abc.abstractmethod
    def ground_truth(self, item: BenchmarkItem) -> np.ndarray:
        """The item's target: ``[H, W]`` uint8 with 1 = object, 0 = background, 255 = ignore (LISA's convention)."""


@dataclass(frozen=True)
class ExpressionEntry:
    """One expression of a video, parsed from a meta file."""

    exp_id: str
    query: str
    output_dir: str
    subset: str | None = None
    annotations: tuple[str, ...] = ()  # ground-truth resources: MeViS anno ids, ReasonVOS mask folders


@dataclass(frozen=True)
class VideoEntry:
    """One video of a meta file: where its frames are, the frames the meta lists, its expressions."""

    name: str
    frames_dir: Path
    listed_frames: tuple[str, ...]
    expressions: tuple[ExpressionEntry, ...]


class VideoBenchmark(Benchmark):
    """A video benchmark whose frames are ``<frames_dir>/<frame>.jpg`` folders.

    As in the original inference scripts, a video's frames are ALL the ``.jpg`` files of its folder in sorted
    file-name order (this decides which frames the model samples); every frame the meta file lists must be
    among them.
    """

    answer: ClassVar[str] = DEFAULT_ANSWER
    # Foreground value of the prediction PNGs: 255 (0/255 masks) unless the official scorer needs another one.
    mask_value: ClassVar[int] = 255

    @abc.abstractmethod
    def _parse_videos(self) -> list[VideoEntry]:
        """Parse the meta file(s); raise MissingFilesError / InvalidInputError on malformed entries."""

    def _validate_ground_truth(self, video: VideoEntry, frame_names: Sequence[str]) -> None:
        """Check a video's ground truth against its frames; benchmarks with ground truth override this."""

    @cached_property
    def _videos(self) -> list[VideoEntry]:
        return sorted(self._parse_videos(), key=lambda video: natural_sort_key(video.name))

    def validate(self) -> None:
        """Check the meta file, every frame folder, every listed frame and the ground truth."""
        for video in self._videos:
            frame_names = list_frame_names(video.frames_dir)
            require_listed_frames(video.listed_frames, frame_names, video.frames_dir)
            self._validate_ground_truth(video, frame_names)
        self.items()

    def items(self) -> list[BenchmarkItem]:
        """One item per expression, sorted by video then expression id (numeric ids in numeric order)."""
        items = []
        for video in self._videos:
            frame_names = list_frame_names(video.frames_dir)
            for expression in sorted(video.expressions, key=lambda entry: natural_sort_key(entry.exp_id)):
                items.append(
                    BenchmarkItem(
                        key=expression.output_dir,
                        video_id=video.name,
                        video_path=video.frames_dir,
                        frame_names=frame_names,
                        query=expression.query,
                        answer=self.answer,
                        output_dir=expression.output_dir,
                        subset=expression.subset,
                        mask_value=self.mask_value,
                    )
                )
        require_unique_keys(items, self.name)
        return items


def require_unique_keys(items: Sequence[BenchmarkItem], benchmark: str) -> None:
    """Two items writing to the same prediction folder would overwrite each other's masks."""
    seen: set[str] = set()
    for item in items:
        if item.key in seen:
            raise InvalidInputError(f"{benchmark}: two expressions map to the same prediction folder {item.key!r}")
        seen.add(item.key)


class ExpressionDictBenchmark(VideoBenchmark):
    """Video benchmarks whose meta file maps expression ids to entries (MeViS, Ref-YouTube-VOS, Ref-DAVIS17).

    Meta: ``{"videos": {<video>: {"frames": [...], "expressions": {<exp_id>: {"exp": str, ...}}}}}``;
    frames under ``<frames_root>/<video>/``; predictions under ``<video>/<exp_id>/``.
    """

    query_template: ClassVar[str] = "Please segment the {} in this image."

    @property
    @abc.abstractmethod
    def meta_path(self) -> Path:
        """The ``meta_expressions.json`` file."""

    @property
    @abc.abstractmethod
    def frames_root(self) -> Path:
        """The ``JPEGImages`` folder."""

    def _query(self, expression: dict[str, Any], where: str) -> str:
        """The benchmark's template applied to an expression (MeViS / Ref-VOS: lower-cased phrase)."""
        return self.query_template.format(require_field(expression, "exp", str, where).lower())

    def _subset(self, position: int, expression: dict[str, Any], where: str) -> str | None:
        """The expression's subset; ``position`` is its index in the meta file's order."""
        return None

    def _annotations(self, expression: dict[str, Any], where: str) -> tuple[str, ...]:
        """Ground-truth resources of an expression (none by default)."""
        return ()

    def _selected_videos(self, videos: dict[str, Any]) -> list[str]:
        """Which videos of the meta file belong to the split (all of them by default)."""
        return list(videos)

    def _check_video_id(self, name: str, where: str) -> None:
        """A video id becomes a folder name of the predictions: one plain name (see ``require_plain_name``)."""
        require_plain_name(name, "video id", where)

    def _check_video_expressions(self, name: str, expressions: dict[str, Any], where: str) -> None:
        """Benchmark-wide rules about a video's expression list (none by default)."""

    def _parse_videos(self) -> list[VideoEntry]:
        meta_path = self.meta_path
        videos = require_field(read_json(meta_path, f"{self.name} meta file"), "videos", dict, str(meta_path))
        entries = []
        for name in self._selected_videos(videos):
            self._check_video_id(name, str(meta_path))
            where = f"{meta_path}: video {name!r}"
            video = require_mapping(videos[name], where)
            listed_frames = require_string_list(video, "frames", where)
            raw_expressions = require_field(video, "expressions", dict, where)
            self._check_video_expressions(name, raw_expressions, where)
            expressions = []
            for position, (exp_id, expression) in enumerate(raw_expressions.items()):
                exp_where = f"{where}, expression {exp_id!r}"
                require_plain_name(exp_id, "expression id", where)
                require_mapping(expression, exp_where)
                expressions.append(
                    ExpressionEntry(
                        exp_id=exp_id,
                        query=self._query(expression, exp_where),
                        output_dir=f"{name}/{exp_id}",
                        subset=self._subset(position, expression, exp_where),
                        annotations=self._annotations(expression, exp_where),
                    )
                )
            entries.append(VideoEntry(name, self.frames_root / name, listed_frames, tuple(expressions)))
        return entries
