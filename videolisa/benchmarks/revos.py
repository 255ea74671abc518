"""ReVOS (VISA's reasoning video object segmentation benchmark), in the layout of its release.

Layout under ``root`` (the ``ReVOS`` folder):

* ``JPEGImages/<video>/<frame>.jpg`` (a video id may be a relative path of several plain names);
* ``meta_expressions_<split>_.json`` (``valid`` by default, ``train``) = ``{"videos": {<video>: {"vid_id",
  "height", "width", "frames": [...], "expressions": {<exp_id>: {"exp": str, "obj_id": [...], "anno_id": [...],
  "type_id": 0 | 1 | 2}}}}}`` -- 0 referring, 1 reasoning, 2 no-target (no referent in the video);
* ``mask_dict.json`` = ``{<anno_id>: [per-frame COCO RLE or null]}``;
* ``mask_dict_foreground.json`` = ``{<video>: {"masks_rle": [per-frame RLE], "foreground_ratio": [...]}}``,
  the union of the annotations of the video's expressions (VISA ``tools/generate_foreground_mask.py``).

Predictions go to ``<video>/<exp_id>/<frame>.png`` as 0/1 PNGs: the official scorer compares the raw PNG values
with 0/1 ground truth for its accuracy and robustness, so 0/255 masks would be mis-scored there (this package's
scorer reads any non-zero pixel as foreground). Queries follow VISA's evaluation: a question (ending in "?")
or a reasoning expression takes the sentence template, any other expression the phrase template. Subsets are
the expression types.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from videolisa.benchmarks.base import VideoEntry
from videolisa.benchmarks.layout import image_size, read_json, require_field, require_plain_name
from videolisa.benchmarks.mevis import MeViSBenchmark
from videolisa.constants import VIDEO_PLACEHOLDER
from videolisa.errors import InvalidInputError, MissingFilesError
from videolisa.metrics.revos import FOREGROUND_DICT, MASK_DICT, REVOS_TYPES
from videolisa.processing.conversation import LONG_QUESTION_TEMPLATES

_REASONING = 1
_NO_TARGET = 2


class ReVOSBenchmark(MeViSBenchmark):
    """ReVOS: referring, reasoning and no-target expressions; ``split`` names the meta file (default ``valid``)."""

    name = "revos"
    default_split = "valid"
    mask_value = 1

    def __init__(self, root: Path | str, split: str | None = None) -> None:
        super().__init__(root, split)
        require_plain_name(str(self.split), "split", "revos")
        self.has_ground_truth = True

    @property
    def split_dir(self) -> Path:
        """The ReVOS root: every split's files lie directly in it."""
        return self.root

    @property
    def meta_path(self) -> Path:
        return self.root / f"meta_expressions_{self.split}_.json"

    @property
    def mask_dict_path(self) -> Path:
        return self.root / MASK_DICT

    @property
    def foreground_path(self) -> Path:
        """``mask_dict_foreground.json``."""
        return self.root / FOREGROUND_DICT

    def _check_video_id(self, name: str, where: str) -> None:
        """ReVOS ids may be relative paths (``<source>/<video>``): each part must be a plain name."""
        parts = name.split("/")
        for part in parts:
            require_plain_name(part, "video id part", f"{where}: video {name!r}")
        if str(PurePosixPath(*parts)) != name:
            raise InvalidInputError(f"{where}: video id {name!r} is not a normalised relative path")

    @staticmethod
    def _type_id(expression: dict[str, Any], where: str) -> int:
        type_id = require_field(expression, "type_id", int, where)
        if type_id not in REVOS_TYPES:
            raise InvalidInputError(f"{where}: type_id {type_id} is not one of {sorted(REVOS_TYPES)}")
        return type_id

    def _query(self, expression: dict[str, Any], where: str) -> str:
        text = " ".join(require_field(expression, "exp", str, where).split())
        if text.endswith("?") or self._type_id(expression, where) == _REASONING:
            return LONG_QUESTION_TEMPLATES[1].format(sent=text).removeprefix(VIDEO_PLACEHOLDER + "\n")
        return self.query_template.format(text.lower())

    def _subset(self, position: int, expression: dict[str, Any], where: str) -> str | None:
        return REVOS_TYPES[self._type_id(expression, where)]

    def _annotations(self, expression: dict[str, Any], where: str) -> tuple[str, ...]:
        """The expression's ``anno_id`` list: empty for no-target expressions only."""
        values = require_field(expression, "anno_id", list, where)
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise InvalidInputError(f"{where}: field 'anno_id' must list integer ids, found {value!r}")
        if not values and self._type_id(expression, where) != _NO_TARGET:
            raise InvalidInputError(f"{where}: field 'anno_id' is empty but the expression is not a no-target one")
        return tuple(str(value) for value in values)

    @cached_property
    def _foreground(self) -> dict[str, Any]:
        foreground = read_json(self.foreground_path, f"{self.name} {FOREGROUND_DICT}")
        if not isinstance(foreground, dict):
            raise InvalidInputError(f"{self.foreground_path}: expected a JSON object mapping videos to masks")
        return foreground

    def _validate_ground_truth(self, video: VideoEntry, frame_names: Sequence[str]) -> None:
        """The annotations (as MeViS) and the video's foreground: one RLE of the frames' size per listed frame."""
        super()._validate_ground_truth(video, frame_names)
        where = f"{self.foreground_path}: video {video.name!r}"
        if video.name not in self._foreground:
            raise MissingFilesError(f"{where} is missing")
        rles = require_field(self._foreground[video.name], "masks_rle", list, where)
        if len(rles) != len(video.listed_frames):
            raise InvalidInputError(f"{where}: expected {len(video.listed_frames)} foreground RLEs, found {len(rles)}")
        expected = list(image_size(video.frames_dir / f"{video.listed_frames[0]}.jpg"))
        for frame_name, rle in zip(video.listed_frames, rles):
            size = require_field(rle, "size", list, f"{where}, frame {frame_name}")
            require_field(rle, "counts", (str, list), f"{where}, frame {frame_name}")
            if size != expected:
                raise InvalidInputError(
                    f"{where}, frame {frame_name}: RLE size {size} differs from the frame size {expected}"
                )
