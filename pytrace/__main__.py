"""``python -m pytrace``: the same as the ``pytrace`` command."""

import sys

from .cli import main

sys.exit(main())
