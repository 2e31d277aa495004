"""``serve --workers 2``: the front places a new room by its workers' *publishers*.

A real front and two media workers on 127.0.0.1 (no enhancement), aiortc participants in this
process. Room ``listen`` holds three listeners (audio offered ``recvonly``), room ``talk`` one
talker. The front ranked its workers by their ``participants`` (reported as the ``streams``
of ``/healthz``), so the listeners' worker looked three publishers busy and the next room went
to the talker's worker. Claims:

- ``/healthz``: each worker's ``publishers`` (its participants that send audio) next to its
  ``streams`` (participants), the machine's total ``publishers``, and each worker's ``load``
  (what placement compares: polled publishers, pending sockets, rooms);
- the listeners' worker has no publisher, and the next room goes there (0 publishers against
  1; both hold one room).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest

from conftest import ServerProcess
from rtc_peer import RtcPeer, loopback_ice

pytestmark = pytest.mark.timeout(300)


async def _healthz_when(session: aiohttp.ClientSession, server: ServerProcess,
                        condition: Callable[[dict[str, Any]], bool], what: str,
                        timeout: float = 120.0) -> dict[str, Any]:
    """The front's first ``/healthz`` for which ``condition`` holds (AssertionError after
    ``timeout`` s: it bounds a hang, nothing is asserted about the time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with session.get(server.url + "healthz") as resp:
            health = await resp.json()
        if condition(health):
            return health
        if loop.time() > deadline:
            raise AssertionError(f"still waiting after {timeout:g} s: {what}; last /healthz {health}")
        await asyncio.sleep(0.2)


def _worker_of(health: dict[str, Any], room: str) -> dict[str, Any]:
    return next(w for w in health["workers"] if room in w["room_names"])


async def test_a_room_of_listeners_does_not_make_its_worker_look_loaded_with_publishers(
        tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "front.log", "--no-enhance", "--workers", "2")
    peers: list[RtcPeer] = []
    try:
        with loopback_ice():
            async with aiohttp.ClientSession() as session:
                try:
                    await _place_by_publishers(server, session, peers)
                finally:
                    for peer in peers:
                        await peer.close()
    finally:
        server.stop()


async def _place_by_publishers(server: ServerProcess, session: aiohttp.ClientSession,
                               peers: list[RtcPeer]) -> None:
    for i in range(3):
        peers.append(RtcPeer(server.ws_url, "listen", f"listener{i}", listen_only=True))
    peers.append(RtcPeer(server.ws_url, "talk", "talker"))
    for peer in peers:   # one at a time: "listen" is placed first, then "talk"
        await peer.connect(session)
        await peer.join()
        await peer.publish()

    def settled(h: dict[str, Any]) -> bool:
        """Both rooms placed and counted, and the front's placement has polled both
        workers since the last socket (nothing pending)."""
        try:
            listen, talk = _worker_of(h, "listen"), _worker_of(h, "talk")
        except StopIteration:
            return False
        return (listen["streams"] == 3 and talk["publishers"] == 1
                and talk["load"]["publishers"] == 1
                and all(w["load"]["pending"] == 0 and w["load"]["rooms"] == 1
                        for w in (listen, talk)))

    health = await _healthz_when(session, server, settled, "both rooms counted")
    listen, talk = _worker_of(health, "listen"), _worker_of(health, "talk")
    assert listen["index"] != talk["index"], health["workers"]
    assert (listen["streams"], listen["publishers"]) == (3, 0), listen
    assert (talk["streams"], talk["publishers"]) == (1, 1), talk
    assert (health["participants"], health["publishers"]) == (4, 1), health
    # placement's own view: the listeners' worker carries no publisher
    assert listen["load"] == {"publishers": 0, "pending": 0, "rooms": 1}, listen
    assert talk["load"] == {"publishers": 1, "pending": 0, "rooms": 1}, talk

    # the next room: fewest publishers wins (it went to the talker's worker)
    nxt = RtcPeer(server.ws_url, "next", "first")
    peers.append(nxt)
    await nxt.connect(session)
    await nxt.join()
    health = await _healthz_when(session, server,
                                 lambda h: any("next" in w["room_names"] for w in h["workers"]),
                                 "room next placed")
    assert _worker_of(health, "next")["index"] == listen["index"], health["workers"]
