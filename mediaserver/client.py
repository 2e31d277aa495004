"""``mediaserver client``: a headless participant for tests, benchmarks and demos.

It joins a room over the WebSocket, sends a WAV in real time as its microphone
(once, then silence), answers the server's renegotiations, and records what each
other participant sends to ``DIR/<identity>.wav`` on a wall-clock timeline: every
packet is placed by its RTP timestamp relative to that stream's first packet, so
lost or late audio stays silence at its true position instead of being squeezed out.
At the end it prints a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse, urlunparse

import aiohttp
import numpy as np
from aiortc import (RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection,
                    RTCRtpSender, RTCSessionDescription)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .audio import AudioFileError, read_audio, resample, write_audio
from .config import add_option
from .ice import pin_host_addresses
from .media.g711 import G711Decoder, G711Encoder
from .media.opus import FRAME_SAMPLES, OpusDecoder, OpusEncoder, OpusError
from .sfu.rtptap import tap_receiver, tolerate_consent_stalls
from .sfu.sdp import enable_opus_fec

logger = logging.getLogger(__name__)

RATE = 48000
CODECS = ("opus", "pcmu", "pcma")


class FileSource(MediaStreamTrack):
    """Microphone stand-in: a WAV encoded once per 20 ms on an absolute schedule.

    Returns pre-encoded packets (Opus with FEC on, or PCMU / PCMA: ``codec``) so aiortc
    only packetizes them.
    """

    kind = "audio"

    def __init__(self, samples: np.ndarray, *, bitrate: int = 32000, codec: str = "opus") -> None:
        super().__init__()
        self._samples = samples
        self._encoder: Any = OpusEncoder(bitrate=bitrate) if codec == "opus" else G711Encoder(codec)
        self._silence = np.zeros(FRAME_SAMPLES, np.float32)
        self._index = 0
        self.start: Optional[float] = None   # loop time of the first frame's capture

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        due = self.start + self._index * FRAME_SAMPLES / RATE
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lo = self._index * FRAME_SAMPLES
        frame = self._samples[lo:lo + FRAME_SAMPLES]
        if len(frame) < FRAME_SAMPLES:
            frame = np.concatenate([frame, self._silence[:FRAME_SAMPLES - len(frame)]])
        packet = self._encoder.encode_packet(frame, self._index * FRAME_SAMPLES)
        self._index += 1
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

    def add(self, payload: bytes, ssrc: int, timestamp: int, arrival: float,
            codec: str = "opus") -> None:
        """One packet: Opus (48 kHz timestamps) or PCMU / PCMA (8 kHz, upsampled)."""
        scale = 1 if codec == "opus" else RATE // 8000
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


def ws_url(url: str) -> str:
    """Accept http(s)://host:port[/] or ws(s)://host:port/ws."""
    parts = urlparse(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"--url must be http(s):// or ws(s)://host:port, got {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunparse((scheme, parts.netloc, path, "", parts.query, ""))


class HeadlessClient:
    """Signalling + one peer connection; the server makes every offer after the first."""

    def __init__(self, args: argparse.Namespace, samples: Optional[np.ndarray]) -> None:
        self.args = args
        self.identity = args.identity or f"guest-{uuid.uuid4().hex[:6]}"
        self.samples = samples
        self.pc: Optional[RTCPeerConnection] = None
        self.ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self.mids: dict[str, str] = {}
        self.tapped: set[int] = set()
        self.recorders: dict[str, StreamRecorder] = {}
        self.events: list[dict] = []
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
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(self.args.url), max_msg_size=1 << 20) as ws:
                self.ws = ws
                await self._send({"type": "join", "room": self.args.room,
                                  "identity": self.identity, "token": self.args.token})
                joined = await self._expect("joined")
                self.pc = RTCPeerConnection(self._rtc_config(joined))
                pc = self.pc

                @pc.on("connectionstatechange")
                def _connection_state() -> None:
                    self.connection_states.append(pc.connectionState)
                self.source = FileSource(self.samples if self.samples is not None
                                         else np.zeros(0, np.float32), codec=self.args.codec)
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
                reader = loop.create_task(self._read())
                duration = self.args.duration
                if duration is None:
                    duration = (len(self.samples) / RATE + 3.0) if self.samples is not None else 30.0
                stop = asyncio.Event()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)   # stop early, still summarise
                stopper = loop.create_task(stop.wait())
                left = max(0.0, duration - (loop.time() - self.t0))
                await asyncio.wait([reader, stopper], timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not reader.done():
                    self._stats_reply = loop.create_future()
                    await self._send({"type": "stats"})
                    try:
                        self.server_stats = await asyncio.wait_for(self._stats_reply, 3.0)
                    except asyncio.TimeoutError:
                        pass
                    await self._send({"type": "leave"})
                    reader.cancel()
                end = loop.time()
                if "connected" not in self.connection_states:
                    self.errors.append({
                        "type": "media-failed",
                        "message": f"the media connection never connected (states: {self.connection_states or ['new']}); "
                                   "check that --ice-host names an address the server's candidates can reach "
                                   "(pin both to 127.0.0.1 for a local test)"})
                await self.pc.close()
        return self._summary(joined, end, wall0)

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
            if data.get("type") == "error":
                raise ConnectionError(f"server error {data.get('code')}: {data.get('message')}")
            self.events.append(data)

    async def _read(self) -> None:
        try:
            await self._read_messages()
        except Exception as exc:  # the call is over either way; the summary still prints
            logger.warning("signalling ended: %r", exc)
            self.errors.append({"type": "client-error", "message": repr(exc)})

    async def _read_messages(self) -> None:
        assert self.ws is not None and self.pc is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            kind = data.get("type")
            if kind == "offer":
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
            elif kind == "stats" and self._stats_reply is not None and not self._stats_reply.done():
                self._stats_reply.set_result(data)
            elif kind == "error":
                logger.warning("server error: %s", data)
                self.errors.append(data)
            else:
                self.events.append({**data, "t": round(asyncio.get_running_loop().time() - self.t0, 3)})
                logger.debug("event %s", data)

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
            from .media.impair import rewrite_peer_connection
            from .media.rtpfault import RtpRewriter

            if self._rewriter is None:
                self._rewriter = RtpRewriter(faults, seed=a.seed)
            rewrite_peer_connection(self.pc, self._rewriter)
        if not (a.loss or a.jitter_ms or a.reorder):
            return
        from .media.impair import Impairment, ImpairmentConfig, impair_peer_connection

        if self._impairment is None:
            self._impairment = Impairment(ImpairmentConfig(
                loss=a.loss, burst=a.loss_burst, jitter_ms=a.jitter_ms, reorder=a.reorder,
                seed=a.seed))
        impair_peer_connection(self.pc, self._impairment)

    def _summary(self, joined: dict, end: float, wall0: float) -> dict:
        out_dir = Path(self.args.record_dir) if self.args.record_dir else None
        remote: dict[str, Any] = {}
        server_people = (self.server_stats or {}).get("participants", {})
        for identity, rec in sorted(self.recorders.items()):
            path = None
            if out_dir is not None:
                path = out_dir / f"{identity}.wav"
                write_audio(path, rec.audio(end), RATE)
            late = np.array(rec.lateness_ms) if rec.lateness_ms else np.zeros(1)
            # Arrival jitter relative to the earliest packet of the stream (network + pacing).
            jitter = late - late.min()
            server = server_people.get(identity, {})
            jb = float(server.get("current_delay_ms", 0.0))
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
                "file": str(path) if path else None,
            }
        return {
            "identity": self.identity, "room": self.args.room, "codec": self.args.codec,
            "started_unix": round(wall0, 4), "duration_s": round(end - self.t0, 3),
            "joined_with": [p.get("identity") for p in joined.get("participants", [])],
            "sent_frames": self.source._index if self.source else 0,
            "send_start_unix": None if self.source is None or self.source.start is None
            else round(wall0 + (self.source.start - self.t0), 4),
            "remote": remote,
            "events": [e for e in self.events if e.get("type") in (
                "participant-joined", "participant-left")],
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

    return [RtpDiscontinuity.parse(item) for v in (values or []) for item in v.split(",")
            if item.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--url", default="http://127.0.0.1:8080/", help="server URL")
    add_option(parser, "--room", default=None, help="room to join")
    add_option(parser, "--identity", default=None, help="participant name (default random)")
    add_option(parser, "--token", default=None, help="join token (mediaserver token)")
    add_option(parser, "--send", default=None, help="WAV sent once in real time, then silence")
    add_option(parser, "--codec", default="opus", choices=CODECS,
               help="the one audio codec offered and accepted, both ways (pcmu/pcma: G.711 "
                    "at 8 kHz, as a SIP gateway would)")
    add_option(parser, "--record-dir", default=None, help="write DIR/<identity>.wav per remote")
    add_option(parser, "--duration", type=float, default=None,
               help="seconds to stay (default: file length + 3 s, or 30 s); SIGTERM/SIGINT end early")
    add_option(parser, "--ice-host", action="append", default=None,
               help="pin ICE host candidates (comma list; 127.0.0.1 in tests)")
    add_option(parser, "--loss", type=float, default=0.0, help="drop this fraction of sent packets")
    add_option(parser, "--loss-burst", type=float, default=1.0, help="mean loss burst length")
    add_option(parser, "--jitter-ms", type=float, default=0.0, help="random extra send delay")
    add_option(parser, "--reorder", type=float, default=0.0, help="probability to reorder a packet")
    add_option(parser, "--seed", type=int, default=0, help="impairment random seed")
    add_option(parser, "--rtp-discontinuity", action="append", default=None,
               metavar="KIND@SECONDS",
               help="break the sent RTP numbering SECONDS after the first packet (repeatable; "
                    "KIND: seq-restart, seq-jump (+10000), ts-back / ts-forward (1 s), "
                    "ssrc-change); the same time for two kinds breaks both at once")
    add_option(parser, "--relay", action="store_true", default=False,
               help="send and receive only through the TURN server named in 'joined' "
                    "(ICE transport policy relay)")


def main(args: argparse.Namespace) -> int:
    if not args.room:
        print("error: --room is required", file=sys.stderr)
        return 2
    try:
        ws_url(args.url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not 0 <= args.loss < 1 or not 0 <= args.reorder <= 1 or args.jitter_ms < 0:
        print("error: --loss must be in [0,1), --reorder in [0,1], --jitter-ms >= 0",
              file=sys.stderr)
        return 2
    try:
        parse_discontinuities(args.rtp_discontinuity)
    except ValueError as exc:
        print(f"error: --rtp-discontinuity: {exc}", file=sys.stderr)
        return 2
    samples = None
    if args.send:
        try:
            audio, rate = read_audio(args.send)
        except AudioFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        samples = resample(audio, rate, RATE)
    hosts = [h.strip() for v in (args.ice_host or []) for h in v.split(",") if h.strip()]
    from . import patches

    patches.apply()   # the same aiortc behaviour as the server (mediaserver/patches.py)
    pin_host_addresses(hosts)
    tolerate_consent_stalls()
    client = HeadlessClient(args, samples)
    try:
        summary = asyncio.run(client.run())
    except (ConnectionError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        print(json.dumps({"error": str(exc) or type(exc).__name__}), flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps(summary, indent=2), flush=True)
    if any(e.get("type") == "media-failed" for e in summary["errors"]):
        print("error: the media connection never connected", file=sys.stderr)
        return 1
    return 0
