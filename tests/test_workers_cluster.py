"""``serve --workers 2 --redis-url URL``: every machine of a cluster on all its cores.

Real ``redis-server`` and real server processes on 127.0.0.1, each node a front with two
media worker processes; the front is the machine's one cluster node. Claims:

- a join through the node that does not own the room gets ``redirect`` (close 4307) and the
  client ends in the room on the owner node; audio flows both ways (each hears the other's
  own tone); ``GET /cluster`` lists exactly the two fronts as nodes, the room on its owner;
- a token spent on one node is refused on the other (single use is cluster-wide);
- a room's claim goes when its last participant leaves: the other node then owns the room;
- ``kill -9`` of the worker hosting a room: its participants reconnect, end in the room on
  the same node, the room is still that node's in Redis and audio flows again;
- Redis away: the call goes on, a new room is served on the machine, a token still admits one
  join on the whole machine; Redis back: the front re-registers and re-claims the room;
- a room both nodes served during an outage goes to the older claim: the front has the
  room's worker redirect its participants to the winner.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

import pytest
import redis as redis_sync
from prometheus_client.parser import text_string_to_metric_families

from mediaserver.sfu.tokens import mint

from conftest import METRICS_TOKEN, ServerProcess, server_metric, start_client, stop_client, wait_metric_grows
from redis_proc import RedisProcess
from test_cluster import _end, _get, _hears, _join, _participants, _single_use_across, _speech
from test_cluster import CALL_S, ROOM, SECRET
from test_reconnect import FLOWS
from waiting import poll, until

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path)
    yield proc
    proc.stop()


def _node(tmp_path: Path, redis: RedisProcess, name: str) -> ServerProcess:
    return ServerProcess(tmp_path / f"node-{name}.log", "--no-enhance", "--workers", "2",
                         "--secret", SECRET, "--redis-url", redis.url, "--node-id", name)


def _owner(redis: RedisProcess, room: str = ROOM) -> Optional[str]:
    """The node holding ``room``'s claim in Redis now (None: unclaimed)."""
    raw = redis_sync.Redis.from_url(redis.url).get(f"mediaserver:room:{{{room}}}:owner")
    return None if raw is None else str(json.loads(raw)["node"])


def _in_cluster(*nodes: ServerProcess) -> None:
    """Every front registered and seeing all of them (start-up is slow under load)."""
    poll(lambda: all(server_metric(n, "mediaserver_cluster_nodes") == len(nodes)
                     and server_metric(n, "mediaserver_cluster_redis_up") == 1 for n in nodes),
         timeout=120, what="the fronts in the cluster")


