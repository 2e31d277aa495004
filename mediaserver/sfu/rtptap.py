"""Take RTP packets from an aiortc receiver before its jitter buffer and decoder.

aiortc's audio path (count-based jitter buffer, no PLC/FEC, one decoder thread)
adds 80-300 ms and cannot conceal loss, so the receiver's packet handler is
replaced per instance: RTCP statistics are still fed (receiver reports keep
telling the sender its loss rate, which drives its FEC), then the packet goes to
our callback and aiortc's buffer and decoder never see it.
"""

from __future__ import annotations

import logging
from typing import Callable

from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtp import RtpPacket

logger = logging.getLogger(__name__)

PacketCallback = Callable[[RtpPacket, float], None]


def tap_receiver(receiver: RTCRtpReceiver, on_packet: PacketCallback,
                 clock_ms: Callable[[], float]) -> None:
    """Route ``receiver``'s RTP packets to ``on_packet(packet, arrival_ms)``.

    ``clock_ms`` gives the arrival time on the caller's timeline (the loop clock).
    """
    streams: dict = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    codecs: dict = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        if not receiver._enabled:
            return
        codec = codecs.get(packet.payload_type)
        if codec is None or codec.mimeType.lower() != "audio/opus":
            return
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        try:
            on_packet(packet, clock_ms())
        except Exception:
            logger.exception("RTP tap callback failed")

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


def tolerate_consent_stalls(failures: int = 12) -> None:
    """Let ICE consent survive a minute of unanswered checks instead of 30 s.

    aioice sends each RFC 7675 consent check once with a 0.5 s timeout, so on a
    CPU-starved host (measured: load 9 on 2 cores) six late answers in a row drop a
    healthy call. Twelve keeps a dead peer detected within about a minute.
    """
    import aioice.ice

    aioice.ice.CONSENT_FAILURES = max(aioice.ice.CONSENT_FAILURES, failures)
