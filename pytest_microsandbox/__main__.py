"""``python -m pytest_microsandbox``: the ``msb`` command line."""

import sys

from pytest_microsandbox.cli import main

sys.exit(main())
