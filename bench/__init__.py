"""harness benchmarks, side by side with what users would pick instead.

``python -m bench`` (``nox -s bench``) runs every section and writes ``bench/results.json``,
``bench/results.md`` and ``bench/tiers.png``; see :mod:`bench.runner`.
"""
