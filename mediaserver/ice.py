"""Pin ICE host candidates to chosen addresses.

aioice deliberately skips loopback when it gathers host candidates, so a test on
127.0.0.1 (and a server behind NAT that must announce one interface) has to say
which addresses to use. This must run before the first RTCPeerConnection gathers.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Sequence

import aioice.ice

logger = logging.getLogger(__name__)

_original_get_host_addresses = aioice.ice.get_host_addresses
_original_datagram_received = aioice.ice.StunProtocol.datagram_received


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _loopback_only_datagram_received(self: Any, data: bytes, addr: tuple[Any, ...]) -> None:
    """Ignore datagrams from non-loopback sources, so no reply ever leaves loopback.

    A browser allowed onto loopback still sends ICE checks from its other interfaces;
    answering them (as a peer-reflexive candidate) would send traffic off 127.0.0.1.
    """
    if not _is_loopback(addr[0]):
        logger.debug("dropping datagram from non-loopback %s (ICE pinned to loopback)", addr[0])
        return
    _original_datagram_received(self, data, addr)


def pin_host_addresses(addresses: Sequence[str]) -> None:
    """Make every later ICE gathering offer exactly ``addresses`` (empty: aioice's own choice).

    When every pinned address is loopback, traffic from other addresses is ignored too.
    """
    pinned = [a for a in addresses if a]
    if not pinned:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        aioice.ice.StunProtocol.datagram_received = _original_datagram_received
        return
    loopback_only = all(_is_loopback(a) for a in pinned)
    aioice.ice.StunProtocol.datagram_received = (
        _loopback_only_datagram_received if loopback_only else _original_datagram_received
    )

    def get_host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        return [a for a in pinned if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
    logger.info("ICE host candidates pinned to %s", ", ".join(pinned))
