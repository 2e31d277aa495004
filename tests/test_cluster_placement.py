"""Cluster placement against a real redis-server: one owner per room, takeover of a dead
node's rooms, Redis outages served locally and reconciled (mediaserver/cluster)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Iterator, Optional

import pytest
import redis as redis_sync
from prometheus_client import CollectorRegistry

from mediaserver.cluster.metrics import ClusterMetrics
from mediaserver.cluster.node import ClusterNode, Placement
from mediaserver.cluster.placement import Claim, NodeRecord, least_loaded
from mediaserver.cluster.registry import RedisRegistry, owner_key
from redis_proc import RedisProcess
from waiting import until

LEASE_MS = 2000   # the product default (shorter leases lapse on a loaded CI machine)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path)
    yield proc
    proc.stop()


class Node:
    """A ClusterNode with a settable set of local rooms and load."""

    def __init__(self, redis_url: str, node_id: str, publishers: float = 0.0) -> None:
        self.rooms: set[str] = set()
        self.publishers = publishers
        self.lost: list[tuple[str, Optional[str]]] = []
        self.registry = CollectorRegistry()
        self.cluster = ClusterNode(
            RedisRegistry(redis_url, timeout_s=0.3),
            NodeRecord(node_id, f"http://127.0.0.1/{node_id}", f"ws://127.0.0.1/{node_id}/ws"),
            local_rooms=lambda: set(self.rooms),
            load=lambda: {"publishers": self.publishers, "rooms": float(len(self.rooms))},
            metrics=ClusterMetrics(self.registry),
            on_lost=self._lost,
            lease_ms=LEASE_MS)

    def _lost(self, room: str, node: Optional[NodeRecord]) -> None:
        self.lost.append((room, node.id if node else None))
        self.rooms.discard(room)   # (the server moves the room's participants to the winner)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def place(self, room: str) -> Placement:
        placement = await self.cluster.place(room)
        if placement.local:
            self.rooms.add(room)
        return placement


def test_least_loaded_prefers_fewer_publishers_then_rooms_then_id() -> None:
    a = NodeRecord("a", "u", "w", {"publishers": 5, "rooms": 1})
    b = NodeRecord("b", "u", "w", {"publishers": 2, "rooms": 9, "cpu": 0.31})
    c = NodeRecord("c", "u", "w", {"publishers": 2, "rooms": 9, "cpu": 0.25})
    d = NodeRecord("d", "u", "w", {"publishers": 2, "rooms": 9, "cpu": 0.45})
    assert least_loaded([a, b, c, d]) == b                 # b and c equal: smallest id
    assert least_loaded([a, b, c, d], prefer="c") == c     # equals: the node the join reached
    assert least_loaded([a, b, d], prefer="d") == b        # d is a CPU step busier
    assert least_loaded([]) is None
    assert Claim("z", 1).wins_over(Claim("a", 2))
    assert Claim("a", 5).wins_over(Claim("b", 5)) and not Claim("b", 5).wins_over(Claim("a", 5))


async def test_concurrent_first_joins_give_every_room_exactly_one_owner(redis: RedisProcess) -> None:
    a, b, c = Node(redis.url, "a"), Node(redis.url, "b", publishers=3), Node(redis.url, "c")
    for n in (a, b, c):
        await n.cluster.start()
    await until(lambda: all(len(n.cluster.nodes) == 3 for n in (a, b, c)), timeout=30,
                what="all three nodes to see each other")
    try:
        owners: dict[str, str] = {}
        for i in range(20):
            room = f"r{i}"
            placed = await asyncio.gather(a.place(room), b.place(room), c.place(room))
            raw = await a.cluster.registry.redis.get(owner_key(room))
            owner = json.loads(raw)["node"]
            owners[room] = owner
            for node, p in zip((a, b, c), placed):
                served_at = node.cluster.me.id if p.local else p.node.id   # type: ignore[union-attr]
                assert served_at == owner, (room, node.cluster.me.id, p)
            assert sum(room in n.rooms for n in (a, b, c)) == 1
        # the least loaded nodes got the rooms: b (3 publishers) none while a and c had room
        assert set(owners.values()) <= {"a", "c"}
        assert sum(n.metric("mediaserver_cluster_placements_total", outcome="redirect")
                   for n in (a, b, c)) > 0
    finally:
        for n in (a, b, c):
            await n.cluster.stop()


async def test_a_dead_nodes_room_is_taken_over_once_its_lease_lapses(redis: RedisProcess) -> None:
    a, b = Node(redis.url, "a"), Node(redis.url, "b", publishers=9)
    await a.cluster.start()
    await b.cluster.start()
    try:
        assert (await a.place("ward-7")).outcome == "claimed"
        await until(lambda: "b" in [n.id for n in a.cluster.nodes], timeout=30, what="a to see b")
        redirect = await b.place("ward-7")
        assert redirect.node is not None and redirect.node.id == "a"
        # a dies: its heartbeat stops without a goodbye (kill -9)
        a.cluster._stopping.set()
        await a.cluster._task
        await until(lambda: all(n.id != "a" for n in b.cluster.nodes), timeout=30,
                    what="a's node lease to lapse")
        moved = await b.place("ward-7")   # (its claim lapses with it: claimed or taken over)
        assert moved.local and moved.outcome in ("claimed", "taken-over")
        raw = await b.cluster.registry.redis.get(owner_key("ward-7"))
        assert json.loads(raw)["node"] == "b"
        # a claim that outlives its node (made for a node that died before its first join)
        await b.cluster.registry.redis.set(owner_key("triage"), json.dumps(
            Claim("ghost", 1).to_json()), px=60_000)
        taken = await b.place("triage")
        assert taken.local and taken.outcome == "taken-over"
        raw = await b.cluster.registry.redis.get(owner_key("triage"))
        assert json.loads(raw)["node"] == "b"
    finally:
        await b.cluster.stop()
        await a.cluster.registry.close()


async def test_redis_outage_serves_locally_then_older_claim_keeps_the_room(redis: RedisProcess) -> None:
    a, b = Node(redis.url, "a"), Node(redis.url, "b")
    await a.cluster.start()
    await b.cluster.start()
    try:
        assert (await a.place("icu")).local
        redis.stop()
        await until(lambda: a.cluster.degraded and b.cluster.degraded, timeout=30,
                    what="both nodes to notice Redis is gone")
        assert a.metric("mediaserver_cluster_redis_up") == 0
        # both serve new joins locally; b also opens "icu" (it cannot see a's claim)
        assert (await b.place("icu")).outcome == "degraded"
        assert (await b.place("er")).outcome == "degraded"
        assert "icu" in a.rooms and "icu" in b.rooms
        redis.start()   # an empty Redis, as after a restart without persistence
        await until(lambda: not a.cluster.degraded and not b.cluster.degraded, timeout=30,
                    what="both nodes to re-register")
        await until(lambda: len(a.cluster.nodes) == 2 and len(b.cluster.nodes) == 2, timeout=30,
                    what="both nodes listed again")
        # a's claim on "icu" is older (made before the outage): b is told to move its people
        await until(lambda: ("icu", "a") in b.lost, timeout=30, what="b to lose icu to a")
        assert not a.lost
        fresh = redis_sync.Redis.from_url(redis.url)   # (the nodes' pools saw the restart)
        assert json.loads(fresh.get(owner_key("icu")))["node"] == "a"
        assert json.loads(fresh.get(owner_key("er")))["node"] == "b"
        assert b.metric("mediaserver_cluster_placements_total", outcome="lost") == 1
    finally:
        for n in (a, b):
            await n.cluster.stop()


async def test_cluster_command_prints_nodes_and_rooms(redis: RedisProcess) -> None:
    import subprocess
    import sys

    a = Node(redis.url, "a")
    await a.cluster.start()
    try:
        await a.place("ward-9")
        await a.cluster._beat()   # (the claim renewed, the node record current)
        out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "mediaserver", "cluster",
                                                       "--redis-url", redis.url],
                                      capture_output=True, text=True, timeout=60)
    finally:
        await a.cluster.stop()
    assert out.returncode == 0, out.stderr
    view = json.loads(out.stdout)
    assert [(n["id"], n["rooms"]) for n in view["nodes"]] == [("a", ["ward-9"])]
    assert view["rooms"]["ward-9"]["node"] == "a"
