"""Signed, expiring, single-use join tokens: ``mediaserver token --room R --identity N``.

A token is ``base64url(json payload) "." base64url(HMAC-SHA256(secret, payload))``,
both parts unpadded and decoded strictly (any character outside ``A-Z a-z 0-9 - _``,
padding or non-zero spare bits make it malformed). The payload names the room, the
identity (in normal form, ``names.normalise_identity``), the expiry ``exp`` (Unix
seconds) and a random ``jti``, so a token for one room or one person cannot be used
for another, and ``ReplayGuard`` lets each token admit one join: after its holder
leaves, the same token is refused until it expires.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Optional

from ..config import UsageError, add_option
from .names import BadName, normalise_identity

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenError(ValueError):
    """A token that is malformed, forged, expired or for another room/identity."""


@dataclass(frozen=True)
class Grant:
    room: str
    identity: str
    expires: float
    jti: str = ""   # empty for tokens minted without one (refused by ReplayGuard)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict unpadded base64url: only the alphabet, and canonical (re-encodes to ``text``)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(data) != text:  # non-zero spare bits: another spelling of the same bytes
        raise ValueError("not canonical base64url")
    return data


def mint(secret: str, *, room: str, identity: str, ttl_s: float = 3600.0,
         now: Optional[float] = None) -> str:
    """Return a token granting ``identity`` entry to ``room`` for ``ttl_s`` seconds."""
    if not secret:
        raise TokenError("a secret is needed to mint tokens")
    try:
        identity = normalise_identity(identity)
    except BadName as exc:
        raise TokenError(str(exc)) from None
    now = time.time() if now is None else now
    payload = json.dumps({"room": room, "identity": identity, "exp": round(now + ttl_s, 3),
                          "jti": secrets.token_urlsafe(12)},
                         separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify(secret: str, token: object, *, room: str, identity: str,
           now: Optional[float] = None) -> Grant:
    """Check signature, expiry, room and identity; raise ``TokenError`` saying which failed."""
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 4096:
        raise TokenError("token is missing or malformed")
    body, sig = token.split(".")
    try:
        payload = _unb64(body)
        given = _unb64(sig)
    except (ValueError, TypeError):
        raise TokenError("token is not base64url") from None
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise TokenError("token signature does not match")
    try:
        claims = json.loads(payload)
        grant = Grant(str(claims["room"]), str(claims["identity"]), float(claims["exp"]),
                      str(claims.get("jti", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TokenError("token payload is invalid") from None
    if (time.time() if now is None else now) > grant.expires:
        raise TokenError("token has expired")
    if grant.room != room or grant.identity != identity:
        raise TokenError("token was issued for another room or identity")
    return grant


class ReplayGuard:
    """Each token admits one join: remembers the ``jti`` of every token used, until it expires.

    Sans-I/O: time is passed in (Unix seconds). Memory is bounded by the tokens used
    within one token lifetime, and by ``max_entries``: when full, the entry closest to
    its expiry is forgotten first (it is the one that will soon be refused as expired).
    """

    def __init__(self, *, max_entries: int = 100_000) -> None:
        self._seen: set[str] = set()
        self._expiries: list[tuple[float, str]] = []   # heap of (expiry, jti)
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, grant: Grant, *, now: float) -> None:
        """Record a join with ``grant``; raise ``TokenError`` if it has no jti or was used."""
        if not grant.jti:
            raise TokenError("token has no jti (mint a new one with this version)")
        while self._expiries and (self._expiries[0][0] < now or len(self._seen) >= self._max):
            self._seen.discard(heapq.heappop(self._expiries)[1])
        if grant.jti in self._seen:
            raise TokenError("token was already used to join (a token admits one join)")
        self._seen.add(grant.jti)
        heapq.heappush(self._expiries, (grant.expires, grant.jti))

    def release(self, grant: Grant) -> None:
        """Undo ``use`` for a join that was refused after the token check (room full...)."""
        self._seen.discard(grant.jti)   # its heap entry goes when it expires


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--room", required=False, help="room the token grants")
    add_option(parser, "--identity", required=False, help="participant name the token grants")
    add_option(parser, "--secret", default=None, help="HMAC secret shared with the server")
    add_option(parser, "--ttl", type=float, default=3600.0, help="validity in seconds")


def main(args: argparse.Namespace) -> int:
    if not args.room or not args.identity:
        raise UsageError("--room and --identity are required")
    if not args.secret:
        raise UsageError("--secret (or MEDIASERVER_SECRET) is required")
    if args.ttl <= 0:
        raise UsageError("--ttl must be positive")
    try:
        print(mint(args.secret, room=args.room, identity=args.identity, ttl_s=args.ttl))
    except TokenError as exc:
        raise UsageError(str(exc)) from None
    return 0
