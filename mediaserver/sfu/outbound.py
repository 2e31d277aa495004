"""Per-subscriber outbound track that hands pre-encoded Opus packets to aiortc.

aiortc's sender accepts ``av.Packet`` from ``recv()`` and only packetizes it, so
one encode per publisher serves every subscriber. The queue is bounded: a slow
subscriber loses its oldest packets (counted) instead of growing latency.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Callable, Optional

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

class PacketTrack(MediaStreamTrack):
    """An audio track whose ``recv()`` returns queued ``av.Packet``s with server-owned pts.

    The track outlives publishers: a transceiver slot keeps one PacketTrack and the
    room points it at whichever publisher currently owns the slot. Every packet's pts
    is the server media clock's tick x 960, shared by all publishers, so RTP
    timestamps stay monotonic across a change of publisher and gaps keep their length.
    """

    kind = "audio"

    def __init__(self, *, max_packets: int = 10,
                 on_drop: Optional[Callable[[], None]] = None) -> None:
        super().__init__()
        self._queue: collections.deque[av.Packet] = collections.deque(maxlen=max_packets)
        self._ready = asyncio.Event()
        self._on_drop = on_drop
        self.dropped = 0
        self.sent = 0
        self._flowing = False

    def push(self, packet: av.Packet) -> None:
        """Queue one encoded 20 ms packet (shared object, never mutated here)."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
        self._queue.append(packet)
        self._ready.set()

    def clear(self) -> None:
        """Forget queued packets (slot handed to another publisher or made inactive)."""
        self._queue.clear()
        self._flowing = False

    async def recv(self) -> av.Packet:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        if not self._flowing:
            # The sender starts only once negotiation is done: what piled up meanwhile is
            # stale, and sending it as a burst would add its length as latency for good.
            self._flowing = True
            while len(self._queue) > 1:
                self._queue.popleft()
        self.sent += 1
        return self._queue.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()
