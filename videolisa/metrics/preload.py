"""Imported by the scoring pool's forkserver (see :mod:`videolisa.metrics.parallel`): loads the scoring
code and its compiled kernels once, so that every worker forked from the server starts ready."""

from videolisa.metrics import benchmarks, kernels

__all__ = ["benchmarks", "kernels"]  # the scoring code the workers run, loaded here once

kernels.load_all()
