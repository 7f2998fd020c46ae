"""``python -m fnpredict`` = the ``fnpredict`` command."""

import sys

from .cli import main

sys.exit(main())
