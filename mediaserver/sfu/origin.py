"""Which web pages may open ``/ws``: the ``Origin`` check (``--allowed-origins``).

A browser sends ``Origin`` with every WebSocket handshake; scripts cannot forge it.
Without a check, any page the user visits could open ``/ws`` on this server and join
a room (with that page's own microphone permission, or none at all, to listen in).

Policy (sans-I/O, ``OriginPolicy.allows(origin, host)``):

- no ``Origin`` header: allowed; not a browser page (``mediaserver client``, scripts),
  which can join with or without a check anyway;
- the page's own origin: ``Origin``'s host and port equal the request's ``Host``
  (default ports folded: ``https://a`` and ``Host: a`` match, as behind a TLS proxy
  that keeps ``Host``);
- an origin listed in ``--allowed-origins`` (``scheme://host[:port]``), or ``*``;
- with ``--redis-url``, the origin of any live node of the cluster (``OriginPolicy.peers``):
  a page served by one node follows a redirect to the room's node, or reconnects to another
  node when its node dies.

With ``--secret`` every join needs a token, which is the operator's permission; there
the check applies only when ``--allowed-origins`` is given (``OriginPolicy.enforced``).
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(netloc: str, scheme: Optional[str]) -> Optional[tuple[str, Optional[int]]]:
    """``(host, port)`` with the scheme's default port as None; None if unparsable."""
    try:
        parts = urlsplit(f"//{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    if port is not None and scheme is not None and DEFAULT_PORTS.get(scheme) == port:
        port = None
    if port is not None and scheme is None and port in (80, 443):
        port = None  # a Host header's explicit default port: scheme unknown behind a proxy
    return host.lower().rstrip("."), port


def normalise_origin(origin: str) -> Optional[str]:
    """``scheme://host[:port]`` in lower case without a default port, or None if not an origin."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query:
        return None
    hp = _host_port(parts.netloc, scheme)
    if hp is None:
        return None
    host, port = hp
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


class OriginPolicy:
    """``allows(origin, host)``: may a page from ``origin`` open /ws on a server named ``host``?"""

    def __init__(self, allowed: Iterable[str] = (), *, enforced: bool = True) -> None:
        self.any = False
        self.allowed: set[str] = set()
        for item in allowed:
            if item.strip() == "*":
                self.any = True
                continue
            norm = normalise_origin(item)
            if norm is None:
                raise ValueError(f"not an origin (scheme://host[:port]): {item!r}")
            self.allowed.add(norm)
        self.enforced = enforced
        # the cluster's live nodes' http(s) URLs (sfu/cluster_link.py sets it; one node: none)
        self.peers: Callable[[], Iterable[str]] = lambda: ()

    def allows(self, origin: Optional[str], host: Optional[str]) -> bool:
        if not self.enforced or self.any or origin is None:
            return True
        norm = normalise_origin(origin)
        if norm is None:   # "null" (sandboxed frames, file://) and garbage
            return False
        if norm in self.allowed or norm in {normalise_origin(url) for url in self.peers()}:
            return True
        scheme, _, netloc = norm.partition("://")
        mine = _host_port(host or "", None)
        theirs = _host_port(netloc, scheme)
        if mine is None or theirs is None:
            return False
        if mine[0] != theirs[0]:
            return False
        # Host without a port matches the origin's default port (TLS proxy keeping Host)
        return mine[1] == theirs[1]
