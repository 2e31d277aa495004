"""HTTP-side protections of ``mediaserver serve``: who may open /ws, what the page may
connect to, headers on every response, a token for /metrics and /healthz, and an
access log without secrets.

- ``--allowed-origins``: pages from these origins may open ``/ws`` (``origin.py``);
- ``--page-signalling``: other signalling servers the shipped page may use through
  its ``?ws=`` parameter (served as ``/client.json`` and in the page's CSP
  ``connect-src``); by default the page talks to its own server only, and with
  ``--redis-url`` also to the cluster's nodes live when the page was served (a redirect,
  a reconnection after its node died);
- every response carries a Content-Security-Policy (scripts, styles and connections
  from this server only, ``frame-ancestors 'none'``), ``X-Frame-Options: DENY``,
  ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` (a page URL
  may hold ``?token=``);
- ``--metrics-token``: ``/metrics`` needs ``Authorization: Bearer <token>`` when it is
  set, or when ``--secret`` is set (then without a metrics token /metrics answers 403);
  ``/healthz`` then answers only ``{"status": "ok"}`` without the token;
- the access log writes ``token=REDACTED`` for any query parameter whose name holds
  ``token``, in the request line and in the logged ``Referer``;
- behind the front of ``--workers N`` (``mediaserver/workers``), a worker trusts the
  front's ``X-Forwarded-For`` (the client's address, for the per-address limits) and its
  guarded routes only on requests that carry the front's token (``X-Mediaserver-Front``,
  compared in constant time with ``MEDIASERVER_FRONT_TOKEN`` from the worker's environment).
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
from typing import Awaitable, Callable, Optional, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web
from aiohttp.web_log import AccessLogger

from ..config import add_option, comma_list, comma_values
from .origin import OriginPolicy

logger = logging.getLogger(__name__)

GUARDED = ("/metrics", "/healthz", "/cluster")
REDACTED = "REDACTED"
FRONT_HEADER = "X-Mediaserver-Front"
FRONT_TOKEN_ENV = "MEDIASERVER_FRONT_TOKEN"   # set by the front for its workers only
_FRONT_TOKEN = os.environ.get(FRONT_TOKEN_ENV) or None


SERVER_SECRET = "server secret"   # what a 401 says is accepted (never the value itself)
METRICS_TOKEN = "metrics token"


def unauthorised(request: web.BaseRequest, accepted: Sequence[str]) -> web.HTTPUnauthorized:
    """The 401 of a guarded route, saying everything it accepts (``accepted``: the names of the
    credentials, e.g. ``[SERVER_SECRET, METRICS_TOKEN]`` for ``GET /models``), with
    ``WWW-Authenticate: Bearer``: ``GET /models needs Authorization: Bearer <server secret>
    or Bearer <metrics token>``. Every 401 of the server is built here, so none names only
    part of what the route takes."""
    wanted = " or ".join(f"Bearer <{name}>" for name in accepted)
    return web.HTTPUnauthorized(text=f"{request.method} {request.path} needs Authorization: {wanted}",
                                headers={"WWW-Authenticate": "Bearer"})


def behind_front() -> bool:
    """True in a media worker process of ``serve --workers N``."""
    return _FRONT_TOKEN is not None


def from_front(request: web.BaseRequest) -> bool:
    """True when the request comes from this worker's front (``--workers N``)."""
    given = request.headers.get(FRONT_HEADER)
    return (_FRONT_TOKEN is not None and given is not None
            and hmac.compare_digest(given.encode(), _FRONT_TOKEN.encode()))


def front_waited_s(request: web.BaseRequest) -> float:
    """Seconds the client's socket waited at the front before it was relayed here (0 unless
    the front says so): the offer timeout counts from the client's connection."""
    if not from_front(request):
        return 0.0
    try:
        waited = float(request.headers.get("X-Mediaserver-Waited-S", "0"))
    except ValueError:
        return 0.0
    return waited if 0.0 <= waited < 3600.0 else 0.0


def client_address(request: web.BaseRequest) -> str:
    """The client's address: the front's ``X-Forwarded-For`` when it comes from the front,
    else the peer address (a header from anyone else is ignored: it is forgeable)."""
    if from_front(request):
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded:
            return forwarded[:64]
    return request.remote or "unknown"


def add_security_options(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--allowed-origins", default=None, type=comma_list(),
               help="comma list of origins (scheme://host[:port], or *) whose pages may open /ws "
                    "(default: the page's own origin; with --secret: any page holding a token)")
    add_option(parser, "--page-signalling", default=None, type=comma_list(),
               help="comma list of other ws(s):// signalling URLs the shipped page may use via ?ws= "
                    "(default: none, the page talks only to its own server)")
    add_option(parser, "--metrics-token", default=None,
               empty_means="no token, as without the flag (overrides MEDIASERVER_METRICS_TOKEN)",
               help="bearer token for /metrics and a detailed /healthz (required with --secret)")


