"""Imported by the scoring pool's forkserver (see :mod:`videolisa.metrics.parallel`): loads the scoring
code and its compiled kernels once, so that every worker forked from the server starts ready."""

import videolisa.metrics  # noqa: F401  (the scoring code the workers run)
from videolisa.metrics import kernels

kernels.load_all()
