"""``mediaserver client``: a headless participant for tests, benchmarks and demos.

It joins a room over the WebSocket, sends a WAV in real time as its microphone
(once, then silence), answers the server's renegotiations, and records what each
other participant sends to ``DIR/<identity>.wav`` on a wall-clock timeline: every
packet is placed by its RTP timestamp relative to that stream's first packet, so
lost or late audio stays silence at its true position instead of being squeezed out.
At the end of a call it prints a JSON summary on stdout; a client that never got into the
call (refused, unreachable) or was given a bad flag prints nothing there, one line on stderr
(exit 1; 2 for a flag).

With ``--reconnect`` (the default) a lost connection (``server-shutdown``, the socket
closed or dropped, the peer connection failed) is re-established with backoff
(``mediaserver/reconnect.py``) through the ``--url`` list and the server's ``joined.nodes``,
rejoining the same room as the same identity with the server's reconnect ticket
(``sfu/tickets.py``); the microphone goes on at its wall-clock position. The summary
counts ``reconnects`` and the ``longest_gap_ms`` of audio from any remote.

The summary's ``events`` are the server's messages in order (all but the negotiation the
client answers), each with ``t`` (s since the client started): the last ``--keep-events``
(:class:`EventLog`), counting older ones in ``events_dropped``. Its ``captions`` are the live
captions in order, partials and finals (:class:`CaptionLog`): the last ``--keep-events``
partials and, apart, the last ``--keep-finals`` finals, so an hour of speech (~12,000
partials) no longer pushes its finals out; ``captions_dropped`` counts both kinds let go,
``finals_dropped`` the finals alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import heapq
import logging
import os
import random
import signal
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse, urlunparse

import aiohttp
import numpy as np
from aiortc import (RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection,
                    RTCRtpSender, RTCSessionDescription)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .audio import AudioFileError, read_audio, resample, write_audio
from .config import (UsageError, add_option, check_ice_hosts, comma_entries, comma_list, comma_values,
                     ip_address, number_in, print_problem)
from .media.g711 import G711Decoder, G711Encoder
from .media.opus import FRAME_SAMPLES, OpusDecoder, OpusEncoder, OpusError, enable_opus_fec
from .patches import pin_host_addresses, tap_receiver, tolerate_consent_stalls
from .reconnect import Reconnector

logger = logging.getLogger(__name__)

RATE = 48000
CODECS = ("opus", "pcmu", "pcma")
# A join refused for one of these may succeed later; any other refusal ends the call.
RETRYABLE_REFUSALS = {"server-full", "rate-limited", "offer-timeout"}
HEARTBEAT_S = 10.0   # WebSocket ping interval; no pong within half of it: the socket is dead
# --keep-events: an hour-long call's server events with room to spare. A talker's speaking
# flag flips on after 60 ms of speech and off after 400 ms without (sfu/mediaclock.py), about
# one on/off pair per phrase (~2.5 s): ~2,900 events in an hour of continuous talk, plus a
# reconnect ticket every 150 s and the joins, leaves and mutes. Partial captions (one
# per 0.3 s of speech, ~12,000 an hour) are not sized for: they are replaced by the next.
DEFAULT_KEEP_EVENTS = 10_000
# --keep-finals: final captions have their own bound, so partials never push them out. A
# final closes a phrase (~2.5 s, as above): ~1,440 an hour of continuous talk in the room, so
# 50,000 hold ~35 hours (a few hundred bytes each: ~25 MB at the bound).
DEFAULT_KEEP_FINALS = 50_000


class FileSource(MediaStreamTrack):
    """Microphone stand-in: a WAV encoded once per 20 ms on an absolute schedule.

    Returns pre-encoded packets (Opus with FEC on, or PCMU / PCMA: ``codec``) so aiortc
    only packetizes them.
    """

    kind = "audio"

    def __init__(self, samples: np.ndarray, *, bitrate: int = 32000, codec: str = "opus",
                 start: Optional[float] = None, loop: bool = False) -> None:
        """``start``: loop time at which the file began playing on an earlier connection;
        this source then goes on from the file's position now (audio while disconnected is
        lost, as from a live microphone). ``loop``: play the file again and again (its length
        must be whole 20 ms frames); otherwise silence follows its end."""
        super().__init__()
        if loop and (len(samples) == 0 or len(samples) % FRAME_SAMPLES):
            raise ValueError(f"a looped source needs whole {FRAME_SAMPLES}-sample frames, "
                             f"got {len(samples)} samples")
        self._samples = samples
        self._loop = loop
        self._encoder: Any = OpusEncoder(bitrate=bitrate) if codec == "opus" else G711Encoder(codec)
        self._silence = np.zeros(FRAME_SAMPLES, np.float32)
        self._index = 0
        self.sent = 0
        self.start: Optional[float] = start   # loop time of the file's first frame

    def expect_loss(self, perc: int) -> None:
        """The loss the receiver reports, in % (Opus spends that much on in-band FEC)."""
        if isinstance(self._encoder, OpusEncoder):
            self._encoder.set_packet_loss_perc(perc)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        elif self.sent == 0:
            self._index = max(0, int((loop.time() - self.start) * RATE / FRAME_SAMPLES))
        due = self.start + self._index * FRAME_SAMPLES / RATE
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lo = self._index * FRAME_SAMPLES
        if self._loop:
            lo %= len(self._samples)
        frame = self._samples[lo:lo + FRAME_SAMPLES]
        if len(frame) < FRAME_SAMPLES:
            frame = np.concatenate([frame, self._silence[:FRAME_SAMPLES - len(frame)]])
        packet = self._encoder.encode_packet(frame, self._index * FRAME_SAMPLES)
        self._index += 1
        self.sent += 1
        return packet


class StreamRecorder:
    """One remote identity: decoded audio placed by RTP timestamp on the wall-clock line."""

    def __init__(self, identity: str, t0: float) -> None:
        self.identity = identity
        self._t0 = t0
        self._decoder = OpusDecoder()
        self._g711 = G711Decoder()
        self.codecs: set[str] = set()   # what this remote's packets came in
        self._buf = np.zeros(RATE * 10, np.float32)
        self._end = 0
        self._ssrc: Optional[int] = None
        self._base_ts = 0
        self._base_pos = 0
        self._last_ts = 0
        self._seen: set[int] = set()
        self.frames = 0
        self.decode_errors = 0
        self.lateness_ms: list[float] = []   # arrival minus the time its timestamp implies
        self.first_arrival: Optional[float] = None
        self.last_arrival: Optional[float] = None
        self.longest_gap_s = 0.0   # longest time between two packets of this remote, any connection

    def add(self, payload: bytes, ssrc: int, timestamp: int, arrival: float,
            codec: str = "opus") -> None:
        """One packet: Opus (48 kHz timestamps) or PCMU / PCMA (8 kHz, upsampled)."""
        scale = 1 if codec == "opus" else RATE // 8000
        if self.last_arrival is not None:
            self.longest_gap_s = max(self.longest_gap_s, arrival - self.last_arrival)
        self.last_arrival = arrival if self.last_arrival is None else max(self.last_arrival, arrival)
        if ssrc != self._ssrc:
            # New sender (slot reuse or rejoin): anchor its timeline at this arrival.
            self._ssrc = ssrc
            self._base_ts = timestamp
            self._last_ts = timestamp
            self._base_pos = max(self._end, int((arrival - self._t0) * RATE))
            self._decoder.reset()
            self._g711.reset()
        ts = self._unwrap(timestamp)
        pos = self._base_pos + (ts - self._base_ts) * scale
        if pos < 0 or pos in self._seen:
            return
        try:
            pcm = (self._decoder.decode(payload) if codec == "opus"
                   else self._g711.decode(codec, payload))
        except (OpusError, ValueError):
            self.decode_errors += 1
            return
        self._seen.add(pos)
        self.codecs.add(codec)
        self.frames += 1
        if self.first_arrival is None:
            self.first_arrival = arrival
        expected = self._t0 + pos / RATE
        self.lateness_ms.append((arrival - expected) * 1000.0)
        end = pos + len(pcm)
        if end > len(self._buf):
            grown = np.zeros(max(end, 2 * len(self._buf)), np.float32)
            grown[:self._end] = self._buf[:self._end]
            self._buf = grown
        self._buf[pos:end] = pcm
        self._end = max(self._end, end)

    def _unwrap(self, timestamp: int) -> int:
        delta = (timestamp - (self._last_ts & 0xFFFFFFFF)) % (1 << 32)
        if delta >= 1 << 31:
            delta -= 1 << 32
        self._last_ts = self._last_ts + delta
        return self._last_ts

    def audio(self, until: float) -> np.ndarray:
        n = max(self._end, int((until - self._t0) * RATE))
        out = np.zeros(n, np.float32)
        out[:self._end] = self._buf[:self._end]
        return out

    def concealed(self) -> int:
        """20 ms frames missing between this stream's first and last packet."""
        if not self._seen:
            return 0
        span = (max(self._seen) - min(self._seen)) // FRAME_SAMPLES + 1
        return max(0, span - len(self._seen))


