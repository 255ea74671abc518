"""The benchmark layouts and missing-prediction policies that ``videolisa score`` accepts.

A module without imports: the command builds its parser from these names before it has loaded
numpy or OpenCV (see :func:`videolisa.metrics.parallel.start_pool_server`).
"""

# Benchmark layouts and their aggregation rules (videolisa.metrics.benchmarks.score_benchmark).
BENCHMARKS = ("mevis", "reasonvos", "revos", "davis-semi", "davis-unsup", "refdavis", "refseg", "folders")
# What to do with missing predictions: raise, or score them 0.
MISSING_POLICIES = ("error", "zero")
