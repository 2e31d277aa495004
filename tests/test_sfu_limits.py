"""Limits on everything (issue 13 §3): rooms, sockets in all and per address, the offer
deadline, the inbound message rate, each settable and counted in /metrics.

The sans-I/O parts (token bucket, connection gate, outbox bounds) are tested with explicit
time and a socket stand-in; every cap is then tested against a real server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import aiohttp
import pytest

from mediaserver.sfu.limits import ConnectionGate, Limits, RateLimiter, Verdict
from mediaserver.sfu.outbox import Outbox

from conftest import ROOT, ServerProcess
from metrics_probe import metric, metric_async, wait_metric
from rtc_peer import RtcPeer, loopback_ice

pytestmark = pytest.mark.timeout(240)


# ---- sans-I/O ---------------------------------------------------------------------------------
def test_rate_limiter_burst_then_rate_then_warn_drop_close() -> None:
    r = RateLimiter(rate=10.0, burst=5, close_after=4, now=0.0)
    assert [r.check(now=0.0) for _ in range(5)] == [Verdict.PROCESS] * 5     # the burst
    assert [r.check(now=0.0) for _ in range(4)] == [Verdict.WARN, Verdict.DROP, Verdict.DROP,
                                                   Verdict.CLOSE]
    r = RateLimiter(rate=10.0, burst=5, close_after=4, now=0.0)
    for _ in range(5):
        r.check(now=0.0)
    assert r.check(now=0.0) is Verdict.WARN
    assert r.check(now=0.1) is Verdict.PROCESS          # 100 ms at 10/s: one token back
    assert r.check(now=0.1) is Verdict.WARN             # a new streak warns again
    # sustained at the rate: never refused
    r = RateLimiter(rate=10.0, burst=1, now=0.0)
    assert all(r.check(now=0.1 * i) is Verdict.PROCESS for i in range(1, 200))
    # idle time refills to the burst, not beyond
    r = RateLimiter(rate=10.0, burst=3, now=0.0)
    assert [r.check(now=100.0) for _ in range(4)] == [Verdict.PROCESS] * 3 + [Verdict.WARN]


def test_connection_gate_counts_in_all_and_per_address() -> None:
    g = ConnectionGate(max_total=3, max_per_address=2)
    for _ in range(2):
        assert g.refusal("a") is None
        g.open("a")
    assert g.refusal("a") == "sockets_per_ip"
    assert g.refusal("b") is None
    g.open("b")
    assert g.refusal("c") == "sockets"                 # 3 open in all
    g.close("a")
    assert g.refusal("a") is None and g.refusal("c") is None
    g.close("a")
    g.close("b")
    assert g.open_count == 0 and g.addresses() == 0


def test_limits_reject_nonsense() -> None:
    assert Limits().problem() is None
    assert "--max-rooms" in (Limits(max_rooms=0).problem() or "")
    assert "--offer-timeout" in (Limits(offer_timeout_s=0).problem() or "")
    assert "--max-sockets-per-ip" in (Limits(max_sockets=5, max_sockets_per_ip=6).problem() or "")


class _BlockedSocket:
    """Stand-in for a WebSocket whose peer stopped reading once ``capacity`` frames were sent."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.sent: list[str] = []
        self.closed_with: Optional[int] = None

    async def send_str(self, data: str) -> None:
        if len(self.sent) >= self.capacity:
            await asyncio.Event().wait()      # never completes: the peer does not read
        self.sent.append(data)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed_with = code
        return True