class EventLog:
    """The last ``keep`` of a list that grows all call long (server events, captions) and how
    many older ones were dropped to stay within it (``dropped``): a client left in a call for
    days keeps a bounded summary."""

    def __init__(self, keep: int) -> None:
        self._items: deque[dict] = deque(maxlen=keep)
        self.dropped = 0

    def append(self, item: dict) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)

    def items(self) -> list[dict]:
        """The kept items, oldest first."""
        return list(self._items)


class CaptionLog:
    """Live captions as the summary keeps them: partials and finals in the order they came,
    each kind within its own bound (the last ``keep_partials`` partials, the last
    ``keep_finals`` finals; a caption is final when its ``final`` is true). A partial is
    replaced by the next one of its segment, so dropping old ones loses little; a final is the
    text itself: with one bound for both, an hour of speech (~12,000 partials) pushed the
    call's early finals out too."""

    def __init__(self, keep_partials: int, keep_finals: int) -> None:
        self._partials: deque[tuple[int, dict]] = deque(maxlen=keep_partials)
        self._finals: deque[tuple[int, dict]] = deque(maxlen=keep_finals)
        self._count = 0
        self.partials_dropped = 0
        self.finals_dropped = 0

    @property
    def dropped(self) -> int:
        """Captions let go, both kinds."""
        return self.partials_dropped + self.finals_dropped

    def append(self, caption: dict) -> None:
        self._count += 1
        kept = self._finals if caption.get("final") else self._partials
        if len(kept) == kept.maxlen:
            if kept is self._finals:
                self.finals_dropped += 1
            else:
                self.partials_dropped += 1
        kept.append((self._count, caption))

    def items(self) -> list[dict]:
        """The kept captions, both kinds, oldest first (as they came)."""
        return [c for _, c in heapq.merge(self._partials, self._finals, key=lambda nc: nc[0])]


