"""The scoring kernels in use: the C extension ``videolisa.metrics._kernels`` when the install built it,
else its exact pure-NumPy twin ``videolisa.metrics._kernels_numpy`` (an install without a C compiler).

Both give the same J, F and PNG pixels; the fallback is several times slower (``eval/perf/kernel_fallback.py``), which
this module says once, in the process the user started (not again in each scoring worker). Setting
``VIDEOLISA_KERNELS=numpy`` selects the fallback on purpose (benchmarks, debugging), silently.

The scoring code calls ``kernels.active.frame_counts(...)`` etc., so that tests can swap ``active``.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import sys
from types import ModuleType

from videolisa.errors import InvalidInputError

logger = logging.getLogger(__name__)

IMPLEMENTATIONS = {"extension": "videolisa.metrics._kernels", "numpy": "videolisa.metrics._kernels_numpy"}
_CHOICE_VARIABLE = "VIDEOLISA_KERNELS"


def load(name: str) -> ModuleType:
    """The kernels module ``name`` ("extension" or "numpy"); ImportError when the extension was not built."""
    return importlib.import_module(IMPLEMENTATIONS[name])


def _select() -> ModuleType:
    """The extension, unless it is missing or ``VIDEOLISA_KERNELS=numpy`` asks for the fallback."""
    choice = os.environ.get(_CHOICE_VARIABLE, "")
    if choice not in ("", *IMPLEMENTATIONS):
        raise InvalidInputError(f"{_CHOICE_VARIABLE} must be one of {sorted(IMPLEMENTATIONS)}, got {choice!r}")
    if choice == "numpy":
        return load("numpy")
    try:
        return load("extension")
    except ImportError:
        if choice == "extension":
            raise
        # Said in the user's process only: not in pool workers (they have a parent process) nor in the pool's
        # forkserver (a fresh interpreter, which imports this module through videolisa.metrics.preload).
        if multiprocessing.parent_process() is None and "videolisa.metrics.preload" not in sys.modules:
            logger.warning(
                "videolisa: the compiled scoring kernels (videolisa.metrics._kernels) are not installed, so "
                "scoring uses the slower exact NumPy fallback (same J/F); install from a wheel or with a C "
                "compiler for the fast path"
            )
        return load("numpy")


active: ModuleType = _select()
