"""Publish segments and transcripts to a Redis Stream per room.

Key ``mediaserver:room:{room}:asr`` (the braces are a cluster hash tag, so one room's
keys share a slot). Entries: ``type=segment`` with identity, start_ms, end_ms, feed,
sample_rate, format=s16le and, only when asked (``include_audio``), the audio bytes: audio
of every segment would make a busy room's stream tens of MB; ``type=transcript`` with identity,
text, start_ms, end_ms. Streams are capped with approximate ``MAXLEN``, and expire
``ttl_s`` seconds after the room's last speaker left (``EXPIRE``; a room that speaks
again before then gets ``PERSIST``, so a live room's stream never vanishes). Late
transcripts of a finished room keep the expiry (XADD does not clear it).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import metrics
from .segmenter import Segment
from .sink import Item, QueuedSink, RoomEnded, Transcript

logger = logging.getLogger(__name__)


def stream_key(room: str) -> str:
    return f"mediaserver:room:{{{room}}}:asr"


class RedisStreamSink(QueuedSink):
    wants_transcripts = True
    wants_room_end = True

    def __init__(self, url: str, *, maxlen: int = 1000, queue_size: int = 64,
                 include_audio: bool = False, timeout: float = 2.0,
                 ttl_s: float = 86400.0) -> None:
        super().__init__("redis", queue_size=queue_size)
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"Redis URL must start with redis://, rediss:// or unix://, got {url!r}")
        if maxlen < 1:
            raise ValueError("Redis stream MAXLEN must be >= 1")
        if ttl_s <= 0:
            raise ValueError("Redis stream TTL must be positive")
        self.ttl_ms = max(1, int(round(ttl_s * 1000)))
        self.url, self.maxlen, self.include_audio, self.timeout = url, maxlen, include_audio, timeout
        self._redis: aioredis.Redis | None = None
        self._failing = False

    async def open(self) -> None:
        self._redis = aioredis.Redis.from_url(self.url, socket_timeout=self.timeout,
                                              socket_connect_timeout=self.timeout)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def handle(self, item: Item) -> None:
        if isinstance(item, RoomEnded):
            await self._redis_call(self._redis.pexpire(stream_key(item.room), self.ttl_ms))
            return
        if isinstance(item, Segment):
            fields = {"type": "segment", "identity": item.identity, "feed": item.feed,
                      "start_ms": f"{item.start_ms:.1f}", "end_ms": f"{item.end_ms:.1f}",
                      "sample_rate": item.sample_rate, "format": "s16le"}
            if self.include_audio:
                fields["audio"] = item.pcm.astype("<i2", copy=False).tobytes()
        elif isinstance(item, Transcript):
            fields = {"type": "transcript", "identity": item.identity, "text": item.text,
                      "start_ms": f"{item.start_ms:.1f}", "end_ms": f"{item.end_ms:.1f}",
                      "source": item.source}
        else:
            return
        key = stream_key(item.room)
        pipe = self._redis.pipeline(transaction=False)   # one round trip
        pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)
        if isinstance(item, Segment):
            pipe.persist(key)   # new speech: the room is live again (a no-op while it was)
        await self._redis_call(pipe.execute())

    async def _redis_call(self, call: Awaitable[Any]) -> Any:
        try:
            result = await call
        except (RedisError, OSError) as exc:
            if not self._failing:
                logger.warning("ASR Redis sink cannot write to %s: %s", self.url, exc)
            self._failing = True
            metrics.CONNECTED.labels(self.name).set(0)
            raise
        if self._failing:
            logger.info("ASR Redis sink writing again")
            self._failing = False
        metrics.CONNECTED.labels(self.name).set(1)
        return result
