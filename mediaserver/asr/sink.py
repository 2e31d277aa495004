"""The sink protocol and the bounded-queue worker every built-in sink is made of.

A sink never slows the media path: ``submit_*`` only puts into a bounded queue
(dropping the oldest item when full, counted in ``mediaserver_asr_sink_dropped_total``)
and the sink's own task does the slow work. One warning is logged when a sink starts
dropping and one when it recovers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Union

import numpy as np

from ..tasks import cancel_and_wait
from . import metrics
from .segmenter import Segment

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transcript:
    room: str
    identity: str
    text: str
    start_ms: float
    end_ms: float
    source: str = "local"
    final: bool = True  # False: a streaming recogniser's partial, superseded by what follows
    unstable: str = ""  # a partial's provisional words after ``text`` (may change)
    unstable_end_ms: Optional[float] = None   # how far the audio of ``unstable`` reaches

    def as_json(self) -> dict:
        return {"identity": self.identity, "text": self.text,
                "start_ms": round(self.start_ms, 1), "end_ms": round(self.end_ms, 1)}


@dataclass(frozen=True)
class LiveChunk:
    """Audio of a segment that is still open, for sinks that stream (``wants_live_audio``).

    ``discarded``: the segment ``seq`` was closed as too short and will not be submitted.
    ``silence_ms``: unvoiced audio at the end of the open segment after this chunk (0: the
    chunk's last frame was speech); a streaming recogniser starts its final early on it.
    ``hangover_ms``: the pause that closes the segment now (shorter once it is long; 0:
    unknown), so the early final can start before that.
    """

    room: str
    identity: str
    seq: int
    start_ms: float     # start of the segment
    pcm: np.ndarray     # int16 16 kHz, the audio that joined the segment now
    feed: str = "raw"
    discarded: bool = False
    silence_ms: float = 0.0
    hangover_ms: float = 0.0


@dataclass(frozen=True)
class RoomEnded:
    """The last speaker of ``room`` left (for sinks that keep per-room state, ``wants_room_end``)."""

    room: str


TranscriptCallback = Callable[[Transcript], None]
Item = Union[Segment, Transcript, LiveChunk, RoomEnded]


class AsrSink(Protocol):
    """What the hub drives. ``submit_*`` must return at once, from the event loop."""

    name: str

    async def start(self, on_transcript: TranscriptCallback) -> None: ...
    async def stop(self) -> None: ...
    def submit_segment(self, segment: Segment) -> None: ...
    def submit_transcript(self, transcript: Transcript) -> None: ...
    def submit_live(self, chunk: LiveChunk) -> None: ...
    def submit_room_ended(self, room: str) -> None: ...


class QueuedSink:
    """Base: a bounded queue drained by one task calling ``handle``; subclasses do the I/O."""

    wants_transcripts = False
    wants_live_audio = False
    wants_room_end = False

    def __init__(self, name: str, *, queue_size: int = 16) -> None:
        if queue_size < 1:
            raise ValueError("sink queue size must be >= 1")
        self.name = name
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_size)
        self._task: Optional[asyncio.Task] = None
        self._on_transcript: TranscriptCallback = lambda t: None
        self._dropping = 0
        self.dropped = 0
        self.handled = 0

    async def start(self, on_transcript: TranscriptCallback) -> None:
        self._on_transcript = on_transcript
        await self.open()
        self._task = asyncio.create_task(self._run(), name=f"asr-sink-{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.close()

    def submit_segment(self, segment: Segment) -> None:
        self._put(segment)

    def submit_transcript(self, transcript: Transcript) -> None:
        if self.wants_transcripts:
            self._put(transcript)

    def submit_live(self, chunk: LiveChunk) -> None:
        if self.wants_live_audio:
            self._put(chunk)

    def submit_room_ended(self, room: str) -> None:
        if self.wants_room_end:
            self._put(RoomEnded(room))

    def _put(self, item: Item) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            self.dropped += 1
            metrics.DROPPED.labels(self.name).inc()
            if self._dropping == 0:
                logger.warning("ASR sink %s is not keeping up: queue full (%d), dropping oldest items",
                               self.name, self._queue.maxsize)
            self._dropping += 1
        self._queue.put_nowait(item)
        metrics.SUBMITTED.labels(self.name).inc()
        metrics.QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())

    def health(self) -> dict:
        return {"name": self.name, "queue_depth": self._queue.qsize(), "dropped": self.dropped,
                "handled": self.handled}

    async def drain(self) -> None:
        """Wait until every queued item was handled (tests, offline runs, shutdown)."""
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self.handle(item)
                self.handled += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sink failure must never end the worker
                metrics.ERRORS.labels(self.name).inc()
                logger.warning("ASR sink %s failed on an item: %s", self.name, exc)
            finally:
                self._queue.task_done()
                metrics.QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())
            if self._dropping and self._queue.empty():
                logger.info("ASR sink %s caught up after dropping %d items", self.name, self._dropping)
                self._dropping = 0

    # subclass hooks
    async def open(self) -> None:
        """Acquire resources (connections, models); called once by ``start``."""

    async def close(self) -> None:
        """Release resources; called once by ``stop``."""

    async def handle(self, item: Item) -> None:
        raise NotImplementedError
