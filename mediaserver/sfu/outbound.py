"""Per-subscriber outbound tracks fed by encode-once-per-codec publishers.

aiortc's sender accepts ``av.Packet`` from ``recv()`` and only packetizes it, so one
encode per publisher and codec serves every subscriber: ``PublisherEncoders`` keeps one
encoder per codec (Opus, PCMU, PCMA; made on first use) and each tick hands out an
``EncodedTick`` that encodes a codec at most once, when the first subscriber taking that
codec asks. Each ``PacketTrack`` knows the codec its sender negotiated (``sent_codec``).
The queue is bounded: a slow subscriber loses its oldest packets (counted) instead of
growing latency.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Callable, Optional, Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from ..media.g711 import G711Encoder
from ..media.opus import OpusEncoder
from ..rtcp import fraction_lost

logger = logging.getLogger(__name__)

SENT_CODECS = {"audio/opus": "opus", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}


class FrameEncoder(Protocol):
    def encode_packet(self, pcm: np.ndarray, pts: int) -> av.Packet: ...


def sent_codec(transceiver: RTCRtpTransceiver) -> Optional[str]:
    """The codec ("opus", "pcmu", "pcma") ``transceiver``'s sender encodes with, once an
    answer has been applied; None when none of ours was agreed.

    aiortc's sender packs with the first codec of the negotiated list (``_codecs[0]``).
    """
    codecs = transceiver._codecs  # set by setRemoteDescription (aiortc internal)
    return SENT_CODECS.get(codecs[0].mimeType.lower()) if codecs else None


class PublisherEncoders:
    """One publisher's encoders, one per codec, each made when a subscriber first takes it.

    ``encode_packet(pcm, pts)`` (the media clock's encode call) returns an ``EncodedTick``;
    ``encodes`` counts encoder calls per codec (one per tick per codec in use, however
    many subscribers share it).
    """

    def __init__(self, *, opus_bitrate: int = 32000, opus_complexity: int = 8) -> None:
        self._factories: dict[str, Callable[[], FrameEncoder]] = {
            "opus": lambda: OpusEncoder(bitrate=opus_bitrate, complexity=opus_complexity),
            "pcmu": lambda: G711Encoder("pcmu"),
            "pcma": lambda: G711Encoder("pcma"),
        }
        self._encoders: dict[str, FrameEncoder] = {}
        self.encodes: collections.Counter[str] = collections.Counter()
        self._failed: set[str] = set()
        self.expected_loss_perc = 0   # what the Opus encoder is told (LossFeedback sets it)

    def set_expected_loss(self, perc: int) -> None:
        """The loss the subscribers report, in %: the Opus encoder spends that much on FEC."""
        self.expected_loss_perc = perc
        opus = self._encoders.get("opus")
        if opus is not None:
            opus.set_packet_loss_perc(perc)  # type: ignore[attr-defined]

    def encode_packet(self, pcm: np.ndarray, pts: int) -> "EncodedTick":
        """This tick's frame (960 float32 at 48 kHz, pts in 1/48000), encoded on demand.

        ``pcm`` must stay unchanged until the tick's fan-out is over.
        """
        return EncodedTick(self, pcm, pts)

    def _encode(self, codec: str, pcm: np.ndarray, pts: int) -> Optional[av.Packet]:
        encoder = self._encoders.get(codec)
        if encoder is None:
            factory = self._factories.get(codec)
            if factory is None:
                raise ValueError(f"no encoder for codec {codec!r}")
            encoder = self._encoders[codec] = factory()
            if codec == "opus":
                encoder.set_packet_loss_perc(self.expected_loss_perc)  # type: ignore[attr-defined]
        self.encodes[codec] += 1
        try:
            return encoder.encode_packet(pcm, pts)
        except Exception:
            if codec not in self._failed:  # once per codec: this runs 50 times a second
                self._failed.add(codec)
                logger.exception("%s encode failed", codec)
            return None


class EncodedTick:
    """One tick of one publisher: ``packet(codec)`` encodes on the first call per codec and
    hands the same ``av.Packet`` to every later caller (never mutated downstream)."""

    __slots__ = ("_owner", "_pcm", "_pts", "_packets")

    def __init__(self, owner: PublisherEncoders, pcm: np.ndarray, pts: int) -> None:
        self._owner = owner
        self._pcm = pcm
        self._pts = pts
        self._packets: dict[str, Optional[av.Packet]] = {}

    def packet(self, codec: str) -> Optional[av.Packet]:
        if codec not in self._packets:
            self._packets[codec] = self._owner._encode(codec, self._pcm, self._pts)
        return self._packets[codec]

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
        self.codec: Optional[str] = None   # what the sender negotiated; None: not yet

    def set_codec(self, codec: Optional[str]) -> None:
        """The codec the slot's sender agreed on (``sent_codec``); a change drops the queue."""
        if codec != self.codec:
            self.codec = codec
            self.clear()

    def offer(self, tick: EncodedTick) -> None:
        """Queue this tick in the track's codec (nothing before a codec is agreed)."""
        if self.codec is None:
            return
        packet = tick.packet(self.codec)
        if packet is not None:
            self.push(packet)

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


class LossSource(Protocol):
    def sent_streams(self) -> list[tuple[Any, Any]]: ...   # (publisher ClockStream, RTCRtpSender)


class LossFeedback:
    """Each publisher's Opus encoder expects the loss its subscribers report.

    Every ``period_s`` the receiver reports of every subscriber's sender are read; each
    publisher's ``PublisherEncoders`` gets the worst loss of the last ``hold_s``
    (``media.opus.ExpectedLoss``): no FEC bits on clean links, FEC as soon as one
    subscriber loses packets. ``participants()`` lists who sends (``LossSource``).
    """

    def __init__(self, participants: Callable[[], list[LossSource]], *, period_s: float = 1.0,
                 hold_s: float = 10.0) -> None:
        self._participants = participants
        self.period_s = period_s
        self.hold_s = hold_s
        self._expected: dict[int, tuple[Any, Any]] = {}  # id(publisher) -> (publisher, ExpectedLoss)
        self._task: Optional[asyncio.Task] = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loss-feedback")

    async def stop(self) -> None:
        from ..tasks import cancel_and_wait

        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.period_s)
            try:
                await self.poll(now_s=loop.time())
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("loss feedback poll failed")

    async def poll(self, *, now_s: float) -> None:
        """Read every subscriber's report once and set each publisher's expected loss."""
        from ..media.opus import ExpectedLoss

        seen: dict[int, Any] = {}
        for participant in self._participants():
            for publisher, sender in participant.sent_streams():
                key = id(publisher)
                entry = self._expected.get(key)
                if entry is None or entry[0] is not publisher:
                    entry = self._expected[key] = (publisher, ExpectedLoss(hold_s=self.hold_s))
                seen[key] = entry
                fraction = await fraction_lost(sender)
                if fraction is not None:
                    entry[1].report(fraction, now_s=now_s)
        self._expected = seen
        for publisher, expected in seen.values():
            encoders = getattr(publisher, "encoder", None)
            if isinstance(encoders, PublisherEncoders):
                encoders.set_expected_loss(expected.percent(now_s=now_s))
