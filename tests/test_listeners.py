"""A listener (audio offered ``recvonly``: a dispatch console that only monitors, a recorder)
costs the media path nothing of a publisher's: no stream on the media clock (no pull,
enhancement or encode per tick) and no slot at the other participants. A client that starts
sending by re-offering ``sendrecv`` goes on the clock and is heard by everyone; one that goes
back to ``recvonly`` is taken off again. First with real aiortc peer connections in this
process, one per caller, each with its server-side Participant (tests/test_load_publishers.py's
Caller); then through a real server, where the re-offer goes through signalling. Also: a
renegotiation (a slot added or removed) cut by the connection's own close is no failure.
"""

from __future__ import annotations

import asyncio
import json
from typing import Iterator

import aiohttp
import numpy as np
import pytest
from aiortc import RTCSessionDescription
from prometheus_client.parser import text_string_to_metric_families

from conftest import ServerProcess

from mediaserver.client import FileSource
from mediaserver.sfu.mediaclock import MediaClock
from mediaserver.sfu.metrics import SfuMetrics
from mediaserver.sfu.room import RoomManager
from rtc_peer import RtcPeer, loopback_ice, tone, wait_until
from test_load_publishers import Caller
from test_negotiation import TIMEOUT, HoldingPeer
from waiting import until


class AnsweringCaller(Caller):
    """A Caller whose client answers the server's offers (a subscription renegotiates)."""

    def __init__(self, manager: RoomManager, metrics: SfuMetrics, identity: str) -> None:
        super().__init__(manager, metrics, identity)
        self.participant._send = self._on_message   # what the signalling socket would carry
        self._answering: list[asyncio.Task[None]] = []

    def _on_message(self, message: dict) -> None:
        if message.get("type") == "offer":
            self._answering.append(asyncio.get_running_loop().create_task(self._answer(message["sdp"])))

    async def _answer(self, sdp: str) -> None:
        await self.client.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self.client.setLocalDescription(await self.client.createAnswer())
        self.participant.accept_answer(self.client.localDescription)

    async def settled(self) -> None:
        """Every server offer so far answered and applied."""
        p = self.participant
        await until(lambda: all(t.done() for t in self._answering) and not p._negotiating.locked()
                    and not p._dirty and p.pc is not None and p.pc.signalingState == "stable",
                    what=f"{p.identity}'s renegotiation")


async def _reoffer(caller: AnsweringCaller, direction: str) -> None:
    """The client changes its microphone's direction and offers again; the server answers and
    the room re-routes it (as signalling's re-offer handling does)."""
    await caller.settled()
    mic = next(t for t in caller.client.getTransceivers() if t.kind == "audio")
    if direction == "sendrecv" and mic.sender.track is None:
        mic.sender.replaceTrack(FileSource(np.zeros(48000, np.float32)))
    mic.direction = direction
    await caller.client.setLocalDescription(await caller.client.createOffer())
    answer, _tracks = await caller.participant.accept_reoffer(caller.client.localDescription)
    await caller.client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    caller.manager.routed(caller.participant)


def _heard_by(callers: list[AnsweringCaller], speaker: AnsweringCaller) -> list[str]:
    return [c.participant.identity for c in callers
            if speaker.participant.identity in c.participant.subscriptions()]


def _scraped(metrics: SfuMetrics) -> tuple[float, float]:
    """``(mediaserver_participants, mediaserver_publishers)`` as ``/metrics`` renders them now."""
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    return tuple(families[name].samples[0].value   # type: ignore[return-value]
                 for name in ("mediaserver_participants", "mediaserver_publishers"))


@pytest.mark.usefixtures("ice_on_loopback")
async def test_a_listener_takes_no_place_on_the_clock_until_it_sends() -> None:
    """... and ``/metrics`` counts publishers as ``/healthz`` does (fresh-user gaps of
    2026-12-02 §2: ``mediaserver_publishers`` was missing): listeners are participants only."""
    metrics = SfuMetrics()
    clock = MediaClock(metrics=metrics, encode_pts=lambda *a: None)
    manager = RoomManager(clock=clock, metrics=metrics)
    talker, console, recorder = (AnsweringCaller(manager, metrics, name) for name in ("talker", "console", "recorder"))
    callers = [talker, console, recorder]
    try:
        await talker.offer("sendrecv")
        await console.offer("recvonly")
        await recorder.offer("recvonly")
        on_clock = [s.identity for s in clock.streams]
        assert on_clock == ["talker"], on_clock
        assert _heard_by(callers, talker) == ["console", "recorder"]   # the listeners hear the talker
        assert _heard_by(callers, console) == [] and _heard_by(callers, recorder) == []
        assert _scraped(metrics) == (3, 1)

        await _reoffer(console, "sendrecv")   # the console starts talking
        assert sorted(s.identity for s in clock.streams) == ["console", "talker"]
        assert _heard_by(callers, console) == ["talker", "recorder"]
        assert _scraped(metrics) == (3, 2)

        await _reoffer(console, "recvonly")   # ... and goes back to monitoring
        assert [s.identity for s in clock.streams] == ["talker"]
        assert _heard_by(callers, console) == []
        assert _heard_by(callers, talker) == ["console", "recorder"]
        assert _scraped(metrics) == (3, 1)
    finally:
        for caller in callers:
            await manager.remove(caller.participant)
            await caller.client.close()
    assert list(clock.streams) == []
    assert _scraped(metrics) == (0, 0)