def event_record(data: dict, t: float) -> dict:
    """A server message as the summary's ``events`` keeps it: as sent, plus ``t`` (s since the
    client started), without any reconnect ``ticket`` (``reconnect-ticket``, a ``redirect``'s
    ``reconnect``): a credential that lets its holder take this participant's place for
    minutes has no place in a summary that is printed and kept."""
    out = {k: v for k, v in data.items() if k != "ticket"}
    if isinstance(out.get("reconnect"), dict):
        out["reconnect"] = {k: v for k, v in out["reconnect"].items() if k != "ticket"}
    out["t"] = t
    return out


def ws_urls(urls: str) -> list[str]:
    """``--url`` as a list: one URL, or several separated by commas (tried in turn). Raises
    ValueError on a bad list, an empty entry included (``a,,b``, a trailing comma: a server
    left out by mistake is refused, not skipped); the message names no flag (its caller
    does, once)."""
    return [ws_url(u) for u in comma_entries(urls)]


def server_urls(text: str) -> str:
    """The argparse ``type`` of ``--url``: the text as given, once :func:`ws_urls` accepts it,
    so a bad URL is refused as the flag (or ``MEDIASERVER_URL``) is parsed, named once:
    ``argument --url: must be http(s):// or ws(s)://host:port, got 'foo://x'``."""
    try:
        ws_urls(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def describe_failure(exc: BaseException) -> str:
    """One line for a failed connection, its cause in words, never the exception's repr
    (``connection refused (127.0.0.1:8080)``, not ``ClientConnectorError(ConnectionKey(...``)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        # a refusal's strerror is "Connect call failed (...)"; a DNS error's errno is negative
        why = (os.strerror(cause.errno) if (cause.errno or 0) > 0
               else cause.strerror or str(cause) or type(cause).__name__).lower()
        return f"{why} ({exc.host}:{exc.port})"
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"HTTP {exc.status} {exc.message} instead of a WebSocket"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split())   # one line
    return f"{type(exc).__name__}: {text}" if text and not isinstance(exc, ConnectionError) \
        else text or type(exc).__name__


class JoinRefused(ConnectionError):
    """The server answered the join with an error (``code``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"server error {code}: {message}")
        self.code = code


class JoinFailed(ConnectionError):
    """No server of ``--url`` let the client in: each one's reason, in the order tried
    (``ws://a/ws: connection refused (a:8080); ws://b/ws: timed out``)."""

    def __init__(self, problems: list[tuple[str, BaseException]]) -> None:
        super().__init__("; ".join(f"{url}: {describe_failure(exc)}" for url, exc in problems))
        self.problems = problems


class Redirected(ConnectionError):
    """The room lives on another node of the cluster: join there (``url``, with ``reconnect``)."""

    def __init__(self, url: str, reconnect: Any) -> None:
        super().__init__(f"redirected to {url}")
        self.url = url
        self.reconnect = reconnect


MAX_REDIRECTS = 3   # a placement that keeps moving is a cluster fault, not a path to follow


def ws_url(url: str) -> str:
    """Accept http(s)://host:port[/] or ws(s)://host:port/ws."""
    parts = urlparse(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"must be http(s):// or ws(s)://host:port, got {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunparse((scheme, parts.netloc, path, "", parts.query, ""))


class HeadlessClient:
    """Signalling + one peer connection; the server makes every offer after the first."""

    def __init__(self, args: argparse.Namespace, samples: Optional[np.ndarray]) -> None:
        self.args = args
        self.reconnector = Reconnector(ws_urls(args.url), rng=random.Random(args.seed))
        self.reconnects = 0
        self.redirects = 0          # cluster redirects followed (at join or mid-call)
        self.joined_url: Optional[str] = None   # the node the client is (last) in through
        self.disconnects: list[dict] = []   # {"at_s", "reason", "rejoined_at_s"}
        self._ticket: Optional[str] = None   # the server's latest reconnect ticket
        self._hint_s: Optional[float] = None  # server-shutdown's retry hint
        self._lost = asyncio.Event()          # the peer connection failed
        self._closing = False
        self._sent_before = 0                 # frames sent on earlier connections
        self._reader: Optional[asyncio.Task] = None
        self._feedback: Optional[asyncio.Task] = None   # reported loss -> our Opus FEC
        self.identity = args.identity or f"guest-{uuid.uuid4().hex[:6]}"
        self.samples = samples
        self.pc: Optional[RTCPeerConnection] = None
        self.ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self.mids: dict[str, str] = {}
        self.tapped: set[int] = set()
        self.recorders: dict[str, StreamRecorder] = {}
        # every server message (event_record): the last --keep-events; every caption as sent
        # plus "t": the last --keep-events partials and the last --keep-finals finals
        self.events = EventLog(args.keep_events)
        self.captions = CaptionLog(args.keep_events, args.keep_finals)
        self.errors: list[dict] = []
        self.connection_states: list[str] = []  # the peer connection's, in order
        self.server_stats: Optional[dict] = None
        self.source: Optional[FileSource] = None
        self.t0 = 0.0
        self._stats_reply: Optional[asyncio.Future] = None
        self._impairment: Any = None
        self._rewriter: Any = None

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()
        wall0 = time.time()
        duration = self.args.duration
        if duration is None:
            duration = (len(self.samples) / RATE + 3.0) if self.samples is not None else 30.0
        deadline = self.t0 + duration
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)   # stop early, still summarise
        async with aiohttp.ClientSession() as session:
            joined = await self._first_join(session)
            while True:
                reason = await self._stay(stop, deadline)
                if reason is None:   # the end: stop or duration
                    await self._leave()
                    break
                if reason == "replaced":   # our identity rejoined elsewhere: do not push it out
                    await self._close_connection()
                    break
                await self._drop(reason)
                if not self.args.reconnect or not await self._rejoin(session, stop, deadline):
                    if not (stop.is_set() or loop.time() >= deadline) or not self.args.reconnect:
                        self.errors.append({"type": "disconnected", "message": (
                            f"the connection was lost ({reason}) and not re-established"
                            + ("" if self.args.reconnect else " (--no-reconnect)"))})
                    elif self.disconnects and self.disconnects[-1]["rejoined_at_s"] is None:
                        self.errors.append({"type": "disconnected", "message":
                                            f"the call ended while reconnecting after {reason}"})
                    break
            end = loop.time()
            if "connected" not in self.connection_states:
                self.errors.append({
                    "type": "media-failed",
                    "message": f"the media connection never connected (states: {self.connection_states or ['new']}); "
                               "check that --ice-host names an address the server's candidates can reach "
                               "(pin both to 127.0.0.1 for a local test)"})
        return self._summary(joined, end, wall0)

    async def _first_join(self, session: aiohttp.ClientSession) -> dict:
        """Join through the first ``--url`` that lets us in (each tried once, in order).

        When none does, raises the failure (one server) or :class:`JoinFailed` naming every
        server's reason, for the one line on stderr; each is logged at DEBUG as it happens."""
        problems: list[tuple[str, BaseException]] = []
        for url in list(self.reconnector.urls):
            try:
                joined = await self._connect(session, url)
                self.reconnector.connected(url, now=asyncio.get_running_loop().time())
                if problems:   # the call runs: say which servers were passed over
                    logger.warning("joined through %s; %s", url, "; ".join(
                        f"cannot join through {u}: {describe_failure(e)}" for u, e in problems))
                return joined
            except JoinRefused:
                raise   # the server said no: another node would say the same
            except (ConnectionError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                logger.debug("cannot join through %s: %s", url, describe_failure(exc))
                problems.append((url, exc))
        assert problems
        if len(problems) == 1:
            raise problems[0][1]
        raise JoinFailed(problems)

    async def _connect(self, session: aiohttp.ClientSession, url: str) -> dict:
        """Socket, join (token, or the reconnect ticket), peer connection, first offer."""
        self.mids, self.tapped = {}, set()
        self._lost = asyncio.Event()
        self._closing = False
        try:
            for hop in range(MAX_REDIRECTS + 1):
                # heartbeat: a socket that died silently (NAT, cable, proxy) is noticed in ~15 s
                self.ws = await session.ws_connect(url, max_msg_size=1 << 20, heartbeat=HEARTBEAT_S)
                join = {"type": "join", "room": self.args.room, "identity": self.identity,
                        "token": self.args.token}
                if self._ticket is not None:
                    join["reconnect"] = self._ticket
                await self._send(join)
                try:
                    joined = await self._expect("joined")
                    break
                except Redirected as moved:   # the room lives on another node (cluster)
                    if hop == MAX_REDIRECTS:
                        raise ConnectionError(f"more than {MAX_REDIRECTS} redirects") from None
                    logger.info("room %s is on %s: following the redirect", self.args.room, moved.url)
                    self.redirects += 1
                    self._take_ticket(moved.reconnect)
                    self.reconnector.add_urls([moved.url])
                    await self.ws.close()
                    url = moved.url
            self.joined_url = url
            self.identity = joined.get("identity", self.identity)
            self._take_ticket(joined.get("reconnect"))
            self.reconnector.add_urls(u for u in joined.get("nodes") or [] if isinstance(u, str))
            self.pc = RTCPeerConnection(self._rtc_config(joined))
            pc = self.pc

            @pc.on("connectionstatechange")
            def _connection_state() -> None:
                self.connection_states.append(pc.connectionState)
                if pc.connectionState == "failed" or (pc.connectionState == "closed"
                                                      and not self._closing):
                    self._lost.set()
            if self.args.listen_only:   # a listener: the server puts no stream of ours on its clock
                self.pc.addTransceiver("audio", direction="recvonly")
            else:
                previous = self.source
                if previous is not None:
                    self._sent_before += previous.sent
                self.source = FileSource(self.samples if self.samples is not None
                                         else np.zeros(0, np.float32), codec=self.args.codec,
                                         start=previous.start if previous is not None else None)
                self.pc.addTransceiver(self.source, direction="sendrecv")
            self._only_our_codec()
            offer = await self.pc.createOffer()
            await self.pc.setLocalDescription(offer)
            await self._send({"type": "offer",
                              "sdp": enable_opus_fec(self.pc.localDescription.sdp)})
            answer = await self._expect("answer")
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            self._tap_all()
            self._impair()
        except BaseException:
            await self._close_connection()
            raise
        self._reader = asyncio.get_running_loop().create_task(self._read())
        if self.source is not None:   # (nothing sent with --listen-only: no FEC to steer)
            self._feedback = asyncio.get_running_loop().create_task(self._follow_reported_loss())
        return joined

    async def _stay(self, stop: asyncio.Event, deadline: float) -> Optional[str]:
        """Until the end (None) or until the connection is lost (the reason)."""
        loop = asyncio.get_running_loop()
        assert self._reader is not None
        stopper = loop.create_task(stop.wait())
        failed = loop.create_task(self._lost.wait())
        try:
            await asyncio.wait([self._reader, stopper, failed],
                               timeout=max(0.0, deadline - loop.time()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            failed.cancel()
        if stop.is_set() or loop.time() >= deadline:
            return None
        if any(e.get("code") == "replaced" for e in self.errors):
            return "replaced"
        if self._hint_s is not None:
            return "server-shutdown"
        if self._lost.is_set():
            return "media-failed"
        return "signalling-closed"

    async def _leave(self) -> None:
        """The planned end: the server's stats of my stream, ``leave``, close."""
        loop = asyncio.get_running_loop()
        if self._reader is not None and not self._reader.done():
            self._stats_reply = loop.create_future()
            try:
                await self._send({"type": "stats"})
                self.server_stats = await asyncio.wait_for(self._stats_reply, 3.0)
                await self._send({"type": "leave"})
            except (asyncio.TimeoutError, ConnectionError, aiohttp.ClientError):
                pass
        await self._close_connection()

    async def _drop(self, reason: str) -> None:
        now = asyncio.get_running_loop().time()
        self.disconnects.append({"at_s": round(now - self.t0, 3), "reason": reason,
                                 "rejoined_at_s": None})
        self.reconnector.lost(now=now, hint_s=self._hint_s)
        failures = self.reconnector.failures   # > 0: the call did not prove healthy
        logger.warning("connection lost (%s) at %.2f s%s", reason, now - self.t0,
                       f"; retry in {max(0.0, self.reconnector.next_attempt().at - now):.1f} s "
                       f"(failure {failures} in a row: up under {self.reconnector.healthy_s:g} s)"
                       if failures and self.args.reconnect else "")
        self._hint_s = None
        await self._close_connection()

    async def _rejoin(self, session: aiohttp.ClientSession, stop: asyncio.Event,
                      deadline: float) -> bool:
        """Try again with backoff until in (True), or the end / a refusal (False)."""
        loop = asyncio.get_running_loop()
        while True:
            attempt = self.reconnector.next_attempt()
            wait = min(attempt.at, deadline) - loop.time()
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            if stop.is_set() or loop.time() >= deadline:
                return False
            try:
                await self._connect(session, attempt.url)
            except JoinRefused as exc:
                if exc.code not in RETRYABLE_REFUSALS:
                    self.errors.append({"type": "rejoin-refused", "code": exc.code,
                                        "message": str(exc)})
                    return False
                outcome = f"refused for now ({exc})"
            except (ConnectionError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                outcome = f"failed: {describe_failure(exc)}"
            else:
                self.reconnector.connected(attempt.url, now=loop.time())
                self.reconnects += 1
                self.disconnects[-1]["rejoined_at_s"] = round(loop.time() - self.t0, 3)
                self.disconnects[-1]["url"] = attempt.url
                logger.info("rejoined through %s after %d attempts", attempt.url, attempt.number + 1)
                return True
            self.reconnector.failed(now=loop.time())
            upcoming = self.reconnector.next_attempt()
            logger.info("rejoin attempt %d through %s %s; retry in %.1f s%s", attempt.number + 1,
                        attempt.url, outcome, max(0.0, upcoming.at - loop.time()),
                        "" if upcoming.url == attempt.url else f" through {upcoming.url}")

    async def _close_connection(self) -> None:
        """Close this connection's reader, socket and peer connection (recordings stay)."""
        self._closing = True
        for task in (self._reader, self._feedback):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._reader = self._feedback = None
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 3.0)
            except (asyncio.TimeoutError, ConnectionError, aiohttp.ClientError):
                pass
        if self.pc is not None:
            await self.pc.close()

    def _take_ticket(self, reconnect: Any) -> None:
        if isinstance(reconnect, dict) and isinstance(reconnect.get("ticket"), str):
            self._ticket = reconnect["ticket"]

    async def _follow_reported_loss(self, period_s: float = 1.0) -> None:
        """Our Opus encoder expects the loss the server reports (RTCP receiver reports), as a
        browser's does: no FEC bits on a clean link, FEC once packets go missing."""
        from .media.opus import ExpectedLoss
        from .rtcp import fraction_lost

        pc, source = self.pc, self.source
        assert pc is not None and source is not None
        expected = ExpectedLoss()
        sender = pc.getTransceivers()[0].sender
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period_s)
            try:
                fraction = await fraction_lost(sender)
            except Exception as exc:  # a closing connection; the call goes on without FEC
                logger.debug("no receiver report: %r", exc)
                continue
            if fraction is not None:
                expected.report(fraction, now_s=loop.time())
            source.expect_loss(expected.percent(now_s=loop.time()))

    def _rtc_config(self, joined: dict) -> RTCConfiguration:
        """No ICE servers, or with --relay the joined message's ones and relay candidates only."""
        if not self.args.relay:
            return RTCConfiguration(iceServers=[])
        servers = [RTCIceServer(urls=s["urls"], username=s.get("username"),
                                credential=s.get("credential"))
                   for s in joined.get("iceServers") or [] if isinstance(s, dict) and "urls" in s]
        if not any(s.username for s in servers):
            raise ConnectionError("--relay: the server handed out no TURN server with credentials")
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)

    async def _send(self, message: dict) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))

    async def _expect(self, kind: str) -> dict:
        assert self.ws is not None
        while True:
            msg = await self.ws.receive(timeout=20.0)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"signalling closed while waiting for {kind!r}")
            data = json.loads(msg.data)
            if data.get("type") == kind:
                return data
            if data.get("type") == "caption":
                self._caption(data)
                continue
            self._event(data)
            if data.get("type") == "error":
                raise JoinRefused(str(data.get("code")), str(data.get("message")))
            if data.get("type") == "redirect" and isinstance(data.get("url"), str):
                raise Redirected(data["url"], data.get("reconnect"))

    async def _read(self) -> None:
        try:
            await self._read_messages()
        except Exception as exc:  # this connection is over; the summary still prints
            logger.warning("signalling ended: %s", describe_failure(exc))
            if not self.args.reconnect:
                self.errors.append({"type": "client-error", "message": repr(exc)})

    async def _read_messages(self) -> None:
        assert self.ws is not None and self.pc is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            kind = data.get("type")
            if kind == "stats" and self._stats_reply is not None and not self._stats_reply.done():
                self._stats_reply.set_result(data)   # the reply we asked for (server_view)
                continue
            if kind == "caption":
                self._caption(data)
                continue
            if kind == "offer":   # negotiation the client answers, not an event
                await self.pc.setRemoteDescription(
                    RTCSessionDescription(sdp=data["sdp"], type="offer"))
                self._only_our_codec()
                self.mids = {str(k): str(v) for k, v in (data.get("tracks") or {}).items()}
                self._tap_all()
                answer = await self.pc.createAnswer()
                await self.pc.setLocalDescription(answer)
                await self._send({"type": "answer",
                                  "sdp": enable_opus_fec(self.pc.localDescription.sdp)})
                self._impair()
                continue
            self._event(data)
            if kind == "reconnect-ticket":
                self._take_ticket(data)
            elif kind == "redirect" and isinstance(data.get("url"), str):
                # the room moved to another node (cluster reconciliation): rejoin there at once
                logger.warning("room moved to %s", data["url"])
                self.redirects += 1
                self._take_ticket(data.get("reconnect"))
                self.reconnector.add_urls([data["url"]])
                self.reconnector.moved(data["url"])
                self._hint_s = 0.0
            elif kind == "server-shutdown":
                hint = data.get("retry_after_ms")
                self._hint_s = hint / 1000.0 if isinstance(hint, (int, float)) and hint >= 0 else 0.0
                logger.warning("server shutting down: %s", data.get("message"))
            elif kind == "error":
                logger.warning("server error: %s", data)
                self.errors.append(data)
            else:
                logger.debug("event %s", data)

    def _since_start(self) -> float:
        return round(asyncio.get_running_loop().time() - self.t0, 3)

    def _event(self, data: dict) -> None:
        """A server message for the summary's ``events``, in order (:func:`event_record`):
        any but the negotiation the client takes part in (``joined``, ``answer``, an
        ``offer``, the ``stats`` reply it asked for) and captions (``captions``)."""
        self.events.append(event_record(data, self._since_start()))

    def _caption(self, data: dict) -> None:
        """A ``caption`` event (live ASR of a participant, ``serve --asr``): kept for the
        summary's ``captions`` with ``t`` (s since the client started); a final one is also
        one log line, ``caption alice 0.4-3.1 s: the quick brown fox`` (partials at DEBUG)."""
        self.captions.append({**data, "t": self._since_start()})
        try:
            span = f"{float(data['start_ms']) / 1000.0:.1f}-{float(data['end_ms']) / 1000.0:.1f} s"
        except (KeyError, TypeError, ValueError):
            span = "?"
        text = " ".join(str(data.get("text", "")).split())
        if data.get("final"):
            logger.info("caption %s %s: %s", data.get("identity"), span, text)
        else:
            logger.debug("partial caption %s %s: %s", data.get("identity"), span, text)

    def _only_our_codec(self) -> None:
        """Offer and accept only ``--codec`` on every audio transceiver (a G.711-only
        endpoint, such as a SIP gateway, knows no other). aiortc reads preferences when a
        description is applied, so transceivers an offer has just created get their
        negotiated list filtered as well (the answer is written from it)."""
        assert self.pc is not None
        want = f"audio/{self.args.codec}"
        caps = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == want]
        for transceiver in self.pc.getTransceivers():
            transceiver.setCodecPreferences(caps)
            transceiver._codecs = [c for c in transceiver._codecs if c.mimeType.lower() == want]

    def _tap_all(self) -> None:
        assert self.pc is not None
        loop = asyncio.get_running_loop()
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            if id(receiver) in self.tapped:
                continue
            self.tapped.add(id(receiver))
            codec_of: list[Any] = []

            def on_packet(packet: Any, arrival_ms: float, _t: Any = transceiver,
                          _codec_of: list[Any] = codec_of) -> None:
                identity = self.mids.get(_t.mid or "")
                if identity is None:
                    return
                rec = self.recorders.get(identity)
                if rec is None:
                    rec = self.recorders[identity] = StreamRecorder(identity, self.t0)
                rec.add(packet.payload, packet.ssrc, packet.timestamp, arrival_ms / 1000.0,
                        _codec_of[0](packet.payload_type))

            codec_of.append(tap_receiver(receiver, on_packet, lambda: loop.time() * 1000.0))

    def _impair(self) -> None:
        a = self.args
        faults = parse_discontinuities(a.rtp_discontinuity)
        if faults:
            from .patches import rewrite_peer_connection
            from .media.rtpfault import RtpRewriter

            if self._rewriter is None:
                self._rewriter = RtpRewriter(faults, seed=a.seed)
            rewrite_peer_connection(self.pc, self._rewriter)
        if not (a.loss or a.jitter_ms or a.reorder):
            return
        from .media.impair import Impairment, ImpairmentConfig
        from .patches import impair_peer_connection

        if self._impairment is None:
            self._impairment = Impairment(ImpairmentConfig(
                loss=a.loss, burst=a.loss_burst, jitter_ms=a.jitter_ms, reorder=a.reorder,
                seed=a.seed))
        impair_peer_connection(self.pc, self._impairment)

    def _summary(self, joined: dict, end: float, wall0: float) -> dict:
        out_dir = Path(self.args.record_dir) if self.args.record_dir else None
        remote: dict[str, Any] = {}
        server_people = (self.server_stats or {}).get("participants", {})
        receiving = (self.server_stats or {}).get("receiving", {})
        for identity, rec in sorted(self.recorders.items()):
            path = None
            if out_dir is not None:
                path = out_dir / f"{identity}.wav"
                write_audio(path, rec.audio(end), RATE)
            late = np.array(rec.lateness_ms) if rec.lateness_ms else np.zeros(1)
            # Arrival jitter relative to the earliest packet of the stream (network + pacing).
            jitter = late - late.min()
            server = receiving.get(identity, {})
            jb = float(server.get("current_delay_ms") or 0.0)
            # Estimate: server jitter-buffer level + half a tick of clock wait on average +
            # the enhancer's 10 ms when it is on + Opus look-ahead (6.5 ms) + the arrival
            # jitter seen here. benchmarks/sfu.py measures the real figure by content match.
            enhancer = 10.0 if server.get("enhancement") else 0.0
            delay = jb + 10.0 + enhancer + 6.5 + float(np.percentile(jitter, 50))
            remote[identity] = {
                "frames_received": rec.frames,
                "codecs": sorted(rec.codecs),
                "concealed": rec.concealed(),
                "decode_errors": rec.decode_errors,
                "first_arrival_s": None if rec.first_arrival is None else round(
                    rec.first_arrival - self.t0, 3),
                "arrival_jitter_p95_ms": round(float(np.percentile(jitter, 95)), 2),
                "estimated_delay_ms": round(delay, 1),
                "longest_gap_ms": round(rec.longest_gap_s * 1000.0, 1),
                "file": str(path) if path else None,
            }
        return {
            "identity": self.identity, "room": self.args.room, "codec": self.args.codec,
            "started_unix": round(wall0, 4), "duration_s": round(end - self.t0, 3),
            "joined_with": [p.get("identity") for p in joined.get("participants", [])],
            "sent_frames": self._sent_before + (self.source.sent if self.source else 0),
            "send_start_unix": None if self.source is None or self.source.start is None
            else round(wall0 + (self.source.start - self.t0), 4),
            "remote": remote,
            # the server's receive statistics of my own stream (jitter buffer, time scaling)
            "server_view": server_people.get(self.identity),
            # every server message in order with "t" (event_record): the last --keep-events
            "events": self.events.items(), "events_dropped": self.events.dropped,
            # live captions (serve --asr): partials ("final": false) and finals, in order, each
            # kind within its own bound (CaptionLog); captions_dropped counts both kinds
            "captions": self.captions.items(), "captions_dropped": self.captions.dropped,
            "finals_dropped": self.captions.finals_dropped,
            "reconnects": self.reconnects, "redirects": self.redirects, "joined_url": self.joined_url,
            # the longest stretch without audio from a remote that was sending (any remote)
            "longest_gap_ms": round(max((r.longest_gap_s for r in self.recorders.values()),
                                        default=0.0) * 1000.0, 1),
            "disconnects": self.disconnects,
            "url": self.reconnector.url,
            "errors": self.errors,
            "rtp_discontinuities_sent": [
                {"kind": f.kind, "at_s": f.at_s}
                for f in (self._rewriter.applied if self._rewriter is not None else [])],
            "local_candidate_types": sorted({
                line.split(" typ ")[1].split()[0]
                for line in (self.pc.localDescription.sdp.splitlines()
                             if self.pc is not None and self.pc.localDescription else [])
                if line.startswith("a=candidate:") and " typ " in line}),
        }


