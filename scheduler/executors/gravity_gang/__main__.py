"""`python -m gravity_gang`: run the plan in GRAVITY_GANG_PLAN (see launcher.py)."""

import sys

from .launcher import main

sys.exit(main())
