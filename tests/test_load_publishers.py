"""Placement compares *publishers* (participants that send audio), not participants.

Every placement decision says it compares publishers first: a cluster node's
(cluster/placement.load_score: publishers, rooms, CPU) and a ``--workers`` front's choice of
media worker (workers/placement.load_rank: publishers plus pending sockets, rooms, index). The
figure was filled with participants in two places (a ``--workers`` front's cluster load summed
its workers' ``participants`` as ``publishers``, and the front ranked its workers by their
``participants``) and counted a listener (audio offered ``recvonly``) as a publisher in the
third (one process's cluster load counted every answered offer). Here, without processes:

- which participant is a publisher: a real server-side Participant per kind of caller (aiortc
  offers in this process; no network needed): a talker is, a listener and a joined participant
  without an offer are not, a muted talker still is; ``count_publishers`` and one process's
  cluster load agree;
- a front's cluster load sums its workers' ``publishers``;
- the ranking: a node or worker full of listeners comes before one with a publisher.

The same through real processes: tests/test_workers_placement.py (front and workers) and
tests/test_cluster_publishers.py (Redis, a front node and a one-process node).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from prometheus_client import CollectorRegistry

from mediaserver.client import FileSource
from mediaserver.cluster.placement import NodeRecord, least_loaded
from mediaserver.media.inbound import InboundAudio
from mediaserver.sfu import cluster_link
from mediaserver.sfu.mediaclock import ClockStream, MediaClock
from mediaserver.sfu.metrics import SfuMetrics
from mediaserver.sfu.outbound import PublisherEncoders
from mediaserver.sfu.participant import Participant
from mediaserver.sfu.room import RoomManager, count_publishers
from mediaserver.workers import cluster_front

pytestmark = pytest.mark.usefixtures("ice_on_loopback")   # the peers' ICE on 127.0.0.1 only


class Caller:
    """A client peer connection and its server-side Participant in room ``ward``."""

    def __init__(self, manager: RoomManager, metrics: SfuMetrics, identity: str) -> None:
        self.client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.participant = Participant(room="ward", identity=identity, send=lambda _m: None,
                                       metrics=metrics, config=RTCConfiguration(iceServers=[]))
        self.manager = manager
        manager.admit(self.participant)

    async def offer(self, direction: str) -> None:
        """The first offer, its audio ``direction`` (``sendrecv``: a talker, ``recvonly``: a
        listener), answered by the server."""
        if direction == "recvonly":
            self.client.addTransceiver("audio", direction="recvonly")
        else:
            self.client.addTransceiver(FileSource(np.zeros(48000, np.float32)), direction=direction)
        await self.client.setLocalDescription(await self.client.createOffer())

        def make_stream(_mic: object) -> ClockStream:
            return ClockStream(room="ward", identity=self.participant.identity,
                               inbound=InboundAudio(), encoder=PublisherEncoders())

        answer = await self.participant.accept_offer(self.client.localDescription, make_stream)
        await self.client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        self.manager.published(self.participant)

    async def close(self) -> None:
        await self.participant.close()
        await self.client.close()


async def test_only_participants_that_send_audio_are_publishers() -> None:
    metrics = SfuMetrics()
    manager = RoomManager(clock=MediaClock(metrics=metrics, encode_pts=lambda *a: None),
                          metrics=metrics)
    talker, listener, joined, muted = (Caller(manager, metrics, name)
                                       for name in ("talker", "listener", "joined", "muted"))
    try:
        await talker.offer("sendrecv")
        await listener.offer("recvonly")
        await muted.offer("sendonly")
        muted.participant.muted = True
        kinds = {c.participant.identity: (c.participant.publishing, c.participant.sends_audio)
                 for c in (talker, listener, joined, muted)}
        # (answered offer, sends audio): the listener has a connection but sends nothing
        assert kinds == {"talker": (True, True), "listener": (True, False),
                         "joined": (False, False), "muted": (True, True)}, kinds
        assert count_publishers(manager.rooms.values()) == 2

        # one process's cluster load says the same (it counted every answered offer: 3)
        ctx = SimpleNamespace(metrics=SimpleNamespace(registry=CollectorRegistry()), manager=manager)
        link = cluster_link.ClusterLink(SimpleNamespace(enhancer_device="cpu"), ctx)  # type: ignore[arg-type]
        link._cpu = (time.monotonic() - 1.0, time.process_time())
        load = link._load()
        assert (load["participants"], load["publishers"], load["rooms"]) == (4.0, 2.0, 1.0), load
    finally:
        for caller in (talker, listener, joined, muted):
            await caller.close()
    assert count_publishers(manager.rooms.values()) == 0   # closed: no longer a publisher


def test_a_front_node_sums_its_workers_publishers_not_their_participants() -> None:
    # worker 0 hosts a room of three listeners, worker 1 a talker and a listener
    reports = {0: {"rooms": 1, "participants": 3, "publishers": 0},
               1: {"rooms": 1, "participants": 2, "publishers": 1}}
    front = SimpleNamespace(metrics=SimpleNamespace(registry=CollectorRegistry()),
                            reports=reports, live=lambda: [0, 1])
    node = cluster_front.FrontNode(front, SimpleNamespace(enhancer_device="cpu"))  # type: ignore[arg-type]
    load = node._load()
    assert (load["participants"], load["publishers"], load["rooms"]) == (5.0, 1.0, 2.0), load


def test_a_node_full_of_listeners_is_less_loaded_than_one_with_a_publisher() -> None:
    listeners = NodeRecord("b", "u", "w", {"participants": 30, "publishers": 0, "rooms": 2})
    talker = NodeRecord("a", "u", "w", {"participants": 1, "publishers": 1, "rooms": 1})
    assert least_loaded([talker, listeners]) == listeners
    assert least_loaded([talker, listeners], prefer="a") == listeners   # not a tie: no preference
