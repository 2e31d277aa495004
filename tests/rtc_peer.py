"""An aiortc participant inside the test's own event loop, for signalling-level tests.

Unlike ``mediaserver client`` (a subprocess), a test can stop this one reading its socket,
flood the server, and watch what it hears while that happens:

- ``join()``, ``publish()`` (first offer with a tone as the microphone, answer awaited; a
  ``listen_only`` peer offers its audio ``recvonly``: it hears the room and sends nothing);
- a reader task answers every server offer and keeps events and errors;
- ``stop_reading()``: nothing reads the socket any more (aiohttp stops reading the TCP
  stream once 64 KiB are buffered, so the server's sends back up);
- every received packet is decoded per remote identity: ``frames(who)``, ``hears(who)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any, Callable, Iterator, Optional

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from mediaserver.client import FileSource
from mediaserver.media.opus import OpusDecoder, OpusError, enable_opus_fec
from mediaserver.patches import pin_host_addresses, tap_receiver
from waiting import until

RATE = 48000


def tone(hz: float, seconds: float = 120.0, amplitude: float = 0.25, *,
         pulsed: bool = False) -> np.ndarray:
    """A sine; ``pulsed``: 0.6 s on, 0.2 s off, like syllables (the denoiser fades a steady
    tone as stationary noise, so a test through the enhancer sends it pulsed)."""
    t = np.arange(int(RATE * seconds)) / RATE
    x = amplitude * np.sin(2 * np.pi * hz * t)
    if pulsed:
        x *= (t % 0.8) < 0.6
    return x.astype(np.float32)


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """ICE of this process's peer connections on 127.0.0.1 only (aioice skips loopback)."""
    pin_host_addresses(["127.0.0.1"])
    try:
        yield
    finally:
        pin_host_addresses([])


def small_buffer_session(receive_buffer: int = 16 * 1024) -> aiohttp.ClientSession:
    """A client session whose sockets have a fixed, small kernel receive buffer.

    Loopback TCP otherwise grows a receive buffer up to ``tcp_rmem``'s maximum (32 MiB
    here), so how much a client that stops reading absorbs would vary from run to run.
    """
    def make_socket(addr_info: Any) -> socket.socket:
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # also stops autotuning
        return sock

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=make_socket))


async def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
                     interval: float = 0.05) -> None:
    """``waiting.until`` with a coarser poll (these checks scan received frames)."""
    await until(check, timeout=timeout, what=what, interval=interval)


class Heard:
    """What was heard from one remote participant: ``frames`` counts decoded 20 ms frames,
    ``loud`` those whose RMS exceeds ``LOUD`` (a tone at the tests' level is far above it;
    silence, comfort noise and faded concealment are not)."""

    LOUD = 0.02

    def __init__(self) -> None:
        self.decoder = OpusDecoder()
        self.frames = 0
        self.loud = 0

    def add(self, payload: bytes) -> None:
        try:
            pcm = self.decoder.decode(payload)
        except OpusError:
            return
        self.frames += 1
        self.loud += int(np.sqrt(np.mean(pcm ** 2)) > self.LOUD)


