"""A cluster places rooms by its nodes' *publishers*, and listeners are not publishers.

A real ``redis-server``; node ``a`` is the front of ``serve --workers 2`` (its load is the sum
of its workers' ``/healthz``), node ``b`` one process; aiortc participants in this process.
Node ``a`` hosts room ``al``: three listeners (audio offered ``recvonly``); node ``b`` hosts
``bt``: a talker and two listeners. Before the fix the front reported the sum of its workers'
``participants`` as its ``publishers`` (3) and one process counted every answered offer (3),
so a new room joined through ``b`` stayed on ``b`` (3 against 3, then rooms, then CPU). Claims:

- each node's record in Redis: ``a`` 3 participants, 0 publishers; ``b`` 3 participants,
  1 publisher; the single process's ``/healthz`` and the front's say the same;
- a new room joined through ``b`` is redirected to ``a`` (0 publishers against 1, one room
  each: the CPU tie-breaker is never reached).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Iterator, Optional

import aiohttp
import pytest
import redis as redis_sync

from mediaserver.cluster.registry import node_key
from mediaserver.sfu.tokens import mint

from conftest import ServerProcess
from redis_proc import RedisProcess
from rtc_peer import RtcPeer, loopback_ice
from test_cluster import SECRET, _get
from test_workers_cluster import _in_cluster

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path)
    yield proc
    proc.stop()


def _record(r: redis_sync.Redis, node: str) -> Optional[dict[str, Any]]:
    raw = r.get(node_key(node))
    return None if raw is None else json.loads(raw)


async def _until_records(r: redis_sync.Redis, want: dict[str, dict[str, float]], what: str,
                         timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    """The nodes' records once each one's load has the figures in ``want`` (a bound on a
    hang, not a timed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        records = {node: _record(r, node) for node in want}
        if all(rec is not None and all(rec["load"].get(k) == v for k, v in want[node].items())
               for node, rec in records.items()):
            return records  # type: ignore[return-value]
        if loop.time() > deadline:
            raise AssertionError(f"still waiting after {timeout:g} s: {what}; records {records}")
        await asyncio.sleep(0.05)


async def _heartbeats(r: redis_sync.Redis, node: str, count: int, timeout: float = 60.0) -> None:
    """Wait for ``count`` more heartbeats of ``node``: each renews its record's lease, so its
    TTL rises. A node reads the other nodes' records in the same beat, after its own."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, seen = r.pttl(node_key(node)), 0
    while seen < count:
        await asyncio.sleep(0.02)
        ttl = r.pttl(node_key(node))
        if ttl > last:
            seen += 1
        last = ttl
        if loop.time() > deadline:
            raise AssertionError(f"node {node}: {seen} of {count} heartbeats in {timeout:g} s")


def _peer(server: ServerProcess, room: str, who: str, *, listen_only: bool) -> RtcPeer:
    return RtcPeer(server.ws_url, room, who, listen_only=listen_only,
                   token=mint(SECRET, room=room, identity=who))


async def _enter(peer: RtcPeer, session: aiohttp.ClientSession) -> None:
    await peer.connect(session)
    await peer.join()
    await peer.publish()


async def test_a_node_of_listeners_has_no_publishers_and_takes_the_next_room(
        tmp_path: Path, redis: RedisProcess) -> None:
    r = redis_sync.Redis.from_url(redis.url)
    a = ServerProcess(tmp_path / "node-a.log", "--no-enhance", "--workers", "2", "--secret", SECRET,
                      "--redis-url", redis.url, "--node-id", "a")
    b: Optional[ServerProcess] = None
    peers: list[RtcPeer] = []
    try:
        with loopback_ice():
            async with aiohttp.ClientSession() as session:
                try:
                    # a alone: room al goes there whatever its CPU figure
                    for i in range(3):
                        peers.append(_peer(a, "al", f"al-listener{i}", listen_only=True))
                        await _enter(peers[-1], session)
                    await _until_records(r, {"a": {"rooms": 1.0, "participants": 3.0}}, "a counts al")
                    b = await asyncio.to_thread(ServerProcess, tmp_path / "node-b.log", "--no-enhance",
                                                "--secret", SECRET, "--redis-url", redis.url,
                                                "--node-id", "b")
                    await asyncio.to_thread(_in_cluster, a, b)
                    # bt, first joined through b by its talker: b has no room yet, so it stays there
                    peers.append(_peer(b, "bt", "bt-talker", listen_only=False))
                    await _enter(peers[-1], session)
                    for i in range(2):
                        peers.append(_peer(b, "bt", f"bt-listener{i}", listen_only=True))
                        await _enter(peers[-1], session)
                    await _until_records(r, {"a": {"rooms": 1.0, "participants": 3.0},
                                             "b": {"rooms": 1.0, "participants": 3.0}}, "b counts bt")
                    await _heartbeats(r, "b", 2)   # b's own view of both records is this fresh
                    records = await _until_records(r, {"a": {}, "b": {}}, "records")
                    loads = {n: (rec["load"]["participants"], rec["load"]["publishers"])
                             for n, rec in records.items()}
                    assert loads == {"a": (3.0, 0.0), "b": (3.0, 1.0)}, records
                    health_a = await asyncio.to_thread(_get, a, "healthz")
                    health_b = await asyncio.to_thread(_get, b, "healthz")
                    assert (health_a["participants"], health_a["publishers"]) == (3, 0), health_a
                    assert (health_b["participants"], health_b["publishers"]) == (3, 1), health_b

                    # a new room through b: a has fewer publishers (it stayed on b before)
                    async with session.ws_connect(b.ws_url) as ws:
                        await ws.send_json({"type": "join", "room": "next", "identity": "n1",
                                            "token": mint(SECRET, room="next", identity="n1")})
                        reply = await ws.receive_json(timeout=30)
                    assert reply["type"] == "redirect" and reply["url"] == a.ws_url, reply
                finally:
                    for peer in peers:
                        await peer.close()
    finally:
        for node in (a, b):
            if node is not None:
                node.stop()