def validate_args(args: argparse.Namespace) -> Optional[str]:
    """An error message for inconsistent security/TURN settings, or None."""
    try:
        origin_policy(args)
        page_signalling(args)
    except ValueError as exc:
        return str(exc)
    if args.turn_ttl <= 0:
        return "--turn-ttl must be positive"
    if args.turn_secret and not args.turn:
        return "--turn-secret needs --turn (the TURN URLs handed to clients)"
    if args.turn_secret and args.turn_username:
        return "--turn-secret mints per-join credentials: drop --turn-username/--turn-credential"
    return None


def announce(args: argparse.Namespace) -> None:
    """Log what the out-of-the-box protections mean for this run."""
    if args.host in ("127.0.0.1", "::1", "localhost"):
        logger.info("listening on this machine only; --host 0.0.0.0 (with --secret) serves others")
    if args.secret and not args.metrics_token:
        logger.info("/metrics is closed (--secret without --metrics-token); /healthz says only ok")


def origin_policy(args: argparse.Namespace) -> OriginPolicy:
    """The /ws origin check; raises ``ValueError`` for a malformed --allowed-origins entry."""
    given = comma_values(args.allowed_origins)
    return OriginPolicy(given, enforced=bool(given) or not args.secret)


def page_signalling(args: argparse.Namespace) -> list[str]:
    urls = comma_values(args.page_signalling)
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"--page-signalling entries must be ws:// or wss:// URLs: {url!r}")
    return urls


def content_security_policy(signalling: list[str]) -> str:
    connect = " ".join(["'self'", *signalling])
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"media-src 'self' blob: mediastream:; connect-src {connect}; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def redact_query(path_qs: str) -> str:
    """``path?a=1&token=x`` -> ``path?a=1&token=REDACTED`` (any parameter named *token*)."""
    path, sep, query = path_qs.partition("?")
    if not sep or "token" not in query.lower():
        return path_qs
    pairs = [(k, REDACTED if "token" in k.lower() else v)
             for k, v in parse_qsl(query, keep_blank_values=True)]
    return f"{path}?{urlencode(pairs)}"


class RedactingAccessLogger(AccessLogger):
    """aiohttp's access log with ``token`` query values replaced (request line and Referer)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if from_front(request):
            return   # the front's own polls (/healthz every second, scrapes): its log has them
        referer = request.headers.get("Referer", "")
        if "token" in request.query_string.lower() or "token" in referer.lower():
            headers = request.headers.copy()
            if referer:
                headers["Referer"] = redact_query(referer)
            request = request.clone(rel_url=redact_query(request.rel_url.raw_path_qs),
                                    headers=headers)
        super().log(request, response, time)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def attach(app: web.Application, args: argparse.Namespace,
           peers: Callable[[], list[str]] = lambda: []) -> None:
    """Add the headers, the /metrics guard and ``/client.json`` to ``app`` (before it starts).

    ``peers``: signalling URLs of the cluster's live nodes (``joined.nodes``); the page may
    connect to them too (a redirect, a reconnection after its node died)."""
    signalling = page_signalling(args)
    csp = content_security_policy(signalling)
    token: Optional[str] = args.metrics_token or None
    guarded = bool(token or args.secret)

    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        nodes = [u for u in peers() if u not in signalling]
        response.headers.setdefault("Content-Security-Policy",
                                    content_security_policy(signalling + nodes) if nodes else csp)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")

    @web.middleware
    async def front_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        """A media worker of --workers N answers its front only: a client that found the
        worker's own port would skip the front's Origin check, limits and room placement."""
        if not from_front(request):
            raise web.HTTPForbidden(text="this is a media worker: connect through its front")
        return await handler(request)

    @web.middleware
    async def metrics_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not guarded or request.path not in GUARDED or from_front(request):
            return await handler(request)
        given = request.headers.get("Authorization", "")
        ok = token is not None and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
        if ok:
            return await handler(request)
        if request.path == "/healthz":
            return web.json_response({"status": "ok"})
        if token is None:
            raise web.HTTPForbidden(text="/metrics is closed on a server with --secret: "
                                         "set --metrics-token and send it as a Bearer token")
        raise unauthorised(request, [METRICS_TOKEN])   # (/metrics, /cluster)

    async def client_config(request: web.Request) -> web.Response:
        return web.json_response({"signalling": signalling})

    app.on_response_prepare.append(headers)
    if behind_front():
        app.middlewares.append(front_only)
    app.middlewares.append(metrics_guard)
    app.router.add_get("/client.json", client_config)
