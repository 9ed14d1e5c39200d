"""tfbisect: which TensorFlow releases reproduce a behaviour, and where did it change?"""

from __future__ import annotations

__version__ = "0.1.0"
