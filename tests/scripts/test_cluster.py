"""`scripts/cluster up --secure`: a TLS-only local cluster that admits users only, with an
`admin` user, whose `client.env`, sourced, makes the CLI and the README's Python example
work unchanged; `down --wipe` stops it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.cluster import claim, free_ports, port_range
from tests.test_readme import README_BOOTSTRAP, examples

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def free_base(nodes: int) -> int:
    """A first port whose client, peer and metrics ports (as scripts/cluster lays them out) are free."""
    first, end = port_range()
    for base in range(first + 397, end - 300, 397):
        if claim([base + off + i for off in (0, 100, 200) for i in range(nodes)]):
            return base
    raise RuntimeError("no free port range")


def cluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/cluster.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=90
    )


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # (the test looks at each redirect itself)


def node_logs(run_dir: Path, lines: int = 40) -> str:
    """The end of each node's log, for a failure's message."""
    return "".join(
        f"\n--- {log.relative_to(run_dir)} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        for log in sorted(run_dir.glob("n*/node.log"))
    )


def test_a_secure_cluster_and_its_client_env(tmp_path):
    run_dir = tmp_path / "secure"
    (console_port,) = free_ports(1)
    up = cluster(
        "--dir", str(run_dir), "up", "--secure", "--port", str(free_base(3)), "--kafka-port", "0",
        "--console-port", str(console_port),
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr + up.stdout + node_logs(run_dir)
        env_file = Path(re.search(r"client settings: (\S+)", up.stdout)[1])
        assert env_file == run_dir / "client.env" and oct(env_file.stat().st_mode)[-3:] == "600"
        exported = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in env_file.read_text().splitlines()
        )
        assert set(exported) == {"TIDEMQ_BOOTSTRAP", "TIDEMQ_TLS_CA", "TIDEMQ_USER", "TIDEMQ_PASSWORD"}
        assert exported["TIDEMQ_USER"] == "admin"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("TIDEMQ_")}, **exported}
        tidemq = [sys.executable, "-m", "client.cli"]

        # Without the CA the nodes are out of reach, without the user they refuse; with
        # client.env, everything works.
        for missing in ("TIDEMQ_TLS_CA", "TIDEMQ_USER"):
            partial = {k: v for k, v in env.items() if k != missing}
            refused = subprocess.run([*tidemq, "topic", "list"], cwd=ROOT, env=partial, capture_output=True, text=True)
            assert refused.returncode != 0, missing
        assert "admits users only" in refused.stderr
        made = subprocess.run(
            [*tidemq, "topic", "create", "greetings", "--partitions", "3", "--replication", "3"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        python_blocks = [code for lang, code in examples() if lang == "python"]
        first = python_blocks[0].replace(README_BOOTSTRAP, exported["TIDEMQ_BOOTSTRAP"])  # (TLS from the env)
        run = subprocess.run(
            [sys.executable, "-c", first], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr

        # The console: a login as admin (over TLS to the nodes), then its pages.
        assert f"console: http://127.0.0.1:{console_port}" in up.stdout
        site = f"http://127.0.0.1:{console_port}"
        no_redirects = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as first_visit:
            no_redirects.open(site + "/", timeout=30)
        assert first_visit.value.code == 303 and first_visit.value.headers["Location"] == "/login?next=/"
        form = urllib.parse.urlencode({"user": "admin", "password": exported["TIDEMQ_PASSWORD"], "next": "/topics"})
        with pytest.raises(urllib.error.HTTPError) as logged_in:
            no_redirects.open(site + "/login", data=form.encode(), timeout=30)
        assert logged_in.value.code == 303 and logged_in.value.headers["Location"] == "/topics"
        cookie = logged_in.value.headers["Set-Cookie"].split(";")[0]
        page = urllib.request.urlopen(urllib.request.Request(site + "/topics", headers={"Cookie": cookie}), timeout=30)
        assert "greetings" in page.read().decode()
    finally:
        down = cluster("--dir", str(run_dir), "down", "--wipe")
        assert down.returncode == 0, down.stderr
        assert "stopped the console" in down.stdout


def test_a_rolling_restart_under_load_fails_no_send(tmp_path):
    """`scripts/cluster roll`, then `add` (a fourth node joins, replicas spread onto it)
    and `remove 1`, while an idempotent producer sends all along and a group reads: no
    send fails, nothing is lost or written twice, the group reads on."""
    import trio

    from client import Admin, Consumer, Producer

    run_dir = tmp_path / "rolling"
    up = cluster(
        "--dir", str(run_dir), "up", "--port", str(free_base(4)), "--kafka-port", "0", "--console-port", "0",
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr + up.stdout + node_logs(run_dir)
        bootstrap = re.search(r"bootstrap: (\S+)", up.stdout)[1]

        async def main() -> None:
            async with Admin(bootstrap) as admin:
                await admin.create_topic("rolling", 3, 3)
            sent: list[bytes] = []
            read: list[bytes] = []
            done, stopped = trio.Event(), trio.Event()

            async def produce() -> None:
                async with Producer(bootstrap) as producer:
                    while not done.is_set():
                        value = b"v%d" % len(sent)
                        await producer.send("rolling", value, key=value)  # raises if a send fails
                        sent.append(value)
                        await trio.sleep(0.005)
                stopped.set()

            async def consume() -> None:
                async with Consumer(bootstrap, group="readers", topics=["rolling"], offset_reset="earliest") as c:
                    async for msg in c:
                        read.append(msg.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                nursery.start_soon(consume)
                rolled = await trio.to_thread.run_sync(lambda: cluster("--dir", str(run_dir), "roll"))
                assert rolled.returncode == 0, rolled.stderr + rolled.stdout
                assert rolled.stdout.count("caught up") == 3
                added = await trio.to_thread.run_sync(lambda: cluster("--dir", str(run_dir), "add"))
                assert added.returncode == 0, added.stderr + added.stdout + node_logs(run_dir)
                assert "node 4 joined" in added.stdout and "rebalanced" in added.stdout
                removed = await trio.to_thread.run_sync(lambda: cluster("--dir", str(run_dir), "remove", "1"))
                assert removed.returncode == 0, removed.stderr + removed.stdout + node_logs(run_dir)
                assert "removed node 1" in removed.stdout
                async with Admin(bootstrap) as admin:
                    md = await admin.describe_cluster()
                    assert [n.node_id for n in md.nodes] == [2, 3, 4]
                    assert all(1 not in p.replicas for t in md.topics for p in t.partitions)
                status = await trio.to_thread.run_sync(lambda: cluster("--dir", str(run_dir), "status"))
                assert status.returncode == 0 and "│ 4 " in status.stdout
                done.set()
                with trio.fail_after(60):
                    await stopped.wait()  # (its last send acknowledged: nothing in flight when we compare)
                    while set(read) < set(sent):
                        await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
            assert len(sent) > 100 and len(set(sent)) == len(sent)
            async with Consumer(bootstrap, topics=["rolling"], offset_reset="earliest") as again:
                stored = []
                with trio.move_on_after(3):
                    async for msg in again:
                        stored.append(msg.value)
            assert sorted(stored) == sorted(sent)  # each once

        trio.run(main)
    finally:
        down = cluster("--dir", str(run_dir), "down", "--wipe")
        assert down.returncode == 0, down.stderr
