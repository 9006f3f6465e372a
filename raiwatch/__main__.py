"""``python -m raiwatch``: the command line."""

import sys

from raiwatch.cli import main

sys.exit(main())
