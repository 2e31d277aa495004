"""Stream segments to an external recogniser over a WebSocket; reconnect with backoff.

Wire format, per segment (JSON text, then audio, then JSON text):
``{"type":"segment","id":N,"room","identity","start_ms","end_ms","sample_rate":16000,
"format":"s16le"|"f32le","feed"}``, one or more binary messages of little-endian
mono audio (at most ``chunk_bytes`` each), ``{"type":"end","id":N}``.
The recogniser may answer ``{"type":"transcript","id":N,"text":...,"final":true}``;
final transcripts go to the hub as captions. Anything else it sends is ignored.
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

from . import metrics
from .segmenter import Segment
from .sink import Item, QueuedSink, Transcript

logger = logging.getLogger(__name__)

FORMATS = ("s16le", "f32le")


class WebSocketSink(QueuedSink):
    def __init__(self, url: str, *, audio_format: str = "s16le", queue_size: int = 32,
                 send_timeout: float = 5.0, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 chunk_bytes: int = 32000) -> None:
        super().__init__("ws", queue_size=queue_size)
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"ASR WebSocket URL must start with ws:// or wss://, got {url!r}")
        if audio_format not in FORMATS:
            raise ValueError(f"unknown ASR WebSocket audio format {audio_format!r}; "
                             f"choose one of {', '.join(FORMATS)}")
        self.url, self.audio_format = url, audio_format
        self.send_timeout, self.chunk_bytes = send_timeout, chunk_bytes
        self._backoff_initial, self._backoff_max = backoff_initial, backoff_max
        self._backoff = backoff_initial
        self._session: Optional[aiohttp.ClientSession] = None
        self._ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self._reader: Optional[asyncio.Task] = None
        self._pending: OrderedDict[int, Segment] = OrderedDict()
        self._next_id = 0
        self.connects = 0
        self.connect_failures = 0

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

    async def handle(self, item: Item) -> None:
        if not isinstance(item, Segment):
            return
        ws = await self._connected()
        self._next_id += 1
        seg_id = self._next_id
        header = {"type": "segment", "id": seg_id, "room": item.room, "identity": item.identity,
                  "start_ms": round(item.start_ms, 1), "end_ms": round(item.end_ms, 1),
                  "sample_rate": item.sample_rate, "format": self.audio_format, "feed": item.feed}
        if self.audio_format == "s16le":
            payload = item.pcm.astype("<i2", copy=False).tobytes()
        else:
            payload = (item.pcm.astype(np.float32) / 32768.0).astype("<f4").tobytes()
        self._pending[seg_id] = item
        while len(self._pending) > 256:  # recogniser that never answers: forget the oldest
            self._pending.popitem(last=False)
        try:
            await asyncio.wait_for(self._send(ws, header, payload, seg_id), self.send_timeout)
        except (asyncio.TimeoutError, ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            logger.warning("ASR WebSocket send failed (%s); reconnecting", exc or type(exc).__name__)
            await self._disconnect()
            raise

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, header: dict, payload: bytes,
                    seg_id: int) -> None:
        await ws.send_str(json.dumps(header))
        for i in range(0, len(payload), self.chunk_bytes):
            await ws.send_bytes(payload[i:i + self.chunk_bytes])
        await ws.send_str(json.dumps({"type": "end", "id": seg_id}))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                logger.debug("ASR WebSocket: ignored non-JSON message")
                continue
            if not isinstance(data, dict) or data.get("type") != "transcript":
                continue
            if not data.get("final", True):
                continue
            seg = self._pending.pop(data.get("id"), None) if isinstance(data.get("id"), int) else None
            text = str(data.get("text", "")).strip()
            if seg is None or not text:
                continue
            self._on_transcript(Transcript(seg.room, seg.identity, text, seg.start_ms, seg.end_ms,
                                           source="ws"))
        metrics.CONNECTED.labels(self.name).set(0)
