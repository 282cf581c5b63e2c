"""Root conftest: shared fixtures for tests/ and benchmarks/."""

import pytest


@pytest.fixture
def trace_path(tmp_path):
    """A fresh path for a trace file."""
    return tmp_path / "test.pytrace"
