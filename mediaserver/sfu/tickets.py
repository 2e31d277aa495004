"""Reconnect tickets: how a client that lost its connection rejoins as the same person.

Join tokens admit one join each (``tokens.ReplayGuard``), so a client cannot reuse its
token after a server restart, a dropped WebSocket or an ICE failure. Instead the server
hands every joined client a *reconnect ticket* in ``joined`` (and a fresh one every
``ttl_s / 2`` in a ``reconnect-ticket`` message):

- the same signed format as a join token (``tokens.mint``: room, identity, expiry, jti),
  bound to the room and identity the client joined as;
- signed with a key derived from ``--secret`` (HMAC-SHA256 of a fixed label), so a ticket
  is never accepted as a join token nor a token as a ticket, and every server sharing the
  secret (a restarted process, another node) accepts it; without ``--secret`` the key is
  random per process (nothing is needed to join such a server anyway);
- short-lived (``ttl_s``, default 300 s) and single-use (the jti goes through the same
  ``ReplayGuard`` as tokens);
- sent back as ``{"type": "join", ..., "reconnect": TICKET}``. A valid ticket admits the
  join without a token and *replaces* a participant of the same identity that is still in
  the room (its old socket has not been noticed as dead yet); its old socket is closed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Optional

from .tokens import Grant, TokenError, mint, verify

TICKET_TTL_S = 300.0
_LABEL = b"mediaserver reconnect ticket v1"


class Tickets:
    """Mints and checks reconnect tickets (sans-I/O: ``now`` in Unix seconds may be passed)."""

    def __init__(self, secret: Optional[str], *, ttl_s: float = TICKET_TTL_S) -> None:
        base = secret.encode() if secret else secrets.token_bytes(32)
        self._key = hmac.new(base, _LABEL, hashlib.sha256).hexdigest()
        self.ttl_s = ttl_s

    def mint(self, *, room: str, identity: str, now: Optional[float] = None) -> str:
        return mint(self._key, room=room, identity=identity, ttl_s=self.ttl_s,
                    now=time.time() if now is None else now)

    def verify(self, ticket: object, *, room: str, identity: str,
               now: Optional[float] = None) -> Grant:
        """Raise ``TokenError`` (forged, expired, other room/identity) or return the grant."""
        try:
            return verify(self._key, ticket, room=room, identity=identity, now=now)
        except TokenError as exc:
            raise TokenError(f"reconnect ticket: {exc}".replace("token ", "")) from None
