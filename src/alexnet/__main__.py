"""``python -m alexnet`` is the ``alexnet`` command."""

import sys

from .cli import main

sys.exit(main())
