"""Small helpers around real clients."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def disconnect(client: Any) -> None:
    """python-engineio's polling client waits out its long-poll on disconnect; don't."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(client.disconnect(), 2.0)
