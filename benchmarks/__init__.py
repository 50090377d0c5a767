"""pgqueue's benchmark suite: pgqueue side by side with pgqueuer and procrastinate.

Run ``python -m benchmarks.run`` (see docs/benchmarks.md).
"""
