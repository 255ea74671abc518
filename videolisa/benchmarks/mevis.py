"""MeViS (``valid_u`` offline, ``valid`` online) and the synthetic benchmark, which uses the MeViS layout.

Layout under ``root`` (the MeViS folder), per split:

* ``<split>/JPEGImages/<video>/<frame>.jpg``;
* ``<split>/meta_expressions.json`` = ``{"videos": {<video>: {"frames": [...], "expressions": {<exp_id>:
  {"exp": str, "obj_id": [...], "anno_id": [...]}}}}}``;
* ``<split>/mask_dict.json`` = ``{<anno_id>: [per-frame COCO RLE {"size": [h, w], "counts": str} or null]}``
  for the splits with ground truth (``train``, ``valid_u``); the online ``valid`` split has none.

Predictions go to ``<video>/<exp_id>/<frame>.png``; the query is ``Please segment the {exp.lower()} in this
image.`` (``evaluation/mevis_val_u/inference_mevis.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from videolisa.benchmarks.base import ExpressionDictBenchmark, VideoEntry
from videolisa.benchmarks.layout import image_size, read_json, require_field, require_flag, require_id_list
from videolisa.constants import VIDEO_PLACEHOLDER
from videolisa.errors import InvalidInputError
from videolisa.processing.conversation import LONG_QUESTION_TEMPLATES

# The split scored on the online server only: no mask_dict.json.
ONLINE_SPLIT = "valid"


class MeViSBenchmark(ExpressionDictBenchmark):
    """MeViS motion-expression video segmentation; ``split`` is a folder name (default ``valid_u``)."""

    name = "mevis"
    default_split = "valid_u"

    def __init__(self, root: Path | str, split: str | None = None) -> None:
        super().__init__(root, split)
        self.has_ground_truth = self.split != ONLINE_SPLIT

    @property
    def split_dir(self) -> Path:
        """``<root>/<split>``."""
        return self.root / str(self.split)

    @property
    def meta_path(self) -> Path:
        return self.split_dir / "meta_expressions.json"

    @property
    def frames_root(self) -> Path:
        return self.split_dir / "JPEGImages"

    @property
    def mask_dict_path(self) -> Path:
        """``mask_dict.json`` (splits with ground truth)."""
        return self.split_dir / "mask_dict.json"

    def _annotations(self, expression: dict[str, Any], where: str) -> tuple[str, ...]:
        return require_id_list(expression, "anno_id", where) if self.has_ground_truth else ()

    @cached_property
    def _mask_dict(self) -> dict[str, Any]:
        where = str(self.mask_dict_path)
        mask_dict = read_json(self.mask_dict_path, f"{self.name} mask_dict")
        if not isinstance(mask_dict, dict):
            raise InvalidInputError(f"{where}: expected a JSON object mapping anno ids to per-frame RLEs")
        return mask_dict

    def _validate_ground_truth(self, video: VideoEntry, frame_names: Sequence[str]) -> None:
        """Every anno id has one RLE (or null) per listed frame, each of the frames' size."""
        if not self.has_ground_truth:
            return
        height, width = image_size(video.frames_dir / f"{video.listed_frames[0]}.jpg")
        for anno_id in sorted({anno for entry in video.expressions for anno in entry.annotations}):
            where = f"{self.mask_dict_path}: anno_id {anno_id} (video {video.name!r})"
            if anno_id not in self._mask_dict:
                raise InvalidInputError(f"{where} is referenced by the meta file but missing")
            rles = self._mask_dict[anno_id]
            if not isinstance(rles, list) or len(rles) != len(video.listed_frames):
                found = len(rles) if isinstance(rles, list) else type(rles).__name__
                raise InvalidInputError(f"{where}: expected {len(video.listed_frames)} per-frame RLEs, found {found}")
            for frame_name, rle in zip(video.listed_frames, rles):
                # A falsy entry (null, {}) is an empty mask, as in the official scorer.
                if not rle:
                    continue
                size = require_field(rle, "size", list, f"{where}, frame {frame_name}")
                require_field(rle, "counts", (str, list), f"{where}, frame {frame_name}")
                if size != [height, width]:
                    raise InvalidInputError(
                        f"{where}, frame {frame_name}: RLE size {size} differs from the frame size [{height}, {width}] "
                        f"of {video.frames_dir}"
                    )


def synthetic_query(text: str, is_sentence: bool) -> str:
    """The query of a synthetic instruction (:class:`SyntheticBenchmark`): ``"Please segment the {phrase} in this
    image."`` (lower-cased) or ``"{sentence} Please output segmentation mask."``."""
    if is_sentence:
        return LONG_QUESTION_TEMPLATES[1].format(sent=" ".join(text.split())).removeprefix(VIDEO_PLACEHOLDER + "\n")
    return MeViSBenchmark.query_template.format(text.lower())


class SyntheticBenchmark(MeViSBenchmark):
    """Videos written by ``videolisa synth --layout mevis``: MeViS layout plus ``kind`` and ``is_sent`` fields.

    Queries use the original training templates the synthetic model was trained with (the benchmark is this
    package's own, so there is no official template): a phrase in the MeViS/SHORT template "Please segment the
    {phrase} in this image.", a reasoning sentence in the LONG template "{sentence} Please output segmentation
    mask.". Subsets are the instruction kinds.
    """

    name = "synthetic"

    def __init__(self, root: Path | str, split: str | None = None) -> None:
        super().__init__(root, split)
        # The generator writes mask_dict.json for every split name.
        self.has_ground_truth = True

    def _query(self, expression: dict[str, Any], where: str) -> str:
        return synthetic_query(require_field(expression, "exp", str, where), require_flag(expression, "is_sent", where))

    def _subset(self, position: int, expression: dict[str, Any], where: str) -> str | None:
        return require_field(expression, "kind", str, where)
