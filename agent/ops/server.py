"""``/metrics``, ``/healthz`` and ``/readyz`` served from the daemon's own event loop (aiohttp),
so a scrape never needs a thread and stops with the daemon."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from agent.core.errors import ConfigError
from agent.ops.telemetry import Telemetry


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> (host, port); ``"[::1]:9464"`` for IPv6."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"agent.http.listen: expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def build_app(telemetry: Telemetry) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=telemetry.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, body = telemetry.health()
        return web.json_response(body | {"alive": ok}, status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok, body = telemetry.readiness()
        return web.json_response(body, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


class OpsServer:
    def __init__(self, telemetry: Telemetry, listen: str) -> None:
        self.host, self.port = parse_listen(listen)
        self._runner = web.AppRunner(build_app(telemetry), access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(
                f"agent.http.listen {self.host}:{self.port}: {exc.strerror}"
            ) from None

    async def serve(self) -> None:
        """Keep the started server until cancelled (a task in the daemon's task group)."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        await self._runner.cleanup()
