"""Benchmarks are measured, never asserted on time: run them with
``pytest benchmarks/ --benchmark-only`` (they are not part of ``tests/``)."""
