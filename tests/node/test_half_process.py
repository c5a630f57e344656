"""Half messages on three real node processes, with the producer in a process of its own
that is SIGKILLed before it decides anything: a live producer of the same group answers
the check-backs (commit and abort outcomes), a half nobody answers for is aborted after
max_checks, and one whose group has no live producer says so."""

import json
import subprocess
import sys
from pathlib import Path

import trio

from client import Admin, Consumer, Producer
from tests.cluster import process_cluster

ROOT = Path(__file__).resolve().parent.parent.parent

CHILD = """
import json, sys, trio
from client import Producer

async def main(bootstrap):
    async with Producer(bootstrap, producer_group="shop", check_after=0.5, max_checks=3) as shop, \\
               Producer(bootstrap, producer_group="orphans", check_after=0.3, max_checks=2) as orphans:
        ids = {}
        for key in ("yes", "no", "unsure"):
            ids[key] = (await shop.send_half("orders", key.encode(), key=key.encode())).id
        ids["orphan"] = (await orphans.send_half("orders", b"orphan")).id
        print(json.dumps(ids), flush=True)
        await trio.sleep_forever()          # killed here, deciding nothing

trio.run(main, sys.argv[1])
"""


async def every_half(bootstrap):
    async with Admin(bootstrap) as admin:
        survey = await admin.list_halves(resolved=True)
    return {f"{h.partition}:{h.offset}": h for h in survey.halves}


async def test_check_back_after_the_producer_process_is_killed(tmp_path):
    async with process_cluster(tmp_path) as c:
        with trio.fail_after(150):
            await c.wait_ready()
            async with Admin(c.bootstrap) as admin:
                await admin.create_topic("orders", partitions=3, replication=3)
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, c.bootstrap],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                line = await trio.to_thread.run_sync(child.stdout.readline)
                assert line, child.stderr.read()
                ids = json.loads(line)
            finally:
                child.kill()
                child.wait(timeout=10)

            asked = []

            async def check(msg):
                asked.append(msg.key)
                return {b"yes": True, b"no": False}.get(msg.key)

            async with Producer(c.bootstrap, producer_group="shop", transaction_checker=check):
                while True:
                    halves = await every_half(c.bootstrap)
                    states = {k: halves[i].state for k, i in ids.items() if i in halves}
                    if len(states) == 4 and all(s in ("committed", "aborted") for s in states.values()):
                        break
                    await trio.sleep(0.2)
            by_key = {k: halves[i] for k, i in ids.items()}
            assert by_key["yes"].state == "committed"
            assert by_key["no"].state == "aborted" and "answered abort" in by_key["no"].reason
            assert by_key["unsure"].state == "aborted" and by_key["unsure"].checks == 3
            assert "kept answering 'unknown'" in by_key["unsure"].reason
            assert (
                by_key["orphan"].state == "aborted" and "no live producer of group 'orphans'" in by_key["orphan"].reason
            )
            assert set(asked) == {b"yes", b"no", b"unsure"}  # only the group's own halves

            got = []
            async with Consumer(c.bootstrap, topics=["orders"], offset_reset="earliest") as cons:
                with trio.move_on_after(2):
                    async for m in cons:
                        got.append(m.value)
            assert got == [b"yes"]
