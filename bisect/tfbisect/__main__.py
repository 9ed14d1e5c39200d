"""`python -m tfbisect`."""

from __future__ import annotations

import sys

from tfbisect.cli import main

sys.exit(main())
