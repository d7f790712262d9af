"""``python -m puffer``: the ``puffer`` command (train, eval, list)."""

import sys

from puffer.cli import main

sys.exit(main())
