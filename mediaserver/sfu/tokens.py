"""Signed, expiring join tokens: ``mediaserver token --room R --identity N``.

A token is ``base64url(json payload) "." base64url(HMAC-SHA256(secret, payload))``.
The payload names the room, the identity and the expiry, so a token for one room
or one person cannot be reused for another.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
from dataclasses import dataclass
from typing import Optional

from ..config import add_option


class TokenError(ValueError):
    """A token that is malformed, forged, expired or for another room/identity."""


@dataclass(frozen=True)
class Grant:
    room: str
    identity: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(secret: str, *, room: str, identity: str, ttl_s: float = 3600.0,
         now: Optional[float] = None) -> str:
    """Return a token granting ``identity`` entry to ``room`` for ``ttl_s`` seconds."""
    if not secret:
        raise TokenError("a secret is needed to mint tokens")
    now = time.time() if now is None else now
    payload = json.dumps({"room": room, "identity": identity, "exp": round(now + ttl_s, 3)},
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
        grant = Grant(str(claims["room"]), str(claims["identity"]), float(claims["exp"]))
    except (ValueError, KeyError, TypeError):
        raise TokenError("token payload is invalid") from None
    if (time.time() if now is None else now) > grant.expires:
        raise TokenError("token has expired")
    if grant.room != room or grant.identity != identity:
        raise TokenError("token was issued for another room or identity")
    return grant


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--room", required=False, help="room the token grants")
    add_option(parser, "--identity", required=False, help="participant name the token grants")
    add_option(parser, "--secret", default=None, help="HMAC secret shared with the server")
    add_option(parser, "--ttl", type=float, default=3600.0, help="validity in seconds")


def main(args: argparse.Namespace) -> int:
    if not args.room or not args.identity:
        print("error: --room and --identity are required", file=sys.stderr)
        return 2
    if not args.secret:
        print("error: --secret (or MEDIASERVER_SECRET) is required", file=sys.stderr)
        return 2
    if args.ttl <= 0:
        print("error: --ttl must be positive", file=sys.stderr)
        return 2
    print(mint(args.secret, room=args.room, identity=args.identity, ttl_s=args.ttl))
    return 0
