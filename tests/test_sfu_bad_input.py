"""Bad input against a real server while a real call is running.

Garbage and oversized WebSocket messages, invalid SDP, unknown rooms, bad tokens and
a participant killed mid-call: each gets a clear error (or is cleaned up), and the
call between two other clients keeps flowing the whole time.

The call's two sides are aiortc peers in the test's loop, so the test waits on what they
hear instead of on the clock: after each kind of abuse both must hear the other's tone
again (fresh frames, polled with a generous deadline), and over the whole abuse at least
80 % of the frames each receives must carry the tone.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Awaitable, Callable, Iterator

import aiohttp
import pytest

from mediaserver.sfu.tokens import mint

from conftest import ServerProcess, start_client
from rtc_peer import RtcPeer, loopback_ice, wait_until

pytestmark = pytest.mark.timeout(240)

SECRET = "test-secret"
ROOM = "main"


async def _recv_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 20.0) -> dict:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a message, got {msg.type}"
    return json.loads(msg.data)


async def _closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 20.0) -> bool:
    msg = await ws.receive(timeout=timeout)
    return msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING)


async def _abuse(url: str, checkpoint: Callable[[str], Awaitable[None]]) -> dict[str, str]:
    """Every kind of bad input; returns what the server answered to each.

    ``checkpoint(kind)`` runs after each kind: the running call must still flow.
    """
    seen: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        # garbage: an error, and the socket stays usable
        async with session.ws_connect(url) as ws:
            await ws.send_str("{this is not json")
            seen["garbage"] = (await _recv_json(ws))["code"]
            await ws.send_str(json.dumps([1, 2, 3]))
            seen["not-object"] = (await _recv_json(ws))["code"]
            await ws.send_str(json.dumps({"type": "teleport"}))
            seen["unknown-type"] = (await _recv_json(ws))["code"]
            await ws.send_str(json.dumps({"type": "offer", "sdp": "v=0"}))
            seen["offer-before-join"] = (await _recv_json(ws))["code"]
            await ws.send_bytes(b"\x00\x01")
            seen["binary"] = (await _recv_json(ws))["code"]
        await checkpoint("garbage")
        # oversized: too-large, then that socket (only) is closed
        async with session.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"type": "join", "room": ROOM, "identity": "big",
                                          "pad": "x" * 70_000}))
            seen["oversized"] = (await _recv_json(ws))["code"]
            assert await _closed(ws)
        await checkpoint("oversized")
        # unknown / invalid room names
        async with session.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"type": "join", "room": "nowhere", "identity": "x",
                                          "token": mint(SECRET, room="nowhere", identity="x")}))
            seen["unknown-room"] = (await _recv_json(ws))["code"]
        async with session.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"type": "join", "room": "../etc", "identity": "x"}))
            seen["invalid-room"] = (await _recv_json(ws))["code"]
        await checkpoint("rooms")
        # bad tokens: forged, expired, for someone else, missing
        bad_tokens = {
            "forged-token": mint("wrong-secret", room=ROOM, identity="mallory"),
            "expired-token": mint(SECRET, room=ROOM, identity="mallory", ttl_s=-1),
            "other-identity-token": mint(SECRET, room=ROOM, identity="alice"),
            "missing-token": None,
        }
        for name, token in bad_tokens.items():
            async with session.ws_connect(url) as ws:
                await ws.send_str(json.dumps({"type": "join", "room": ROOM,
                                              "identity": "mallory", "token": token}))
                seen[name] = (await _recv_json(ws))["code"]
                assert await _closed(ws)
        await checkpoint("tokens")
        # invalid SDP after a valid join; the socket stays and may leave cleanly
        async with session.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"type": "join", "room": ROOM, "identity": "sdp-bad",
                                          "token": mint(SECRET, room=ROOM, identity="sdp-bad")}))
            joined = await _recv_json(ws)
            assert joined["type"] == "joined"
            while True:   # participant-joined/left events of the running call may come first
                await ws.send_str(json.dumps({"type": "offer", "sdp": "v=0\r\nm=video 9 X 0\r\n"}))
                reply = await _recv_json(ws)
                if reply["type"] == "error":
                    break
            seen["bad-sdp"] = reply["code"]
            fake = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
                    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
                    "a=rtpmap:111 opus/48000/2\r\na=ice-ufrag:abcd\r\n"
                    "a=ice-pwd:0123456789abcdef0123456789\r\n")   # no DTLS fingerprint
            await ws.send_str(json.dumps({"type": "offer", "sdp": fake}))
            reply = await _recv_json(ws)
            while reply["type"] != "error":
                reply = await _recv_json(ws)
            seen["unusable-sdp"] = reply["code"]
            await ws.send_str(json.dumps({"type": "enhancement", "atten_lim_db": "loud"}))
            reply = await _recv_json(ws)
            while reply["type"] != "error":
                reply = await _recv_json(ws)
            seen["bad-enhancement"] = reply["code"]
            await ws.send_str(json.dumps({"type": "leave"}))
        await checkpoint("sdp")
    return seen


@pytest.fixture
def ice() -> Iterator[None]:
    with loopback_ice():
        yield


class Tally:
    """Frames (and loud frames) each side of the call has received, at a point in time."""

    def __init__(self, alice: RtcPeer, bob: RtcPeer) -> None:
        self.at = {("alice", "bob"): (alice.frames("bob"), alice.loud_frames("bob")),
                   ("bob", "alice"): (bob.frames("alice"), bob.loud_frames("alice"))}


async def _call_under_abuse(server: ServerProcess, tmp_path: Path) -> dict:
    url = server.ws_url
    async with aiohttp.ClientSession() as session:
        alice = RtcPeer(url, ROOM, "alice", tone_hz=440.0, token=mint(SECRET, room=ROOM, identity="alice"))
        bob = RtcPeer(url, ROOM, "bob", tone_hz=550.0, token=mint(SECRET, room=ROOM, identity="bob"))
        try:
            for p in (alice, bob):
                await p.connect(session)
                await p.join()
                await p.publish()
            checkpoints: list[str] = []

            async def checkpoint(kind: str) -> None:
                # fresh audio both ways after this kind of abuse (a broken call never gets it)
                await bob.hears("alice", frames=25, timeout=60)
                await alice.hears("bob", frames=25, timeout=60)
                checkpoints.append(kind)

            await checkpoint("before")
            start = Tally(alice, bob)
            seen = await _abuse(url, checkpoint)
            # a third participant who vanishes mid-call (SIGKILL: no leave, no socket close)
            crash = start_client(server.url, ROOM, "crash", "--send", str(_tone_wav(tmp_path)),
                                 "--duration", "300", "--token", mint(SECRET, room=ROOM, identity="crash"),
                                 log=tmp_path / "crash.log")
            try:
                await wait_until(lambda: alice.frames("crash") >= 25 and bob.frames("crash") >= 25,
                                 timeout=120, what="alice and bob to hear crash")
                await checkpoint("crash joined")
            finally:
                crash.send_signal(signal.SIGKILL)
                crash.wait()
            # cleaned up when its socket dropped
            await wait_until(lambda: "crash" in alice.left() and "crash" in bob.left(),
                             timeout=120, what="alice and bob to see crash leave")
            await checkpoint("crash killed")
            end = Tally(alice, bob)
            return {"seen": seen, "checkpoints": checkpoints, "start": start.at, "end": end.at,
                    "heard": {"alice": sorted(alice.heard), "bob": sorted(bob.heard)},
                    "errors": {"alice": alice.errors, "bob": bob.errors},
                    "closed": {"alice": alice.closed.is_set(), "bob": bob.closed.is_set()}}
        finally:
            for p in (alice, bob):
                await p.close()


def _tone_wav(tmp_path: Path) -> Path:
    import numpy as np

    from mediaserver.audio import write_audio

    path = tmp_path / "tone.wav"
    if not path.exists():
        t = np.arange(48000 * 60) / 48000
        write_audio(path, (0.25 * np.sin(2 * np.pi * 660 * t)).astype(np.float32), 48000)
    return path


def test_bad_input_leaves_the_running_call_alone(start_server, tmp_path: Path, ice: None) -> None:
    server: ServerProcess = start_server("--no-enhance", "--secret", SECRET,
                                         "--rooms", f"{ROOM},spare")
    out = asyncio.run(_call_under_abuse(server, tmp_path))

    assert out["seen"] == {
        "garbage": "bad-json", "not-object": "bad-request", "unknown-type": "bad-request",
        "offer-before-join": "bad-request", "binary": "bad-request", "oversized": "too-large",
        "unknown-room": "unknown-room", "invalid-room": "unknown-room",
        "forged-token": "bad-token", "expired-token": "bad-token",
        "other-identity-token": "bad-token", "missing-token": "bad-token",
        "bad-sdp": "bad-sdp", "unusable-sdp": "bad-sdp", "bad-enhancement": "bad-request",
    }
    # the call flowed after every kind of abuse, the crash included
    assert out["checkpoints"] == ["before", "garbage", "oversized", "rooms", "tokens", "sdp",
                                  "crash joined", "crash killed"]
    assert server.alive()
    assert out["errors"] == {"alice": [], "bob": []} and out["closed"] == {"alice": False, "bob": False}
    for me, other in (("alice", "bob"), ("bob", "alice")):
        # nobody refused ever reached the call's media
        assert out["heard"][me] == sorted([other, "crash"])
        # and it kept flowing through all of it: of the frames received over the whole abuse
        # (there are hundreds), at least 80 % carry the tone; silence or concealment would not
        frames = out["end"][(me, other)][0] - out["start"][(me, other)][0]
        loud = out["end"][(me, other)][1] - out["start"][(me, other)][1]
        assert frames >= 7 * 25   # each checkpoint since the start waited for 25 fresh ones
        assert loud / frames >= 0.8, f"{me}: {loud} of {frames} frames from {other} carry the tone"
