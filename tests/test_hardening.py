"""Issue 13 §2 and §4 against a real ``mediaserver serve``: who may open /ws, names, deep
JSON, strict single-use tokens, the access log, /metrics, page headers and the default bind.

Clients are real aiohttp WebSockets (a browser's ``Origin`` is a header like any other
to the server); tests/test_browser_origin.py drives the page itself in Chromium.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Optional

import aiohttp
import pytest

from conftest import METRICS_TOKEN, ROOT, ServerProcess
from mediaserver.jsonsafe import JsonTooDeep, loads_bounded, nesting_depth
from mediaserver.sfu.names import BadName, identity_key, normalise_identity
from mediaserver.sfu.origin import OriginPolicy, normalise_origin
from mediaserver.sfu.tokens import Grant, ReplayGuard, TokenError, mint, verify
from mediaserver.sfu.websec import redact_query

SECRET = "hardening-secret"


# -- helpers -------------------------------------------------------------------------------
class Peer:
    """A signalling socket (no media): join, read replies, leave."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws

    @classmethod
    async def connect(cls, server: ServerProcess, origin: Optional[str] = None) -> "Peer":
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(server.ws_url, origin=origin)
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    async def send(self, message: Any) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def reply(self) -> dict:
        msg = await self.ws.receive(timeout=30)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"socket ended: {msg}"
        return json.loads(msg.data)

    async def join(self, room: str, identity: str, token: Optional[str] = None) -> dict:
        message = {"type": "join", "room": room, "identity": identity}
        if token is not None:
            message["token"] = token
        await self.send(message)
        return await self.reply()

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


