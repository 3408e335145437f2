from __future__ import annotations

import sys
from pathlib import Path

# The repo root, so tests import the packages from this checkout.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One rabbitmq-server per test session, shared by every module that asks for it
# (a session fixture imported into several modules would start one per module).
from tests.rabbitmq_server import rabbitmq_server  # noqa: E402

__all__ = ["rabbitmq_server"]