def parse_discontinuities(values: Optional[list[str]]) -> list[Any]:
    """``--rtp-discontinuity`` values (each ``KIND@SECONDS``, comma lists allowed).

    Raises ``ValueError`` on a bad entry.
    """
    from .media.rtpfault import RtpDiscontinuity

    return [RtpDiscontinuity.parse(item) for item in comma_values(values)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--url", type=server_urls, default="http://127.0.0.1:8080/",
               help="server URL, or a comma list of servers tried in turn (first join and "
                    "every reconnection)")
    add_option(parser, "--room", default=None, help="room to join (required)")
    add_option(parser, "--identity", default=None, help="participant name (default random)")
    add_option(parser, "--token", default=None, help="join token (mediaserver token)")
    add_option(parser, "--send", default=None, help="WAV sent once in real time, then silence")
    add_option(parser, "--listen-only", action="store_true", default=False,
               help="offer the audio recvonly: hear the room, send nothing (a monitoring console, a "
                    "recorder); the server counts no publisher and runs no stream for it. Without "
                    "it a client with no --send still sends silence")
    add_option(parser, "--codec", default="opus", choices=CODECS,
               help="the one audio codec offered and accepted, both ways (pcmu/pcma: G.711 "
                    "at 8 kHz, as a SIP gateway would)")
    add_option(parser, "--record-dir", default=None, help="write DIR/<identity>.wav per remote")
    add_option(parser, "--duration", type=number_in(0), default=None,
               help="seconds to stay (default: file length + 3 s, or 30 s); SIGTERM/SIGINT end early")
    add_option(parser, "--ice-host", action="append", default=None, type=comma_list(ip_address),
               help="pin ICE host candidates (comma list; 127.0.0.1 in tests)")
    add_option(parser, "--loss", type=number_in(0, 1), default=0.0,
               help="drop this fraction of sent packets, 0..1 (under 1)")
    add_option(parser, "--loss-burst", type=number_in(1), default=1.0, help="mean loss burst length, packets")
    add_option(parser, "--jitter-ms", type=number_in(0), default=0.0, help="random extra send delay, ms")
    add_option(parser, "--reorder", type=number_in(0, 1), default=0.0, help="probability to reorder a packet, 0..1")
    add_option(parser, "--seed", type=int, default=0, help="impairment random seed")
    add_option(parser, "--rtp-discontinuity", action="append", default=None,
               type=comma_list(), metavar="KIND@SECONDS",
               help="break the sent RTP numbering SECONDS after the first packet (repeatable; "
                    "KIND: seq-restart, seq-jump (+10000), ts-back / ts-forward (1 s), "
                    "ssrc-change); the same time for two kinds breaks both at once")
    add_option(parser, "--reconnect", action=argparse.BooleanOptionalAction, default=True,
               help="after a server restart, a dropped socket or a failed media connection, "
                    "rejoin the same room as the same identity with backoff (default on)")
    add_option(parser, "--keep-events", type=number_in(1, kind=int), default=DEFAULT_KEEP_EVENTS,
               metavar="N",
               help="the summary keeps the last N server events and the last N partial "
                    "captions, counting older ones in events_dropped / captions_dropped (default "
                    f"{DEFAULT_KEEP_EVENTS}: an hour-long call's events; partial captions "
                    "come every 0.3 s of speech); finals have --keep-finals")
    add_option(parser, "--keep-finals", type=number_in(1, kind=int), default=DEFAULT_KEEP_FINALS,
               metavar="N",
               help="the summary keeps the last N final captions, apart from the partials, "
                    "counting older ones in finals_dropped (and captions_dropped) (default "
                    f"{DEFAULT_KEEP_FINALS}: ~35 hours of continuous talk, one final per phrase)")
    add_option(parser, "--relay", action="store_true", default=False,
               help="send and receive only through the TURN server named in 'joined' "
                    "(ICE transport policy relay)")


