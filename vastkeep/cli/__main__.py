"""``python -m vastkeep.cli``: the same as the ``vastkeep`` console script."""

import sys

from vastkeep.cli import main

sys.exit(main())
