"""Ratio benchmarks: ``python -m benchmarks.<name>`` prints JSON (see docs/performance.md)."""
