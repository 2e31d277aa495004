"""Offer/answer with clients that do what other WebRTC stacks do (issue 16), real aiortc peers.

- The server answers a first offer as DTLS server (``a=setup:passive``) and keeps that role
  whatever a later answer's sections say (Firefox answers ``passive`` on one bundled section
  and ``active`` on another); the client's DTLS hello is held until its re-answer is in, the
  order in which the role used to flip.
- A DTLS handshake that never completes (both sides DTLS server) or fails (no common cipher)
  ends in a ``dtls-failed`` error and ``mediaserver_dtls_failures_total{reason}``.
- Offers without BUNDLE, with m-lines outside it, or without any ICE candidate are refused
  with ``bad-sdp`` and a reason; the same socket can then publish properly.
- Client re-offers are answered (the server is the impolite peer); one that crosses a server
  offer gets ``glare`` and nothing wedges: the call goes on and a later re-offer is answered.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from conftest import ServerProcess, server_metric
from mediaserver.client import FileSource
from rtc_peer import RtcPeer, loopback_ice, tone, wait_until

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("negotiation") / "server.log", "--no-enhance",
                         "--dtls-timeout", "3")
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _ice() -> Iterator[None]:
    with loopback_ice():
        yield


def sections(sdp: str) -> list[list[str]]:
    """The m-sections of ``sdp`` as lists of lines (session part dropped)."""
    out: list[list[str]] = []
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def set_setup(sdp: str, role_of: Callable[[int], Optional[str]]) -> str:
    """Rewrite each m-section's ``a=setup`` to ``role_of(index)`` (None: keep)."""
    out, index = [], -1
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            index += 1
        if line.startswith("a=setup:") and index >= 0 and role_of(index) is not None:
            line = f"a=setup:{role_of(index)}"
        out.append(line)
    return "\r\n".join(out)