@pytest.mark.parametrize("bound", ["queue-full", "stalled"])
async def test_outbox_drops_a_consumer_that_stops_reading(bound: str) -> None:
    ws = _BlockedSocket(capacity=3)
    slow: list[str] = []
    aborted = asyncio.Event()
    box = Outbox(ws, abort=aborted.set, on_slow=slow.append,
                 max_messages=10 if bound == "queue-full" else 10_000,
                 stall_s=60.0 if bound == "queue-full" else 0.2)
    box.start()
    if bound == "queue-full":
        with pytest.raises(ConnectionError):   # post() never blocks; it refuses once dropped
            for i in range(20):
                box.post({"n": i})
                await asyncio.sleep(0)         # let the writer take what the socket takes
    else:
        for i in range(5):                     # 3 written, the 4th blocks, the 5th waits
            box.post({"n": i})
    await asyncio.wait_for(aborted.wait(), 10)
    assert slow == [bound]
    assert [json.loads(t)["n"] for t in ws.sent] == [0, 1, 2]   # in order, nothing after the block
    with pytest.raises(ConnectionError):
        box.post({"late": True})
    await box.finish()


async def test_outbox_flushes_in_order_then_closes() -> None:
    ws = _BlockedSocket(capacity=1000)
    box = Outbox(ws, abort=lambda: None, on_slow=lambda r: None)
    box.start()
    for i in range(50):
        box.post({"n": i})
    box.close(1008, b"bye")
    with pytest.raises(ConnectionError):
        box.post({"after": "close"})
    await box.finish()
    assert [json.loads(t)["n"] for t in ws.sent] == list(range(50))
    assert ws.closed_with == 1008 and box.dropped is None


# ---- against a real server --------------------------------------------------------------------
@pytest.fixture(autouse=False)
def ice() -> Iterator[None]:
    with loopback_ice():
        yield


def _connector(source: str) -> aiohttp.TCPConnector:
    """Connections from ``source`` (another loopback address is another client address)."""
    return aiohttp.TCPConnector(local_addr=(source, 0))


async def _join(session: aiohttp.ClientSession, url: str, room: str, identity: str) -> tuple[
        aiohttp.ClientWebSocketResponse, dict]:
    ws = await session.ws_connect(url)
    await ws.send_str(json.dumps({"type": "join", "room": room, "identity": identity}))
    while True:
        reply = json.loads((await ws.receive(timeout=30)).data)
        if reply["type"] in ("joined", "error"):
            return ws, reply


