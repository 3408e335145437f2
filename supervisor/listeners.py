"""The master's two listeners: the public port and the admin port.

The public port is the :class:`~balancer.frontdoor.FrontDoor` (the accept
loop, PROXY protocol, the httptools front) with aiohttp's low-level server
behind it for what the front hands over (``[balancer] http = "aiohttp"``,
tunnelled upgrades, large bodies).  The admin port is an aiohttp app
(:mod:`supervisor.admin`).  A port of 0 means "any free port"; :meth:`start`
returns the ports actually bound.  The master decides when each step runs
(:meth:`supervisor.master.Master._shutdown` writes the order); this module
only knows how.
"""

from __future__ import annotations

from aiohttp import web

from balancer.directory import WorkerDirectory
from balancer.frontdoor import FrontDoor
from balancer.proxy import Balancer

from .config import Config

__all__ = ["Listeners"]

_NO_IDLE_LIMIT_S = 365 * 86400.0


class Listeners:
    def __init__(self, config: Config, balancer: Balancer, directory: WorkerDirectory) -> None:
        self.config = config
        self.balancer = balancer
        self.directory = directory
        self._balancer_runner: web.ServerRunner | None = None
        self._front_door: FrontDoor | None = None
        self._admin_runner: web.AppRunner | None = None

    async def start(self, admin_app: web.Application) -> tuple[int, int]:
        """Listen on both ports; the (public, admin) ports bound."""
        b, a, limits = self.config.balancer, self.config.admin, self.config.limits
        self._balancer_runner = web.ServerRunner(
            self.balancer.make_server(
                access_log=None,
                max_line_size=limits.max_header_bytes,
                max_field_size=limits.max_header_bytes,
                max_headers=limits.max_header_count,
                # 0 means no idle limit; aiohttp would read it as no keep-alive.
                keepalive_timeout=limits.idle_timeout_s or _NO_IDLE_LIMIT_S,
            ),
            handle_signals=False,
            shutdown_timeout=1.0,
        )
        await self._balancer_runner.setup()
        assert self._balancer_runner.server is not None
        self._front_door = FrontDoor(
            b, limits, self.directory, self.balancer.stats, self._balancer_runner.server,
            self.balancer,
        )
        self._front_door.bind()
        self._front_door.start()
        self._admin_runner = web.AppRunner(
            admin_app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._admin_runner.setup()
        await web.TCPSite(self._admin_runner, a.host, a.port, reuse_address=True).start()
        # The ports actually bound (a config may say 0: "any free port").
        admin_address = self._admin_runner.addresses[0]
        return self._front_door.port, int(admin_address[1])

    async def stop_accepting(self) -> None:
        if self._front_door is not None:
            await self._front_door.stop()

    async def close(self) -> None:
        """Close the public server, the balancer's pools, then the admin listener."""
        if self._balancer_runner is not None:
            await self._balancer_runner.cleanup()
        await self.balancer.close()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
