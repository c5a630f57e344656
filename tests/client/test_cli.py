"""The `tidemq` command against three live node processes with a cluster token.

Most commands run in-process through `main([...])` (stdout and stderr captured); the
console script itself runs as a subprocess where a real pipe or a real exit matters.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import trio

from client.cli import main
from client.cluster import ClusterClient
from client.group import GroupMember, commit_offsets, describe_group, fetch_offsets
from client.partitioner import partition_for_key
from client.producer import Producer
from client.protocol import (
    TopicPartition,
)
from node.peerprotocol import PendTxnOffsets
from tests.cluster import free_ports, running_cluster

pytestmark = pytest.mark.timeout(60)

TOKEN = "cli-token"
TIDEMQ = Path(sys.executable).with_name("tidemq")


class Result(NamedTuple):
    code: int
    out: str
    err: str


def rows(text: str, cells: int) -> list[list[str]]:
    """The body rows of the rich tables in `text` that have `cells` columns."""
    found = []
    for line in text.splitlines():
        if line.startswith("│"):
            row = [c.strip() for c in line.strip().strip("│").split("│")]
            if len(row) == cells:
                found.append(row)
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("cli"), n=3, fsync="never", token=TOKEN) as c:
        yield c


@pytest.fixture
def tidemq(cluster, capsys, monkeypatch):
    """Run `tidemq ARGS...` in-process; the cluster comes from the environment, as a user's would."""
    monkeypatch.setenv("TIDEMQ_BOOTSTRAP", cluster.bootstrap)
    monkeypatch.setenv("TIDEMQ_TOKEN", TOKEN)

    def run(*argv: str, stdin: bytes = b"") -> Result:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = main(list(argv))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def test_topic_create_list_describe_delete(tidemq):
    r = tidemq("topic", "create", "life", "--partitions", "3", "--replication", "3", "--config", "retention.ms=60000")
    assert r.code == 0 and "created topic life: 3 partition(s), replication 3" in r.out
    listed = tidemq("topic", "list")
    assert ["life", "3", "3", "retention.ms=60000"] in rows(listed.out, 4)
    described = tidemq("topic", "describe", "life")
    parts = rows(described.out, 7)
    assert [p[1] for p in parts] == ["0", "1", "2"]
    for topic, _, leader, replicas, in_sync, hw, log_start in parts:
        assert topic == "life" and leader in replicas.split(",") and len(replicas.split(",")) == 3
        assert leader in in_sync.split(",") and int(hw) >= 0 and log_start == "0"
    again = tidemq("topic", "create", "life")
    assert (
        again.code == 1
        and again.err == "tidemq: error: topic 'life' already exists (see `tidemq topic describe life`)\n"
    )
    altered = tidemq("topic", "alter", "life", "--config", "retention.bytes=1048576", "--delete-config", "retention.ms")
    assert altered.code == 0 and altered.out == "altered topic life: retention.bytes=1048576\n"
    bad = tidemq("topic", "alter", "life", "--config", "retention.ms=0")
    assert bad.code == 1 and "retention.ms='0' must be an integer in 1.." in bad.err
    assert tidemq("topic", "alter", "life").code != 0
    grown = tidemq("topic", "alter", "life", "--partitions", "5")
    assert grown.code == 0 and grown.out.startswith("life: 3 -> 5 partitions"), grown.err
    assert [p[1] for p in rows(tidemq("topic", "describe", "life").out, 7)] == ["0", "1", "2", "3", "4"]
    shrink = tidemq("topic", "alter", "life", "--partitions", "2")
    assert shrink.code == 1 and "never shrink" in shrink.err
    assert tidemq("topic", "delete", "life").out == "deleted topic life\n"
    gone = tidemq("topic", "describe", "life")
    assert gone.code == 1 and "does not exist: create it with `tidemq topic create life`" in gone.err
    assert "life" not in tidemq("topic", "list").out


