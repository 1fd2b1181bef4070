"""`python -m bot` is `dreamgrid run`."""

import sys

from bot.cli import main

sys.exit(main(["run", *sys.argv[1:]]))
