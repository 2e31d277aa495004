"""TURN servers handed to clients, with a fresh credential per join (TURN REST scheme).

With ``--turn-secret`` (coturn's ``use-auth-secret`` / ``static-auth-secret``) every join
gets its own pair::

    username   = "<unix expiry>:<random id>"
    credential = base64(HMAC-SHA1(secret, username))

coturn recomputes the credential from the username and refuses it once the expiry has
passed (on every authenticated request: allocation, refresh, permission), so a pair
read from one join is useless after ``ttl_s`` and identifies that one join in coturn's
logs (the server logs which room/identity got which id). Without a secret the static
``--turn-username``/``--turn-credential`` pair is handed out as before.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Optional

from ..config import add_option

logger = logging.getLogger(__name__)

DEFAULT_TTL_S = 8 * 3600.0


def add_turn_options(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--turn-secret", default=None,
               help="coturn static-auth-secret: mint a TURN credential per join (TURN REST)")
    add_option(parser, "--turn-ttl", type=float, default=DEFAULT_TTL_S,
               help="lifetime of a per-join TURN credential, seconds (calls longer than this "
                    "lose the relay at coturn's next refresh)")


@dataclass(frozen=True)
class TurnCredential:
    username: str
    credential: str
    expires: int   # Unix seconds


def rest_credential(secret: str, *, expires: int, user_id: str) -> TurnCredential:
    """The TURN REST pair for ``user_id`` valid until ``expires`` (coturn ``use-auth-secret``)."""
    if not secret:
        raise ValueError("a TURN secret is needed to mint credentials")
    if ":" in user_id:
        raise ValueError("a TURN REST user id must not contain ':'")
    username = f"{int(expires)}:{user_id}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(mac).decode("ascii"), int(expires))


class IceServers:
    """The ``iceServers`` list of a ``joined`` message, built per join.

    ``stun``/``turn`` are URL lists; ``secret`` switches on per-join credentials valid
    ``ttl_s`` seconds; otherwise ``username``/``credential`` is the static pair (or none).
    """

    def __init__(self, *, stun: list[str], turn: list[str], secret: Optional[str] = None,
                 ttl_s: float = DEFAULT_TTL_S, username: Optional[str] = None,
                 credential: Optional[str] = None) -> None:
        if ttl_s <= 0:
            raise ValueError("TURN credential lifetime must be positive")
        self.stun, self.turn = list(stun), list(turn)
        self.secret, self.ttl_s = secret or None, ttl_s
        self.username, self.credential = username, credential

    @property
    def per_join(self) -> bool:
        return bool(self.secret and self.turn)

    def for_server(self) -> list[dict[str, Any]]:
        """The list for the server's own peer connections: per-join pairs are for clients only."""
        return self._build(None)

    def for_join(self, *, now: float, label: str = "") -> list[dict[str, Any]]:
        """JSON-ready list for one join at Unix time ``now``; ``label`` goes to the log only."""
        cred = None
        if self.per_join:
            assert self.secret is not None
            cred = rest_credential(self.secret, expires=int(now + self.ttl_s),
                                   user_id=secrets.token_hex(8))
            logger.info("TURN credential %s for %s", cred.username, label or "a join")
        return self._build(cred)

    def _build(self, cred: Optional[TurnCredential]) -> list[dict[str, Any]]:
        servers: list[dict[str, Any]] = []
        if self.stun:
            servers.append({"urls": list(self.stun)})
        if self.turn and cred is not None:
            servers.append({"urls": list(self.turn), "username": cred.username,
                            "credential": cred.credential})
        elif self.turn and not self.per_join:
            entry: dict[str, Any] = {"urls": list(self.turn)}
            if self.username:
                entry.update(username=self.username, credential=self.credential or "")
            servers.append(entry)
        return servers
