"""A participant whose connection already closed (failed, not yet removed) must not break
anybody else's join: found by benchmarks/soak.py, where a newcomer's whole signalling socket
died with ``InvalidStateError: RTCPeerConnection is closed`` raised from the room's fan-out."""

from __future__ import annotations

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from mediaserver.client import FileSource
from mediaserver.media.inbound import InboundAudio
from mediaserver.sfu.mediaclock import ClockStream, MediaClock
from mediaserver.sfu.metrics import SfuMetrics
from mediaserver.sfu.outbound import PublisherEncoders
from mediaserver.sfu.participant import Participant
from mediaserver.sfu.room import RoomManager

pytestmark = pytest.mark.usefixtures("ice_on_loopback")   # the peers' ICE on 127.0.0.1 only


class Caller:
    """A client peer connection and the server-side Participant it published through."""

    def __init__(self, manager: RoomManager, metrics: SfuMetrics, identity: str) -> None:
        self.sent: list[dict] = []
        self.client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.participant = Participant(room="ward", identity=identity, send=self.sent.append,
                                       metrics=metrics, config=RTCConfiguration(iceServers=[]))
        self.manager = manager

    async def publish(self) -> None:
        self.client.addTransceiver(FileSource(np.zeros(48000, np.float32)), direction="sendrecv")
        await self.client.setLocalDescription(await self.client.createOffer())
        self.manager.admit(self.participant)

        def make_stream(_mic: object) -> ClockStream:
            return ClockStream(room="ward", identity=self.participant.identity,
                               inbound=InboundAudio(), encoder=PublisherEncoders())

        answer = await self.participant.accept_offer(self.client.localDescription, make_stream)
        await self.client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        self.manager.published(self.participant)

    async def close(self) -> None:
        await self.participant.close()
        await self.client.close()


async def test_a_closed_connection_awaiting_removal_does_not_fail_a_newcomers_join() -> None:
    metrics = SfuMetrics()
    manager = RoomManager(clock=MediaClock(metrics=metrics, encode_pts=lambda *a: None),
                          metrics=metrics)
    alice, bob, carol = (Caller(manager, metrics, name) for name in ("alice", "bob", "carol"))
    try:
        await alice.publish()
        await bob.publish()
        assert bob.participant.pc is not None and bob.participant.stream is not None
        # bob's connection closes (ICE failed, DTLS failed...) and his removal is still to come
        await bob.participant.pc.close()
        assert "bob" in manager.rooms["ward"].participants

        await carol.publish()   # raised InvalidStateError from bob.subscribe before the fix

        assert alice.participant.stream is not None and carol.participant.stream is not None
        carol_slots = carol.participant.stream.subscribers
        alice_slots = alice.participant.stream.subscribers
        # carol and alice are wired to each other; bob's closed connection took no slot
        assert len(carol_slots) == 1 and carol_slots[0] in [s.track for s in alice.participant._slots]
        assert any(t in [s.track for s in carol.participant._slots] for t in alice_slots)
        assert not any(s.publisher is carol.participant.stream for s in bob.participant._slots)
    finally:
        for caller in (alice, bob, carol):
            await caller.close()
