"""A bound on one DTLS handshake.

aiortc waits for its peer's first DTLS record for as long as the connection lives: when both
sides are DTLS server (each waiting for a ClientHello), or the peer never starts, nothing is
ever reported. ``DtlsWatch`` reports a handshake that does not complete within ``timeout_s``
of starting (transport state ``connecting``, i.e. once ICE has connected), and one that fails
(``failed``: no shared cipher, fingerprint mismatch, no SRTP profile), once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Optional, Protocol

logger = logging.getLogger(__name__)

# on_failure(reason, message): reason "timeout" or "handshake" (metric label), message for people
FailureCallback = Callable[[str, str], None]


class DtlsTransportLike(Protocol):
    """The part of aiortc's ``RTCDtlsTransport`` this needs (state names as aiortc's)."""

    @property
    def state(self) -> str: ...

    def on(self, event: str, f: Callable[..., None]) -> object: ...

    def remove_listener(self, event: str, f: Callable[..., None]) -> None: ...


class DtlsWatch:
    """Watch ``transport`` from now on; call ``on_failure`` at most once; ``stop()`` when done."""

    def __init__(self, transport: DtlsTransportLike, *, timeout_s: float,
                 on_failure: FailureCallback, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._timeout_s = timeout_s
        self._on_failure = on_failure
        self._loop = loop
        self._timer: Optional[asyncio.TimerHandle] = None
        self._done = False
        transport.on("statechange", self._changed)
        self._changed()

    def _changed(self) -> None:
        state = self._transport.state
        if self._done:
            return
        if state == "connecting" and self._timer is None:
            self._timer = self._loop.call_later(self._timeout_s, self._expired)
        elif state == "connected":
            self.stop()
        elif state == "failed":
            self._report("handshake", "DTLS handshake failed (no cipher suite or SRTP profile in "
                                      "common, or a certificate that does not match its "
                                      "fingerprint); the server is the DTLS server "
                                      "(a=setup:passive) with an ECDSA P-256 certificate")
        elif state == "closed":
            self.stop()

    def _expired(self) -> None:
        self._timer = None
        if self._transport.state == "connecting":
            self._report("timeout", f"DTLS handshake not complete {self._timeout_s:g} s after ICE "
                                    "connected: the server is the DTLS server (a=setup:passive) "
                                    "and waits for the client's ClientHello; a client must be "
                                    "the DTLS client (a=setup:active) in every answer")

    def _report(self, reason: str, message: str) -> None:
        self.stop()
        logger.warning("DTLS %s: %s", reason, message)
        self._on_failure(reason, message)

    def stop(self) -> None:
        """No more reports (idempotent)."""
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self._transport.remove_listener("statechange", self._changed)
        except (KeyError, ValueError):   # already removed
            pass