class RtcPeer:
    """One participant: a WebSocket to ``/ws`` and an RTCPeerConnection, in this loop."""

    def __init__(self, ws_url: str, room: str, identity: str, *, tone_hz: Optional[float] = 440.0,
                 token: Optional[str] = None, pulsed: bool = False, looped: bool = False,
                 listen_only: bool = False) -> None:
        """``looped``: the tone plays for as long as the call lasts (a 4 s loop of a whole
        number of cycles and pulses; ``tone_hz`` must be a whole number), else it lasts 120 s.
        ``listen_only``: the first offer's audio is ``recvonly`` (no microphone, no tone)."""
        self.ws_url, self.room, self.identity, self.token = ws_url, room, identity, token
        self.listen_only = listen_only
        self.tone_hz = tone_hz
        self.pulsed = pulsed
        self.looped = looped
        if looped and (tone_hz is None or tone_hz != int(tone_hz)):
            raise ValueError(f"a looped tone needs whole hertz, got {tone_hz}")
        self.ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self.pc: Optional[RTCPeerConnection] = None
        self.source: Optional[FileSource] = None
        self.mids: dict[str, str] = {}
        self.heard: dict[str, Heard] = {}
        self.events: list[dict] = []
        self.errors: list[dict] = []
        self.answered_offers = 0
        self.closed = asyncio.Event()
        self._tapped: set[int] = set()
        self._reader: Optional[asyncio.Task] = None

    # -- signalling ------------------------------------------------------------------------
    async def connect(self, session: aiohttp.ClientSession) -> None:
        self.ws = await session.ws_connect(self.ws_url, max_msg_size=1 << 20, autoping=True)

    async def send(self, message: dict) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))

    async def receive(self, timeout: float = 30.0) -> dict:
        """The next message (only while no reader task runs)."""
        assert self.ws is not None and self._reader is None
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket ended: {msg.type.name} {msg.data!r} {msg.extra!r}")
        return json.loads(msg.data)

    async def expect(self, kind: str, timeout: float = 30.0) -> dict:
        """Read until a message of ``kind``; others are kept in ``events``/``errors``."""
        deadline = time.monotonic() + timeout
        while True:
            data = await self.receive(max(0.1, deadline - time.monotonic()))
            if data.get("type") == kind:
                return data
            (self.errors if data.get("type") == "error" else self.events).append(data)

    async def join(self) -> dict:
        await self.send({"type": "join", "room": self.room, "identity": self.identity,
                         "token": self.token})
        return await self.expect("joined")

    async def make_offer(self) -> str:
        """Create the peer connection (tone as microphone) and return its first offer's SDP."""
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if self.listen_only:
            self.pc.addTransceiver("audio", direction="recvonly")
            await self.pc.setLocalDescription(await self.pc.createOffer())
            return enable_opus_fec(self.pc.localDescription.sdp)
        if self.tone_hz and self.looped:
            self.source = FileSource(tone(self.tone_hz, 4.0, pulsed=self.pulsed), loop=True)
        else:
            self.source = FileSource(tone(self.tone_hz, pulsed=self.pulsed) if self.tone_hz
                                     else np.zeros(0, np.float32))
        self.pc.addTransceiver(self.source, direction="sendrecv")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return enable_opus_fec(self.pc.localDescription.sdp)

    async def publish(self, *, read_after: bool = True) -> None:
        """First offer, the server's answer, then (``read_after``) the reader task."""
        await self.send({"type": "offer", "sdp": await self.make_offer()})
        answer = await self.expect("answer")
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        self._tap()
        if read_after:
            self.start_reading()

    def start_reading(self) -> None:
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def stop_reading(self) -> None:
        task, self._reader = self._reader, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                await self._handle(json.loads(msg.data))
        finally:
            self.closed.set()

    async def _handle(self, data: dict) -> None:
        kind = data.get("type")
        if kind == "offer" and self.pc is not None:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer"))
            self.mids = {str(k): str(v) for k, v in (data.get("tracks") or {}).items()}
            self._tap()
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.send({"type": "answer", "sdp": enable_opus_fec(self.pc.localDescription.sdp)})
            self.answered_offers += 1
        elif kind == "error":
            self.errors.append(data)
        else:
            self.events.append(data)

    def left(self) -> list[str]:
        return [e["identity"] for e in self.events if e.get("type") == "participant-left"]

    # -- media -----------------------------------------------------------------------------
    def _tap(self) -> None:
        assert self.pc is not None
        loop = asyncio.get_running_loop()
        for transceiver in self.pc.getTransceivers():
            if id(transceiver.receiver) in self._tapped:
                continue
            self._tapped.add(id(transceiver.receiver))

            def on_packet(packet: Any, _arrival_ms: float, _t: Any = transceiver) -> None:
                who = self.mids.get(_t.mid or "")
                if who is not None:
                    self.heard.setdefault(who, Heard()).add(packet.payload)

            tap_receiver(transceiver.receiver, on_packet, lambda: loop.time() * 1000.0)

    def frames(self, who: str) -> int:
        heard = self.heard.get(who)
        return heard.frames if heard else 0

    def loud_frames(self, who: str) -> int:
        heard = self.heard.get(who)
        return heard.loud if heard else 0

    async def hears(self, who: str, *, frames: int = 50, timeout: float = 60.0) -> None:
        """Wait until ``frames`` more frames from ``who`` carry sound (a tone is far above
        ``Heard.LOUD``); silence, comfort noise or faded concealment do not count, so the
        join-up silence of a new subscription is waited out, and a dead call times out."""
        start = self.loud_frames(who)
        await wait_until(lambda: self.loud_frames(who) >= start + frames, timeout=timeout,
                         what=f"{self.identity} to hear {frames} frames of sound from {who}")

    async def close(self) -> None:
        await self.stop_reading()
        if self.source is not None:
            self.source.stop()
        if self.ws is not None:
            await self.ws.close()
        if self.pc is not None:
            await self.pc.close()


async def flood(peer: RtcPeer, count: int, message: Optional[dict] = None) -> None:
    """Send ``count`` copies of ``message`` (default ``stats``) as fast as the socket takes them."""
    text = json.dumps(message or {"type": "stats"})
    assert peer.ws is not None
    for i in range(count):
        await peer.ws.send_str(text)
        if i % 50 == 49:
            await asyncio.sleep(0)   # let this loop's other peers send and receive their media

