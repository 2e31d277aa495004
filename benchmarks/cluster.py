"""Cluster benchmark (issue 10): failover time, join latency direct vs redirected, Redis load.

Real processes on 127.0.0.1: one ``redis-server`` and ``mediaserver serve --redis-url`` nodes
(``--no-enhance``: the cluster layer is measured, not the enhancer).

- **Failover** (``--trials``, default 10): three fresh nodes a, b, c; two ``mediaserver
  client`` processes (A, B), each sending its own tone, both given ``--url a,b,c`` so both
  join the room on node a; after ``--settle-s`` of call, ``kill -9`` of node a. Per client,
  *audio back* is the first 100 ms window after the kill that starts a second (10 windows) in
  which at least 8 carry the other's own tone (the recording on the client's wall clock,
  ``tests/test_reconnect.tone_share``); the trial's failover time is the later of the two,
  from the kill. The clients' own ``longest_gap_ms`` is reported beside it.
- **Join latency** (``--joins``): a raw WebSocket's ``join`` to ``joined``, for a room on the
  node it reaches (direct) and through the other node (``redirect``, a second socket to the
  room's node with the redirect's ticket, then ``joined``).
- **Redis operations per second per node**: ``mediaserver_cluster_redis_commands_total`` over
  ``--steady-s`` with the failover call running (two participants, one room).

    python benchmarks/cluster.py                        # the committed run
    python benchmarks/cluster.py --trials 2 --joins 5 --out /tmp/cluster.json   # a try

Prints a table and writes benchmarks/results/cluster.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "benchmarks" / "results"

from mediaserver.audio import read_audio, write_audio  # noqa: E402
from mediaserver.sfu.tokens import mint  # noqa: E402
from conftest import ServerProcess, server_metric, start_client, stop_client  # noqa: E402
from redis_proc import RedisProcess  # noqa: E402
from test_reconnect import HZ, RATE, tone, tone_share  # noqa: E402
from waiting import poll  # noqa: E402

SECRET = "cluster-benchmark-secret"
ROOM = "bench"
BACK_WINDOWS, BACK_HITS = 10, 8   # audio is back: 8 of the next 10 windows of 100 ms carry the tone


def node(tmp: Path, redis: RedisProcess, name: str) -> ServerProcess:
    return ServerProcess(tmp / f"node-{name}.log", "--no-enhance", "--secret", SECRET,
                         "--redis-url", redis.url, "--node-id", name)


def participants(server: ServerProcess) -> int:
    return int(server_metric(server, "mediaserver_participants"))


def client(urls: str, who: str, speech: Path, tmp: Path, seconds: float) -> subprocess.Popen:
    return start_client(urls, ROOM, who, "--send", str(speech), "--duration", str(seconds),
                        "--record-dir", str(tmp / f"rec-{who}"),
                        "--token", mint(SECRET, room=ROOM, identity=who),
                        log=tmp / f"client-{who}.log")


def audio_back_s(summary: dict, me: str, other: str, kill_unix: float) -> Optional[float]:
    """Seconds from the kill to the first 100 ms window that starts a second of ``other``'s tone."""
    recording, _ = read_audio(summary["remote"][other]["file"])
    start = summary["started_unix"]
    end = start + len(recording) / RATE
    t = kill_unix
    while t + BACK_WINDOWS / 10 <= end:
        hits, windows = tone_share(recording, start, t, t + BACK_WINDOWS / 10, HZ[other])
        if windows == BACK_WINDOWS and hits >= BACK_HITS:
            first, _ = tone_share(recording, start, t, t + 0.1, HZ[other])
            if first:
                return round(t - kill_unix, 2)
        t += 0.1
    return None