# ---- the same through a real server: the re-offer goes through signalling ----------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("listeners") / "server.log", "--no-enhance")
    yield proc
    proc.stop()


async def test_a_listener_that_reoffers_sendrecv_is_heard_through_the_server(server: ServerProcess) -> None:
    """dan joins as a listener: alice gets no slot for him (a slot would be in the server's
    offers' ``tracks``); he re-offers with a microphone through signalling: alice hears him."""
    with loopback_ice():
        async with aiohttp.ClientSession() as session:
            alice = RtcPeer(server.ws_url, "console", "alice", tone_hz=440.0)
            dan = HoldingPeer(server.ws_url, "console", "dan", listen_only=True)
            try:
                for peer in (alice, dan):
                    await peer.connect(session)
                    await peer.join()
                    await peer.publish()
                await dan.hears("alice", timeout=TIMEOUT)
                await wait_until(lambda: dan.pc is not None and dan.pc.signalingState == "stable"
                                 and not alice.errors, timeout=TIMEOUT, what="dan's subscription settled")
                assert "dan" not in alice.mids.values(), alice.mids   # no slot for a listener
                assert dan.pc is not None
                mic = next(t for t in dan.pc.getTransceivers() if t.kind == "audio")
                mic.sender.replaceTrack(FileSource(tone(660.0)))
                mic.direction = "sendrecv"
                await dan.reoffer()
                await alice.hears("dan", timeout=TIMEOUT)
                assert not alice.errors and not dan.errors, (alice.errors, dan.errors)
            finally:
                for peer in (dan, alice):
                    await peer.close()


def test_the_headless_client_listens_without_sending_with_listen_only(start_server, speech_wav, tmp_path) -> None:
    """``mediaserver client --listen-only`` offers its audio ``recvonly``: it hears alice, sends
    nothing, and the server never counts it as a publisher while alice talks (without the flag
    a client with no ``--send`` sends silence and is one)."""
    import urllib.request

    from conftest import METRICS_TOKEN, client_summary, start_client, stop_client, wait_participants

    server = start_server("--no-enhance")

    def healthz() -> dict:
        request = urllib.request.Request(server.url + "healthz",
                                         headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.loads(resp.read())

    console = start_client(server.url, "ward", "console", "--listen-only", "--duration", "240",
                           log=tmp_path / "console.log")
    try:
        wait_participants(server, 1, timeout=120)
        alice = start_client(server.url, "ward", "alice", "--send", str(speech_wav), log=tmp_path / "alice.log")
        seen: list[tuple[int, int]] = []   # (participants, publishers) for as long as alice's call lasts
        while alice.poll() is None:
            state = healthz()
            seen.append((state["participants"], state["publishers"]))
        client_summary(alice, 120)
        heard = stop_client(console)
    finally:
        if console.poll() is None:
            console.kill()
    assert (2, 1) in seen and all(publishers <= 1 for _, publishers in seen), seen
    assert heard["sent_frames"] == 0, heard["sent_frames"]
    assert heard["remote"]["alice"]["frames_received"] > 100, heard["remote"]


def test_listen_only_refuses_the_flags_that_send(tmp_path) -> None:
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "mediaserver", "client", "--room", "r", "--listen-only",
                          "--loss", "0.1"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--listen-only sends nothing: --loss" in run.stderr, run.stderr


@pytest.mark.usefixtures("ice_on_loopback")
async def test_a_renegotiation_cut_by_the_connections_close_is_no_media_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    """During a drain, a leaver's removal renegotiates a participant whose connection was
    closed under it (its client hung up first): that is the connection's end, reported where
    it closes, not a ``negotiation-failed`` WARNING and failure event (a fresh user saw one in
    a clean SIGTERM drain)."""
    metrics = SfuMetrics()
    manager = RoomManager(clock=MediaClock(metrics=metrics, encode_pts=lambda *a: None), metrics=metrics)
    alice = AnsweringCaller(manager, metrics, "alice")
    failures: list[str] = []
    alice.participant.on_failed = lambda code, message: failures.append(code)
    try:
        await alice.offer("sendrecv")
        assert alice.participant.pc is not None
        await alice.participant.pc.close()   # closed under it, the participant not yet removed
        with caplog.at_level("DEBUG", logger="mediaserver.sfu.participant"):
            alice.participant.renegotiate()
            negotiator = alice.participant._negotiator
            assert negotiator is not None
            await negotiator
    finally:
        await manager.remove(alice.participant)
        await alice.client.close()
    assert failures == [], failures
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
