"""Ref-YouTube-VOS and Ref-DAVIS17 in the ReferFormer layout (no local ground truth).

Layout under ``root`` (``refer_youtube_vos`` or ``ref-davis``):

* ``valid/JPEGImages/<video>/*.jpg``;
* ``meta_expressions/valid/meta_expressions.json`` = ``{"videos": {<video>: {"frames": [...], "expressions":
  {<exp_id>: {"exp": str, ...}}}}}``.

Predictions go to ``<video>/<exp_id>/<frame>.png``; the query is ``Please segment the {exp.lower()} in this
image.`` (``evaluation/refytvos`` and ``evaluation/refdavis`` inference scripts). Ref-YouTube-VOS is scored on
the CodaLab server; Ref-DAVIS17 predictions are merged per annotator and scored with the DAVIS-2017 toolkit
against the DAVIS ``Annotations_unsupervised``, which are not part of this layout.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from videolisa.benchmarks.base import ExpressionDictBenchmark
from videolisa.benchmarks.layout import read_json, require_field, require_mapping
from videolisa.errors import InvalidInputError

logger = logging.getLogger(__name__)

# Ref-DAVIS17 has 4 expressions per object (2 annotators x first-frame / full-video), stored object-major.
REF_DAVIS_ANNOTATORS = 4


class _ReferFormerBenchmark(ExpressionDictBenchmark):
    """The ReferFormer layout shared by Ref-YouTube-VOS and Ref-DAVIS17."""

    has_ground_truth = False
    default_split = "valid"
    splits = ("valid",)

    @property
    def meta_path(self) -> Path:
        return self.root / "meta_expressions" / str(self.split) / "meta_expressions.json"

    @property
    def frames_root(self) -> Path:
        return self.root / str(self.split) / "JPEGImages"


class RefYouTubeVOSBenchmark(_ReferFormerBenchmark):
    """Ref-YouTube-VOS ``valid`` (202 videos, 834 expressions)."""

    name = "refytvos"

    @property
    def test_meta_path(self) -> Path:
        """``meta_expressions/test/meta_expressions.json``."""
        return self.root / "meta_expressions" / "test" / "meta_expressions.json"

    def _selected_videos(self, videos: dict[str, Any]) -> list[str]:
        """The valid videos: the competition's valid meta file also lists the 305 test videos.

        As in ReferFormer, the test meta file (when present) names the videos to leave out; without it every
        video of the valid meta file is used and must have its frames.
        """
        if not self.test_meta_path.is_file():
            logger.info("%s not found: using every video of %s", self.test_meta_path, self.meta_path)
            return list(videos)
        test_meta = read_json(self.test_meta_path, "Ref-YouTube-VOS test meta file")
        test_videos = require_field(test_meta, "videos", dict, str(self.test_meta_path))
        selected = [name for name in videos if name not in test_videos]
        left_out = len(videos) - len(selected)
        logger.info("Ref-YouTube-VOS valid: %d videos, %d test videos left out", len(selected), left_out)
        return selected


class RefDAVISBenchmark(_ReferFormerBenchmark):
    """Ref-DAVIS17 ``valid`` (30 videos); subsets ``anno_0`` .. ``anno_3`` are the four annotators' expressions.

    VideoLISA's ``post_process_davis.py`` takes expression ``i`` (in meta order) as object ``i // 4`` and
    annotator ``i % 4``, so every video must have a multiple of 4 expressions, grouped by object.
    """

    name = "refdavis"

    def _check_video_expressions(self, name: str, expressions: dict[str, Any], where: str) -> None:
        if len(expressions) % REF_DAVIS_ANNOTATORS:
            raise InvalidInputError(
                f"{where}: {len(expressions)} expressions; Ref-DAVIS17 needs {REF_DAVIS_ANNOTATORS} per object"
            )
        entries = list(expressions.items())
        for first in range(0, len(entries), REF_DAVIS_ANNOTATORS):
            group = entries[first : first + REF_DAVIS_ANNOTATORS]
            object_ids = {str(require_mapping(entry, where).get("obj_id")) for _, entry in group}
            if len(object_ids) > 1:
                exp_ids = ", ".join(exp_id for exp_id, _ in group)
                raise InvalidInputError(
                    f"{where}: expressions {exp_ids} should be the {REF_DAVIS_ANNOTATORS} annotators of one object, "
                    f"but name objects {sorted(object_ids)}"
                )

    def _subset(self, position: int, expression: dict[str, Any], where: str) -> str | None:
        return f"anno_{position % REF_DAVIS_ANNOTATORS}"