class EditingPeer(RtcPeer):
    """An RtcPeer that edits the answers it sends, and can hold its DTLS hello."""

    def __init__(self, *args: Any, edit_answer: Optional[Callable[[str], str]] = None,
                 hold_dtls_until_reanswer: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edit_answer = edit_answer
        self.hold = hold_dtls_until_reanswer
        self.reanswered = asyncio.Event()
        self.dtls_held: Optional[bool] = None

    async def send(self, message: dict) -> None:
        if message.get("type") == "answer":
            if self.edit_answer is not None:
                message = dict(message, sdp=self.edit_answer(message["sdp"]))
            await super().send(message)
            self.reanswered.set()
            return
        await super().send(message)

    async def publish(self, *, read_after: bool = True) -> None:
        await super().publish(read_after=read_after)
        if self.hold:
            assert self.pc is not None
            transport = self.pc.getTransceivers()[0].receiver.transport
            start = transport.start

            async def held(parameters: Any) -> None:   # aiortc calls this once ICE connected
                self.dtls_held = True
                await self.reanswered.wait()
                await start(parameters)

            transport.start = held


def setups(sdp: str) -> list[str]:
    return [line.split(":", 1)[1] for s in sections(sdp) for line in s if line.startswith("a=setup:")]


async def first_answer(peer: RtcPeer) -> str:
    """Publish like ``RtcPeer.publish`` and return the server's answer SDP."""
    await peer.send({"type": "offer", "sdp": await peer.make_offer()})
    answer = await peer.expect("answer")
    assert peer.pc is not None
    await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    peer._tap()
    peer.start_reading()
    return answer["sdp"]


VARIANTS = {
    # Firefox's order: the first section as agreed, a new bundled section the other way
    "new-section-flipped": lambda i: "passive" if i >= 1 else None,
    "first-section-flipped": lambda i: "passive" if i == 0 else None,
    "all-sections-flipped": lambda i: "passive",
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_dtls_role_holds_whatever_a_reanswer_says(server: ServerProcess, variant: str) -> None:
    room = f"role-{variant}"
    async with aiohttp.ClientSession() as session:
        alice = RtcPeer(server.ws_url, room, "alice", tone_hz=440.0)
        bob = EditingPeer(server.ws_url, room, "bob", tone_hz=660.0,
                          edit_answer=lambda sdp: set_setup(sdp, VARIANTS[variant]),
                          hold_dtls_until_reanswer=True)
        try:
            await alice.connect(session)
            await alice.join()
            answer = await first_answer(alice)
            assert setups(answer) and set(setups(answer)) == {"passive"}, (
                f"the server must answer as DTLS server: {setups(answer)}")
            await bob.connect(session)
            await bob.join()
            await bob.publish()   # a busy room: the server's re-offer follows its answer at once
            await bob.hears("alice", timeout=TIMEOUT)
            await alice.hears("bob", timeout=TIMEOUT)
            assert bob.dtls_held, "bob's DTLS hello was not held"
            assert not bob.errors and not alice.errors, (bob.errors, alice.errors)
        finally:
            await bob.close()
            await alice.close()


async def test_dtls_handshake_is_bounded(server: ServerProcess) -> None:
    """Both sides DTLS server: nobody sends a ClientHello; the server gives up and says so."""
    before = server_metric(server, "mediaserver_dtls_failures_total", reason="timeout")
    async with aiohttp.ClientSession() as session:
        peer = RtcPeer(server.ws_url, "dtls-timeout", "stubborn")
        try:
            await peer.connect(session)
            await peer.join()
            await peer.publish()
            assert peer.pc is not None
            peer.pc.getTransceivers()[0].receiver.transport._role = "server"   # before ICE is up
            await wait_until(lambda: bool(peer.errors), timeout=TIMEOUT,
                             what="an error once the DTLS handshake timed out")
            assert peer.errors[0]["code"] == "dtls-failed", peer.errors
            assert "DTLS" in peer.errors[0]["message"] and "3 s" in peer.errors[0]["message"]
            await asyncio.wait_for(peer.closed.wait(), TIMEOUT)   # and the socket is closed
        finally:
            await peer.close()
    after = server_metric(server, "mediaserver_dtls_failures_total", reason="timeout")
    assert after == before + 1


async def test_dtls_handshake_failure_is_reported(server: ServerProcess) -> None:
    """A DTLS client with no cipher suite in common (RSA only: the server's certificate is
    ECDSA) gets ``dtls-failed`` at once, counted as reason=handshake."""
    before = server_metric(server, "mediaserver_dtls_failures_total", reason="handshake")
    async with aiohttp.ClientSession() as session:
        peer = RtcPeer(server.ws_url, "dtls-cipher", "rsa-only")
        try:
            await peer.connect(session)
            await peer.join()
            await peer.publish()
            assert peer.pc is not None
            transport = peer.pc.getTransceivers()[0].receiver.transport
            certificate = transport._RTCDtlsTransport__local_certificate
            make_context = certificate._create_ssl_context

            def rsa_only(*args: Any, **kwargs: Any) -> Any:
                ctx = make_context(*args, **kwargs)
                ctx.set_cipher_list(b"ECDHE-RSA-AES128-GCM-SHA256")
                return ctx

            certificate._create_ssl_context = rsa_only
            await wait_until(lambda: bool(peer.errors), timeout=TIMEOUT,
                             what="an error once the DTLS handshake failed")
            assert peer.errors[0]["code"] == "dtls-failed", peer.errors
            assert "failed" in peer.errors[0]["message"]
        finally:
            await peer.close()
    after = server_metric(server, "mediaserver_dtls_failures_total", reason="handshake")
    assert after == before + 1


async def _offer(tracks: int, tone_hz: float = 440.0) -> tuple[RTCPeerConnection, FileSource, str]:
    """A fresh aiortc offer: the tone as microphone plus ``tracks - 1`` recvonly audio m-lines."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    source = FileSource(tone(tone_hz))
    pc.addTransceiver(source, direction="sendrecv")
    for _ in range(tracks - 1):
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, source, pc.localDescription.sdp


def drop_lines(sdp: str, pattern: str) -> str:
    return "\r\n".join(ln for ln in sdp.split("\r\n") if not re.match(pattern, ln))


def candidates_only_in_first(sdp: str) -> str:
    out, index = [], -1
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            index += 1
        if index >= 1 and line.startswith(("a=candidate:", "a=end-of-candidates")):
            continue
        out.append(line)
    return "\r\n".join(out)


REFUSED = {
    "no-bundle": (1, lambda sdp: drop_lines(sdp, r"a=group:BUNDLE"), "BUNDLE"),
    "no-bundle-two-lines": (2, lambda sdp: drop_lines(sdp, r"a=group:BUNDLE"), "BUNDLE"),
    "one-line-outside-bundle": (2, lambda sdp: re.sub(r"a=group:BUNDLE 0 1", "a=group:BUNDLE 0", sdp),
                                "outside a=group:BUNDLE"),
    "no-candidates": (1, lambda sdp: drop_lines(sdp, r"a=(candidate:|end-of-candidates)"),
                      "no ICE candidates"),
    "no-candidates-two-lines": (2, lambda sdp: drop_lines(sdp, r"a=(candidate:|end-of-candidates)"),
                                "no ICE candidates"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_unusable_offer_is_refused_with_a_reason(server: ServerProcess, case: str) -> None:
    tracks, edit, reason = REFUSED[case]
    room = f"refused-{case}"
    async with aiohttp.ClientSession() as session:
        host = RtcPeer(server.ws_url, room, "host", tone_hz=440.0)
        peer = RtcPeer(server.ws_url, room, "guest")
        pc = None
        try:
            await host.connect(session)
            await host.join()
            await host.publish()
            await peer.connect(session)
            await peer.join()
            pc, source, sdp = await _offer(tracks)
            peer.pc, peer.source = pc, source
            assert edit(sdp) != sdp, "the edit did not change the offer"
            await peer.send({"type": "offer", "sdp": edit(sdp)})
            error = await peer.expect("error")
            assert error["code"] == "bad-sdp" and reason in error["message"], error
            # the socket stays usable: the unedited offer is answered and the call works
            await peer.send({"type": "offer", "sdp": sdp})
            answer = await peer.expect("answer")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            peer._tap()
            peer.start_reading()
            await peer.hears("host", timeout=TIMEOUT)
            await host.hears("guest", timeout=TIMEOUT)
        finally:
            await peer.close()
            await host.close()


async def test_bundled_lines_without_candidates_are_accepted(server: ServerProcess) -> None:
    """RFC 8843 lets bundled m-lines after the tagged one carry no candidates: candidates in
    one section are enough (the no-candidates refusal must not ask for them everywhere)."""
    room = "candidates-first-only"
    async with aiohttp.ClientSession() as session:
        host = RtcPeer(server.ws_url, room, "host", tone_hz=440.0)
        peer = RtcPeer(server.ws_url, room, "guest")
        try:
            await host.connect(session)
            await host.join()
            await host.publish()
            await peer.connect(session)
            await peer.join()
            pc, source, sdp = await _offer(2)
            peer.pc, peer.source = pc, source
            await peer.send({"type": "offer", "sdp": candidates_only_in_first(sdp)})
            answer = await peer.expect("answer")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            peer._tap()
            peer.start_reading()
            await host.hears("guest", timeout=TIMEOUT)
            await peer.hears("host", timeout=TIMEOUT)
        finally:
            await peer.close()
            await host.close()


class HoldingPeer(RtcPeer):
    """Keeps server offers unanswered while ``holding`` (to make a client offer cross one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holding = False
        self.held: list[dict] = []
        self.answers: list[dict] = []

    async def _handle(self, data: dict) -> None:
        if data.get("type") == "offer" and self.holding:
            self.held.append(data)
        elif data.get("type") == "answer":
            self.answers.append(data)
        else:
            await super()._handle(data)

    async def reoffer(self) -> dict:
        """A client offer from a stable connection; waits for the server's answer."""
        assert self.pc is not None
        await self.pc.setLocalDescription(await self.pc.createOffer())
        count = len(self.answers)
        await self.send({"type": "offer", "sdp": self.pc.localDescription.sdp})
        await wait_until(lambda: len(self.answers) > count or bool(self.errors), timeout=TIMEOUT,
                         what="an answer to the client's offer")
        assert not self.errors, self.errors
        answer = self.answers[-1]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        self.mids.update({str(k): str(v) for k, v in answer.get("tracks", {}).items()})
        return answer


async def test_client_reoffers_are_answered_and_glare_does_not_wedge(server: ServerProcess) -> None:
    room = "reoffer"
    async with aiohttp.ClientSession() as session:
        alice = RtcPeer(server.ws_url, room, "alice", tone_hz=440.0)
        bob = HoldingPeer(server.ws_url, room, "bob", tone_hz=660.0)
        carol = RtcPeer(server.ws_url, room, "carol", tone_hz=880.0)
        try:
            for peer in (alice, bob):
                await peer.connect(session)
                await peer.join()
                await peer.publish()
            await bob.hears("alice", timeout=TIMEOUT)
            await wait_until(lambda: bob.answered_offers >= 1 and bob.pc is not None
                             and bob.pc.signalingState == "stable", timeout=TIMEOUT,
                             what="bob's first server offer answered")
            # 1. a client offer on a stable connection: answered, with the mid -> identity map
            answer = await bob.reoffer()
            assert answer["tracks"] and "alice" in answer["tracks"].values(), answer.get("tracks")
            await bob.hears("alice", timeout=TIMEOUT)
            await alice.hears("bob", timeout=TIMEOUT)
            # 2. glare: carol joins, the server's offer to bob waits; bob offers too
            bob.holding = True
            await carol.connect(session)
            await carol.join()
            await carol.publish()
            await wait_until(lambda: bool(bob.held), timeout=TIMEOUT, what="a server offer to bob")
            assert bob.pc is not None
            crossing = await bob.pc.createOffer()   # (not applied: aiortc has no rollback)
            await bob.send({"type": "offer", "sdp": crossing.sdp})
            await wait_until(lambda: bool(bob.errors), timeout=TIMEOUT, what="glare reply")
            assert bob.errors[0]["code"] == "glare", bob.errors
            assert "impolite" in bob.errors[0]["message"]
            bob.errors.clear()
            # the polite side answers the server's offer; nothing is stuck
            bob.holding = False
            for offer in bob.held:
                await RtcPeer._handle(bob, offer)
            await bob.hears("carol", timeout=TIMEOUT)
            await carol.hears("bob", timeout=TIMEOUT)
            # 3. and offers again once stable
            await wait_until(lambda: bob.pc is not None and bob.pc.signalingState == "stable",
                             timeout=TIMEOUT, what="bob stable")
            answer = await bob.reoffer()
            assert set(answer["tracks"].values()) >= {"alice", "carol"}, answer["tracks"]
            await bob.hears("carol", timeout=TIMEOUT)
            await bob.hears("alice", timeout=TIMEOUT)
            assert not alice.errors and not carol.errors
        finally:
            for peer in (carol, bob, alice):
                await peer.close()
