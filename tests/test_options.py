"""Options given to ``pytrace.start`` (and so to the CLI and the plugin) are
checked up front: a wrong name or value is one ``OptionsError`` naming the
option and what it takes, never a ``TypeError`` from deep inside."""

from __future__ import annotations

import copy
import pickle

import pytest

import pytrace
from pytrace.options import Options, OptionsError


@pytest.mark.parametrize("options, message", [
    ({"colls": True}, "unknown option 'colls'; known options: "),
    ({"calls": 1}, "option calls must be True or False, not 1"),
    ({"max_depth": "3"}, "option max_depth must be a whole number, not '3'"),
    ({"max_depth": None}, "option max_depth must be a whole number, not None"),
    ({"buffer_size": 65536.0}, "option buffer_size must be a whole number, not 65536.0"),
    ({"sample_rate": "100"}, "option sample_rate must be a number, not '100'"),
    ({"sample_rate": True}, "option sample_rate must be a number, not True"),
    ({"flush_interval": -0.5}, "option flush_interval must not be negative, not -0.5"),
    ({"buffer_size": 10}, "buffer_size 10 is too small"),
    ({"backend": "ptrace"}, "backend 'ptrace' is unknown"),
    ({"include": "app.*"}, "include and exclude take a list of globs"),
])
def test_a_bad_option_is_one_clear_error(tmp_path, options, message):
    with pytest.raises(OptionsError) as caught:
        pytrace.start(tmp_path / "never.pytrace", **options)
    assert str(caught.value).startswith(message)
    assert pytrace.session.current() is None
    assert not (tmp_path / "never.pytrace").exists()


def test_numbers_of_either_kind_are_taken_where_they_make_sense():
    options = Options.from_kwargs(sample_rate=100, heap_interval=0.5, max_depth=3)
    assert (options.sample_rate, options.heap_interval, options.max_depth) == (100, 0.5, 3)


def test_options_are_immutable_values_that_copy_pickle_and_replace():
    options = Options(calls=False, sample_rate=50, include=["app.*"])
    assert options == Options(calls=False, sample_rate=50, include=("app.*",))
    assert hash(options) == hash(Options(calls=False, sample_rate=50, include=("app.*",)))
    assert options != Options()
    for copied in (copy.copy(options), copy.deepcopy(options),
                   pickle.loads(pickle.dumps(options))):
        assert copied == options and copied.include == ("app.*",)
    assert options.replace(sample_rate=100) == Options(calls=False, sample_rate=100,
                                                       include=("app.*",))
    with pytest.raises(OptionsError, match="option calls must be True or False"):
        options.replace(calls="yes")
    with pytest.raises(AttributeError, match="immutable"):
        options.calls = True
    assert "sample_rate=50" in repr(options)
