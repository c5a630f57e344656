"""Kafka's consumer group protocol (KIP-848: ConsumerGroupHeartbeat, ConsumerGroupDescribe)
on the native group coordinator.

KIP-848 is the design our native groups already follow: the coordinator assigns
(server-side, sticky), members heartbeat with an epoch, the subscribed topics and the
partitions they own, and a partition moves only once its owner has released it. So a
Kafka consumer with `group.protocol=consumer` is a member of a native group, with the
same assignment, offsets and failover; this module only translates: topic ids to names
and back, "unchanged" (null) fields to what the member said last, and errors to Kafka's.

One group is one kind: a group with native members refuses a Kafka join
(INCONSISTENT_GROUP_PROTOCOL) and the reverse (`kafka_members`). Which members are
Kafka's is known to the listener of the coordinator's node: every heartbeat marks its
member, so after a failover the first heartbeat at the new coordinator marks it again.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import trio

from client.conventions import OFFSETS_TOPIC
from client.errors import InvalidRequestError, TideMQError
from client.protocol import DescribeGroup, GroupHeartbeat, TopicPartition
from node.kafka_groups import INCONSISTENT_GROUP_PROTOCOL, GroupError
from node.kafka_wire import KafkaError, Request, build, error_of, response_class, topic_id

if TYPE_CHECKING:
    from node.context import Node
    from node.coordinator import GroupCoordinator

#: Kafka's group.consumer.session.timeout.ms default: a member silent this long is
#: removed (KIP-848 members do not send a session timeout; the broker sets it).
SESSION_TIMEOUT_MS = 45_000
DEFAULT_REBALANCE_TIMEOUT_MS = 300_000  # Kafka's max.poll.interval.ms default
LEAVE, STATIC_LEAVE = -1, -2
FORGET_CHECK_AT = 64  # members remembered per group before the silent ones are forgotten
CONSUMER_MEMBER = 1  # ConsumerGroupDescribe v1's member_type: the consumer protocol
#: Our group states as ConsumerGroupDescribe spells them.
STATES = {"empty": "Empty", "stable": "Stable", "reconciling": "Reconciling"}


class ConsumerGroups:
    def __init__(self, node: Node, coordinator: GroupCoordinator) -> None:
        self.node = node
        self.coordinator = coordinator
        self._members: dict[str, dict[str, float]] = {}  # group -> member id -> when last heard here
        self._owned: dict[tuple[str, str], list[TopicPartition]] = {}  # what a member said it owns, last

    def refuses(self, group: str, member_id: str) -> bool:
        """A native join into a group with members of this protocol (the heartbeat here
        names its member before the coordinator sees it)."""
        return bool(self.kafka_members(group)) and member_id not in self._members.get(group, ())

    def kafka_members(self, group: str) -> set[str]:
        """The group's current members that joined through Kafka's consumer protocol."""
        seen = self._members.get(group)
        return seen.keys() & self.coordinator.member_ids(group) if seen else set()

    def _heard(self, group: str, member_id: str) -> None:
        """Mark a member as this protocol's; forget those not heard for two sessions."""
        now = trio.current_time()
        seen = self._members.setdefault(group, {})
        seen[member_id] = now
        if len(seen) > FORGET_CHECK_AT:
            for m, t in list(seen.items()):
                if now - t > 2 * SESSION_TIMEOUT_MS / 1000:
                    del seen[m]

    # -- ids and names ---------------------------------------------------------------------

    def _names(self) -> dict[uuid.UUID, str]:
        return {topic_id(m.name, m.first_group): m.name for m in self.node.state.topics.values()}

    def _by_topic(self, tps: list[TopicPartition], with_names: bool) -> list[dict[str, Any]]:
        by_topic: dict[str, list[int]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        out = []
        for name, parts in sorted(by_topic.items()):
            meta = self.node.state.topics.get(name)
            if meta is None:
                continue  # deleted since: the next assignment drops it
            entry: dict[str, Any] = {"topic_id": topic_id(name, meta.first_group), "partitions": sorted(parts)}
            if with_names:
                entry["topic_name"] = name
            out.append(entry)
        return out

    # -- ConsumerGroupHeartbeat ------------------------------------------------------------

    async def heartbeat(self, req: Request, classic_active: bool) -> Any:
        b = req.body
        # (v0 leaves the id of a joining member to the coordinator: we name it here.)
        group, member_id, epoch = b.group_id, b.member_id or uuid.uuid4().hex, int(b.member_epoch)
        out: dict[str, Any] = {"member_id": member_id, "member_epoch": -1, "heartbeat_interval": 0}
        try:
            native_ids = self.coordinator.member_ids(group)
            if epoch == 0 and (classic_active or native_ids - self.kafka_members(group)):
                raise GroupError(
                    INCONSISTENT_GROUP_PROTOCOL,
                    f"group {group!r} has members of another protocol (classic or native); "
                    "a group is one kind or the other",
                )
            if b.subscribed_topic_regex:
                raise InvalidRequestError("subscriptions by regular expression are not served: name the topics")
            if epoch in (LEAVE, STATIC_LEAVE):
                self._owned.pop((group, member_id), None)
                self._members.get(group, {}).pop(member_id, None)
                await self.coordinator.heartbeat(GroupHeartbeat(group, member_id, LEAVE))
                out["member_epoch"] = epoch
                return build(response_class(68, req.version), out)
            if b.topic_partitions is not None:
                names = self._names()
                owned = [
                    TopicPartition(names[t.topic_id], int(p))
                    for t in b.topic_partitions
                    if t.topic_id in names
                    for p in t.partitions
                ]
                self._owned[(group, member_id)] = owned
            else:
                owned = self._owned.get((group, member_id), [])
            rebalance_ms = int(b.rebalance_timeout.total_seconds() * 1000) if b.rebalance_timeout else -1
            native = GroupHeartbeat(
                group,
                member_id,
                epoch,
                list(b.subscribed_topic_names or ()),
                owned,
                client_id=req.client_id or "",
                session_timeout_ms=SESSION_TIMEOUT_MS,
                rebalance_timeout_ms=rebalance_ms if rebalance_ms > 0 else DEFAULT_REBALANCE_TIMEOUT_MS,
            )
            self._heard(group, member_id)  # before the coordinator: a join waits for the log
            answer = await self.coordinator.heartbeat(native)
            out.update(
                member_id=answer.member_id,
                member_epoch=answer.member_epoch,
                heartbeat_interval=answer.heartbeat_interval_ms,
                assignment={"topic_partitions": self._by_topic(answer.assignment, with_names=False)},
            )
        except TideMQError as exc:
            out.update(error_code=error_of(exc), error_message=exc.message)
        return build(response_class(68, req.version), out)

    # -- ConsumerGroupDescribe -------------------------------------------------------------

    async def describe(self, req: Request) -> Any:
        described = []
        for group in req.body.group_ids:
            out: dict[str, Any] = {"group_id": group, "group_state": "Dead", "assignor_name": "sticky"}
            try:
                self.node.coordinating_partition(OFFSETS_TOPIC, group, f"group {group!r}")
                d = await self.coordinator.describe_group(DescribeGroup(group))
                if not d.members and not d.offsets:
                    out["error_code"] = KafkaError.group_id_not_found
                else:
                    out.update(
                        group_state=STATES.get(d.state, d.state.capitalize()),
                        group_epoch=d.epoch,
                        assignment_epoch=d.epoch,
                        members=[
                            {
                                "member_id": m.member_id,
                                "member_epoch": m.member_epoch,
                                "client_id": m.client_id,
                                "client_host": "",
                                "subscribed_topic_names": m.topics,
                                "assignment": {"topic_partitions": self._by_topic(m.assignment, with_names=True)},
                                "target_assignment": {"topic_partitions": []},
                                "member_type": CONSUMER_MEMBER,
                            }
                            for m in d.members
                        ],
                    )
            except TideMQError as exc:
                out.update(error_code=error_of(exc), error_message=exc.message)
            described.append(out)
        return build(response_class(69, req.version), {"groups": described})