def main(args: argparse.Namespace) -> int:
    if not args.room:
        raise UsageError("--room is required")
    hosts = comma_values(args.ice_host, ip_address)
    check_ice_hosts(hosts, "pin one of them (127.0.0.1 for a server on this machine)")
    sending = [flag for flag, on in (("--send", args.send), ("--loss", args.loss), ("--jitter-ms", args.jitter_ms),
                                      ("--reorder", args.reorder), ("--rtp-discontinuity", args.rtp_discontinuity))
               if on]
    if args.listen_only and sending:
        raise UsageError(f"--listen-only sends nothing: {', '.join(sending)} would have no effect")
    if args.loss >= 1:   # (the ranges are checked as the flags are parsed, each named once)
        raise UsageError(f"--loss must be under 1 (every packet dropped), got {args.loss:g}")
    try:
        parse_discontinuities(args.rtp_discontinuity)
    except ValueError as exc:
        raise UsageError(f"--rtp-discontinuity: {exc}") from None
    samples = None
    if args.send:
        try:
            audio, rate = read_audio(args.send)
        except AudioFileError as exc:
            raise UsageError(f"--send: {exc}") from None
        samples = resample(audio, rate, RATE)
    from . import patches

    try:
        patches.apply()   # the same aiortc behaviour as the server (mediaserver/patches.py)
    except patches.PatchError as exc:
        raise UsageError(str(exc)) from None
    pin_host_addresses(hosts, log_level=logging.DEBUG)   # (serve says it at INFO)
    tolerate_consent_stalls()
    client = HeadlessClient(args, samples)
    try:
        summary = asyncio.run(client.run())
    except (ConnectionError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        # no call ran: stdout stays empty (it carries a summary only), as for a usage error
        print_problem(args, f"cannot join room {args.room}: {describe_failure(exc)}")
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps(summary, indent=2), flush=True)
    if any(e.get("type") == "media-failed" for e in summary["errors"]):
        print_problem(args, "the media connection never connected")
        return 1
    lost = [e for e in summary["errors"] if e.get("type") in ("disconnected", "rejoin-refused")]
    if lost:
        print_problem(args, lost[0]["message"])
        return 1
    return 0
