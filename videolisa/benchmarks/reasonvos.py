"""ReasonVOS (VideoLISA's reasoning video object segmentation benchmark).

Layout under ``root`` (the ``ReasonVOS`` folder):

* ``meta_expressions.json`` = ``{"videos": {<video>: {"source", "frames": [...], "expressions": [{"obj_id",
  "exp_id", "exp_text", "is_sent"}, ...]}}}`` -- a LIST of expressions. Earlier releases keyed the
  expressions by id and stored ``is_sent`` per video (as ``benchmark_check.py`` and the first inference
  script read them); both forms are accepted.
* ``JPEGImages/<video>/*.jpg``.
* ``Annotations/<source>_<video>_<obj_id>/<frame>.png``: one binary mask folder per object, shared by its
  expressions.

Predictions go to ``<source>_<video>_<obj_id>/<exp_id>/<frame>.png``. Queries follow
``evaluation/reason_vos/inference_reason_vos.py``; subsets are "short" (phrases) and "long" (sentences).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videolisa.benchmarks.base import ExpressionEntry, VideoBenchmark, VideoEntry
from videolisa.benchmarks.layout import (
    image_size,
    read_json,
    require_field,
    require_flag,
    require_mapping,
    require_plain_name,
    require_string_list,
)
from videolisa.errors import InvalidInputError, MissingFilesError

SENTENCE_TEMPLATE = "{}. Please output the segmentation masks."
PHRASE_TEMPLATE = "Please segment the {} in this scene."


def reasonvos_query(text: str, is_sentence: bool) -> str:
    """The ReasonVOS query: sentences verbatim + "." + request; phrases lower-cased into a template."""
    return SENTENCE_TEMPLATE.format(text) if is_sentence else PHRASE_TEMPLATE.format(text.lower())


def query_subset(is_sentence: bool) -> str:
    """ReasonVOS's query types: "long" for sentences, "short" for phrases."""
    return "long" if is_sentence else "short"


class ReasonVOSBenchmark(VideoBenchmark):
    """ReasonVOS: 91 videos, 458 (object, expression) samples, zero-shot (no splits)."""

    name = "reasonvos"
    has_ground_truth = True
    splits = (None,)

    @property
    def meta_path(self) -> Path:
        """``meta_expressions.json``."""
        return self.root / "meta_expressions.json"

    def _expression_records(self, video: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
        """(exp_id, entry) pairs from either the list form or the older id-keyed form."""
        expressions = require_field(video, "expressions", (list, dict), where)
        if isinstance(expressions, dict):
            return [
                (str(exp_id), require_mapping(entry, f"{where}, expression {exp_id!r}"))
                for exp_id, entry in expressions.items()
            ]
        records = []
        for position, entry in enumerate(expressions):
            entry_where = f"{where}, expression #{position}"
            exp_id = require_field(entry, "exp_id", (int, str), entry_where)
            records.append((str(exp_id), entry))
        return records

    def _parse_videos(self) -> list[VideoEntry]:
        meta_path = self.meta_path
        videos = require_field(read_json(meta_path, "ReasonVOS meta file"), "videos", dict, str(meta_path))
        entries = []
        for name, video in videos.items():
            require_plain_name(name, "video id", str(meta_path))
            where = f"{meta_path}: video {name!r}"
            source = require_plain_name(require_field(video, "source", str, where), "source", where)
            listed_frames = require_string_list(video, "frames", where)
            expressions = []
            for exp_id, entry in self._expression_records(video, where):
                require_plain_name(exp_id, "expression id", where)
                exp_where = f"{where}, expression {exp_id!r}"
                obj_id = str(require_field(entry, "obj_id", (int, str), exp_where))
                require_plain_name(obj_id, "obj_id", exp_where)
                text = require_field(entry, "exp_text", str, exp_where)
                is_sentence = require_flag(entry if "is_sent" in entry else video, "is_sent", exp_where)
                mask_folder = f"{source}_{name}_{obj_id}"
                expressions.append(
                    ExpressionEntry(
                        exp_id=exp_id,
                        query=reasonvos_query(text, is_sentence),
                        output_dir=f"{mask_folder}/{exp_id}",
                        subset=query_subset(is_sentence),
                        annotations=(mask_folder,),
                    )
                )
            entries.append(VideoEntry(name, self.root / "JPEGImages" / name, listed_frames, tuple(expressions)))
        return entries

    def _validate_ground_truth(self, video: VideoEntry, frame_names: Sequence[str]) -> None:
        """Each object's mask folder exists, names only existing frames, and has the frames' size."""
        frame_size = image_size(video.frames_dir / f"{frame_names[0]}.jpg")
        present = set(frame_names)
        for mask_folder in sorted({name for entry in video.expressions for name in entry.annotations}):
            folder = self.root / "Annotations" / mask_folder
            if not folder.is_dir():
                raise MissingFilesError(f"ReasonVOS mask folder not found: {folder}")
            mask_names = sorted(path.name for path in folder.iterdir() if path.name.endswith(".png"))
            if not mask_names:
                raise MissingFilesError(f"no .png masks in {folder}")
            for mask_name in mask_names:
                if mask_name[: -len(".png")] not in present:
                    raise InvalidInputError(f"mask {folder / mask_name} has no frame in {video.frames_dir}")
            mask_size = image_size(folder / mask_names[0])
            if mask_size != frame_size:
                raise InvalidInputError(
                    f"mask {folder / mask_names[0]} is {mask_size[0]}x{mask_size[1]} but the frames of "
                    f"{video.frames_dir} are {frame_size[0]}x{frame_size[1]}"
                )