async def handshake_status(server: ServerProcess, origin: Optional[str]) -> int:
    """HTTP status of the /ws upgrade with this Origin (101 when accepted)."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(server.ws_url, origin=origin):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def http_get(url: str, headers: Optional[dict] = None) -> tuple[int, dict, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


# -- §2: Origin ----------------------------------------------------------------------------
def test_origin_policy_cases() -> None:
    same = OriginPolicy()
    assert same.allows(None, "127.0.0.1:8080")                     # not a browser
    assert same.allows("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert same.allows("https://call.example.org", "call.example.org")      # TLS proxy
    assert same.allows("https://CALL.example.org:443", "call.example.org")
    assert not same.allows("http://evil.example", "127.0.0.1:8080")
    assert not same.allows("http://127.0.0.1:9090", "127.0.0.1:8080")     # other port
    assert not same.allows("http://localhost:8080", "127.0.0.1:8080")     # other name
    assert not same.allows("null", "127.0.0.1:8080")                      # sandboxed frame
    assert not same.allows("http://127.0.0.1:8080.evil.example", "127.0.0.1:8080")
    assert not same.allows("http://127.0.0.1:8080", None)
    listed = OriginPolicy(["https://app.example:8443/"])
    assert listed.allows("https://app.example:8443", "call.example")
    assert not listed.allows("http://app.example:8443", "call.example")   # scheme counts
    assert OriginPolicy(["*"]).allows("http://anything.example", "x")
    assert OriginPolicy(enforced=False).allows("http://evil.example", "x")
    assert normalise_origin("https://a.example:443") == "https://a.example"
    with pytest.raises(ValueError):
        OriginPolicy(["app.example"])   # no scheme: a configuration error, said at start
    cluster = OriginPolicy(["https://app.example"])   # a node's live peers (sfu/cluster_link.py)
    cluster.peers = lambda: ["http://10.0.0.6:8080", "https://node-c.example"]
    assert cluster.allows("http://10.0.0.6:8080", "10.0.0.5:8080")
    assert cluster.allows("https://node-c.example", "10.0.0.5:8080")
    assert not cluster.allows("http://10.0.0.6:9090", "10.0.0.5:8080")   # not a node's origin


async def test_ws_refuses_pages_from_other_origins(start_server) -> None:
    server: ServerProcess = start_server("--no-enhance")
    own = f"http://127.0.0.1:{server.port}"
    assert await handshake_status(server, "http://evil.example") == 403
    assert await handshake_status(server, f"http://127.0.0.1:{server.port + 1}") == 403
    assert await handshake_status(server, "null") == 403
    assert await handshake_status(server, own) == 101
    assert await handshake_status(server, None) == 101   # mediaserver client, scripts
    peer = await Peer.connect(server, origin=own)
    try:
        assert (await peer.join("lobby", "ada"))["type"] == "joined"
    finally:
        await peer.close()
    assert "refused /ws from a page at 'http://evil.example'" in server.tail(100_000)


async def test_allowed_origins_and_tokens_from_anywhere(start_server) -> None:
    listed = start_server("--no-enhance", "--allowed-origins", "https://app.example:8443, http://other.example")
    assert await handshake_status(listed, "https://app.example:8443") == 101
    assert await handshake_status(listed, "http://other.example") == 101
    assert await handshake_status(listed, f"http://127.0.0.1:{listed.port}") == 101
    assert await handshake_status(listed, "http://evil.example") == 403

    secured = start_server("--no-enhance", "--secret", SECRET)
    peer = await Peer.connect(secured, origin="http://app-elsewhere.example")
    try:  # with --secret, a page anywhere joins with a token, and only with one
        token = mint(SECRET, room="lobby", identity="ada")
        assert (await peer.join("lobby", "ada", token))["type"] == "joined"
    finally:
        await peer.close()
    peer = await Peer.connect(secured, origin="http://app-elsewhere.example")
    try:
        reply = await peer.join("lobby", "eve")
        assert reply["type"] == "error" and reply["code"] == "bad-token"
    finally:
        await peer.close()


def test_bad_security_settings_stop_the_server_at_start() -> None:
    for flags, said in ((["--allowed-origins", "app.example"], "not an origin"),
                        (["--page-signalling", "http://x/ws"], "ws:// or wss://"),
                        (["--turn-secret", "s"], "needs --turn")):
        done = subprocess.run([sys.executable, "-m", "mediaserver", "serve", "--no-enhance", *flags],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and said in done.stderr, (flags, done.stdout, done.stderr[-500:])


def test_default_bind_is_loopback_only() -> None:
    """Without --host only 127.0.0.1 answers (127.0.0.2 is loopback too, but another address)."""
    proc = subprocess.Popen([sys.executable, "-m", "mediaserver", "serve", "--no-enhance",
                             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        port = int(match.group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=10).close()
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout:
            proc.stdout.close()


# -- §4: names -----------------------------------------------------------------------------
def test_identity_normal_form_and_keys() -> None:
    assert normalise_identity("  Ada   Lovelace ") == "Ada Lovelace"
    assert normalise_identity("ｂｏｂ") == "bob"                 # full-width
    assert normalise_identity("bob\u00a0") == "bob"             # no-break space
    assert normalise_identity("José") == normalise_identity("Jose\u0301")   # composed
    for bad in ("bob\n", "bo\tb", "bob\u200b", "\u202ebob", "", " ", "-bob", "x" * 65, 7, None):
        with pytest.raises(BadName):
            normalise_identity(bad)
    assert identity_key("Bob") == identity_key("bob") == identity_key("BOB")
    assert identity_key("Straße") == identity_key("STRASSE")
    assert identity_key("José") != identity_key("Josè")


async def test_look_alike_names_cannot_share_a_room(start_server) -> None:
    server: ServerProcess = start_server("--no-enhance")
    first = await Peer.connect(server)
    others: list[Peer] = []
    try:
        joined = await first.join("lobby", "  bob ")
        assert joined["type"] == "joined" and joined["identity"] == "bob"
        taken, invalid = "is already in the room", "identity must be"
        for name, said in (("bob", taken), ("bob ", taken), ("Bob", taken), ("ｂｏｂ", taken),
                           ("bob\n", invalid), ("bob\u200b", invalid), ("\u202ebob", invalid)):
            peer = await Peer.connect(server)
            others.append(peer)
            reply = await peer.join("lobby", name)
            assert reply["type"] == "error" and reply["code"] == "bad-request", (name, reply)
            assert said in reply["message"], (name, reply)
        for room in ("lobby\n", "lobby ", "lob\nby"):
            peer = await Peer.connect(server)
            others.append(peer)
            reply = await peer.join(room, "carol")
            assert reply["type"] == "error" and reply["code"] == "unknown-room", (room, reply)
        peer = await Peer.connect(server)
        others.append(peer)
        assert (await peer.join("lobby", "José"))["type"] == "joined"   # others still join
    finally:
        for p in [first, *others]:
            await p.close()
    assert "bob\n" not in server.tail(100_000)   # no log line was split by a name


# -- §4: deep JSON -------------------------------------------------------------------------
def test_nesting_depth_ignores_brackets_in_strings() -> None:
    assert nesting_depth('{"a": "[[[[{{{{"}') == 1
    assert nesting_depth('{"a": "\\"[[[["}') == 1
    assert nesting_depth("[" * 30_000 + "]" * 30_000) == 30_000
    assert loads_bounded('{"a": [1, {"b": 2}]}', 3) == {"a": [1, {"b": 2}]}
    with pytest.raises(JsonTooDeep):
        loads_bounded("[" * 30_000 + "]" * 30_000)
    with pytest.raises(ValueError):
        loads_bounded("[[[")


async def test_deeply_nested_json_gets_bad_json_and_the_socket_lives_on(start_server) -> None:
    server: ServerProcess = start_server("--no-enhance")
    peer = await Peer.connect(server)
    try:
        for doc in ("[" * 30_000 + "]" * 30_000, '{"a":' * 10_000 + "1" + "}" * 10_000,
                    "[" * 30_000):
            await peer.send(doc)
            reply = await peer.reply()
            assert reply == {"type": "error", "code": "bad-json",
                             "message": "message is not valid JSON"}, reply
        # brackets inside a string are just text: this is a normal (early) message
        await peer.send({"type": "stats", "note": "[" * 1000})
        assert (await peer.reply())["code"] == "bad-request"
        assert (await peer.join("lobby", "deep"))["type"] == "joined"   # same socket
    finally:
        await peer.close()
    log = server.tail(200_000)
    assert "RecursionError" not in log and "Traceback" not in log


# -- §4: tokens ----------------------------------------------------------------------------
def test_token_base64_is_strict() -> None:
    token = mint(SECRET, room="r", identity="ada")
    body, sig = token.split(".")
    assert verify(SECRET, token, room="r", identity="ada").identity == "ada"
    spoiled = [f"{body[:10]}!{body[10:]}.{sig}", f"{body}.{sig[:5]}*{sig[5:]}", f"{body}.{sig}=",
               f"{body} .{sig}", f"{body}.{sig}\n", f"{body[:10]}+{body[11:]}.{sig}"]
    # the same bytes spelled with non-zero spare bits in the last character
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = last[last.index(sig[-1]) + 1] if len(sig) % 4 else None
    if spare is not None:
        spoiled.append(f"{body}.{sig[:-1]}{spare}")
    for bad in spoiled:
        with pytest.raises(TokenError):
            verify(SECRET, bad, room="r", identity="ada")


def test_tokens_carry_the_normal_form_and_a_jti() -> None:
    grant = verify(SECRET, mint(SECRET, room="r", identity="  ｂｏｂ "), room="r", identity="bob")
    assert grant.identity == "bob" and len(grant.jti) >= 16
    other = verify(SECRET, mint(SECRET, room="r", identity="bob"), room="r", identity="bob")
    assert other.jti != grant.jti
    done = subprocess.run([sys.executable, "-m", "mediaserver", "token", "--secret", SECRET,
                           "--room", "r", "--identity", "bob\n"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "identity must be" in done.stderr


def test_replay_guard_admits_each_token_once_until_it_expires() -> None:
    guard = ReplayGuard(max_entries=3)
    g = Grant("r", "ada", expires=100.0, jti="one")
    guard.use(g, now=0.0)
    with pytest.raises(TokenError, match="already used"):
        guard.use(g, now=1.0)
    guard.release(g)                      # a join refused after the check gives it back
    guard.use(g, now=2.0)
    with pytest.raises(TokenError, match="no jti"):
        guard.use(Grant("r", "ada", 100.0), now=0.0)
    for i in range(10):                   # bounded memory
        guard.use(Grant("r", "x", 200.0 + i, jti=f"j{i}"), now=3.0)
    assert len(guard) <= 3


async def test_tokens_are_single_use_and_spoiled_ones_refused(start_server) -> None:
    server: ServerProcess = start_server("--no-enhance", "--secret", SECRET,
                                         "--max-participants", "2")
    token = mint(SECRET, room="lobby", identity="ada")
    body, sig = token.split(".")
    peer = await Peer.connect(server)
    reply = await peer.join("lobby", "ada", f"{body[:8]}%{body[8:]}.{sig}")
    assert reply["code"] == "bad-token", reply
    await peer.close()

    ada = await Peer.connect(server)
    assert (await ada.join("lobby", "ada", token))["type"] == "joined"
    await ada.send({"type": "leave"})
    await ada.close()
    replay = await Peer.connect(server)
    reply = await replay.join("lobby", "ada", token)
    assert reply["code"] == "bad-token" and "already used" in reply["message"], reply
    await replay.close()

    # a token refused for another reason (room full) is not spent
    full = [await Peer.connect(server) for _ in range(2)]
    for i, p in enumerate(full):
        assert (await p.join("lobby", f"p{i}", mint(SECRET, room="lobby", identity=f"p{i}")))["type"] == "joined"
    late_token = mint(SECRET, room="lobby", identity="late")
    late = await Peer.connect(server)
    assert "full" in (await late.join("lobby", "late", late_token))["message"]
    await late.close()
    await full[0].close()
    for _ in range(200):   # wait for the server to notice the leave
        status, _, body_ = http_get(server.url + "healthz",
                                    {"Authorization": f"Bearer {METRICS_TOKEN}"})
        if json.loads(body_)["participants"] == 1:
            break
        await asyncio.sleep(0.1)
    late = await Peer.connect(server)
    assert (await late.join("lobby", "late", late_token))["type"] == "joined"
    await late.close()
    await full[1].close()


# -- §4: access log, /metrics, headers -----------------------------------------------------
def test_redact_query() -> None:
    assert redact_query("/?room=a&token=abc.def") == "/?room=a&token=REDACTED"
    assert redact_query("/x?access_token=1&Token=2&n=3") == "/x?access_token=REDACTED&Token=REDACTED&n=3"
    assert redact_query("/rooms/a/transcript") == "/rooms/a/transcript"


def test_access_log_never_holds_a_token(start_server) -> None:
    server: ServerProcess = start_server("--no-enhance", "--secret", SECRET)
    token = mint(SECRET, room="lobby", identity="ada")
    http_get(f"{server.url}?room=lobby&name=ada&token={token}")
    http_get(f"{server.url}js/app.js", {"Referer": f"{server.url}?token={token}&join=1"})
    http_get(f"{server.url}rooms/lobby/transcript?identity=ada&token={token}")
    deadline = time.monotonic() + 30
    log = ""
    while time.monotonic() < deadline and log.count("token=REDACTED") < 3:
        log = server.tail(200_000)
        time.sleep(0.1)
    assert log.count("token=REDACTED") >= 3, log[-2000:]
    assert token not in log and token.split(".")[1] not in log


def test_metrics_and_healthz_need_the_metrics_token_with_a_secret(start_server) -> None:
    secured = start_server("--no-enhance", "--secret", SECRET)   # conftest adds --metrics-token
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert http_get(secured.url + "metrics")[0] == 401
    assert http_get(secured.url + "metrics", {"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = http_get(secured.url + "metrics", auth)
    assert status == 200 and "mediaserver_" in body
    assert json.loads(http_get(secured.url + "healthz")[2]) == {"status": "ok"}
    assert "participants" in json.loads(http_get(secured.url + "healthz", auth)[2])

    closed = start_server("--no-enhance", "--secret", SECRET, "--metrics-token", "")
    status, _, body = http_get(closed.url + "metrics", auth)
    assert status == 403 and "--metrics-token" in body
    open_ = start_server("--no-enhance", "--metrics-token", "")   # no secret: as before
    assert http_get(open_.url + "metrics")[0] == 200
    assert "participants" in json.loads(http_get(open_.url + "healthz")[2])


def test_page_headers_forbid_framing_and_foreign_connections(start_server) -> None:
    server: ServerProcess = start_server("--no-enhance")
    status, headers, _ = http_get(server.url)
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "connect-src 'self';" in csp
    assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert json.loads(http_get(server.url + "client.json")[2]) == {"signalling": []}

    other = "ws://127.0.0.1:1/ws"
    listed = start_server("--no-enhance", "--page-signalling", other)
    _, headers, _ = http_get(listed.url)
    assert f"connect-src 'self' {other};" in headers["Content-Security-Policy"]
    assert json.loads(http_get(listed.url + "client.json")[2]) == {"signalling": [other]}
