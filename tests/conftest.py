from __future__ import annotations

import sys
from pathlib import Path

# The repo root, so tests import the packages from this checkout.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