def _metrics_text(server: ServerProcess) -> str:
    request = urllib.request.Request(server.url + "metrics",
                                     headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.read().decode()


def _packets_out(server: ServerProcess) -> float:
    """RTP packets sent by all the machine's workers (a restarted worker starts from 0)."""
    return sum(s.value for f in text_string_to_metric_families(_metrics_text(server))
               for s in f.samples if s.name == "mediaserver_packets_out_total")


def _packets_grow(server: ServerProcess, by: float) -> None:
    start = _packets_out(server)
    poll(lambda: _packets_out(server) - start >= by, timeout=120,
         what=f"{by:g} more packets out")


def _cluster_series(server: ServerProcess) -> dict[tuple[str, str], float]:
    """The ``mediaserver_cluster_*`` samples of ``server``'s /metrics by (name, worker label):
    the front's own have no ``worker`` label ("")."""
    text = _metrics_text(server)
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("mediaserver_cluster_placements_total"):
                key = (f"{sample.name}:{sample.labels.get('outcome', '')}", sample.labels.get("worker", ""))
                out[key] = out.get(key, 0.0) + sample.value
            elif sample.name.startswith("mediaserver_cluster_"):
                key = (sample.name, sample.labels.get("worker", ""))
                out[key] = out.get(key, 0.0) + sample.value
    return out


def _front_placed(series: dict[tuple[str, str], float]) -> float:
    """Joins the front's own node placed on its machine (claimed, owned, taken over)."""
    return sum(series.get((f"mediaserver_cluster_placements_total:{o}", ""), 0.0)
               for o in ("claimed", "owned", "taken-over"))


def _client(url: str, who: str, speech: Path, tmp_path: Path) -> subprocess.Popen:
    return start_client(url, ROOM, who, "--send", str(speech), "--duration", str(CALL_S),
                        "--record-dir", str(tmp_path / f"rec{who}"),
                        "--token", mint(SECRET, room=ROOM, identity=who),
                        log=tmp_path / f"{who}.log")


def test_a_join_on_the_other_machine_is_redirected_to_the_owner_and_hears_the_room(
        tmp_path: Path, redis: RedisProcess) -> None:
    speech = _speech(tmp_path)
    a, b = _node(tmp_path, redis, "a"), _node(tmp_path, redis, "b")
    procs: dict[str, subprocess.Popen] = {}
    try:
        _in_cluster(a, b)
        procs["A"] = _client(a.url, "A", speech["A"], tmp_path)
        poll(lambda: _participants(a) + _participants(b) >= 1, timeout=120, what="A did not join")
        owner, other = (a, b) if _participants(a) == 1 else (b, a)
        procs["B"] = _client(other.url, "B", speech["B"], tmp_path)
        poll(lambda: _participants(owner) == 2, timeout=120, what="B in the room on its owner")
        assert _participants(other) == 0
        _packets_grow(owner, 800)   # ~8 s both ways
        view = _get(other, "cluster")
        summary = {who: stop_client(p) for who, p in procs.items()}
    finally:
        _end(procs, a, b)
    owner_id = "a" if owner is a else "b"
    assert summary["B"]["redirects"] == 1 and summary["A"]["redirects"] == 0
    assert summary["B"]["joined_url"] == summary["A"]["joined_url"] == owner.ws_url
    assert summary["B"]["errors"] == [] and summary["A"]["errors"] == []
    # one node per machine: the fronts, at their own addresses (not a worker's)
    assert {n["id"]: n["ws_url"] for n in view["nodes"]} == {"a": a.ws_url, "b": b.ws_url}
    assert {n["id"]: n["rooms"] for n in view["nodes"]} == {
        "a": [ROOM] if owner is a else [], "b": [ROOM] if owner is b else []}
    assert view["rooms"][ROOM]["node"] == owner_id
    for me, o in (("A", "B"), ("B", "A")):
        since = max(summary[w]["started_unix"] + summary[w]["remote"][x]["first_arrival_s"]
                    for w, x in (("A", "B"), ("B", "A"))) + 1.0
        assert _hears(summary, speech, me, o, since) >= FLOWS
    # the joins are on the room's Redis stream, written by the owner node (from its worker)
    events = redis_sync.Redis.from_url(redis.url).xrange(f"mediaserver:room:{{{ROOM}}}:events")
    joined = [(e[b"identity"].decode(), e[b"node"].decode()) for _, e in events
              if e[b"type"] == b"participant-joined"]
    assert joined == [("A", owner_id), ("B", owner_id)]


async def test_a_token_spent_on_one_machine_is_refused_on_the_other(
        tmp_path: Path, redis: RedisProcess) -> None:
    a, b = _node(tmp_path, redis, "a"), _node(tmp_path, redis, "b")
    try:
        await until(lambda: all(server_metric(n, "mediaserver_cluster_nodes") == 2 for n in (a, b)),
                    timeout=120, what="both fronts in the cluster", interval=0.2)
        other = await _single_use_across(a, b)   # (the same scenario as one process)
        assert server_metric(other, "mediaserver_cluster_single_use_checks_total",
                             outcome="replayed") >= 1
    finally:
        _end({}, a, b)


async def test_the_rooms_claim_goes_with_its_last_participant_and_another_machine_takes_it(
        tmp_path: Path, redis: RedisProcess) -> None:
    a, b = _node(tmp_path, redis, "a"), _node(tmp_path, redis, "b")
    try:
        await until(lambda: all(server_metric(n, "mediaserver_cluster_nodes") == 2 for n in (a, b)),
                    timeout=120, what="both fronts in the cluster", interval=0.2)
        async with contextlib.AsyncExitStack() as stack:
            first = await _join(stack, a.ws_url, ROOM, "A", token=mint(SECRET, room=ROOM, identity="A"))
            if first["type"] == "redirect":
                first = await _join(stack, first["url"], ROOM, "A",
                                    reconnect=first["reconnect"]["ticket"])
            assert first["type"] == "joined", first
            owner = a if _participants(a) == 1 else b
            owner_id, other = ("a", b) if owner is a else ("b", a)
            assert _owner(redis) == owner_id
            # a heartbeat renewed the claim while the participant was in: the node held the room
            fresh = redis_sync.Redis.from_url(redis.url)
            key = f"mediaserver:room:{{{ROOM}}}:owner"
            last = [fresh.pttl(key)]

            def renewed() -> bool:
                now, before = fresh.pttl(key), last[0]
                last[0] = now
                return now > before

            await until(renewed, timeout=30, what="the claim renewed", interval=0.05)
        # the socket closed: the room is empty, its claim is no longer renewed
        await until(lambda: _owner(redis) is None, timeout=60, what="the claim released",
                    interval=0.2)
        async with contextlib.AsyncExitStack() as stack:
            again = await _join(stack, other.ws_url, ROOM, "C",
                                token=mint(SECRET, room=ROOM, identity="C"))
            assert again["type"] == "joined", again
            assert _owner(redis) == ("b" if owner is a else "a")
    finally:
        _end({}, a, b)


def test_kill_9_of_a_rooms_worker_its_participants_come_back_on_the_same_machine(
        tmp_path: Path, redis: RedisProcess) -> None:
    speech = _speech(tmp_path)
    a, b = _node(tmp_path, redis, "a"), _node(tmp_path, redis, "b")
    procs: dict[str, subprocess.Popen] = {}
    try:
        _in_cluster(a, b)
        for who in ("A", "B"):
            procs[who] = _client(a.url, who, speech[who], tmp_path)
        poll(lambda: _participants(a) == 2 or _participants(b) == 2, timeout=120,
             what="both clients in the room")
        owner = a if _participants(a) == 2 else b
        owner_id = "a" if owner is a else "b"
        _packets_grow(owner, 600)
        victim = next(w for w in _get(owner, "healthz")["workers"] if ROOM in w["room_names"])
        os.kill(victim["pid"], signal.SIGKILL)
        poll(lambda: (lambda h: h["participants"] == 2 and h["status"] == "ok"
                      and h["workers"][victim["index"]]["restarts"] == 1)(_get(owner, "healthz")),
             timeout=180, what="the room back on its machine and the worker restarted")
        _packets_grow(owner, 800)
        assert _owner(redis) == owner_id
        view = _get(owner, "cluster")
        series = _cluster_series(owner)
        summary = {who: stop_client(p) for who, p in procs.items()}
    finally:
        _end(procs, a, b)
    # the front placed the first join and the rejoin after the kill; no worker is a node
    assert _front_placed(series) >= 2, series
    assert all(worker == "" for _, worker in series), series
    assert sorted(n["id"] for n in view["nodes"]) == ["a", "b"]
    assert view["rooms"][ROOM]["node"] == owner_id
    for who, s in summary.items():
        print(f"{who}: reconnects {s['reconnects']}, redirects {s['redirects']}, longest gap "
              f"{s['longest_gap_ms']} ms")
        assert s["reconnects"] >= 1 and s["errors"] == [], s
        assert s["joined_url"] == owner.ws_url
    back = max(summary[w]["started_unix"] + summary[w]["disconnects"][-1]["rejoined_at_s"]
               for w in summary) + 1.5
    for me, other in (("A", "B"), ("B", "A")):
        assert _hears(summary, speech, me, other, back) >= FLOWS


def test_redis_away_keeps_the_call_serves_new_rooms_and_a_token_stays_single_use_on_the_machine(
        tmp_path: Path, redis: RedisProcess) -> None:
    """As one process (tests/test_cluster.py), and: while Redis is away a token admits one
    join on the whole machine, not one per worker (the front remembers it). The replay lands
    on another worker than the first join (that one was killed), whose memory lacks it."""
    import asyncio

    speech = _speech(tmp_path)
    a = _node(tmp_path, redis, "a")
    procs: dict[str, subprocess.Popen] = {}

    async def replay_after_losing_its_worker() -> tuple[dict, dict, int, int]:
        async with contextlib.AsyncExitStack() as stack:
            token = mint(SECRET, room="other", identity="C")
            first = await _join(stack, a.ws_url, "other", "C", token=token)
            workers = _get(a, "healthz")["workers"]
            host = next(w for w in workers if "other" in w["room_names"])
            call = next(w for w in workers if ROOM in w["room_names"])
            os.kill(host["pid"], signal.SIGKILL)
            await until(lambda: not _get(a, "healthz")["workers"][host["index"]]["alive"],
                        timeout=60, what="the front saw its worker die", interval=0.05)
            replay = await _join(stack, a.ws_url, "other", "C", token=token)
            return first, replay, host["index"], call["index"]

    try:
        for who in ("A", "B"):
            procs[who] = _client(a.url, who, speech[who], tmp_path)
        poll(lambda: _participants(a) == 2, timeout=120, what="both clients in the room")
        _packets_grow(a, 400)
        redis.stop()
        stopped_at = time.time()
        wait_metric_grows(a, "mediaserver_cluster_redis_errors_total", 1)
        assert server_metric(a, "mediaserver_cluster_redis_up") == 0
        _packets_grow(a, 800)    # the call goes on
        first, replay, killed, call_worker = asyncio.run(replay_after_losing_its_worker())
        assert killed != call_worker   # (placed by load: the call's worker had 2 streams)
        assert first["type"] == "joined", first          # a new room, served on the machine
        assert replay["type"] == "error" and replay["code"] == "bad-token", replay
        assert server_metric(a, "mediaserver_cluster_placements_total", outcome="degraded") >= 1
        redis.start()   # empty, as after a restart without persistence
        poll(lambda: server_metric(a, "mediaserver_cluster_redis_up") == 1, timeout=60,
             what="the front did not notice Redis is back")
        poll(lambda: ROOM in _get(a, "cluster")["rooms"], timeout=60, what="the room re-claimed")
        view = _get(a, "cluster")
        summary = {who: stop_client(p) for who, p in procs.items()}
    finally:
        _end(procs, a)
    assert [n["id"] for n in view["nodes"]] == ["a"] and view["rooms"][ROOM]["node"] == "a"
    for me, other in (("A", "B"), ("B", "A")):
        s = summary[me]
        assert s["reconnects"] == 0 and s["errors"] == [], s   # Redis alone never drops a call
        assert _hears(summary, speech, me, other, stopped_at + 0.5) >= FLOWS


async def test_a_room_lost_to_an_older_claim_after_an_outage_moves_its_participants(
        tmp_path: Path, redis: RedisProcess) -> None:
    """Both served the room while Redis was away; when it is back the older claim (another
    node's) keeps it and the front has the room's worker redirect its participants there, as
    one process does (the other node is an in-process ClusterNode: test_cluster_placement)."""
    import aiohttp

    from test_cluster_placement import Node

    a = _node(tmp_path, redis, "a")
    z = Node(redis.url, "z")
    await z.cluster.start()
    try:
        await until(lambda: server_metric(a, "mediaserver_cluster_nodes") == 2, timeout=120,
                    what="a sees z", interval=0.2)
        assert (await z.place("icu")).local   # z's claim: the older one
        redis.stop()
        await until(lambda: z.cluster.degraded
                    and server_metric(a, "mediaserver_cluster_redis_up") == 0,
                    timeout=60, what="both degraded", interval=0.2)
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(a.ws_url) as ws:
                await ws.send_json({"type": "join", "room": "icu", "identity": "C",
                                    "token": mint(SECRET, room="icu", identity="C")})
                joined = await ws.receive_json(timeout=30)
                assert joined["type"] == "joined", joined   # served on a (degraded)
                redis.start()
                moved = await ws.receive_json(timeout=60)
                closed = await ws.receive(timeout=30)
        assert moved["type"] == "redirect" and moved["node"] == "z", moved
        assert moved["url"] == "ws://127.0.0.1/z/ws" and moved["reconnect"]["ticket"], moved
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4307, closed
        assert server_metric(a, "mediaserver_cluster_placements_total", outcome="lost") >= 1
        assert json.loads(redis_sync.Redis.from_url(redis.url).get(
            "mediaserver:room:{icu}:owner"))["node"] == "z"
    finally:
        await z.cluster.stop()
        _end({}, a)
