"""videolisa: language-instructed reasoning segmentation in videos (VideoLISA, NeurIPS 2024).

Heavy modules (torch, transformers) are imported lazily so that light commands such as
``videolisa score`` start fast. Once imported, the transformers Auto classes know this package's config and
model (``AutoModel.from_pretrained(model_dir)`` gives a ``VideoLisaForSegmentation``; see :mod:`videolisa.auto`).
"""

from __future__ import annotations

import importlib
from typing import Any

from videolisa import auto as _auto

__version__ = "0.1.0"

_LAZY_EXPORTS = {
    "VideoLisaConfig": "videolisa.config",
    "VideoLisaForSegmentation": "videolisa.modeling.videolisa",
    "VideoLisaPredictor": "videolisa.predictor",
    "VideoLisaProcessor": "videolisa.processing.processor",
}

__all__ = ["__version__", *_LAZY_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'videolisa' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)


_auto.install()
