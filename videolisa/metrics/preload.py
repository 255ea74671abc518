"""Imported by the scoring pool's forkserver (see :mod:`videolisa.metrics.parallel`): loads the scoring
code and its compiled kernels once, so that every worker forked from the server starts ready."""

import sys
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def _unimportable(*names: str) -> Iterator[None]:
    """Make the modules ``names`` (those not imported yet) fail to import inside the block."""
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not available" marker
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


# When numba sets up its CPU target it imports scipy.linalg (only to find BLAS for np.linalg) and
# cffi (only to type cffi functions): about 0.4-0.8 s, half of the server's start-up, for features
# these kernels do not use. Both are optional to numba; they import normally after the block.
with _unimportable("scipy.linalg", "cffi"):
    from videolisa.metrics import benchmarks, kernels

    kernels.load_all()

__all__ = ["benchmarks", "kernels"]  # the scoring code the workers run, loaded here once
