"""One way to name a media worker in ``/healthz`` and ``/metrics`` of ``serve --workers 2``
(fresh-user trial 6 §1).

A real front, two media workers and the shared inference process on 127.0.0.1, with a (cheap)
ASR sink on and two signalling-only participants in two rooms. Claims:

- ``/healthz``: each worker's ASR state is in its own ``workers`` entry (with its ``index``;
  it was a list without one, so which worker a recogniser state belonged to was lost), and
  ``shared_enhancer.last`` is a list of entries with the worker's ``index`` (was keyed
  ``"0"``, ``"1"``); the top-level ``asr`` has one process's shape, the machine's counts (it
  was a list with ``--workers N``, one object without: a script reading ``asr["dropped"]``
  broke on the other);
- ``/metrics``: every series about one worker carries ``worker="LABEL-wN"``, the front's own
  ``mediaserver_front_worker_up`` / ``_relayed_sockets_total`` included (were labelled
  ``worker_index="N"``); no ``worker_index`` label is left, and every ``worker`` value names
  a worker of this machine or its enhancer (``LABEL``: ``--worker-id``);
- ``/debug/rooms``: each participant's ``worker_index`` is the ``index`` of the worker whose
  ``room_names`` hold its room (it was ``worker``, the name ``/metrics`` gives ``LABEL-wN``);
- ``/healthz`` says ``publishers`` per worker and in all: the signalling-only participants
  count in ``streams``/``participants`` only; ``/metrics`` has the same per worker,
  ``mediaserver_publishers{worker="LABEL-wN"}`` (fresh-user gaps of 2026-12-02 §2: there was
  no publisher gauge);
- the merged stderr: every line a media worker or the inference process writes carries its
  name, ``[LABEL-wN]`` / ``[LABEL-enhancer]`` (fresh-user gaps of 2026-12-02 §1: the two workers' "media
  clock started" and "SIGTERM received" were the same line); the front's own lines have none.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ServerProcess
from mediaserver.workers.front import machine_asr

pytestmark = pytest.mark.timeout(300)

LABEL = "trial"   # --worker-id: the workers are trial-w0, trial-w1, the enhancer trial-enhancer


# time, level, [process name] (a child of the front only), logger: message (mediaserver/logsetup.py)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ (?:\[(\S+)\] )?([\w.]+): (.*)$")


async def _join(session: aiohttp.ClientSession, url: str, room: str) -> aiohttp.ClientWebSocketResponse:
    """A signalling-only participant of ``room`` (it stays until its socket closes)."""
    ws = await session.ws_connect(url)
    await ws.send_json({"type": "join", "room": room, "identity": f"in-{room}"})
    while True:
        reply = json.loads((await ws.receive(timeout=60)).data)
        if reply["type"] in ("joined", "error"):
            assert reply["type"] == "joined", reply
            return ws


def _shape(value: object) -> object:
    """The keys and value types of a JSON value, recursively (a list: its items' shapes)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_the_machines_asr_adds_up_each_workers_counts_in_one_process_shape() -> None:
    """``/healthz`` ``asr`` with ``--workers N``: one process's keys, counts summed over the
    workers (a sink's nested counts too), one entry per sink name, settings as each has them."""
    def worker(segments: int, dropped: int, partial: int) -> dict:
        return {"sinks": [{"name": "local", "engine": "moonshine", "device": "cpu", "workers": 1,
                           "threads_per_worker": 2, "queue_depth": 1, "dropped": dropped,
                           "captions": {"partial": partial, "final": 1}},
                          {"name": "wav", "queue_depth": 0, "dropped": 0, "handled": segments}],
                "segments": segments, "frames": 100 * segments, "feed": "enhanced",
                "queue_depth": 1, "dropped": dropped}
    assert machine_asr([]) is None
    assert machine_asr([worker(2, 1, 5)]) == worker(2, 1, 5)
    assert machine_asr([worker(2, 1, 5), worker(3, 0, 7)]) == {
        "sinks": [{"name": "local", "engine": "moonshine", "device": "cpu", "workers": 2,
                   "threads_per_worker": 2, "queue_depth": 2, "dropped": 1,
                   "captions": {"partial": 12, "final": 2}},
                  {"name": "wav", "queue_depth": 0, "dropped": 0, "handled": 5}],
        "segments": 5, "frames": 500, "feed": "enhanced", "queue_depth": 2, "dropped": 1}


async def test_healthz_and_metrics_name_each_worker_by_its_index_and_worker_label(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "front.log", "--workers", "2", "--worker-id", LABEL,
                           "--asr", "wav", "--record-dir", str(tmp_path / "rec"))
    try:
        async with aiohttp.ClientSession() as session:
            sockets = [await _join(session, server.ws_url, room) for room in ("ra", "rb")]
            async with session.get(server.url + "healthz") as resp:
                health = await resp.json()
            async with session.get(server.url + "metrics") as resp:
                text = await resp.text()
            async with session.get(server.url + "debug/rooms") as resp:   # (loopback, no --secret)
                assert resp.status == 200, await resp.text()
                debug = await resp.json()
            for ws in sockets:
                await ws.close()
    finally:
        server.stop()
    workers = health["workers"]
    assert [w["index"] for w in workers] == [0, 1], workers
    assert sorted(n for w in workers for n in w["room_names"]) == ["ra", "rb"], workers
    # participants without an offer: no publisher anywhere
    assert [(w["participants"], w["streams"], w["publishers"]) for w in workers] == [(1, 1, 0), (1, 1, 0)], workers
    assert (health["participants"], health["publishers"]) == (2, 0), health

    # /debug/rooms: each participant's worker by the index /healthz gives it
    hosts = {room: w["index"] for w in workers for room in w["room_names"]}
    seen = {room: [(p["identity"], p["worker_index"]) for p in ps] for room, ps in debug["rooms"].items()}
    assert seen == {room: [(f"in-{room}", index)] for room, index in hosts.items()}, debug
    assert not any("worker" in p for ps in debug["rooms"].values() for p in ps), debug

    # /healthz: each worker's ASR state in its own entry, the machine's in one process's shape
    assert all(w["asr"]["sinks"] and w["asr"]["sinks"][0]["name"] == "wav" for w in workers), workers
    asr = health["asr"]
    assert isinstance(asr, dict) and [s["name"] for s in asr["sinks"]] == ["wav"], asr
    assert asr == machine_asr([w["asr"] for w in workers]), (asr, workers)
    single = ServerProcess(tmp_path / "single.log", "--workers", "1", "--no-enhance", "--asr", "wav",
                           "--record-dir", str(tmp_path / "rec1"))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(single.url + "healthz") as resp:
                alone = await resp.json()
    finally:
        single.stop()
    assert _shape(asr) == _shape(alone["asr"]) == _shape(workers[0]["asr"]), (asr, alone["asr"])
    last = health["shared_enhancer"]["last"]
    assert isinstance(last, list) and [v["index"] for v in last] == [0, 1], last
    assert all("last_batch" in v and "connected" in v for v in last), last

    # /metrics: one label, worker="LABEL-wN", for a worker in every series
    names = {f"{LABEL}-w0", f"{LABEL}-w1", f"{LABEL}-enhancer"}
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for family in families.values():
        for sample in family.samples:
            assert "worker_index" not in sample.labels, sample
            assert sample.labels.get("worker", LABEL + "-w0") in names, sample
    up = {s.labels["worker"]: s.value for s in families["mediaserver_front_worker_up"].samples}
    assert up == {f"{LABEL}-w0": 1.0, f"{LABEL}-w1": 1.0}, up
    # fresh-user trial 7: _worker_restarts_total had its HELP and TYPE and no sample until a
    # worker's first restart (nothing to rate() or alert on); each worker's is there at 0
    restarts = {s.labels["worker"]: s.value for s in families["mediaserver_front_worker_restarts"].samples
                if s.name.endswith("_total")}
    assert restarts == {f"{LABEL}-w0": 0.0, f"{LABEL}-w1": 0.0}, restarts
    relayed = {s.labels["worker"]: s.value for s in families["mediaserver_front_relayed_sockets"].samples
               if s.name.endswith("_total")}
    hosting = {f"{LABEL}-w{w['index']}": float(len(w["room_names"])) for w in workers if w["room_names"]}
    assert relayed == hosting, (relayed, workers)   # each socket counted at the worker it went to
    # the workers' own series carry the same names (their --worker-id)
    assert {s.labels["worker"] for s in families["mediaserver_packets_out"].samples} >= {f"{LABEL}-w0", f"{LABEL}-w1"}

    per_worker = {name: {s.labels["worker"]: s.value for s in families[f"mediaserver_{name}"].samples}
                  for name in ("participants", "publishers")}
    assert per_worker == {"participants": {f"{LABEL}-w0": 1.0, f"{LABEL}-w1": 1.0},
                          "publishers": {f"{LABEL}-w0": 0.0, f"{LABEL}-w1": 0.0}}, per_worker

    # the merged stderr: which process wrote each line
    lines = [m.groups() for m in map(LOG_LINE.match, server.tail(10**7).splitlines()) if m]
    started = sorted(tag for tag, name, text in lines if text == "media clock started")
    assert started == [f"{LABEL}-w0", f"{LABEL}-w1"], lines
    stopped = sorted(tag for tag, name, text in lines if text == "SIGTERM received")
    assert stopped == [f"{LABEL}-w0", f"{LABEL}-w1"], lines
    enhancer = [tag for tag, name, text in lines if name.startswith("mediaserver.enhance.")]
    assert enhancer and set(enhancer) == {f"{LABEL}-enhancer"}, lines
    front = [tag for tag, name, text in lines if name.startswith("mediaserver.workers.")]
    assert front and set(front) == {None}, lines
