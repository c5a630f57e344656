"""Launch and manage a local TideMQ cluster on loopback.

    scripts/cluster up [--nodes 3] [--port 9401] [--kafka-port 9092] [--console-port 9480] [--dir .tidemq]
                       [--fsync always] [--secure]
    scripts/cluster status
    scripts/cluster kill N | pause N | resume N | stop N | start N | restart N
    scripts/cluster roll                 # restart each node in turn, caught up before the next
    scripts/cluster add [--no-rebalance] # start a new node, admit it, spread replicas onto it
    scripts/cluster remove N             # move node N's replicas off, remove it (it stops)
    scripts/cluster down [--wipe]

Every command takes `--dir DIR` (default `.tidemq/` in the repository).
Each node runs as `python -m node` in its own process, with its data, log file and pid
under the run directory. `up` waits until every node answers and the controller has a
leader, then prints the bootstrap address. With `--secure`, a CA and node certificates
are made in the run directory and the nodes speak only TLS (mutual between nodes);
`<dir>/client.env` holds what a client needs (`source` it). `up` also starts the web
console (`tidemq console`, its log in `<dir>/console/console.log`). `down` sends SIGTERM
(graceful: leadership moves away, logs are flushed) and SIGKILLs whatever is still alive
after a timeout, the console too.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import trio
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client.cli import moves_line  # noqa: E402
from client.connection import open_connection  # noqa: E402
from client.errors import TideMQError  # noqa: E402
from client.protocol import Metadata, PartitionInfo  # noqa: E402
from client.tls import tls_context  # noqa: E402

console = Console()


ADMIN = "admin"  # the secure cluster's first user
PEER_PORT_OFFSET = 200  # node N's peer listener: --port + 200 + N - 1


def layout(run_dir: Path) -> dict:
    """The cluster's spec; `peers` are the nodes' client addresses, `peer_listen` their
    peer listeners (added to a spec written before nodes had one)."""
    with open(run_dir / "cluster.json") as f:
        spec = json.load(f)
    if "peer_listen" not in spec:
        spec["peer_listen"] = {
            n: f"127.0.0.1:{int(a.rsplit(':', 1)[1]) + PEER_PORT_OFFSET}" for n, a in spec["peers"].items()
        }
    return spec


def peer_secret(run_dir: Path) -> str:
    """The secret the nodes prove to each other, made once per cluster directory (never
    on a command line, where `ps` would show it)."""
    path = run_dir / "peer-secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def pid_of(run_dir: Path, node: int | str) -> int | None:
    """The live process of node N (or of "console") in this run directory."""
    where = run_dir / (f"n{node}" if isinstance(node, int) else node) / "pid"
    try:
        pid = int(where.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def start_node(run_dir: Path, spec: dict, node: int) -> int:
    """Start node N: a founding node with every founding node's addresses (`--peers`),
    one added later (`scripts/cluster add`) through another's peer listener (`--join`)."""
    ndir = run_dir / f"n{node}"
    ndir.mkdir(parents=True, exist_ok=True)
    joined = spec.get("joined", [])
    founders = [n for n in spec["peers"] if int(n) not in joined]
    if int(node) in joined:
        join = next(spec["peer_listen"][n] for n in spec["peers"] if n != str(node))
        membership = ["--join", join]
    else:
        peers = ",".join(f"{i}={spec['peer_listen'][i]}" for i in founders)
        advertise = ",".join(f"{i}={spec['peers'][i]}" for i in founders)
        membership = ["--peers", peers, "--advertise", advertise]
    cmd = [
        sys.executable,
        "-m",
        "node",
        "--id",
        str(node),
        "--listen",
        spec["peers"][str(node)],
        "--peer-listen",
        spec["peer_listen"][str(node)],
        *membership,
        "--data",
        str(ndir / "data"),
        "--fsync",
        spec["fsync"],
        "--metrics",
        f"127.0.0.1:{spec['metrics_base'] + node}",
    ]
    if spec.get("token"):
        cmd += ["--token", spec["token"]]
    if spec.get("kafka"):
        cmd += ["--kafka-listen", spec["kafka"][str(node)]]
    if spec.get("tls"):
        cert, key = spec["tls"]["nodes"][str(node)]
        cmd += ["--tls-cert", cert, "--tls-key", key, "--tls-ca", spec["tls"]["ca"], "--require-users"]
        cmd += ["--super-users", f"User:{ADMIN}"]
    env = dict(os.environ, TIDEMQ_PEER_SECRET=peer_secret(run_dir))
    with open(ndir / "node.log", "ab") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    (ndir / "pid").write_text(str(proc.pid))
    return proc.pid


