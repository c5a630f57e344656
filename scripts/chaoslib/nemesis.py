"""The nemesis: a schedule of faults drawn from a seed, and the code that carries it out.

`make_schedule(seed, duration, faults)` decides everything a seed can decide: which
fault, when (seconds after the workloads start), for how long, on which node or on which
role ("the leader of a data partition", "the controller"), and every parameter (latency,
how many bytes a torn tail loses). The same seed, duration and fault list give the same
schedule, step for step. A role is resolved when its step starts (who leads a partition
then depends on timing no seed controls); the history records the node it resolved to.

Faults run one at a time. Before each, the nemesis waits (bounded) until the cluster has
settled: every node answers and every partition has a leader. Raft stays safe however
faults overlap, so that is all an ordinary fault needs. The torn tail is different: it
destroys the end of one replica's log, which is survivable only while the other two hold
everything committed. Before a torn tail the nemesis also waits until every replica has
been seen caught up, and a torn tail whose cluster did not get there is carried out as a
plain kill (and recorded so).
Every step heals its own fault in a shielded `finally`, so cancelling the nemesis at the
end of the run leaves no node stopped and no link cut.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import trio

from client.errors import TideMQError
from scripts.chaoslib.cluster import ChaosCluster
from scripts.chaoslib.history import History
from scripts.chaoslib.proxy import DOWN, ProxyNet

FAULTS: dict[str, str] = {
    "kill": "SIGKILL a node (leaders preferred); restart it after the fault's duration",
    "pause": "SIGSTOP a node (leaders preferred); SIGCONT after the duration",
    "restart": "graceful restart: SIGTERM, wait for the exit, start again after the duration",
    "torn": "SIGKILL, cut or garble the tail of active segment files, restart: recovery must repair it",
    "partition": "split the cluster: one node from the other two, or two nodes apart with the third bridging",
    "isolate": "cut a node off from its peers and from every client",
    "oneway": "cut one direction: a node's messages to one peer, a peer's to it, or its answers to clients",
    "latency": "delay every byte on a node's links (or on all links) by 20-300 ms",
    "drop": "reset the connections on a node's links (or all links) every 0.5-3 s",
    "membership": "a spare node joins (add-node), then a node (leaders preferred) is removed (remove-node)",
    "move": "move a data partition's replicas (one to a node without it, or a new preferred leader)",
}
NODE_FAULTS = ("kill", "pause", "restart", "torn")

WARMUP_S = 3.0  # workloads run fault-free this long first
GAP_S = (2.0, 6.0)  # quiet time between two faults
TEAR_MAX_BYTES = 512


@dataclass
class Step:
    index: int
    at: float
    kind: str
    duration: float
    target: str  # "leader", "controller" or "n<id>"
    pick: float  # which data partition's leader (or node, if none leads)
    params: dict = field(default_factory=dict)

    def describe(self, node: int | None = None, other: int | None = None) -> str:
        who = f"n{node}" if node is not None else self.target
        if node is not None and self.target in ("leader", "controller"):
            who += f" ({self.target})"
        p = self.params
        kind = self.kind
        peer = f"n{other}" if other is not None else "a peer"
        if kind == "partition":
            what = (
                f"partition {who} from the other nodes"
                if p["mode"] == "minority"
                else f"partition {who} <-/-> {peer} (the third node bridges)"
            )
        elif kind == "oneway":
            what = {
                "peer-out": f"one-way cut {who} -> {peer}",
                "peer-in": f"one-way cut {peer} -> {who}",
                "client-responses": f"one-way cut: {who}'s answers to clients",
            }[p["mode"]]
        elif kind == "latency":
            what = f"latency {p['delay'] * 1000:.0f} ms on " + (
                "all links" if p["scope"] == "all" else f"{who}'s links"
            )
        elif kind == "drop":
            what = f"drop connections every {p['every']:.1f} s on " + (
                "all links" if p["scope"] == "all" else f"{who}'s links"
            )
        elif kind == "torn":
            what = f"kill {who}, tear {len(p['tears'])} segment tail(s), restart"
        else:
            what = f"{kind} {who}"
        return f"{what} for {self.duration:.1f}s"

    def to_json(self) -> dict:
        return asdict(self)


def make_schedule(seed: int, duration: float, faults: list[str], nodes: int = 3) -> list[Step]:
    """Every step of a run, from the seed alone."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    if not faults:
        return []
    rng = random.Random(f"tidemq-chaos-{seed}")
    kinds = [k for k in FAULTS if k in faults]
    steps: list[Step] = []
    at = WARMUP_S
    while at < duration - 1.0:
        kind = rng.choice(kinds)
        target = rng.choices(["leader", "controller", "node"], weights=[5, 1.5, 3.5])[0]
        if target == "node":
            target = f"n{rng.randint(1, nodes)}"
        pick = rng.random()
        params: dict = {}
        if kind == "kill":
            length = rng.uniform(1, 10)
        elif kind == "pause":
            length = rng.uniform(1, 12)
        elif kind == "restart":
            length = rng.uniform(0.5, 3)
        elif kind == "torn":
            length = rng.uniform(1, 4)
            params["tears"] = [
                {
                    "pick": rng.random(),
                    "mode": rng.choice(["cut", "garble"]),
                    "bytes": rng.randint(1, TEAR_MAX_BYTES),
                    "salt": rng.getrandbits(32),
                }
                for _ in range(rng.randint(1, 3))
            ]
        elif kind == "partition":
            length = rng.uniform(3, 15)
            params["mode"] = rng.choice(["minority", "bridge"])
            params["other"] = round(rng.random(), 6)
        elif kind == "isolate":
            length = rng.uniform(3, 12)
        elif kind == "oneway":
            length = rng.uniform(3, 12)
            params["mode"] = rng.choice(["peer-out", "peer-in", "client-responses"])
            params["other"] = round(rng.random(), 6)
        elif kind == "latency":
            length = rng.uniform(5, 15)
            params["scope"] = rng.choice(["node", "all"])
            params["delay"] = round(rng.uniform(0.02, 0.3), 3)
        elif kind == "membership":
            length = rng.uniform(8, 16)  # (at most this long for the moves; they go on after)
        elif kind == "move":
            length = rng.uniform(10, 20)
            params["replace"] = round(rng.random(), 6)
            params["throttle"] = rng.choice([0, 0, 4_000_000])
        else:  # drop
            length = rng.uniform(3, 10)
            params["scope"] = rng.choice(["node", "all"])
            params["every"] = round(rng.uniform(0.5, 3), 2)
        length = round(min(length, duration - at), 2)
        steps.append(Step(len(steps) + 1, round(at, 2), kind, length, target, round(pick, 6), params))
        at += length + rng.uniform(*GAP_S)
    return steps


