"""Temporal refinement (opt-in): VideoLISA's masks on anchor frames become SAM 2 mask prompts, and SAM 2's
memory propagates them forward and backward over every frame (the paper's post-optimization, with SAM 2 in
place of XMem++). :class:`~videolisa.predictor.VideoLisaPredictor` runs it with ``refine="sam2"``."""

from videolisa.refine.anchors import Anchor, AnchorCollector, presence_scores
from videolisa.refine.sam2 import Sam2Refiner, build_sam2_processor, load_sam2
from videolisa.refine.settings import (
    ANCHOR_MODES,
    DEFAULT_SAM2_MODEL,
    SUPPORTED_SAM2_MODELS,
    RefineConfig,
)

__all__ = [
    "ANCHOR_MODES",
    "DEFAULT_SAM2_MODEL",
    "SUPPORTED_SAM2_MODELS",
    "Anchor",
    "AnchorCollector",
    "RefineConfig",
    "Sam2Refiner",
    "build_sam2_processor",
    "load_sam2",
    "presence_scores",
]
