"""Procedural referring-VOS videos with exact ground truth.

Each video shows 2-5 flat-coloured shapes (circle, square, triangle, star, diamond) moving over a plain or
lightly textured grey background: linear motion, shapes that stop halfway, shapes that enter or leave the
frame, occlusion by draw order. Every object's coverage is rasterised once per frame (OpenCV, no
anti-aliasing) and the frame is painted from those coverages in draw order, so the masks of each object's
VISIBLE pixels (its coverage minus what the objects drawn after it cover) agree with the pixels exactly.

Instructions come in four kinds -- ``attribute`` ("red triangle"), ``motion`` ("shape moving to the left"),
``temporal`` ("object that appears last") and ``reasoning`` sentences ("Which shape travels the longest
distance during the video? Segment it") -- and each one is checked to refer to exactly one object of its
video; a scene where some kind has no such instruction is drawn again. Phrases carry no leading article so
that the benchmark templates ("Please segment the {phrase} in this scene.") read naturally.

Opt-in (``SyntheticConfig.extra_kinds``) instructions name several objects (``multi``: "all the red shapes") or
none of the video's (``absent``: "green circle" without one); they are drawn after the others, so videos without
them are unchanged.

Generation is deterministic per seed (numpy ``Generator``). Writers produce the MeViS layout, the ReasonVOS
layout, the ReVOS layout, a custom-data JSONL (:mod:`videolisa.data.custom`, with answers that name the referent)
and H.264 mp4 files with PNG masks; :func:`write_synthetic_dataset` writes any of them atomically.

Modules: :mod:`~videolisa.synthetic.scene` (configuration, objects, motion, rendering),
:mod:`~videolisa.synthetic.expressions` (instructions and their referents), :mod:`~videolisa.synthetic.generate`
(videos from a seed) and :mod:`~videolisa.synthetic.writers` (dataset layouts).
"""

from videolisa.synthetic.generate import generate_video, generate_videos, video_name
from videolisa.synthetic.scene import (
    COLORS,
    DEFAULT_SIZES,
    EXPRESSION_KINDS,
    EXTRA_EXPRESSION_KINDS,
    MOTIONS,
    OBJECT_SIZES,
    SHAPES,
    SyntheticConfig,
    SyntheticExpression,
    SyntheticObject,
    SyntheticVideo,
    render_object_masks,
)
from videolisa.synthetic.writers import (
    CUSTOM_FILE,
    LAYOUTS,
    QUESTIONS_FILE,
    SYNTH_MARKER,
    SYNTHETIC_SOURCE,
    describing_answer,
    group_answer,
    naming_answer,
    reasonvos_mask_folder,
    write_custom_layout,
    write_mevis_layout,
    write_mp4_layout,
    write_reasonvos_layout,
    write_revos_layout,
    write_synthetic_dataset,
)

__all__ = [
    "COLORS",
    "CUSTOM_FILE",
    "DEFAULT_SIZES",
    "EXPRESSION_KINDS",
    "EXTRA_EXPRESSION_KINDS",
    "LAYOUTS",
    "MOTIONS",
    "QUESTIONS_FILE",
    "OBJECT_SIZES",
    "SHAPES",
    "SYNTHETIC_SOURCE",
    "SYNTH_MARKER",
    "SyntheticConfig",
    "SyntheticExpression",
    "SyntheticObject",
    "SyntheticVideo",
    "describing_answer",
    "group_answer",
    "naming_answer",
    "generate_video",
    "generate_videos",
    "reasonvos_mask_folder",
    "render_object_masks",
    "video_name",
    "write_custom_layout",
    "write_mevis_layout",
    "write_mp4_layout",
    "write_reasonvos_layout",
    "write_revos_layout",
    "write_synthetic_dataset",
]
