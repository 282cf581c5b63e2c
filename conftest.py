"""Root conftest: shared fixtures for tests/ and benchmarks/."""

import pytest
from hypothesis import settings

# CI (``.ci/run``) runs ``--hypothesis-profile=ci``: the same examples on
# every run, so a red CI always means a change broke something.  Other runs
# draw new examples each time and keep finding new cases; a case found that
# way becomes an ``@example`` of its test.
settings.register_profile("ci", derandomize=True)


@pytest.fixture
def trace_path(tmp_path):
    """A fresh path for a trace file."""
    return tmp_path / "test.pytrace"
