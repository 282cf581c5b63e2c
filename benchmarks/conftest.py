"""Benchmarks are measured, never asserted on time: run them with
``pytest benchmarks/ --benchmark-only`` (they are not part of ``tests/``).

The workloads are written with the tests' scripted-event builder
(``tests/synthetic.py``), so ``tests/`` is importable from here.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
