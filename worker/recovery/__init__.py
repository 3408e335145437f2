"""Socket.IO connection-state recovery across workers.

:mod:`.store` is the pure decision and bookkeeping (held by the master),
:mod:`.agent` the worker's wiring into python-socketio.
"""

from .agent import RecoveryAgent, is_recovered

__all__ = ["RecoveryAgent", "is_recovered"]
