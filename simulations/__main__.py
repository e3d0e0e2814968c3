"""`python -m simulations simulate|compare|sweep ...` (the same commands `gravity` has)."""

import sys

from simulations.cli import main

sys.exit(main())
