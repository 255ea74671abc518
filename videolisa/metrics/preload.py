"""Imported by the scoring pool's forkserver (see :mod:`videolisa.metrics.parallel`): imports the scoring
code once, so that every worker forked from the server starts ready."""

from videolisa.metrics import benchmarks

__all__ = ["benchmarks"]  # the scoring code the workers run, loaded here once
