"""Settings of the temporal refinement (the paper's post-optimization), one place for their defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from videolisa.errors import InvalidInputError

DEFAULT_SAM2_MODEL = "facebook/sam2.1-hiera-large"
# The SAM 2 checkpoints on the Hub in transformers' format (every size of SAM 2 and SAM 2.1).
SUPPORTED_SAM2_MODELS = tuple(
    f"facebook/sam2{version}-hiera-{size}" for version in (".1", "") for size in ("tiny", "small", "base-plus", "large")
)
ANCHOR_MODES = ("dense", "top-k")


@dataclass(frozen=True)
class RefineConfig:
    """How VideoLISA's masks are refined by SAM 2 propagation.

    Attributes:
        model: SAM 2 checkpoint: a Hub id (:data:`SUPPORTED_SAM2_MODELS`) or a local directory in transformers'
            format (``config.json`` + ``model.safetensors``).
        anchors: ``"dense"`` (the frames the LLM saw at full resolution, as the paper's post-optimization) or
            ``"top-k"`` (the ``top_k`` frames of each track with the highest presence score).
        top_k: anchors per track in ``"top-k"`` mode, and in ``"dense"`` mode when no dense frame of a track is
            reliable (the whole video is then scored for that track).
        min_score: an anchor is used only if its mask is non-empty and its presence score (SAM's stability
            score of the decoded logits, in [0, 1]) is at least this.
        frames_per_chunk: frames decoded and SAM 2-preprocessed at a time (memory does not grow with the video).
    """

    model: str = DEFAULT_SAM2_MODEL
    anchors: str = "dense"
    top_k: int = 4
    min_score: float = 0.5
    frames_per_chunk: int = 8

    def __post_init__(self) -> None:
        if self.anchors not in ANCHOR_MODES:
            raise InvalidInputError(f"refine anchors must be one of {list(ANCHOR_MODES)}, got {self.anchors!r}")
        for name in ("top_k", "frames_per_chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"refine {name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.min_score) <= 1.0:
            raise InvalidInputError(f"refine min_score must be in [0, 1], got {self.min_score!r}")
        if not str(self.model):
            raise InvalidInputError("refine model must name a SAM 2 checkpoint (Hub id or directory)")

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON values, ``{"method": "sam2", ...}`` (stored with predictions)."""
        return {"method": "sam2", **asdict(self), "model": str(self.model)}
