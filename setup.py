"""Builds pytrace's optional C core (``pytrace._core``); everything else is in
pyproject.toml.  ``optional=True``: if the machine cannot compile it, the
install still succeeds and pytrace runs on its pure-Python core (see
``pytrace/core.py``).  One module from four sources: the writing side
(``_core.c``), the tickers' clock (``_beat.c``), the background file writer
(``_files.c``) and the reader's hot loops (``_decode.c``)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pytrace._core", ["pytrace/_core.c", "pytrace/_decode.c",
                                                  "pytrace/_beat.c", "pytrace/_files.c"],
                             optional=True)])