def test_piped_lines_come_back_in_order(tidemq, cluster):
    assert tidemq("topic", "create", "lines").code == 0
    lines = [f"line {i}" for i in range(300)]
    env = {"PATH": "", "TIDEMQ_BOOTSTRAP": cluster.bootstrap, "TIDEMQ_TOKEN": TOKEN}
    produced = subprocess.run(
        [str(TIDEMQ), "produce", "lines"],
        input="\n".join(lines) + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert produced.returncode == 0, produced.stderr
    assert "sent 300 message(s) to lines, 1 partition(s)" in produced.stdout
    [[partition, count, first, last]] = rows(produced.stdout, 4)
    assert (partition, count, int(last) - int(first)) == ("0", "300", 299)
    first_five = tidemq("consume", "lines", "--from-beginning", "--max", "5")
    assert first_five.code == 0 and first_five.out.splitlines() == lines[:5]
    everything = tidemq("consume", "lines", "--from-beginning", "--timeout", "1")
    assert everything.out.splitlines() == lines
    assert everything.err == "consumed 300 message(s) from lines\n"


def test_keys_split_from_lines_and_json_output(tidemq):
    assert tidemq("topic", "create", "keyed", "--partitions", "4").code == 0
    r = tidemq("produce", "keyed", "--key-separator", ":", stdin=b"k1:first\nk2:x:y\nk1:second\n")
    assert r.code == 0 and "sent 3 message(s) to keyed" in r.out
    out = tidemq("consume", "keyed", "--from-beginning", "--max", "3", "--format", "json").out
    messages = [json.loads(line) for line in out.splitlines()]
    assert sorted((m["key"], m["value"]) for m in messages) == [("k1", "first"), ("k1", "second"), ("k2", "x:y")]
    for m in messages:
        assert m["topic"] == "keyed" and m["partition"] == partition_for_key(m["key"].encode(), 4)
        assert m["headers"] == [] and m["timestamp"] > 0 and m["offset"] >= 0
    k1 = [m for m in messages if m["key"] == "k1"]
    assert [m["value"] for m in k1] == ["first", "second"] and k1[0]["offset"] < k1[1]["offset"]

    bad = tidemq("produce", "keyed", "--key-separator", ":", stdin=b"k3:fine\nno separator here\nk3:never\n")
    assert bad.code == 1 and "sent 1 message(s)" in bad.out
    assert bad.err == (
        "tidemq: error: line 2 has no key separator ':': write KEY:VALUE on every line, or drop --key-separator\n"
    )


def test_one_key_for_every_line_and_binary_values(tidemq):
    assert tidemq("topic", "create", "onekey", "--partitions", "3").code == 0
    assert tidemq("produce", "onekey", "--key", "user-7", stdin=b"a\n\xff\xfe\nc\n").code == 0
    out = tidemq("consume", "onekey", "--from-beginning", "--max", "3", "--format", "json").out
    messages = [json.loads(line) for line in out.splitlines()]
    assert {m["partition"] for m in messages} == {partition_for_key(b"user-7", 3)}
    assert [m["value"] for m in messages] == ["a", {"base64": "//4="}, "c"]
    text = tidemq("consume", "onekey", "--from-beginning", "--max", "3").out
    assert text.splitlines() == ["a", repr(b"\xff\xfe"), "c"]


def test_consume_with_a_group_commits_what_it_printed(tidemq):
    assert tidemq("topic", "create", "grp", "--partitions", "2").code == 0
    lines = [f"m{i}" for i in range(10)]
    assert {partition_for_key(line.encode(), 2) for line in lines} == {0, 1}  # both partitions end with data
    keyed = "".join(f"{line}={line}\n" for line in lines).encode()
    assert tidemq("produce", "grp", "--key-separator", "=", stdin=keyed).code == 0
    first = tidemq("consume", "grp", "--group", "readers", "--from-beginning", "--max", "4")
    assert first.code == 0 and first.err == "consumed 4 message(s) from grp, committed for group readers\n"
    rest = tidemq("consume", "grp", "--group", "readers", "--from-beginning", "--timeout", "3")
    assert sorted(first.out.splitlines() + rest.out.splitlines()) == sorted(lines)
    lag = rows(tidemq("group", "describe", "readers").out, 7)
    assert [(r[0], r[1], r[5]) for r in lag] == [("grp", "0", "0"), ("grp", "1", "0")]


async def test_group_list_and_describe_show_members_offsets_and_lag(tidemq, cluster):
    cli = trio.to_thread.run_sync
    assert (await cli(tidemq, "topic", "create", "gt")).code == 0
    async with Producer(cluster.bootstrap, token=TOKEN) as producer:
        for _ in range(5):
            last = await producer.send("gt", b"x")
    async with ClusterClient(cluster.bootstrap, token=TOKEN) as client:
        await commit_offsets(client, "audit", {("gt", 0): last.offset - 2})
        # a transaction about to commit audit's offset of gt-0 (as its coordinator records it)
        async with cluster.peer_client() as node:  # as the transaction coordinator, a node, sends it
            await node.coordinator_request("audit", PendTxnOffsets("audit", "billing-7", 1, [TopicPartition("gt", 0)]))
        async with GroupMember(client, "live", ["gt"], client_id="member-a") as member:
            with trio.fail_after(20):  # until the coordinator has heard that the member holds gt-0
                while not any(m.assignment for m in (await describe_group(client, "live")).members):
                    await trio.sleep(0.05)
            listed = await cli(tidemq, "group", "list")
            live = await cli(tidemq, "group", "describe", "live")
    assert {"audit", "live"} <= {row[0] for row in rows(listed.out, 5)}
    assert "group live:" in live.out and "1 member(s)" in live.out
    [[member_id, client_id, _, topics, assigned]] = rows(live.out, 5)
    assert (member_id, client_id, topics, assigned) == (member.member_id, "member-a", "gt", "gt-0")
    assert ["gt", "0", "member-a", "-", str(last.offset + 1), "-", "-"] in rows(live.out, 7)
    audit = await cli(tidemq, "group", "describe", "audit")
    assert "0 member(s)" in audit.out
    assert rows(audit.out, 7) == [["gt", "0", "-", str(last.offset - 2), str(last.offset + 1), "3", "billing-7"]]


async def test_group_delete_removes_an_idle_group_and_refuses_a_live_one(tidemq, cluster):
    cli = trio.to_thread.run_sync
    assert (await cli(tidemq, "topic", "create", "gd")).code == 0
    async with ClusterClient(cluster.bootstrap, token=TOKEN) as client:
        await commit_offsets(client, "stale", {("gd", 0): 1})
        async with GroupMember(client, "alive", ["gd"]):
            refused = await cli(tidemq, "group", "delete", "alive")
    assert refused.code == 1 and "has members" in refused.err and "tidemq group describe alive" in refused.err
    deleted = await cli(tidemq, "group", "delete", "stale")
    assert deleted.code == 0 and deleted.out == "deleted group stale\n"
    again = await cli(tidemq, "group", "delete", "stale")
    assert again.code == 1 and "group 'stale' does not exist" in again.err
    assert "stale" not in {row[0] for row in rows((await cli(tidemq, "group", "list")).out, 5)}


def test_users_added_listed_changed_deleted_and_logged_in_as(tidemq):
    assert tidemq("user", "list").out.startswith("no users")
    added = tidemq("user", "add", "bob", "--password", "b0b-pw")
    assert added.code == 0 and added.out == "added user bob\n"
    again = tidemq("user", "add", "bob", "--password", "x")
    assert again.code == 1 and "exists" in again.err
    assert rows(tidemq("user", "list").out, 2) == [["bob", "SCRAM-SHA-256"]]
    # Logged in as bob (the token from the environment is not needed then).
    assert tidemq("--user", "bob", "--password", "b0b-pw", "topic", "list").code == 0
    wrong = tidemq("topic", "list", "--user", "bob", "--password", "nope")
    assert wrong.code == 1 and "wrong user or password" in wrong.err
    assert tidemq("user", "passwd", "bob", "--password", "new-pw").out == "changed the password of user bob\n"
    assert tidemq("topic", "list", "--user", "bob", "--password", "new-pw").code == 0
    missing = tidemq("user", "passwd", "nobody", "--password", "x")
    assert missing.code == 1 and "no user 'nobody'" in missing.err
    assert tidemq("user", "delete", "bob").out == "deleted user bob\n"
    assert tidemq("topic", "list", "--user", "bob", "--password", "new-pw").code == 1


def test_cluster_status_names_every_node_and_the_controller(tidemq, cluster):
    assert tidemq("topic", "create", "st", "--replication", "3").code == 0
    r = tidemq("cluster", "status")
    nodes = rows(r.out, 6)
    assert [n[:4] for n in nodes] == [[str(i), cluster.peers[i], "yes", "yes"] for i in (1, 2, 3)]
    assert [n[5] for n in nodes] == ["voter"] * 3  # (each votes in the controller group)
    [controller] = [n[0] for n in nodes if n[4] == "controller"]
    assert f"controller: node {controller}" in r.out
    [st] = [p for p in rows(r.out, 7) if p[0] == "st"]
    assert st[2] in st[3].split(",") and st[4] != "?"
    assert not [p for p in rows(r.out, 7) if p[0].startswith("__")]
    with_internal = tidemq("cluster", "status", "--internal")
    assert {"st", "__consumer_offsets"} <= {p[0] for p in rows(with_internal.out, 7)}


def test_unreachable_cluster_is_one_line_of_advice():
    (port,) = free_ports(1)
    r = subprocess.run(
        [str(TIDEMQ), "--bootstrap", f"127.0.0.1:{port}", "topic", "list"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (
        f"tidemq: error: cannot reach 127.0.0.1:{port}: is the cluster up? run scripts/cluster up "
        "(or point --bootstrap / TIDEMQ_BOOTSTRAP at a node)\n"
    )


def test_wrong_token_and_bad_usage(tidemq):
    r = tidemq("topic", "list", "--token", "not-the-token")
    assert r.code == 1
    assert (
        r.err
        == "tidemq: error: the cluster refused our token: pass --token or set TIDEMQ_TOKEN to the cluster's token\n"
    )
    with pytest.raises(SystemExit) as usage:
        tidemq("topic", "create", "x", "--config", "no-equals-sign")
    assert usage.value.code == 2


def test_produce_with_delay_arrives_no_earlier(tidemq):
    import time

    assert tidemq("topic", "create", "later").code == 0
    start = time.time()
    r = tidemq("produce", "later", "--delay", "1500ms", stdin=b"soon\n")
    assert r.code == 0 and "sent 1 message(s)" in r.out
    got = tidemq("consume", "later", "--from-beginning", "--max", "1", "--timeout", "10")
    assert got.out.splitlines() == ["soon"] and time.time() - start >= 1.5
    with pytest.raises(SystemExit) as exit_:
        tidemq("produce", "later", "--delay", "soonish", stdin=b"x\n")
    assert exit_.value.code == 2


def test_dlq_list_and_replay(tidemq, cluster):
    from client.conventions import (
        H_ATTEMPT,
        H_DLQ_ERROR,
        H_DLQ_TIME,
        H_ORIGIN_OFFSET,
        H_ORIGIN_PARTITION,
        H_ORIGIN_TOPIC,
    )

    assert tidemq("topic", "create", "work").code == 0
    assert tidemq("topic", "create", "crew.dlq").code == 0

    async def dead_letter() -> None:
        async with Producer(cluster.bootstrap, token=TOKEN) as producer:
            await producer.send(
                "crew.dlq",
                b"poison",
                headers=[
                    (H_ORIGIN_TOPIC, b"work"),
                    (H_ORIGIN_PARTITION, b"0"),
                    (H_ORIGIN_OFFSET, b"7"),
                    (H_ATTEMPT, b"4"),
                    (H_DLQ_ERROR, b"ValueError: bad input"),
                    (H_DLQ_TIME, b"1700000000000"),
                ],
            )

    trio.run(dead_letter)
    listed = tidemq("dlq", "list", "crew", "--idle", "0.5")
    assert listed.code == 0
    [[topic, partition, offset, attempts, _, error, value, place, decided]] = rows(listed.out, 9)
    assert (topic, partition, offset, attempts, value, decided) == ("work", "0", "7", "4", "poison", "-")
    assert error.startswith("ValueError: bad input")
    assert (
        "replayed 1 dead letter(s) of group crew to their topics: work"
        in tidemq("dlq", "replay", "crew", "--idle", "0.5").out
    )
    assert "replayed 0 dead letter(s)" in tidemq("dlq", "replay", "crew", "--idle", "0.5").out
    back = tidemq("consume", "work", "--from-beginning", "--max", "1", "--timeout", "10")
    assert back.out.splitlines() == ["poison"]

    # One dead letter at a time: discarded (recorded, with why), then never replayed.
    trio.run(dead_letter)
    listed = tidemq("dlq", "list", "crew", "--idle", "0.5")
    dlq_partition, dlq_offset = rows(listed.out, 9)[-1][7].split("@")
    discarded = tidemq(
        "dlq", "discard", "crew", "--partition", dlq_partition, "--offset", dlq_offset, "--reason", "bad data"
    )
    assert discarded.code == 0 and f"discarded dead letter crew.dlq-{dlq_partition}@{dlq_offset}" in discarded.out
    again = tidemq("dlq", "discard", "crew", "--partition", dlq_partition, "--offset", dlq_offset)
    assert again.code == 1 and "was discarded already" in again.err
    assert rows(tidemq("dlq", "list", "crew", "--idle", "0.5").out, 9)[-1][8] == "discarded: bad data"
    assert "replayed 0 dead letter(s)" in tidemq("dlq", "replay", "crew", "--idle", "0.5").out


async def test_txn_list_and_describe_follow_a_transaction(tidemq, cluster):
    from client.protocol import TxnOffsetCommit

    cli = trio.to_thread.run_sync
    assert (await cli(tidemq, "topic", "create", "tx", "--partitions", "2")).code == 0
    with trio.fail_after(30):
        async with Producer(cluster.bootstrap, token=TOKEN, transactional_id="cli-open") as producer:
            await producer.begin_transaction()
            await producer.send("tx", b"a", partition=0)
            await producer.send("tx", b"b", partition=1)
            await producer.cluster.transaction_coordinator_request(
                "cli-open",
                TxnOffsetCommit("cli-open", producer.producer_id, producer.producer_epoch, "cli-g", [("tx", 0, 1)]),
            )
            listed = await cli(tidemq, "txn", "list")
            described = await cli(tidemq, "txn", "describe", "cli-open")
            await producer.commit_transaction()
        done = await cli(tidemq, "txn", "describe", "cli-open", "--format", "json")
        as_json = await cli(tidemq, "txn", "list", "--format", "json")
    [row] = [r for r in rows(listed.out, 9) if r[0] == "cli-open"]
    tid, state, pid, epoch, partitions, groups, age, changed, coordinator = row
    assert (tid, state, pid, epoch, partitions, groups) == (
        "cli-open",
        "ongoing",
        str(producer.producer_id),
        str(producer.producer_epoch),
        "2",
        "cli-g",
    )
    assert age.endswith("s") and changed.endswith(" ago") and coordinator in {"1", "2", "3"}
    assert described.code == 0
    assert described.out.startswith(
        f"transaction cli-open: ongoing, producer {producer.producer_id} epoch "
        f"{producer.producer_epoch}, coordinator node {coordinator}\n"
    )
    assert "open for " in described.out and "groups: cli-g" in described.out
    assert rows(described.out, 2) == [["tx", "0"], ["tx", "1"]]
    info = json.loads(done.out)
    assert info["state"] == "complete_commit" and info["age_ms"] is None and info["coordinator"] == int(coordinator)
    assert info["updated_ms"] >= info["timeout_ms"] > 0 and info["partitions"] == []
    assert "cli-open" in {t["transactional_id"] for t in json.loads(as_json.out)}


def test_txn_describe_of_an_unknown_id_is_one_line(tidemq):
    r = tidemq("txn", "describe", "nobody-used-this")
    assert r.code == 1 and r.out == ""
    assert r.err == (
        "tidemq: error: transactional id 'nobody-used-this' is unknown: no producer has used it "
        "(see `tidemq txn list`)\n"
    )


async def test_half_list_shows_pending_and_decided_halves(tidemq, cluster):
    cli = trio.to_thread.run_sync
    assert (await cli(tidemq, "topic", "create", "half-cli", "--partitions", "2")).code == 0
    with trio.fail_after(40):
        async with Producer(cluster.bootstrap, token=TOKEN, producer_group="cli-svc", check_after=60) as producer:
            waiting = await producer.send_half("half-cli", b"w", key=b"wait")
            done = await producer.send_half("half-cli", b"d", key=b"done")
            dropped = await producer.send_half("half-cli", b"x", key=b"drop")
            landed = await done.commit()
            await dropped.abort("the order was cancelled")
            pending = await cli(tidemq, "half", "list", "--group", "cli-svc")
            everything = await cli(tidemq, "half", "list", "--group", "cli-svc", "--resolved", "--format", "json")
            await waiting.abort()
    assert pending.code == 0
    [row] = rows(pending.out, 8)
    assert row[:6] == [waiting.id, "cli-svc", "half-cli", "wait", "pending", "0"]
    assert row[7].startswith("next check in")
    by_id = {h["id"]: h for h in json.loads(everything.out)}
    assert by_id[done.id]["state"] == "committed" and by_id[done.id]["landed"] == [landed.partition, landed.offset]
    assert by_id[dropped.id]["state"] == "aborted" and by_id[dropped.id]["reason"] == "the order was cancelled"
    assert by_id[waiting.id]["state"] == "pending" and by_id[waiting.id]["key"] == "wait"


def test_trace_by_place_and_by_key(tidemq, cluster):
    assert tidemq("topic", "create", "traced", "--partitions", "2").code == 0
    assert tidemq("produce", "traced", "--key", "order-7", stdin=b"shipped\n").code == 0
    consumed = tidemq("consume", "traced", "--group", "shipping", "--from-beginning", "--max", "1", "--timeout", "10")
    assert consumed.out.splitlines() == ["shipped"]
    by_key = tidemq("trace", "traced", "--key", "order-7")
    assert by_key.code == 0, by_key.err
    assert "key 'order-7'  value 'shipped'" in by_key.out
    partition = partition_for_key(b"order-7", 2)
    offset = int(by_key.out.split(f"traced-{partition}@", 1)[1].split()[0])
    assert ["shipping", "done", f"committed (the group is at offset {offset + 1})"] in rows(by_key.out, 3)
    by_place = tidemq("trace", "traced", str(partition), str(offset))
    assert by_place.code == 0 and by_place.out == by_key.out
    nothing = tidemq("trace", "traced", str(partition), "99")
    assert nothing.code == 1 and "there is no message at traced-" in nothing.err
    assert tidemq("trace", "traced").code == 1  # neither a place nor a key


async def test_group_reset_offsets_each_way_and_not_under_a_live_group(tidemq, cluster):
    cli = trio.to_thread.run_sync
    assert (await cli(tidemq, "topic", "create", "rewind")).code == 0
    async with Producer(cluster.bootstrap, token=TOKEN) as producer:
        sent = [await producer.send("rewind", b"m%d" % i) for i in range(5)]
    end = sent[-1].offset + 1
    async with ClusterClient(cluster.bootstrap, token=TOKEN) as client:
        await commit_offsets(client, "rew", {("rewind", 0): end})

        async def reset(*how: str) -> list[list[str]]:
            r = await cli(tidemq, "group", "reset-offsets", "rew", "--topic", "rewind", *how)
            assert r.code == 0, r.err
            return rows(r.out, 4)

        dry = await cli(tidemq, "group", "reset-offsets", "rew", "--topic", "rewind", "--to-earliest", "--dry-run")
        assert rows(dry.out, 4) == [["rewind", "0", str(end), "0"]] and "dry run: nothing changed" in dry.out
        assert (await fetch_offsets(client, "rew", [("rewind", 0)]))[("rewind", 0)] == end
        assert await reset("--to-earliest") == [["rewind", "0", str(end), "0"]]
        assert await reset("--shift-by", "2") == [["rewind", "0", "0", "2"]]
        assert await reset("--to-offset", "999") == [["rewind", "0", "2", str(end)]]  # kept within the log
        first = str(sent[0].offset)  # (the first message: a Raft entry before it has no time)
        assert await reset("--to-datetime", "2000-01-01T00:00:00+00:00") == [["rewind", "0", str(end), first]]
        assert await reset("--to-latest") == [["rewind", "0", first, str(end)]]
        assert (await fetch_offsets(client, "rew", [("rewind", 0)]))[("rewind", 0)] == end
        async with GroupMember(client, "rew", ["rewind"]):
            refused = await cli(tidemq, "group", "reset-offsets", "rew", "--topic", "rewind", "--to-earliest")
    assert refused.code == 1 and "has 1 member(s)" in refused.err