def start_console(run_dir: Path, spec: dict) -> int:
    """`tidemq console` for this cluster (it acts as whoever logs in: no credentials)."""
    cdir = run_dir / "console"
    cdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "client.cli", "--bootstrap", ",".join(spec["peers"].values())]
    if spec.get("tls"):
        cmd += ["--tls-ca", spec["tls"]["ca"]]
    cmd += ["console", "--listen", spec["console"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEMQ_")}
    with open(cdir / "console.log", "ab") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    (cdir / "pid").write_text(str(proc.pid))
    return proc.pid


async def wait_console(addr: str, timeout: float) -> None:
    host, port = addr.rsplit(":", 1)
    with trio.fail_after(timeout):
        while True:
            try:
                stream = await trio.open_tcp_stream(host, int(port))
                await stream.aclose()
                return
            except OSError:
                await trio.sleep(0.1)


def stop_node(run_dir: Path, node: int | str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> bool:
    pid = pid_of(run_dir, node)
    if pid is None:
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_of(run_dir, node) is None:
            return True
        time.sleep(0.05)
    console.print(
        f"[yellow]{'node ' if isinstance(node, int) else ''}{node} ignored SIGTERM for {timeout}s; sending SIGKILL[/]"
    )
    os.kill(pid, signal.SIGKILL)
    return True


def client_tls(spec: dict) -> ssl.SSLContext | None:
    return tls_context(tls_ca=spec["tls"]["ca"]) if spec.get("tls") else None


def write_client_env(run_dir: Path, spec: dict) -> Path:
    """`<dir>/client.env`: `export NAME=value` lines for the CLI and the client library."""
    values = {"TIDEMQ_BOOTSTRAP": ",".join(spec["peers"].values())}
    if spec.get("tls"):
        values["TIDEMQ_TLS_CA"] = spec["tls"]["ca"]
        values["TIDEMQ_USER"], values["TIDEMQ_PASSWORD"] = ADMIN, spec["admin_password"]
    elif spec.get("token"):
        values["TIDEMQ_TOKEN"] = spec["token"]
    path = run_dir / "client.env"
    path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


def make_certificates(run_dir: Path, nodes: list[str]) -> dict:
    """A CA and a certificate per node under `<dir>/tls` (scripts/certs.py)."""
    from scripts.certs import Authority

    ca = Authority(run_dir / "tls")
    issued = {n: ca.node(int(n)) for n in nodes}
    return {"ca": str(ca.cert_path), "nodes": {n: [str(i.cert), str(i.key)] for n, i in issued.items()}}


async def ensure_admin(spec: dict) -> None:
    """The secure cluster's first user, `admin` (its password in client.env)."""
    from client import Admin
    from client.errors import InvalidRequestError

    async with Admin(",".join(spec["peers"].values()), token=spec["token"], tls_ca=spec["tls"]["ca"]) as admin:
        try:
            await admin.add_user(ADMIN, spec["admin_password"])
        except InvalidRequestError:
            pass  # made by an earlier `up`


async def probe(addr: str, token: str | None, ctx: ssl.SSLContext | None = None) -> tuple[bool, int | None, str]:
    try:
        with trio.fail_after(2):
            async with open_connection(addr, token=token, connect_timeout=1, ssl_context=ctx) as conn:
                md = await conn.request(Metadata(topics=[]))
                return True, md.controller, ""
    except (TideMQError, trio.TooSlowError, OSError) as exc:
        return False, None, str(exc) or type(exc).__name__


async def wait_ready(spec: dict, timeout: float) -> None:
    deadline = trio.current_time() + timeout
    with console.status("waiting for the nodes and a controller leader...") as status:
        while True:
            states = [await probe(a, spec.get("token"), client_tls(spec)) for a in spec["peers"].values()]
            up = sum(ok for ok, _, _ in states)
            ctrl = {c for ok, c, _ in states if ok and c is not None}
            status.update(f"{up}/{len(states)} nodes answering, controller: {ctrl or 'none yet'}")
            if up == len(states) and ctrl:
                return
            if trio.current_time() > deadline:
                nodes = "; ".join(
                    f"node {n}: " + (f"answering (controller {c})" if ok else f"not answering ({why})")
                    for n, (ok, c, why) in zip(spec["peers"], states, strict=True)
                )
                raise SystemExit(
                    f"cluster not ready after {timeout}s ({nodes}); see the node.log files under {spec['dir']}"
                )
            await trio.sleep(0.2)


def cmd_up(args) -> None:
    run_dir = Path(args.dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path = run_dir / "cluster.json"
    if spec_path.exists():
        spec = layout(run_dir)
    else:
        spec = {
            "peers": {str(i): f"127.0.0.1:{args.port + i - 1}" for i in range(1, args.nodes + 1)},
            "peer_listen": {
                str(i): f"127.0.0.1:{args.port + PEER_PORT_OFFSET + i - 1}" for i in range(1, args.nodes + 1)
            },
            "fsync": args.fsync,
            "token": args.token or os.environ.get("TIDEMQ_TOKEN"),
            "metrics_base": args.port + 100 - 1,
            "kafka": {str(i): f"127.0.0.1:{args.kafka_port + i - 1}" for i in range(1, args.nodes + 1)}
            if args.kafka_port
            else {},
            "console": f"127.0.0.1:{args.console_port}" if args.console_port else None,
            "dir": str(run_dir),
        }
        if args.secure:
            spec["tls"] = make_certificates(run_dir, list(spec["peers"]))
            # Users only; the token (never handed out) lets this script make the first one.
            spec["token"] = spec["token"] or secrets.token_urlsafe(24)
            spec["admin_password"] = secrets.token_urlsafe(18)
        spec_path.write_text(json.dumps(spec, indent=2))
        spec_path.chmod(0o600)  # (the token, and a secure cluster's admin password)
    if args.secure and not spec.get("tls"):
        raise SystemExit(f"the cluster in {run_dir} was made without --secure; `scripts/cluster down --wipe` first")
    for node in map(int, spec["peers"]):
        if pid_of(run_dir, node) is None:
            pid = start_node(run_dir, spec, node)
            console.print(
                f"started node {node} (pid {pid}) on {spec['peers'][str(node)]} "
                f"(peers: {spec['peer_listen'][str(node)]})"
            )
        else:
            console.print(f"node {node} already running")
    trio.run(wait_ready, spec, args.timeout)
    if spec.get("tls"):
        trio.run(ensure_admin, spec)
    if spec.get("console") and pid_of(run_dir, "console") is None:
        start_console(run_dir, spec)
        try:
            trio.run(wait_console, spec["console"], 30)
        except trio.TooSlowError:
            raise SystemExit(f"the console did not start; see {run_dir / 'console' / 'console.log'}") from None
    console.print(f"[green]cluster up[/] in {run_dir} (scripts/cluster down to stop)")
    print("bootstrap: " + ",".join(spec["peers"].values()), flush=True)
    if spec.get("kafka"):
        print("kafka bootstrap: " + ",".join(spec["kafka"].values()), flush=True)
    if spec.get("console"):
        print(f"console: http://{spec['console']}", flush=True)
    env_file = write_client_env(run_dir, spec)
    print(f"client settings: {env_file} (source it: TLS CA, bootstrap, token)", flush=True)


def cmd_status(args) -> None:
    run_dir = Path(args.dir).resolve()
    spec = layout(run_dir)
    nodes = Table("node", "address", "pid", "state", "controller", "metrics", title="nodes")
    parts = Table("topic", "partition", "leader", "replicas", "in sync", "high watermark", title="partitions")

    async def main():
        for node, addr in spec["peers"].items():
            ok, ctrl, err = await probe(addr, spec.get("token"), client_tls(spec))
            pid = pid_of(run_dir, int(node))
            state = "serving" if ok else ("paused or stuck" if pid else "down")
            if pid and process_state(pid) == "T":
                state = "paused (SIGSTOP)"
            nodes.add_row(
                node,
                addr,
                str(pid or "-"),
                state if ok else f"[red]{state}[/] {err[:40]}",
                str(ctrl or "-"),
                f"http://127.0.0.1:{spec['metrics_base'] + int(node)}/metrics",
            )
        for (topic, _), p in sorted((await leader_views(spec)).items()):
            parts.add_row(
                topic,
                str(p.partition),
                str(p.leader or "[red]none[/]"),
                ",".join(map(str, p.replicas)),
                ",".join(map(str, p.in_sync)) or "?",
                str(p.high_watermark) if p.in_sync else "?",
            )

    trio.run(main)
    console.print(nodes)
    if parts.row_count:
        console.print(parts)


async def leader_views(spec: dict) -> dict[tuple[str, int], PartitionInfo]:
    """Each partition as its leader reports it (only a leader knows its in-sync set and
    high watermark), from every node that answers."""
    answers = {}
    for node, addr in spec["peers"].items():
        try:
            with trio.fail_after(2):
                async with open_connection(
                    addr, token=spec.get("token"), connect_timeout=1, ssl_context=client_tls(spec)
                ) as conn:
                    answers[int(node)] = await conn.request(Metadata())
        except (TideMQError, trio.TooSlowError, OSError):
            continue
    best: dict[tuple[str, int], PartitionInfo] = {}
    for node, md in answers.items():
        for t in md.topics:
            for p in t.partitions:
                key = (t.name, p.partition)
                if key not in best or p.leader == node:
                    best[key] = p
    return best


async def wait_caught_up(spec: dict, node: int, timeout: float) -> None:
    """Until every node answers and `node` is in the in-sync set of every partition it
    holds a replica of (so taking the next node down leaves every partition a quorum)."""
    deadline = trio.current_time() + timeout
    behind: list[str] = []
    with console.status(f"node {node}: catching up...") as status:
        while trio.current_time() < deadline:
            states = [await probe(a, spec.get("token"), client_tls(spec)) for a in spec["peers"].values()]
            views = await leader_views(spec) if all(ok for ok, _, _ in states) else {}
            behind = [
                f"{t}-{p}"
                for (t, p), info in views.items()
                if node in info.replicas and (info.leader is None or node not in info.in_sync)
            ]
            if views and not behind:
                return
            status.update(
                f"node {node}: {len(behind) if views else 'not every node answers;'} partition(s) to catch up"
            )
            await trio.sleep(0.3)
    raise SystemExit(
        f"node {node} did not catch up within {timeout}s ({', '.join(behind[:5]) or 'nodes not answering'})"
    )


def cmd_roll(args) -> None:
    """Restart every node, one at a time: each stops gracefully (its leaderships move
    away first), starts again, and catches up on every partition it holds before the
    next one goes, so the cluster keeps a quorum everywhere and serves throughout."""
    run_dir = Path(args.dir).resolve()
    spec = layout(run_dir)
    for node in map(int, spec["peers"]):
        console.print(f"node {node}: stopping (leadership moves away)")
        stop_node(run_dir, node, timeout=args.timeout)
        pid = start_node(run_dir, spec, node)
        console.print(f"node {node}: started again (pid {pid})")
        trio.run(wait_caught_up, spec, node, args.timeout * 4)
        console.print(f"node {node}: caught up")
    console.print("[green]rolled[/]: every node restarted, every partition in sync")


def admin_of(spec: dict):
    from client import Admin

    if spec.get("tls"):
        return Admin(
            ",".join(spec["peers"].values()),
            tls_ca=spec["tls"]["ca"],
            username=ADMIN,
            password=spec["admin_password"],
        )
    return Admin(",".join(spec["peers"].values()), token=spec.get("token"))


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def _save(run_dir: Path, spec: dict) -> None:
    (run_dir / "cluster.json").write_text(json.dumps(spec, indent=2))


def cmd_add(args) -> None:
    """A new node: started with --join, admitted (it catches up on the metadata and
    votes), then, unless --no-rebalance, replicas spread onto it."""
    run_dir = Path(args.dir).resolve()
    spec = layout(run_dir)
    ids = [int(n) for n in spec["peers"]] + spec.get("removed", [])
    node = max(ids) + 1
    n1 = min(int(n) for n in spec["peers"])  # node N's ports: the first node's + N - 1
    shift = node - n1
    spec["peers"][str(node)] = f"127.0.0.1:{_port(spec['peers'][str(n1)]) + shift}"
    spec["peer_listen"][str(node)] = f"127.0.0.1:{_port(spec['peer_listen'][str(n1)]) + shift}"
    if spec.get("kafka"):
        spec["kafka"][str(node)] = f"127.0.0.1:{_port(spec['kafka'][str(n1)]) + shift}"
    if spec.get("tls"):
        spec["tls"]["nodes"].update(make_certificates(run_dir, [str(node)])["nodes"])
    spec["joined"] = [*spec.get("joined", []), node]
    _save(run_dir, spec)
    pid = start_node(run_dir, spec, node)
    console.print(f"started node {node} (pid {pid}) on {spec['peers'][str(node)]}, joining the cluster")

    async def admit() -> None:
        async with admin_of(spec) as admin:
            with console.status(f"admitting node {node}; it catches up on the cluster's metadata..."):
                await admin.add_node(node, spec["peer_listen"][str(node)], wait=args.timeout)
            console.print(f"node {node} joined and votes in the controller group")
            if args.no_rebalance:
                return
            with console.status("rebalancing...") as status:
                moved = await admin.rebalance(
                    wait=args.timeout * 10, progress=lambda moves: status.update(f"rebalancing: {moves_line(moves)}")
                )
            console.print(f"rebalanced: {len(moved)} partition(s) moved or handed a new preferred leader")

    trio.run(admit)
    write_client_env(run_dir, spec)
    print(f"node {node}: {spec['peers'][str(node)]}", flush=True)


def cmd_remove(args) -> None:
    """Move node N's replicas to the others, remove it from the cluster; it stops."""
    run_dir = Path(args.dir).resolve()
    spec = layout(run_dir)
    if str(args.node) not in spec["peers"]:
        raise SystemExit(f"no node {args.node} in this cluster (nodes: {', '.join(spec['peers'])})")

    async def remove() -> None:
        async with admin_of(spec) as admin:
            with console.status(f"removing node {args.node}...") as status:
                await admin.remove_node(
                    args.node,
                    wait=args.timeout * 10,
                    progress=lambda moves: status.update(f"removing node {args.node}: {moves_line(moves)}"),
                )

    trio.run(remove)
    deadline = time.monotonic() + args.timeout
    while pid_of(run_dir, args.node) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    stop_node(run_dir, args.node, timeout=args.timeout)  # (it stops itself once removed)
    for key in ("peers", "peer_listen", "kafka"):
        spec.get(key, {}).pop(str(args.node), None)
    spec["removed"] = [*spec.get("removed", []), args.node]
    _save(run_dir, spec)
    write_client_env(run_dir, spec)
    console.print(f"[green]removed node {args.node}[/]: its replicas moved to the others and it stopped")


def process_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def cmd_down(args) -> None:
    run_dir = Path(args.dir).resolve()
    if not (run_dir / "cluster.json").exists():
        console.print("no cluster here")
        return
    spec = layout(run_dir)
    if stop_node(run_dir, "console", timeout=args.timeout):
        console.print("stopped the console")
    for node in map(int, spec["peers"]):
        if stop_node(run_dir, node, timeout=args.timeout):
            console.print(f"stopped node {node}")
    if args.wipe:
        shutil.rmtree(run_dir)
        console.print(f"removed {run_dir}")


def cmd_one(args) -> None:
    run_dir = Path(args.dir).resolve()
    spec = layout(run_dir)
    if str(args.node) not in spec["peers"]:
        raise SystemExit(f"no node {args.node} in this cluster (nodes: {', '.join(spec['peers'])})")
    pid = pid_of(run_dir, args.node)
    if args.cmd in ("pause", "resume", "kill") and pid is None:
        raise SystemExit(f"node {args.node} is not running")
    if args.cmd == "kill":
        stop_node(run_dir, args.node, signal.SIGKILL, timeout=5)
    elif args.cmd == "pause":
        os.kill(pid, signal.SIGSTOP)
    elif args.cmd == "resume":
        os.kill(pid, signal.SIGCONT)
    if args.cmd in ("stop", "restart"):
        if pid is not None and process_state(pid) == "T":
            os.kill(pid, signal.SIGCONT)
        stop_node(run_dir, args.node)
    if args.cmd in ("start", "restart"):
        if pid_of(run_dir, args.node) is not None:
            raise SystemExit(f"node {args.node} is already running")
        start_node(run_dir, spec, args.node)
    console.print(f"{args.cmd} node {args.node}: done")


def main() -> None:
    p = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n\n")[0])
    default_dir = str(ROOT / ".tidemq")
    p.add_argument("--dir", default=default_dir, help="run directory: data, logs, pids (default .tidemq/)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS, help="run directory (default .tidemq/)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", parents=[common], help="start the cluster (restarting a stopped one with its data)")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument(
        "--port",
        type=int,
        default=9401,
        help="first node's client port; node N listens on PORT+N-1, its peer listener on PORT+200+N-1",
    )
    up.add_argument(
        "--kafka-port",
        type=int,
        default=9092,
        help="first node's Kafka protocol port; node N on KAFKA_PORT+N-1 (0: no Kafka listener)",
    )
    up.add_argument(
        "--console-port", type=int, default=9480, help="the web console's port on 127.0.0.1 (0: no console)"
    )
    up.add_argument("--fsync", choices=["always", "interval", "never"], default="always")
    up.add_argument("--token", default=None, help="cluster token (default: $TIDEMQ_TOKEN)")
    up.add_argument("--timeout", type=float, default=60)
    up.add_argument(
        "--secure", action="store_true", help="TLS only: a CA and node certificates in the run directory (tls/)"
    )
    sub.add_parser("status", parents=[common], help="nodes, and each partition's leader, replicas and high watermark")
    down = sub.add_parser("down", parents=[common], help="stop every node (SIGTERM, then SIGKILL)")
    down.add_argument("--wipe", action="store_true", help="also delete the run directory and its data")
    down.add_argument("--timeout", type=float, default=15)
    roll = sub.add_parser(
        "roll", parents=[common], help="restart the nodes one at a time, each caught up before the next (no downtime)"
    )
    roll.add_argument("--timeout", type=float, default=15, help="for each stop (and 4x for each catch-up)")
    add = sub.add_parser("add", parents=[common], help="start a new node, admit it, rebalance replicas onto it")
    add.add_argument("--no-rebalance", action="store_true", help="only admit it; move nothing")
    add.add_argument("--timeout", type=float, default=60, help="for it to catch up (10x for the rebalance)")
    remove = sub.add_parser("remove", parents=[common], help="move a node's replicas off, then remove it")
    remove.add_argument("node", type=int)
    remove.add_argument("--timeout", type=float, default=60, help="for it to stop (10x for the moves)")
    for name, text in [
        ("kill", "SIGKILL one node"),
        ("pause", "SIGSTOP one node"),
        ("resume", "SIGCONT one node"),
        ("stop", "SIGTERM one node (graceful)"),
        ("start", "start a stopped or killed node with its data"),
        ("restart", "stop, then start one node"),
    ]:
        sp = sub.add_parser(name, parents=[common], help=text)
        sp.add_argument("node", type=int)
    args = p.parse_args()
    commands = {"up": cmd_up, "status": cmd_status, "down": cmd_down, "roll": cmd_roll, "add": cmd_add}
    commands["remove"] = cmd_remove
    commands.get(args.cmd, cmd_one)(args)


if __name__ == "__main__":
    main()