def tear_tails(data_dir: Path, tears: list[dict]) -> list[dict]:
    """Cut or garble the last bytes of active segment files under a stopped node's data
    directory (topic partitions only: the controller's log is left alone, see
    docs/chaos.md). Returns what was done, for the history."""
    dirs = sorted(d for d in data_dir.iterdir() if d.is_dir() and not d.name.startswith("__controller"))
    done: list[dict] = []
    for tear in tears:
        if not dirs:
            break
        d = dirs[min(int(tear["pick"] * len(dirs)), len(dirs) - 1)]
        segments = sorted((p for p in d.glob("*.log") if p.stem.isdigit()), key=lambda p: int(p.stem))
        if not segments or segments[-1].stat().st_size == 0:
            done.append({"dir": d.name, "skipped": "empty active segment"})
            continue
        active = segments[-1]
        size = _data_end(active)  # (a killed node's active segment runs on in allocated zeros)
        if size == 0:
            done.append({"dir": d.name, "skipped": "empty active segment"})
            continue
        n = min(tear["bytes"], size)
        if tear["mode"] == "cut":
            os.truncate(active, size - n)
        else:
            rng = random.Random(tear["salt"])
            positions = sorted(rng.sample(range(size - n, size), min(n, 8)))
            with open(active, "r+b") as f:
                for pos in positions:
                    f.seek(pos)
                    old = f.read(1)[0]
                    f.seek(pos)
                    f.write(bytes([old ^ rng.randint(1, 255)]))
        done.append({"dir": d.name, "segment": active.name, "mode": tear["mode"], "bytes": n, "size": size})
    return done


def _data_end(path: Path) -> int:
    """Where a segment file's batches end, walking their length fields: a killed node's
    active segment runs on in space allocated ahead (zeros), which the walk stops at,
    as it does at a length that runs past the file."""
    with open(path, "rb") as f:
        size, pos = f.seek(0, os.SEEK_END), 0
        while pos + 12 <= size:
            f.seek(pos + 8)
            length = int.from_bytes(f.read(4), "big", signed=True)
            if length <= 0 or pos + 12 + length > size:
                break
            pos += 12 + length
    return pos


@contextmanager
def _noted(detail: dict) -> Iterator[None]:
    """An admin request the cluster refused (or could not answer) under the other faults
    is part of the history, not the end of the run."""
    try:
        yield
    except (TideMQError, OSError) as exc:
        detail["error"] = getattr(exc, "message", str(exc))[:200]