def failover_trial(tmp: Path, redis: RedisProcess, speech: dict[str, Path], settle_s: float,
                   steady_s: float) -> dict[str, Any]:
    nodes = {name: node(tmp, redis, name) for name in ("a", "b", "c")}
    urls = ",".join(n.url for n in nodes.values())
    procs: dict[str, subprocess.Popen] = {}
    try:
        for who in ("A", "B"):
            procs[who] = client(urls, who, speech[who], tmp, 60.0)
        poll(lambda: all(server_metric(n, "mediaserver_cluster_nodes") == 3 for n in nodes.values()),
             what="the three nodes see each other", timeout=30.0, interval=0.1)
        poll(lambda: participants(nodes["a"]) == 2, what="both clients on node a", interval=0.1)
        time.sleep(settle_s)   # the call runs: the Redis load at steady state is measured now
        ops = {n: server_metric(s, "mediaserver_cluster_redis_commands_total") for n, s in nodes.items()}
        time.sleep(steady_s)
        ops_per_s = {n: round((server_metric(s, "mediaserver_cluster_redis_commands_total") - ops[n])
                              / steady_s, 2) for n, s in nodes.items()}
        kill_unix = time.time()
        nodes["a"].proc.send_signal(signal.SIGKILL)
        nodes["a"].proc.wait(30)
        survivors = [nodes["b"], nodes["c"]]
        poll(lambda: any(participants(n) == 2 for n in survivors), what="both back on one node",
             interval=0.1)
        time.sleep(4.0)   # enough call after the rejoin to find a second of tone
        summaries = {who: stop_client(p) for who, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for n in nodes.values():
            n.stop()
    back = {me: audio_back_s(summaries[me], me, other, kill_unix)
            for me, other in (("A", "B"), ("B", "A"))}
    return {
        "audio_back_s": back,
        "failover_s": None if None in back.values() else max(back.values()),
        "longest_gap_ms": {w: s["longest_gap_ms"] for w, s in summaries.items()},
        "reconnects": {w: s["reconnects"] for w, s in summaries.items()},
        "errors": {w: s["errors"] for w, s in summaries.items() if s["errors"]},
        "redis_ops_per_s": ops_per_s,
    }


async def join_latency(urls: dict[str, str], n: int) -> dict[str, list[float]]:
    """Milliseconds from a socket's connect to ``joined``: on the room's node (direct), and
    through the other node (redirected: a second socket with the redirect's ticket)."""
    out: dict[str, list[float]] = {"direct": [], "redirected": []}
    async with aiohttp.ClientSession() as session:

        async def join(url: str, room: str, who: str) -> tuple[str, Any, str]:
            """(kind, open socket, the room's node URL) of one timed join, redirect followed."""
            t0 = time.perf_counter()
            ws = await session.ws_connect(url)
            await ws.send_json({"type": "join", "room": room, "identity": who,
                                "token": mint(SECRET, room=room, identity=who)})
            reply = await ws.receive_json(timeout=30)
            kind = "direct"
            if reply["type"] == "redirect":   # placement chose the other (less loaded) node
                await ws.close()
                url, kind = reply["url"], "redirected"
                ws = await session.ws_connect(url)
                await ws.send_json({"type": "join", "room": room, "identity": who,
                                    "reconnect": reply["reconnect"]["ticket"]})
                reply = await ws.receive_json(timeout=30)
            assert reply["type"] == "joined", reply
            out[kind].append((time.perf_counter() - t0) * 1000)
            return kind, ws, url

        for i in range(n):
            room = f"join-{i}"
            _, first, owner = await join(urls["a"], room, "first")
            other = urls["b"] if owner == urls["a"] else urls["a"]
            _, second, _ = await join(other, room, "second")     # redirected
            _, third, _ = await join(owner, room, "third")       # direct
            for ws in (first, second, third):
                await ws.close()
    return out


def stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "p50": round(float(np.median(v)), 2),
            "p95": round(float(np.percentile(v, 95)), 2), "max": round(float(v.max()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10, help="failover trials (kill -9)")
    ap.add_argument("--joins", type=int, default=20, help="joins of each kind timed")
    ap.add_argument("--settle-s", type=float, default=3.0, help="call before measuring Redis load")
    ap.add_argument("--steady-s", type=float, default=5.0, help="seconds of Redis load measured")
    ap.add_argument("--out", type=Path, default=RESULTS / "cluster.json")
    args = ap.parse_args()

    trials = []
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as name:
        tmp = Path(name)
        speech = {}
        for who, hz in HZ.items():
            speech[who] = tmp / f"{who}.wav"
            write_audio(speech[who], tone(hz, 70.0), RATE)
        redis = RedisProcess(tmp)
        try:
            for i in range(args.trials):
                redis.stop()   # a fresh, empty Redis per trial: no claim left from the last one
                redis.start()
                trial_dir = tmp / f"trial-{i}"
                trial_dir.mkdir()
                trial = failover_trial(trial_dir, redis, speech, args.settle_s, args.steady_s)
                trials.append(trial)
                print(f"trial {i + 1}/{args.trials}: failover {trial['failover_s']} s "
                      f"(A {trial['audio_back_s']['A']}, B {trial['audio_back_s']['B']}), "
                      f"longest gap {trial['longest_gap_ms']} ms", flush=True)
            redis.stop()
            redis.start()
            join_dir = tmp / "joins"
            join_dir.mkdir()
            a, b = node(join_dir, redis, "a"), node(join_dir, redis, "b")
            try:   # both registered and seeing each other (a node may start before Redis answers)
                poll(lambda: all(server_metric(n, "mediaserver_cluster_nodes") == 2
                                 and server_metric(n, "mediaserver_cluster_redis_up") == 1
                                 for n in (a, b)), what="both nodes see each other", timeout=30.0,
                     interval=0.1)
                joins = asyncio.run(join_latency({"a": a.ws_url, "b": b.ws_url}, args.joins))
            finally:
                a.stop()
                b.stop()
        finally:
            redis.stop()

    failovers = [t["failover_s"] for t in trials if t["failover_s"] is not None]
    ops = [v for t in trials for v in t["redis_ops_per_s"].values()]
    report = {
        "benchmark": "cluster", "args": vars(args) | {"out": str(args.out)},
        "machine": {"cores": os.cpu_count(), "load_1m_at_end": round(os.getloadavg()[0], 2)},
        "failover_s": stats(failovers) if failovers else None,
        "failover_trials_without_audio_back": sum(t["failover_s"] is None for t in trials),
        "longest_gap_ms": stats([g for t in trials for g in t["longest_gap_ms"].values()]),
        "join_ms": {kind: stats(v) for kind, v in joins.items()},
        "redis_ops_per_s_per_node": stats(ops),
        "trials": trials,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\n{'measure':<34}{'n':>4}{'p50':>10}{'p95':>10}{'max':>10}")
    rows = [("failover, kill -9 to audio (s)", report["failover_s"]),
            ("client longest_gap_ms", report["longest_gap_ms"]),
            ("join direct (ms)", report["join_ms"]["direct"]),
            ("join redirected (ms)", report["join_ms"]["redirected"]),
            ("Redis commands/s per node", report["redis_ops_per_s_per_node"])]
    for label, s in rows:
        if s:
            print(f"{label:<34}{s['n']:>4}{s['p50']:>10}{s['p95']:>10}{s['max']:>10}")
    print(f"trials without audio back: {report['failover_trials_without_audio_back']}; "
          f"load at end {report['machine']['load_1m_at_end']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
