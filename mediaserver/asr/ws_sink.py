"""Stream speech to an external recogniser over a WebSocket; reconnect with backoff.

Wire format (JSON text messages and binary audio, one connection for all participants):

1. ``{"type":"segment","id":N,"room","identity","start_ms","sample_rate":16000,
   "format":"s16le"|"f32le","feed","live":bool}`` opens segment N;
2. binary messages of little-endian mono audio for N. Live (default): sent as the speech
   happens, every 20 ms from the onset (pre-roll first), so a streaming recogniser can
   produce partials. Not live: the whole segment in chunks of at most ``chunk_bytes``;
3. ``{"type":"end","id":N,"end_ms"}`` closes it (``"discarded":true`` when the VAD judged
   it too short to keep).

The recogniser answers each segment's ``end`` (unless discarded) with its final
transcript ``{"type":"transcript","id":N,"text":...,"final":true}`` (``text`` may be
empty) or with ``{"type":"ack","id":N}``; final transcripts become captions and the
room's transcript. Each answer acknowledges segment N. A segment not acknowledged
within ``ack_timeout`` seconds, or whose connection ended first, is counted as
``unacknowledged`` (``mediaserver_asr_ws_segments_total{state=...}`` next to ``sent``
and ``acknowledged``) and logged: a recogniser that stops reading fills the socket
buffers while the connection still looks up, and this is how it shows. ``"final":false`` marks a partial
(the words so far of a segment still being spoken): it is shown as a provisional caption
that the next partial or the final replaces, and is never stored. If the connection drops
mid-segment, the rest of that segment is sent under a new id after reconnecting (its
``start_ms`` is that of the segment).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import OrderedDict
from typing import Optional

import aiohttp
import numpy as np

from ..jsonsafe import loads_bounded
from . import metrics
from .segmenter import Segment
from .sink import Item, LiveChunk, QueuedSink, Transcript

logger = logging.getLogger(__name__)

FORMATS = ("s16le", "f32le")
Key = tuple[str, str, int]  # room, identity, segment seq


class AckTracker:
    """Segments sent versus acknowledged, sans-I/O (``now`` in seconds, any monotonic clock).

    ``sent(id, now)`` when a segment's ``end`` went out, ``acknowledged(id)`` when the
    recogniser answered it, ``expire(now)`` / ``connection_lost()`` move what is still
    pending after ``timeout`` seconds, or on a dropped connection, to ``unacknowledged``.
    """

    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("ack timeout must be positive")
        self.timeout = timeout
        self._pending: OrderedDict[int, float] = OrderedDict()   # id -> time sent
        self.sent_count = self.acknowledged_count = self.unacknowledged_count = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def sent(self, seg_id: int, *, now: float) -> None:
        self._pending[seg_id] = now
        self.sent_count += 1

    def acknowledged(self, seg_id: int) -> bool:
        """True if ``seg_id`` was pending (answers to unknown or expired ids count nothing)."""
        if self._pending.pop(seg_id, None) is None:
            return False
        self.acknowledged_count += 1
        return True

    def expire(self, *, now: float) -> int:
        """Give up on segments pending longer than ``timeout``; return how many."""
        n = 0
        while self._pending and now - next(iter(self._pending.values())) > self.timeout:
            self._pending.popitem(last=False)
            n += 1
        self.unacknowledged_count += n
        return n

    def connection_lost(self) -> int:
        """A dropped connection answers nothing more: all pending segments are lost."""
        n = len(self._pending)
        self._pending.clear()
        self.unacknowledged_count += n
        return n


class WebSocketSink(QueuedSink):
    def __init__(self, url: str, *, audio_format: str = "s16le", live: bool = True,
                 queue_size: int = 512, send_timeout: float = 5.0, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, chunk_bytes: int = 32000,
                 ack_timeout: float = 30.0) -> None:
        super().__init__("ws", queue_size=queue_size)
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"ASR WebSocket URL must start with ws:// or wss://, got {url!r}")
        if audio_format not in FORMATS:
            raise ValueError(f"unknown ASR WebSocket audio format {audio_format!r}; "
                             f"choose one of {', '.join(FORMATS)}")
        self.url, self.audio_format, self.wants_live_audio = url, audio_format, live
        self.send_timeout, self.chunk_bytes = send_timeout, chunk_bytes
        self._backoff_initial, self._backoff_max = backoff_initial, backoff_max
        self._backoff = backoff_initial
        self._session: Optional[aiohttp.ClientSession] = None
        self._ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self._reader: Optional[asyncio.Task] = None
        self._open: dict[Key, int] = {}                      # segments open on this connection
        self._info: OrderedDict[int, dict] = OrderedDict()   # id -> room/identity/times
        self._next_id = 0
        self.connects = 0
        self.connect_failures = 0
        self.acks = AckTracker(ack_timeout)
        self._unacked_episode = 0   # segments lost since the last acknowledgement (for the log)

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5))

    async def close(self) -> None:
        await self._disconnect()
        if self._session is not None:
            await self._session.close()

    async def _disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
        if self._ws is not None:
            ws, self._ws = self._ws, None
            try:
                await asyncio.wait_for(ws.close(), timeout=1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self._open.clear()
        self._count_lost(self.acks.connection_lost(), "the connection ended")
        metrics.CONNECTED.labels(self.name).set(0)

    async def _connected(self) -> aiohttp.ClientWebSocketResponse:
        """Connect, sleeping with exponential backoff (and jitter) between failed attempts."""
        while self._ws is None or self._ws.closed:
            await self._disconnect()
            try:
                self._ws = await self._session.ws_connect(self.url, heartbeat=15.0,
                                                          max_msg_size=1 << 20)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                self.connect_failures += 1
                metrics.ERRORS.labels(self.name).inc()
                delay = self._backoff * (0.75 + 0.5 * random.random())
                if self.connect_failures == 1 or self._backoff >= self._backoff_max:
                    logger.warning("ASR WebSocket %s unreachable (%s); retrying in %.1f s",
                                   self.url, exc, delay)
                self._backoff = min(self._backoff * 2, self._backoff_max)
                await asyncio.sleep(delay)
                continue
            self.connects += 1
            self._backoff = self._backoff_initial
            metrics.CONNECTED.labels(self.name).set(1)
            logger.info("ASR WebSocket connected to %s", self.url)
            self._reader = asyncio.create_task(self._read(self._ws), name="asr-ws-reader")
        return self._ws

    def _encode(self, pcm: np.ndarray) -> bytes:
        if self.audio_format == "s16le":
            return pcm.astype("<i2", copy=False).tobytes()
        return (pcm.astype(np.float32) / 32768.0).astype("<f4").tobytes()

    def _count_lost(self, n: int, why: str) -> None:
        metrics.WS_PENDING.set(self.acks.pending)
        if n <= 0:
            return
        metrics.WS_SEGMENTS.labels("unacknowledged").inc(n)
        if self._unacked_episode == 0:
            logger.warning("ASR WebSocket %s: %d segment(s) not acknowledged (%s); the recogniser "
                           "is not reading or not answering, and their audio may be lost",
                           self.url, n, why)
        self._unacked_episode += n

    def check_acks(self) -> None:
        """Count segments whose acknowledgement is overdue (called on every item and read)."""
        self._count_lost(self.acks.expire(now=asyncio.get_running_loop().time()),
                         f"none within {self.acks.timeout:g} s")

    async def handle(self, item: Item) -> None:
        self.check_acks()
        if isinstance(item, Transcript):
            return
        ws = await self._connected()
        try:
            await asyncio.wait_for(self._send_item(ws, item), self.send_timeout)
        except (asyncio.TimeoutError, ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            logger.warning("ASR WebSocket send failed (%s); reconnecting", exc or type(exc).__name__)
            await self._disconnect()
            raise

    async def _begin(self, ws: aiohttp.ClientWebSocketResponse, item: Segment | LiveChunk,
                     live: bool) -> int:
        self._next_id += 1
        seg_id = self._next_id
        self._info[seg_id] = {"room": item.room, "identity": item.identity,
                              "start_ms": item.start_ms, "end_ms": None}
        while len(self._info) > 256:  # a recogniser that never answers: forget the oldest
            self._info.popitem(last=False)
        await ws.send_str(json.dumps({
            "type": "segment", "id": seg_id, "room": item.room, "identity": item.identity,
            "start_ms": round(item.start_ms, 1), "sample_rate": 16000, "format": self.audio_format,
            "feed": item.feed, "live": live}))
        return seg_id

    async def _send_item(self, ws: aiohttp.ClientWebSocketResponse, item: Item) -> None:
        if isinstance(item, LiveChunk):
            key = (item.room, item.identity, item.seq)
            if item.discarded:
                seg_id = self._open.pop(key, None)
                if seg_id is not None:
                    await ws.send_str(json.dumps({"type": "end", "id": seg_id, "discarded": True}))
                return
            seg_id = self._open.get(key)
            if seg_id is None:
                seg_id = self._open[key] = await self._begin(ws, item, live=True)
            await self._send_audio(ws, self._encode(item.pcm))
            return
        assert isinstance(item, Segment)
        seg_id = self._open.pop((item.room, item.identity, item.seq), None)
        if seg_id is None:  # not streamed live (live off, or every chunk was dropped)
            seg_id = await self._begin(ws, item, live=False)
            payload = self._encode(item.pcm)
            for i in range(0, len(payload), self.chunk_bytes):
                await self._send_audio(ws, payload[i:i + self.chunk_bytes])
        if seg_id in self._info:
            self._info[seg_id]["end_ms"] = item.end_ms
        await ws.send_str(json.dumps({"type": "end", "id": seg_id, "end_ms": round(item.end_ms, 1)}))
        self.acks.sent(seg_id, now=asyncio.get_running_loop().time())
        metrics.WS_SEGMENTS.labels("sent").inc()
        metrics.WS_PENDING.set(self.acks.pending)

    async def _send_audio(self, ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
        await ws.send_bytes(data)
        metrics.WS_BYTES.inc(len(data))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = loads_bounded(msg.data)
            except ValueError:
                logger.debug("ASR WebSocket: ignored non-JSON message")
                continue
            if not isinstance(data, dict) or data.get("type") not in ("transcript", "ack"):
                continue
            final = data.get("final", True) is not False
            if final and isinstance(data.get("id"), int) and self.acks.acknowledged(data["id"]):
                metrics.WS_SEGMENTS.labels("acknowledged").inc()
                metrics.WS_PENDING.set(self.acks.pending)
                if self._unacked_episode:
                    logger.info("ASR WebSocket %s acknowledges segments again (after %d lost)",
                                self.url, self._unacked_episode)
                    self._unacked_episode = 0
            self.check_acks()
            if data["type"] == "ack":
                continue
            info = self._info.get(data.get("id")) if isinstance(data.get("id"), int) else None
            text = str(data.get("text", "")).strip()
            if info is None or not text:
                continue
            end_ms = info["end_ms"] if info["end_ms"] is not None else info["start_ms"]
            self._on_transcript(Transcript(info["room"], info["identity"], text, info["start_ms"],
                                           end_ms, source="ws", final=final))
        metrics.CONNECTED.labels(self.name).set(0)
