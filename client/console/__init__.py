"""`tidemq console`: the web console, a process of its own on the client library.

    tidemq console [--listen 127.0.0.1:9480] [--bootstrap HOST:PORT,...] [--alert-webhook URL ...]

Served by hypercorn's trio worker (the client library runs on trio or asyncio; the
console's pages are Starlette routes). docs/console.md has the pages and the choices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

from client.protocol import split_addr

RIGHTS_ENV = ("TIDEMQ_TOKEN", "TIDEMQ_USER", "TIDEMQ_PASSWORD")  # the console never acts on these


@dataclass(frozen=True)
class AlertSettings:
    """Who the alert watcher is (its own user, with the rights to read what it checks),
    where events go, and the rules' thresholds."""

    webhook: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    every: float = 10.0
    lag: int = 1000
    lag_for: float = 60.0


async def serve(
    listen: str,
    bootstrap: str,
    security: dict[str, Any] | None = None,
    *,
    alerts: AlertSettings | None = None,
) -> None:
    """Serve the console until cancelled, as whoever logs in (never as this process's
    environment: RIGHTS_ENV is dropped from it first); with `alerts`, watch the rules
    as the alert user and POST their events to the webhook."""
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    from client.console.alerts import Rules, watch
    from client.console.app import Console, Login, build_app

    for name in RIGHTS_ENV:
        os.environ.pop(name, None)
    host, port = split_addr(listen)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    console = Console(bootstrap, security)
    async with trio.open_nursery() as nursery:
        if alerts is not None:
            console.rules = Rules(lag=alerts.lag, lag_for=alerts.lag_for)
            login = Login(alerts.user, alerts.password, alerts.token)
            nursery.start_soon(watch, console.rules, lambda: console.admin(login), alerts.webhook, alerts.every)
        app = cast(Any, build_app(console))  # (an ASGI app: hypercorn's types are narrower)
        await hypercorn_serve(app, config, mode="asgi")
