"""``python -m alexnet`` is the ``alexnet`` command."""

import sys

from alexnet.cli import main

sys.exit(main())