async def _closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 60.0) -> Optional[int]:
    """Read until the server closes; the close code (None: the connection just ended)."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return int(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            return ws.close_code


def test_room_cap(start_server) -> None:
    server = start_server("--no-enhance", "--max-rooms", "2")

    async def run() -> dict:
        async with aiohttp.ClientSession() as s:
            a, ra = await _join(s, server.ws_url, "room-a", "x")
            b, rb = await _join(s, server.ws_url, "room-b", "y")
            c, rc = await _join(s, server.ws_url, "room-c", "z")
            closed = await _closed_with(c)
            also_a, r_also_a = await _join(s, server.ws_url, "room-a", "w")   # existing room: fine
            await a.close()
            await also_a.close()           # room-a empties and ends: a new room may start
            rooms_after = await _wait_rooms(server, 1)
            d, rd = await _join(s, server.ws_url, "room-c", "z")
            for ws in (b, d):
                await ws.close()
            return {"a": ra["type"], "b": rb["type"], "c": rc, "c_closed": closed,
                    "also_a": r_also_a["type"], "rooms_after": rooms_after, "d": rd["type"]}

    out = asyncio.run(run())
    assert out["a"] == out["b"] == out["also_a"] == "joined"
    assert out["c"]["type"] == "error" and out["c"]["code"] == "server-full"
    assert "--max-rooms" in out["c"]["message"] and out["c_closed"] == 1008
    assert out["rooms_after"] == 1 and out["d"] == "joined"
    assert metric(server, "mediaserver_limit_refusals_total", limit="rooms") == 1
    assert metric(server, "mediaserver_limit", limit="max_rooms") == 2


async def _wait_metric_equal(server: ServerProcess, name: str, value: float, **labels: str) -> float:
    return await wait_metric(server, name, equal=value, **labels)


async def _wait_rooms(server: ServerProcess, count: int) -> float:
    return await _wait_metric_equal(server, "mediaserver_rooms", count)


async def _handshake_status(session: aiohttp.ClientSession, url: str) -> tuple[int, Optional[
        aiohttp.ClientWebSocketResponse]]:
    """101 and the socket, or the HTTP status the upgrade was refused with."""
    try:
        return 101, await session.ws_connect(url)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status, None


def test_socket_caps_per_address_and_in_all(start_server) -> None:
    """127.0.0.1 and 127.0.0.2 are two client addresses: one at its cap does not stop the other;
    the total cap stops both; a closed socket frees its place."""
    server = start_server("--no-enhance", "--max-sockets", "4", "--max-sockets-per-ip", "3")

    async def run() -> dict:
        async with aiohttp.ClientSession(connector=_connector("127.0.0.1")) as one, \
                aiohttp.ClientSession(connector=_connector("127.0.0.2")) as two:
            first = [await _handshake_status(one, server.ws_url) for _ in range(3)]
            over_ip = await _handshake_status(one, server.ws_url)          # 4th from .1
            other_ip = await _handshake_status(two, server.ws_url)         # 1st from .2: fits
            over_all = await _handshake_status(two, server.ws_url)         # 5th in all
            sockets = await metric_async(server, "mediaserver_ws_sockets")
            ws = first[0][1]
            assert ws is not None
            await ws.close()
            await _wait_metric_equal(server, "mediaserver_ws_sockets", 3)
            again = await _handshake_status(two, server.ws_url)            # a place is free
            for _, w in first[1:] + [other_ip, again]:
                if w is not None:
                    await w.close()
            return {"first": [st for st, _ in first], "over_ip": over_ip[0], "other_ip": other_ip[0],
                    "over_all": over_all[0], "sockets": sockets, "again": again[0]}

    out = asyncio.run(run())
    assert out == {"first": [101, 101, 101], "over_ip": 429, "other_ip": 101, "over_all": 503,
                   "sockets": 4, "again": 101}
    assert metric(server, "mediaserver_limit_refusals_total", limit="sockets_per_ip") == 1
    assert metric(server, "mediaserver_limit_refusals_total", limit="sockets") == 1
    assert metric(server, "mediaserver_limit", limit="max_sockets_per_ip") == 3


def test_offer_deadline_frees_a_room_held_by_idle_sockets(start_server, ice: None) -> None:
    """The issue's case: sockets that join (and answer pings) but never offer kept a room full.
    With a deadline they are removed, a socket that never even joins is closed too, and one that
    offered in time stays and is heard."""
    server = start_server("--no-enhance", "--max-participants", "2", "--offer-timeout", "3")

    async def run() -> dict:
        async with aiohttp.ClientSession() as s:
            idle = [await _join(s, server.ws_url, "main", f"idle{i}") for i in range(2)]
            lurker = await s.ws_connect(server.ws_url)                       # never joins
            _, full = await _join(s, server.ws_url, "main", "late")          # room is full now
            codes = [await _closed_with(ws) for ws, _ in idle] + [await _closed_with(lurker)]
            await _wait_metric_equal(server, "mediaserver_participants", 0)
            alice = RtcPeer(server.ws_url, "main", "alice", tone_hz=440.0)
            bob = RtcPeer(server.ws_url, "main", "bob", tone_hz=660.0)
            try:
                for p in (alice, bob):
                    await p.connect(s)
                    await p.join()
                    await p.publish()
                # both offered in time: past the deadline they are still there and hear each other
                await bob.hears("alice", frames=50, timeout=60)
                await alice.hears("bob", frames=50, timeout=60)
                timed_out = await metric_async(server, "mediaserver_limit_refusals_total",
                                               limit="offer_timeout")
                # a full 3 s deadline later (one more idle socket proves it has run): still there
                _, probe = await _join(s, server.ws_url, "other", "probe")
                assert probe["type"] == "joined"
                await _wait_metric_equal(server, "mediaserver_limit_refusals_total", timed_out + 1,
                                         limit="offer_timeout")
                participants = await _wait_metric_equal(server, "mediaserver_participants", 2)
                assert not alice.closed.is_set() and not bob.closed.is_set()
                await bob.hears("alice", frames=25, timeout=60)
            finally:
                for p in (alice, bob):
                    await p.close()
            return {"full": full, "codes": codes, "timed_out": timed_out,
                    "participants_after": participants}

    out = asyncio.run(run())
    assert out["full"]["type"] == "error" and out["full"]["message"] == "room is full"
    assert out["codes"] == [1008, 1008, 1008]
    assert out["timed_out"] == 3          # two idle joiners and the lurker, not alice or bob
    assert out["participants_after"] == 2
    assert "no offer within 3 s of connecting" in server.tail(200_000)


def test_rate_limit_warns_then_closes_and_spares_a_client_within_it(start_server) -> None:
    server = start_server("--no-enhance", "--ws-rate", "5", "--ws-burst", "20")

    async def run() -> dict:
        async with aiohttp.ClientSession() as s:
            polite, _ = await _join(s, server.ws_url, "main", "polite")
            for _ in range(19):                       # within the burst (the join took one)
                await polite.send_str(json.dumps({"type": "stats"}))
            polite_replies = [json.loads((await polite.receive(timeout=30)).data)["type"]
                              for _ in range(19)]
            flooder, _ = await _join(s, server.ws_url, "main", "flooder")
            for _ in range(200):
                await flooder.send_str(json.dumps({"type": "stats"}))
            replies: list[dict] = []
            while True:
                msg = await flooder.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                replies.append(json.loads(msg.data))
            # polite is untouched: the next thing it hears is the flooder leaving, no error
            after = [json.loads((await polite.receive(timeout=30)).data)]
            while after[-1]["type"] != "participant-left":
                after.append(json.loads((await polite.receive(timeout=30)).data))
            await polite.close()
            return {"polite": polite_replies, "flooder": replies, "code": flooder.close_code,
                    "polite_after": after}

    out = asyncio.run(run())
    assert out["polite"] == ["stats"] * 19
    assert out["polite_after"] == [{"type": "participant-joined", "identity": "flooder"},
                                   {"type": "participant-left", "identity": "flooder"}]
    flood = out["flooder"]
    answered = [r for r in flood if r["type"] == "stats"]
    warnings = [r for r in flood if r["type"] == "error"]
    # the burst is answered (plus what the rate refills meanwhile), not the flood; each excess
    # streak is warned once (no reply per refused message), then one last word and the close
    assert 19 <= len(answered) < 100
    assert all(w["code"] == "rate-limited" for w in warnings)
    assert "message dropped" in warnings[0]["message"] and "closing" in warnings[-1]["message"]
    assert len(warnings) < len(flood) - len(answered) + 2 and len(warnings) <= 1 + len(answered)
    assert out["code"] == 1008
    assert metric(server, "mediaserver_limit_refusals_total", limit="rate") == 1
    assert metric(server, "mediaserver_ws_rate_limited_messages_total") >= 20


def test_limits_from_environment_and_bad_values(tmp_path: Path) -> None:
    env = dict(os.environ, MEDIASERVER_MAX_ROOMS="1")
    server = ServerProcess(tmp_path / "env.log", "--no-enhance", env=env)
    try:
        async def run() -> tuple[str, str]:
            async with aiohttp.ClientSession() as s:
                a, ra = await _join(s, server.ws_url, "one", "x")
                b, rb = await _join(s, server.ws_url, "two", "y")
                await a.close()
                await b.close()
                return ra["type"], rb.get("code", rb["type"])
        assert asyncio.run(run()) == ("joined", "server-full")
        assert metric(server, "mediaserver_limit", limit="max_rooms") == 1
    finally:
        server.stop()
    # a bad value is a clear start-up error (each kind of bad value: test_limits_reject_nonsense)
    r = subprocess.run([sys.executable, "-m", "mediaserver", "serve", "--no-enhance", "--max-rooms", "0"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "error: --max-rooms must be positive" in r.stderr, r
    assert "Traceback" not in r.stderr
