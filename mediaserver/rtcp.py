"""What the far end reports over RTCP, read through aiortc's public ``getStats()``.

Shared by the server (``sfu/outbound.py``: each publisher's encoder spends on FEC what its
subscribers lose) and ``mediaserver client`` (its own encoder does the same).
"""

from __future__ import annotations

from typing import Any, Optional


async def fraction_lost(sender: Any) -> Optional[float]:
    """The latest RTCP fraction lost (0..1) the far end reported for ``sender``'s stream.

    aiortc keeps RTCP's raw 8-bit value in ``fractionLost`` (x/256).
    """
    report = await sender.getStats()
    for stats in report.values():
        if stats.type == "remote-inbound-rtp" and stats.fractionLost is not None:
            return float(stats.fractionLost) / 256.0
    return None