class Nemesis:
    def __init__(
        self,
        cluster: ChaosCluster,
        net: ProxyNet,
        history: History,
        say: Callable[[str], None],
        settle_timeout: float = 30.0,
    ) -> None:
        self.cluster = cluster
        self.net = net
        self.history = history
        self.say = say
        self.settle_timeout = settle_timeout

    async def run(self, schedule: list[Step]) -> None:
        """Carry out the schedule; cancel it to stop (every step heals on the way out)."""
        for step in schedule:
            await trio.sleep(max(0.0, step.at - self.history.now()))
            caught_up = step.kind == "torn"
            began = trio.current_time()
            try:
                settled, seconds, missing = await self.cluster.settle(self.settle_timeout, caught_up=caught_up)
            except trio.Cancelled:  # the run's time is up while waiting: say what the cluster lacked
                self.history.record(
                    "settle",
                    step=step.index,
                    ok=False,
                    caught_up=caught_up,
                    seconds=trio.current_time() - began,
                    missing=self.cluster.unsettled[:10],
                    cancelled=True,
                )
                raise
            self.history.record(
                "settle",
                step=step.index,
                ok=settled,
                caught_up=caught_up,
                seconds=seconds,
                missing=missing[:10],
                missing_at_start=self.cluster.unsettled_first[:10],
            )
            if not settled:
                self.say(
                    f"[yellow]cluster not settled after {seconds:.0f}s before step #{step.index}: "
                    f"{', '.join(missing[:5])}[/]"
                )
            await self.execute(step, settled)

    async def resolve(self, step: Step) -> int:
        nodes = self.cluster.nodes
        if step.target.startswith("n"):
            node = int(step.target[1:])
            return node if node in nodes else nodes[min(int(step.pick * len(nodes)), len(nodes) - 1)]
        if step.target == "controller":
            ctrl = await self.cluster.controller()
            if ctrl is not None:
                return ctrl
        else:
            parts = await self.cluster.partitions()
            data = sorted(k for k, p in parts.items() if not p["internal"] and p["leader"] is not None)
            if data:
                return parts[data[min(int(step.pick * len(data)), len(data) - 1)]]["leader"]
        return nodes[min(int(step.pick * len(nodes)), len(nodes) - 1)]

    def _other(self, step: Step, node: int) -> int:
        others = [n for n in self.cluster.nodes if n != node]
        return others[min(int(step.params.get("other", 0.0) * len(others)), len(others) - 1)]

    async def execute(self, step: Step, settled: bool = True) -> None:
        node = await self.resolve(step)
        other = self._other(step, node)
        kind = step.kind
        if kind == "torn" and not settled:
            kind = "kill"  # see the module docstring: tearing an unsettled cluster may lose committed data
        desc = step.describe(node, other) + ("  [not settled: a kill, no tear]" if kind != step.kind else "")
        self.say(f"[{self.history.now():7.2f}s] #{step.index} {desc}")
        self.history.record(
            "fault",
            step=step.index,
            kind=step.kind,
            phase="start",
            nodes=[node],
            other=other,
            detail=desc,
            params=step.params,
            carried_out_as=kind,
        )
        self.history.flush()
        detail: dict = {}
        try:
            await getattr(self, "_" + kind)(step, node, other, detail)
        finally:
            with trio.CancelScope(shield=True):
                await self.heal(node)
                self.history.record("fault", step=step.index, kind=step.kind, phase="end", nodes=[node], **detail)
                self.say(
                    f"[{self.history.now():7.2f}s] #{step.index} healed"
                    + (f" ({', '.join(f'{k}={v}' for k, v in detail.items())})" if detail else "")
                )

    async def heal(self, node: int | None = None) -> None:
        """Undo every fault: links healed, paused nodes resumed, stopped nodes started."""
        self.net.heal()
        for n in self.cluster.nodes:
            if n in self.cluster.paused:
                self.cluster.signal(n, signal.SIGCONT)
            if not self.cluster.alive(n):
                self.cluster.start(n)
                self.history.record("node", node=n, event="start")

    # -- the faults: start, hold for the step's duration (the heal is `execute`'s) ---------

    async def _kill(self, step: Step, node: int, other: int, detail: dict) -> None:
        await self.cluster.kill(node)
        await trio.sleep(step.duration)

    async def _pause(self, step: Step, node: int, other: int, detail: dict) -> None:
        self.cluster.signal(node, signal.SIGSTOP)
        await trio.sleep(step.duration)

    async def _restart(self, step: Step, node: int, other: int, detail: dict) -> None:
        code, by_itself = await self.cluster.stop(node)
        self.history.record("node_stop", node=node, code=code, by_itself=by_itself, step=step.index)
        detail["exit_code"] = code
        await trio.sleep(step.duration)

    async def _torn(self, step: Step, node: int, other: int, detail: dict) -> None:
        await self.cluster.kill(node)
        torn = tear_tails(self.cluster.data_dir(node), step.params["tears"])
        self.history.record("torn", step=step.index, node=node, tears=torn)
        detail["torn"] = ", ".join(f"{t['dir']} {t.get('mode', '')} {t.get('bytes', t.get('skipped'))}" for t in torn)
        await trio.sleep(step.duration)

    async def _partition(self, step: Step, node: int, other: int, detail: dict) -> None:
        if step.params["mode"] == "minority":
            self.net.cut(self.net.touching(node, clients=False))
        else:
            self.net.cut([self.net.peer[(node, other)], self.net.peer[(other, node)]])
        await trio.sleep(step.duration)

    async def _isolate(self, step: Step, node: int, other: int, detail: dict) -> None:
        self.net.cut(self.net.touching(node, clients=True))
        await trio.sleep(step.duration)

    async def _oneway(self, step: Step, node: int, other: int, detail: dict) -> None:
        mode = step.params["mode"]
        if mode == "peer-out":
            self.net.peer[(node, other)].cut()
        elif mode == "peer-in":
            self.net.peer[(other, node)].cut()
        else:
            self.net.cut(self.net.client_links(node), DOWN)
        await trio.sleep(step.duration)

    def _scope(self, step: Step, node: int):
        return self.net.links if step.params["scope"] == "all" else self.net.touching(node)

    async def _latency(self, step: Step, node: int, other: int, detail: dict) -> None:
        for link in self._scope(step, node):
            link.set_delay(step.params["delay"])
        await trio.sleep(step.duration)

    async def _membership(self, step: Step, node: int, other: int, detail: dict) -> None:
        """The cluster grows by a spare node and loses `node`: its replicas move to the
        others (the new one first: it hosts least), then it is removed and stops."""
        joining = await self.cluster.join_spare()
        if joining is None:
            detail["skipped"] = "no spare node left"
            await trio.sleep(step.duration)
            return
        new, addr = joining
        self.history.record("node", node=new, event="start", joined=True)
        with trio.move_on_after(step.duration) as bounded, _noted(detail):
            async with self.cluster.admin() as admin:
                await admin.add_node(new, addr, wait=step.duration)
                detail["joined"] = new
                self.history.record("membership", step=step.index, node=new, event="joined")
                await admin.remove_node(node, wait=None)
                self.cluster.leaving(node)
                detail["removing"] = node
                self.history.record("membership", step=step.index, node=node, event="removing")
                code = await self.cluster.wait_exit(node, step.duration)
                detail["removed"] = code is not None
        if bounded.cancelled_caught:
            detail["unfinished"] = True  # (the moves go on; the node stops when they are done)

    async def _move(self, step: Step, node: int, other: int, detail: dict) -> None:
        """Move a data partition: one replica to a node that has none (or, where every
        node has one, the preferred leader to another replica)."""
        parts = await self.cluster.partitions()
        data = sorted(k for k, p in parts.items() if not p["internal"] and p["leader"] is not None)
        if not data:
            detail["skipped"] = "no data partition with a leader"
            await trio.sleep(step.duration)
            return
        topic, p = data[min(int(step.pick * len(data)), len(data) - 1)]
        replicas = parts[(topic, p)]["replicas"]
        free = [n for n in self.cluster.nodes if n not in replicas]
        i = min(int(step.params["replace"] * len(replicas)), len(replicas) - 1)
        if free:
            target = [*replicas[:i], free[i % len(free)], *replicas[i + 1 :]]
        else:
            target = [replicas[i], *(r for r in replicas if r != replicas[i])]
        detail.update(partition=f"{topic}-{p}", replicas=replicas, target=target)
        with trio.move_on_after(step.duration) as bounded, _noted(detail):
            async with self.cluster.admin() as admin:
                await admin.reassign(topic, p, target, throttle=step.params["throttle"], wait=step.duration)
        detail["done"] = not bounded.cancelled_caught

    async def _drop(self, step: Step, node: int, other: int, detail: dict) -> None:
        dropped = 0
        with trio.move_on_after(step.duration):
            while True:
                await trio.sleep(step.params["every"])
                dropped += sum(link.drop_connections() for link in self._scope(step, node))
        detail["connections_reset"] = dropped
