"""The web console in a real headless Chromium (Playwright driving Debian's `chromium`)
against three node processes with a token and a `tidemq console` process: log in with
the token, create a topic in the form, find a produced message by key, open its trace
and see its retry and dead letter, replay it from the Dead letters page and see the
trace follow, commit a pending half message by hand, and see the overview's charts.

`TIDEMQ_SCREENSHOTS=docs/console scripts/test tests/client/test_console.py` refreshes
the screenshots the README shows.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import trio

from client import Consumer, Producer
from tests.cluster import free_ports, running_cluster

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "console-token"


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def make_history(bootstrap: str) -> None:
    """A keyed message whose handler always fails (a retry, then a dead letter), and a
    pending half message."""

    async def main() -> None:
        async with Producer(bootstrap, token=TOKEN) as producer:
            await producer.send("orders", b'{"order": 7, "total": 42.5}', key=b"order-7", headers={"source": b"web"})
            await producer.send("orders", b"in five minutes", delay=300)
        failed = 0

        async def handler(msg) -> None:
            nonlocal failed
            failed += 1
            raise ValueError("card declined")

        async with Consumer(bootstrap, group="billing", topics=["orders"], offset_reset="earliest", token=TOKEN) as c:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(c.run, handler, mode="concurrent", retries=1, backoff=0.1))
                with trio.fail_after(30):
                    while failed < 2:
                        await trio.sleep(0.05)
                    await trio.sleep(1.0)  # the dead letter is written after the last attempt
                nursery.cancel_scope.cancel()
        async with Producer(bootstrap, token=TOKEN, producer_group="shop", check_after=600) as producer:
            await producer.send_half("orders", b"reserved", key=b"order-8")

    trio.run(main)


def test_the_tier_checkpoint_type_is_the_logs():
    from client.console.data import DELAY_CHECKPOINT
    from segments.control import ControlType

    assert DELAY_CHECKPOINT == ControlType.DELAY_CHECKPOINT


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (.ci/run installs Debian's package)")
def test_the_console_in_a_browser(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("TIDEMQ_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with running_cluster(tmp_path, 3, token=TOKEN) as c:
        (port,) = free_ports(1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEMQ_")}
        console = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "client.cli",
                "--bootstrap",
                c.bootstrap,
                "console",
                "--listen",
                f"127.0.0.1:{port}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "console.log", "wb"),  # noqa: SIM115 - closed with the process
        )
        try:
            wait_port(port)
            site = f"http://127.0.0.1:{port}"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(30_000)

                # The cluster wants its token: the console asks for it.
                page.goto(site + "/topics")
                expect(page).to_have_url(f"{site}/login?next=/topics")
                page.screenshot(path=shots / "login.png")
                page.fill("input[name=token]", "wrong")
                page.click("main button")
                expect(page.locator(".error")).to_contain_text("token")
                page.fill("input[name=token]", TOKEN)
                page.click("main button")
                expect(page).to_have_url(site + "/topics")

                # A topic made in the form.
                page.fill("input[name=name]", "orders")
                page.fill("input[name=partitions]", "2")
                page.click("main form button")
                expect(page).to_have_url(site + "/topics/orders")
                expect(page.locator("#partitions tr")).to_have_count(3)  # a header and two partitions
                expect(page.locator("#partitions")).to_contain_text(" B")  # each leader's size on disk
                page.screenshot(path=shots / "topic.png")

                make_history(c.bootstrap)

                # Found by key; its trace shows the retry and the dead letter.
                page.goto(site + "/messages?topic=orders")
                page.fill("#search input[name=key]", "order-7")
                page.click("#search button")
                expect(page.locator("#found")).to_contain_text("order-7")
                expect(page.locator("#progress")).to_contain_text("1 found")  # each scan's progress, streamed
                page.screenshot(path=shots / "messages.png")
                page.goto(site + "/messages?topic=orders&header=source%3Dweb")
                expect(page.locator("#progress li")).to_have_count(2)  # a line per partition
                expect(page.locator("#found")).to_contain_text("order-7")
                page.goto(site + "/messages?topic=orders&key=order-7")
                page.click("#found a")
                expect(page.locator("#value")).to_contain_text('"order": 7')  # JSON, pretty-printed
                expect(page.locator("#steps")).to_contain_text("retry")
                expect(page.locator("#steps")).to_contain_text("dead letter")
                expect(page.locator("#groups")).to_contain_text("card declined")
                trace_url = page.url
                page.screenshot(path=shots / "trace.png", full_page=True)

                # Replayed from the Dead letters page: the trace follows.
                page.goto(site + "/dlq")
                expect(page.locator("#billing")).to_contain_text("card declined")
                page.screenshot(path=shots / "dead-letters.png")
                page.click("#billing tr[id^=letter] button:text('replay')")  # this one alone
                expect(page.locator("#billing")).to_contain_text("replayed: ")
                page.goto(trace_url)
                expect(page.locator("#groups")).to_contain_text("replayed")
                expect(page.locator("#steps")).to_contain_text("replayed")

                # A pending half message, committed by hand.
                page.goto(site + "/waiting")
                expect(page.locator("#halves")).to_contain_text("pending")
                expect(page.locator("#tiers")).to_contain_text("orders")  # the delayed one, with its due time
                page.screenshot(path=shots / "waiting.png")
                page.click("#halves button:text('commit')")
                expect(page.locator("#halves")).to_contain_text("committed")

                # The overview draws its charts (inline SVG) and counts what waits.
                page.goto(site + "/")
                expect(page.locator("#produce-chart svg rect").first).to_be_attached()
                assert (
                    int(page.locator("#produce-chart svg").get_attribute("aria-label").split("total ")[1].split(",")[0])
                    >= 3
                )
                expect(page.locator("#lag")).to_contain_text("billing")
                expect(page.locator(".card").nth(2)).to_contain_text("0 dead letter(s) waiting")  # (replayed)
                expect(page.locator(".card").nth(2)).to_contain_text("1 delayed message(s) pending")
                page.screenshot(path=shots / "overview.png", full_page=True)
                page.goto(site + "/groups/billing")
                expect(page.locator("#lag-chart svg")).to_be_attached()
                page.screenshot(path=shots / "group.png")
                # Once the group has no members (its retry reader's session ends), its
                # offsets can be reset from its page.
                for _ in range(40):
                    if page.locator("#reset").count():
                        break
                    time.sleep(0.5)
                    page.reload()
                page.select_option("#reset select[name=topic]", "orders")
                page.select_option("#reset select[name=to]", "earliest")
                page.click("#reset button")
                expect(page).to_have_url(site + "/groups/billing")
                rows = [r.locator("td").all_inner_texts() for r in page.locator("#offsets tr").all()[1:]]
                assert {(p, committed) for p, committed, _ in rows if p.startswith("orders-")} == {
                    ("orders-0", "0"),
                    ("orders-1", "0"),
                }
                browser.close()
        finally:
            console.terminate()
            try:
                console.wait(timeout=10)
            except subprocess.TimeoutExpired:
                console.kill()


def test_alerts_reach_a_webhook_and_the_overview(tmp_path):
    """A node killed and started again: the webhook (a local HTTP receiver) gets the
    node-down event and its resolution; the overview lists the alert while it holds."""
    import json
    import threading
    import urllib.error
    import urllib.parse
    import urllib.request
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - (the stdlib's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    hook = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    with running_cluster(tmp_path, 3, token=TOKEN) as c:
        (port,) = free_ports(1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEMQ_")}
        console = subprocess.Popen(
            [
                sys.executable, "-m", "client.cli", "--bootstrap", c.bootstrap, "console",
                "--listen", f"127.0.0.1:{port}", "--alert-webhook", f"http://127.0.0.1:{hook.server_port}/hook",
                "--alert-token", TOKEN, "--alert-every", "0.5",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "console.log", "wb"),  # noqa: SIM115 - closed with the process
        )  # fmt: skip
        try:
            wait_port(port)
            c.kill(3)

            def wait_for(state: str) -> dict:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    for e in received:
                        if (e["state"], e["rule"], e["subject"]) == (state, "node down", "node 3"):
                            return e
                    time.sleep(0.1)
                raise AssertionError(f"no {state} node-down event; got {received}")

            fired = wait_for("firing")
            assert "node 3 does not answer" in fired["message"]
            login = urllib.parse.urlencode({"token": TOKEN}).encode()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
            overview = opener.open(f"http://127.0.0.1:{port}/login", login, timeout=30).read().decode()
            assert "node down: node 3 does not answer" in overview
            # A form posted from elsewhere (no session's token) changes nothing, logged in or not.
            for client in (urllib.request.build_opener(), opener):
                with pytest.raises(urllib.error.HTTPError) as refused:
                    client.open(f"http://127.0.0.1:{port}/topics", b"name=evil&partitions=1&replication=1", timeout=30)
                assert refused.value.code == 403
            scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
            assert "tidemq_nodes_down 1.0" in scraped and "tidemq_partitions_leaderless" in scraped
            c.start(3)
            resolved = wait_for("resolved")
            assert resolved["since"] == fired["since"]
        finally:
            console.terminate()
            console.wait(timeout=10)
            hook.shutdown()
