"""Pin ICE host candidates to chosen addresses.

aioice deliberately skips loopback when it gathers host candidates, so a test on
127.0.0.1 (and a server behind NAT that must announce one interface) has to say
which addresses to use. This must run before the first RTCPeerConnection gathers.
"""

from __future__ import annotations

import logging
from typing import Sequence

import aioice.ice

logger = logging.getLogger(__name__)

_original_get_host_addresses = aioice.ice.get_host_addresses


def pin_host_addresses(addresses: Sequence[str]) -> None:
    """Make every later ICE gathering offer exactly ``addresses`` (empty: aioice's own choice)."""
    pinned = [a for a in addresses if a]
    if not pinned:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return

    def get_host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        return [a for a in pinned if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
    logger.info("ICE host candidates pinned to %s", ", ".join(pinned))
