"""The console's pages and actions (Starlette routes, Jinja2 templates).

Stateless but for logins: a session cookie names credentials kept in this process's
memory (a restart asks everyone to log in again), and every page opens a client with
them, so the console does exactly what its user may (it holds no credentials of its
own: `tidemq console` drops TIDEMQ_TOKEN, TIDEMQ_USER and TIDEMQ_PASSWORD from its
environment). Forms that change something carry the session's CSRF token.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from client import trace
from client.admin import Admin
from client.console import data
from client.console.alerts import Rules
from client.console.charts import bars
from client.console.metrics import exposition
from client.conventions import dead_letter_topic
from client.dlq import decide_dead_letter, list_dead_letters, replay_dead_letters
from client.errors import AuthFailedError, AuthorizationFailedError, TideMQError, error_leaves
from client.half import end_half
from client.partitioner import partition_for_key
from client.protocol import TxnInfo
from client.tls import ConnectOptions

HERE = Path(__file__).parent
SESSION_COOKIE = "tidemq_session"
MAX_SESSIONS = 10_000  # logins kept in memory (the oldest go first)
OPEN_TXN_STATES = ("ongoing", "prepare_commit", "prepare_abort")
BROWSE_LIMIT = 100  # messages a page
SEARCH_LIMIT = 20_000  # records a key or header search reads a partition


@dataclass
class Login:
    user: str | None = None
    password: str | None = None
    token: str | None = None
    csrf: str = ""

    @property
    def who(self) -> str:
        return f"User:{self.user}" if self.user else ("the token" if self.token else "anonymous")


class Console:
    def __init__(self, bootstrap: str, security: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.security = dict(security or {})  # TLS options: trust, not rights
        self.sessions: dict[str, Login] = {}
        self.rules: Rules | None = None  # the alert rules, when alerts are watched
        # (time s, messages the groups have committed in all): consumption is not in any
        # index, so the overview samples it as it refreshes, for the last hour.
        self.consumed: deque[tuple[float, int]] = deque(maxlen=720)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(age=data.age, when=_when, size=data.size_text)

    def consume_rate(self, edges_s: list[float]) -> list[int]:
        """Messages consumed between consecutive edges, from the samples (0 where none)."""
        out = []
        for a, b in zip(edges_s, edges_s[1:]):
            inside = [total for t, total in self.consumed if a <= t < b]
            before = [total for t, total in self.consumed if t < a]
            start = before[-1] if before else (inside[0] if inside else None)
            out.append(max(inside[-1] - start, 0) if inside and start is not None else 0)
        return out

    def login_of(self, request: Request) -> tuple[str | None, Login]:
        sid = request.cookies.get(SESSION_COOKIE)
        login = self.sessions.get(sid or "")
        return (sid, login) if login is not None else (None, Login(csrf=""))

    @asynccontextmanager
    async def admin(self, login: Login) -> AsyncIterator[Admin]:
        async with Admin(
            self.bootstrap,
            token=login.token or "",
            username=login.user,
            password=login.password,
            request_timeout=10.0,
            **self.security,
        ) as admin:
            yield admin

    def new_session(self, login: Login) -> str:
        sid = secrets.token_urlsafe(24)
        self.sessions[sid] = login
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.pop(next(iter(self.sessions)))  # the oldest
        return sid

    def page(self, request: Request, name: str, login: Login, status_code: int = 200, **context: Any) -> Response:
        fresh = None
        if not login.csrf:  # a visitor without a session gets an anonymous one: its forms carry a token too
            login = Login(csrf=secrets.token_urlsafe(16))
            fresh = self.new_session(login)
        response = self.templates.TemplateResponse(
            request,
            name,
            {"login": login, "csrf": login.csrf, "bootstrap": self.bootstrap, **context},
            status_code=status_code,
        )
        if fresh is not None:
            response.set_cookie(SESSION_COOKIE, fresh, httponly=True, samesite="strict")
        return response


def _when(ms: int | None) -> str:
    if ms is None or ms < 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def build_app(console: Console) -> Starlette:
    async def guarded(request: Request, render) -> Response:
        """Run a page or action as the session's principal: not logged in where the
        cluster wants it, to the login page; refused by the ACLs, the page says so."""
        _, login = console.login_of(request)
        try:
            async with console.admin(login) as admin:
                return await render(admin, login)
        except Exception as exc:  # noqa: BLE001 - sorted below; anything else is a bug and raised
            error = error_leaves(exc)[0]
            if isinstance(error, AuthFailedError):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={target}", status_code=303)
            if isinstance(error, AuthorizationFailedError):
                return console.page(request, "error.html", login, error=error, status_code=403)
            if isinstance(error, TideMQError | TimeoutError):
                return console.page(request, "error.html", login, error=error, status_code=502)
            raise

    def checked(request: Request, form: Any) -> Login:
        _, login = console.login_of(request)
        if not login.csrf or not secrets.compare_digest(str(form.get("csrf", "")), login.csrf):
            raise PermissionError("stale form (or not from this console): reload the page")
        return login

    # -- login ------------------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        _, login = console.login_of(request)
        return console.page(request, "login.html", login, next=request.query_params.get("next", "/"), error=None)

    async def login_post(request: Request) -> Response:
        form = await request.form()
        login = Login(
            user=str(form.get("user") or "") or None,
            password=str(form.get("password") or "") or None,
            token=str(form.get("token") or "") or None,
            csrf=secrets.token_urlsafe(16),
        )
        target = str(form.get("next") or "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        try:
            async with console.admin(login) as admin:
                await admin.cluster.refresh_metadata([])
        except Exception as exc:  # noqa: BLE001 - the login page says what went wrong
            error = error_leaves(exc)[0]
            if not isinstance(error, TideMQError | TimeoutError):
                raise
            _, current = console.login_of(request)
            return console.page(request, "login.html", current, next=target, error=error, status_code=401)
        sid = console.new_session(login)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict")
        return response

    async def logout(request: Request) -> Response:
        sid, _ = console.login_of(request)
        console.sessions.pop(sid or "", None)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- overview ---------------------------------------------------------------------------

    async def overview(request: Request) -> Response:
        async def render(admin: Admin, login: Login) -> Response:
            view = await data.cluster_view(admin)
            group_rows = await data.groups(admin, view)
            user_topics = [t for t in view.md.topics if not t.internal]
            now = data.now_ms()
            hour = data.edges(now, 5 * 60_000, 12)
            days = data.edges(now, 86_400_000, 7)
            rate = [0] * 12
            per_day: dict[str, list[int]] = {}
            for t in user_topics:
                counts = await data.counts_per_bucket(admin, t.name, len(t.partitions), hour)
                rate = [a + b for a, b in zip(rate, counts)]
                per_day[t.name] = await data.counts_per_bucket(admin, t.name, len(t.partitions), days)
            hour_labels = [time.strftime("%H:%M", time.gmtime(e / 1000)) for e in hour[:-1]]
            committed = sum(o for g in group_rows if g.desc for _, _, o in g.desc.offsets)
            console.consumed.append((now / 1000, committed))
            consumed = console.consume_rate([e / 1000 for e in hour])
            day_labels = [time.strftime("%m-%d", time.gmtime(e / 1000)) for e in days[:-1]]
            txns = await data.bounded(admin.list_transactions, list[TxnInfo]())
            halves = await data.bounded(lambda: admin.list_halves(), None)
            return console.page(
                request,
                "overview.html",
                login,
                view=view,
                groups=group_rows,
                produce_chart=bars(rate, hour_labels, title="messages produced, last hour, per 5 minutes"),
                consume_chart=bars(consumed, hour_labels, title="messages consumed, last hour, per 5 minutes"),
                day_charts={
                    name: bars(counts, day_labels, title=f"{name}: messages per day", height=80)
                    for name, counts in per_day.items()
                },
                dead=await data.dead_letter_counts(admin, view, [g.name for g in group_rows]),
                tiers=await data.tiers(admin, view),
                open_txns=[t for t in txns if t.state in OPEN_TXN_STATES],
                pending_halves=[h for h in (halves.halves if halves else []) if h.state == "pending"],
                alerts=list(console.rules.active.values()) if console.rules else None,
            )

        return await guarded(request, render)

    # -- topics -----------------------------------------------------------------------------

    async def topics(request: Request) -> Response:
        async def render(admin: Admin, login: Login) -> Response:
            view = await data.cluster_view(admin)
            shown = [t for t in view.md.topics if request.query_params.get("internal") or not t.internal]
            return console.page(request, "topics.html", login, view=view, topics=sorted(shown, key=lambda t: t.name))

        return await guarded(request, render)

    async def topic_create(request: Request) -> Response:
        form = await request.form()
        checked(request, form)

        async def render(admin: Admin, _: Login) -> Response:
            name = str(form.get("name", "")).strip()
            partitions, replication = int(str(form.get("partitions") or 1)), int(str(form.get("replication") or 1))
            await admin.create_topic(name, partitions, replication)
            return RedirectResponse(f"/topics/{name}", status_code=303)

        return await guarded(request, render)

    async def topic_delete(request: Request) -> Response:
        form = await request.form()
        checked(request, form)

        async def render(admin: Admin, _: Login) -> Response:
            await admin.delete_topic(request.path_params["name"])
            return RedirectResponse("/topics", status_code=303)

        return await guarded(request, render)

    async def topic(request: Request) -> Response:
        async def render(admin: Admin, login: Login) -> Response:
            name = request.path_params["name"]
            view = await data.cluster_view(admin, [name])
            info = view.topic(name)
            if info is None:
                return console.page(request, "error.html", login, error=f"there is no topic {name!r}", status_code=404)
            parts = [p for p in view.partitions if p.topic == name]
            return console.page(request, "topic.html", login, info=info, partitions=parts)

        return await guarded(request, render)

    # -- messages ---------------------------------------------------------------------------

    async def messages(request: Request) -> Response:
        q = request.query_params
        if q.get("topic") and (q.get("key") or q.get("header")):
            return await search(request)

        async def render(admin: Admin, login: Login) -> Response:
            names = sorted(await admin.list_topics())
            name = q.get("topic") or (names[0] if names else "")
            found: list[trace.Stored] = []
            partitions = 0
            note = ""
            if name:
                partitions = await admin.cluster.partition_count(name)
                p = int(q.get("partition") or 0)
                start = await _start_offset(admin, name, p, q.get("offset"), q.get("time"))
                found = await trace.read_partition(admin.cluster, name, p, start, limit=BROWSE_LIMIT)
                note = f"partition {p} from offset {start if start is not None else 'the start'}"
            return console.page(
                request,
                "messages.html",
                login,
                names=names,
                topic=name,
                partitions=partitions,
                found=found,
                note=note,
                q=q,
                pretty=data.pretty_value,
            )

        return await guarded(request, render)

    async def search(request: Request) -> Response:
        """A search by key or header, streamed: the page shows each partition's progress
        as its scan ends (no JavaScript: the browser renders the page as it comes), then
        what was found."""
        q = request.query_params

        async def check(admin: Admin, login: Login) -> Response:
            names = sorted(await admin.list_topics())
            partitions = await admin.cluster.partition_count(q["topic"])
            head = console.templates.get_template("messages.html").render(
                request=request, login=login, csrf=login.csrf, bootstrap=console.bootstrap, names=names,
                topic=q["topic"], partitions=partitions, q=q, searching=True,
            )  # fmt: skip
            return StreamingResponse(scan(login, head, partitions), media_type="text/html")

        async def scan(login: Login, head: str, partitions: int) -> AsyncIterator[str]:
            top, _, bottom = head.partition("<!-- results -->")
            yield top + '<ul id="progress">'
            topic, key = q["topic"], q.get("key")
            hname, _, hvalue = (q.get("header") or "").partition("=")
            found: list[trace.Stored] = []
            try:
                async with console.admin(login) as admin:
                    if key:
                        home = partition_for_key(key.encode(), partitions)
                        found = await trace.find_by_key(admin.cluster, topic, key.encode(), limit=SEARCH_LIMIT)
                        yield f"<li>partition {home} (keys hash there): the newest {SEARCH_LIMIT} offsets read, {len(found)} found</li>"
                    else:
                        for p in range(partitions):

                            def keep(s: trace.Stored) -> bool:
                                return any(k == hname and v == hvalue.encode() for k, v in s.headers)

                            start = await trace.newest(admin.cluster, topic, p, SEARCH_LIMIT)
                            hits = await trace.read_partition(admin.cluster, topic, p, start, keep=keep)
                            found += hits
                            yield f"<li>partition {p}: the newest {SEARCH_LIMIT} offsets read, {len(hits)} found</li>"
            except (TideMQError, TimeoutError) as exc:
                yield f'<li class="error" role="alert">{escape(getattr(exc, "message", str(exc)))}</li>'
            yield "</ul>"
            rows = console.templates.get_template("found.html").render(
                found=sorted(found, key=lambda s: s.timestamp)[-BROWSE_LIMIT:], pretty=data.pretty_value, when=_when
            )
            yield rows + bottom

        return await guarded(request, check)

    async def message(request: Request) -> Response:
        pp = request.path_params

        async def render(admin: Admin, login: Login) -> Response:
            t = await trace.trace_message(admin.cluster, pp["topic"], int(pp["partition"]), int(pp["offset"]))
            if t is None:
                error = f"there is no message at {pp['topic']}-{pp['partition']}@{pp['offset']}"
                return console.page(request, "error.html", login, error=error, status_code=404)
            return console.page(request, "message.html", login, t=t, pretty=data.pretty_value)

        return await guarded(request, render)

    # -- groups -----------------------------------------------------------------------------

    async def groups(request: Request) -> Response:
        async def render(admin: Admin, login: Login) -> Response:
            view = await data.cluster_view(admin)
            return console.page(request, "groups.html", login, groups=await data.groups(admin, view))

        return await guarded(request, render)

    async def group(request: Request) -> Response:
        async def render(admin: Admin, login: Login) -> Response:
            name = request.path_params["name"]
            view = await data.cluster_view(admin)
            rows = [g for g in await data.groups(admin, view) if g.name == name]
            desc = rows[0].desc if rows else None
            if desc is None:
                return console.page(request, "error.html", login, error=f"there is no group {name!r}", status_code=404)
            g = rows[0]
            lag = [g.lag.get((t, p), 0) for t, p, _ in desc.offsets]
            labels = [f"{t}-{p}" for t, p, _ in desc.offsets]
            chart = bars(lag, labels, title=f"{name}: lag per partition", height=100)
            return console.page(request, "group.html", login, g=g, chart=chart)

        return await guarded(request, render)

    async def group_reset(request: Request) -> Response:
        form = await request.form()
        checked(request, form)
        name = request.path_params["name"]

        async def render(admin: Admin, _: Login) -> Response:
            how, value = str(form.get("to", "earliest")), str(form.get("value") or "").strip()
            kwargs: dict[str, Any] = {"to": how} if how in ("earliest", "latest") else {}
            if how == "offset":
                kwargs["offset"] = int(value)
            elif how == "shift":
                kwargs["shift_by"] = int(value)
            elif how == "time":
                kwargs["at_ms"] = int(time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M")) * 1000)
            await admin.reset_offsets(name, str(form.get("topic", "")), **kwargs)
            return RedirectResponse(f"/groups/{name}", status_code=303)

        return await guarded(request, render)

    # -- dead letters -------------------------------------------------------------------------

    async def dead_letters(request: Request) -> Response:
        async def render(admin: Admin, login: Login) -> Response:
            view = await data.cluster_view(admin)
            names = [g.name for g in await data.groups(admin, view)]
            letters = {}
            for name in sorted(n for n in names if view.topic(dead_letter_topic(n))):
                letters[name] = await list_dead_letters(
                    console.bootstrap,
                    name,
                    idle=0.3,
                    limit=BROWSE_LIMIT,
                    token=login.token or "",
                    security=_opts(console, login),
                )
            return console.page(request, "dlq.html", login, letters=letters)

        return await guarded(request, render)

    async def replay(request: Request) -> Response:
        form = await request.form()
        login = checked(request, form)
        group_name = request.path_params["group"]

        async def render(admin: Admin, _: Login) -> Response:
            await admin.cluster.topic(dead_letter_topic(group_name))  # (a group without one: UnknownTopicError)
            await replay_dead_letters(
                console.bootstrap, group_name, idle=0.5, token=login.token or "", security=_opts(console, login)
            )
            return RedirectResponse("/dlq", status_code=303)

        return await guarded(request, render)

    async def decide(request: Request) -> Response:
        form = await request.form()
        login = checked(request, form)
        pp = request.path_params
        replay = pp["decision"] == "replay"

        async def render(admin: Admin, _: Login) -> Response:
            reason = str(form.get("reason") or "").strip() or "no reason given"
            await decide_dead_letter(
                console.bootstrap, pp["group"], int(pp["partition"]), int(pp["offset"]), replay=replay,
                reason=f"{reason} ({'replayed' if replay else 'discarded'} in the console by {login.who})",
                token=login.token or "", security=_opts(console, login),
            )  # fmt: skip
            return RedirectResponse(f"/dlq#{pp['group']}", status_code=303)

        return await guarded(request, render)

    # -- waiting: delayed, transactions, halves --------------------------------------------------

    async def waiting(request: Request) -> Response:
        async def render(admin: Admin, login: Login) -> Response:
            view = await data.cluster_view(admin)
            txns = await data.bounded(admin.list_transactions, list[TxnInfo]())
            halves = await data.bounded(lambda: admin.list_halves(resolved=True), None)
            return console.page(
                request,
                "waiting.html",
                login,
                tiers=await data.tiers(admin, view),
                txns=[t for t in txns if t.state in OPEN_TXN_STATES],
                halves=halves.halves if halves else [],
            )

        return await guarded(request, render)

    async def decide_half(request: Request) -> Response:
        form = await request.form()
        login = checked(request, form)
        pp = request.path_params
        commit = pp["decision"] == "commit"

        async def render(admin: Admin, _: Login) -> Response:
            reason = f"{'committed' if commit else 'aborted'} by hand in the console by {login.who}"
            await end_half(
                admin.cluster, pp["group"], int(pp["partition"]), int(pp["offset"]), commit, reason, timeout=15
            )
            return RedirectResponse("/waiting", status_code=303)

        return await guarded(request, render)

    async def metrics(request: Request) -> Response:
        """What operators alert on, for Prometheus (client/console/metrics.py)."""
        if console.rules is None:
            text = "no metrics: start the console with --alert-user NAME or --alert-token to watch the cluster\n"
            return PlainTextResponse(text, status_code=503)
        return Response(exposition(console.rules), media_type="text/plain; version=0.0.4")

    async def forbidden(request: Request, exc: Exception) -> Response:
        _, login = console.login_of(request)
        return console.page(request, "error.html", login, error=exc, status_code=403)

    routes = [
        Route("/", overview),
        Route("/metrics", metrics),
        Route("/login", login_page),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/topics", topics),
        Route("/topics", topic_create, methods=["POST"]),
        Route("/topics/{name}", topic),
        Route("/topics/{name}/delete", topic_delete, methods=["POST"]),
        Route("/messages", messages),
        Route("/messages/{topic}/{partition:int}/{offset:int}", message),
        Route("/groups", groups),
        Route("/groups/{name}", group),
        Route("/groups/{name}/reset", group_reset, methods=["POST"]),
        Route("/dlq", dead_letters),
        Route("/dlq/{group}/replay", replay, methods=["POST"]),
        Route("/dlq/{group}/{partition:int}/{offset:int}/{decision:str}", decide, methods=["POST"]),
        Route("/waiting", waiting),
        Route("/halves/{group}/{partition:int}/{offset:int}/{decision:str}", decide_half, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={PermissionError: forbidden})


def _opts(console: Console, login: Login) -> ConnectOptions:
    return cast(ConnectOptions, {**console.security, "username": login.user, "password": login.password})


async def _start_offset(admin: Admin, topic: str, p: int, offset: str | None, when: str | None) -> int | None:
    if offset:
        return int(offset)
    if when:
        ms = int(time.mktime(time.strptime(when, "%Y-%m-%dT%H:%M")) * 1000)
        return await data.offset_at(admin, topic, p, ms)
    return None
