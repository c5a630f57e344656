"""`tidemq console`: the web console, a process of its own on the client library.

    tidemq console [--listen 127.0.0.1:9480] [--bootstrap HOST:PORT,...]

Served by hypercorn's trio worker (the client library runs on trio or asyncio; the
console's pages are Starlette routes). docs/console.md has the pages and the choices.
"""

from __future__ import annotations

import os
from typing import Any, cast

from client.protocol import split_addr

DEFAULT_LISTEN = "127.0.0.1:9480"
RIGHTS_ENV = ("TIDEMQ_TOKEN", "TIDEMQ_USER", "TIDEMQ_PASSWORD")  # the console never acts on these


async def serve(listen: str, bootstrap: str, security: dict[str, Any] | None = None, *, task_status=None) -> None:
    """Serve the console until cancelled, as whoever logs in (never as this process's
    environment: RIGHTS_ENV is dropped from it first)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    from client.console.app import Console, build_app

    for name in RIGHTS_ENV:
        os.environ.pop(name, None)
    host, port = split_addr(listen)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    app = build_app(Console(bootstrap, security))
    kwargs = {} if task_status is None else {"task_status": task_status}
    await hypercorn_serve(
        cast(Any, app), config, mode="asgi", **kwargs
    )  # (an ASGI app: hypercorn's types are narrower)
