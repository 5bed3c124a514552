"""``python -m vastkeep.sim``: run the simulated cloud."""

import sys

from vastkeep.sim.cli import main

sys.exit(main())
