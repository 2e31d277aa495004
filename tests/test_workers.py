"""``mediaserver serve --workers 2``: a front and two media worker processes (issue 14).

Real processes on 127.0.0.1: two rooms, two ``mediaserver client`` processes in each, every
client sending its own tone. Claims:

- the two rooms are placed on the two workers (``/healthz`` lists both with pid, rooms and
  streams) and both calls carry audio;
- ``kill -9`` of the worker hosting room A never stops room B's call: B's clients never
  reconnect and hear each other's tone in every second around the kill;
- room A's clients are told (``server-shutdown``), reconnect by themselves and hear each
  other again; the dead worker is restarted (a new pid, ``restarts`` 1);
- ``/metrics`` of the front carries both workers' series, told apart by a ``worker`` label.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediaserver.audio import read_audio, write_audio
from mediaserver.sfu.tokens import mint

from conftest import METRICS_TOKEN, ServerProcess, start_client, stop_client
from test_reconnect import FLOWS, RATE, tone, tone_share
from waiting import poll

pytestmark = pytest.mark.timeout(480)

SECRET = "workers-test-secret"
CALL_S = 200.0   # an upper bound: the test ends the clients once it has seen enough
HZ = {("ra", "a1"): 330.0, ("ra", "a2"): 440.0, ("rb", "b1"): 520.0, ("rb", "b2"): 660.0}


def healthz(server: ServerProcess) -> dict:
    request = urllib.request.Request(server.url + "healthz",
                                     headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def metrics(server: ServerProcess) -> dict:
    request = urllib.request.Request(server.url + "metrics",
                                     headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def packets_out(server: ServerProcess) -> dict[str, float]:
    family = metrics(server)["mediaserver_packets_out"]
    return {s.labels["worker"]: s.value for s in family.samples if s.name.endswith("_total")}


def test_two_workers_host_two_rooms_and_a_killed_worker_stops_only_its_own(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "front.log", "--no-enhance", "--workers", "2",
                           "--secret", SECRET)
    procs = {}
    try:
        for (room, who), hz in HZ.items():
            wav = tmp_path / f"{who}.wav"
            write_audio(wav, tone(hz, CALL_S), RATE)
            procs[who] = start_client(server.url, room, who, "--send", str(wav),
                                      "--duration", str(CALL_S), "--record-dir", str(tmp_path / who),
                                      "--token", mint(SECRET, room=room, identity=who),
                                      log=tmp_path / f"{who}.log")
        placed = poll(lambda: (lambda h: h if h["participants"] == 4 else None)(healthz(server)),
                      timeout=120, what="4 participants through the front")
        workers = placed["workers"]
        assert [w["rooms"] for w in workers] == [1, 1], workers   # one room per worker
        assert all(w["alive"] and w["pid"] for w in workers)
        start = packets_out(server)
        assert len(start) == 2, start      # both workers' series, labelled
        poll(lambda: all(v - start.get(k, 0) >= 500 for k, v in packets_out(server).items()),
             timeout=120, what="~5 s of audio in both rooms")
        assert sorted(n for w in workers for n in w["room_names"]) == ["ra", "rb"]
        victim = next(w for w in workers if w["room_names"] == ["ra"])
        killed_at = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        back = poll(lambda: (lambda h: h if h["participants"] == 4 and h["status"] == "ok"
                             and h["workers"][victim["index"]]["restarts"] == 1 else None)(healthz(server)),
                    timeout=180, what="room A back (reconnected) and the worker restarted")
        assert back["workers"][victim["index"]]["pid"] != victim["pid"]
        # the front's log names the room the dead worker took down (its relayed sockets had
        # released it before the exit was noticed: "lost 0 room(s)", fresh-user trial 5)
        assert f"media worker {victim['index']} lost 1 room(s): ra" in server.tail(200_000), server.tail()
        settled = packets_out(server)
        poll(lambda: sum(packets_out(server).values()) - sum(settled.values()) >= 800,
             timeout=120, what="~4 s more audio in both rooms")
        summary = {who: stop_client(p) for who, p in procs.items()}
        for who, s in summary.items():
            (tmp_path / f"summary-{who}.json").write_text(json.dumps(s, indent=1))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        server.stop()
    pairs = {("a1", "a2"): "ra", ("a2", "a1"): "ra", ("b1", "b2"): "rb", ("b2", "b1"): "rb"}
    for (me, other), room in pairs.items():
        s = summary[me]
        assert s["errors"] == [], (me, s["errors"])
        recording, _ = read_audio(s["remote"][other]["file"])
        hz = HZ[(room, other)]
        if room == "rb":
            # the other worker's call never stops: no reconnection, the tone in every 100 ms
            # window from 2 s before the kill to 4 s after it
            assert s["reconnects"] == 0, (me, s["disconnects"])
            hits, n = tone_share(recording, s["started_unix"], killed_at - 2.0, killed_at + 4.0, hz)
            print(f"{me} hears {other} in {hits}/{n} windows around the kill")
            assert n >= 50 and hits >= n - 1, (me, hits, n)
        else:
            assert s["reconnects"] >= 1, (me, s)
            assert any(e["type"] == "server-shutdown" for e in s["events"]), s["events"]
            rejoined = s["started_unix"] + s["disconnects"][-1]["rejoined_at_s"] + 1.5
            end = s["started_unix"] + s["duration_s"] - 1.0
            hits, n = tone_share(recording, s["started_unix"], rejoined, end, hz)
            print(f"{me} hears {other} in {hits}/{n} windows after the rejoin "
                  f"(longest gap {s['longest_gap_ms']} ms)")
            assert hits >= FLOWS, (me, hits, n)



@pytest.mark.parametrize("frozen", [False, True], ids=["both-drain", "a-worker-frozen"])
def test_sigterm_on_the_front_drains_every_workers_calls_and_leaves_no_worker(tmp_path: Path, frozen: bool) -> None:
    """The front's SIGTERM reaches the workers: each tells its participants (server-shutdown,
    relayed), the front exits 0 and no worker process outlives it. Two rooms on the two
    workers, a client in each: both clients are told, and neither sees its media fail first
    (its connection is lost for ``server-shutdown``, not ``media-failed``).

    ``frozen``: room ra's worker is SIGSTOPped just before the signal (hung in a C call,
    swapped out): it cannot drain, the front kills it once ``--drain-s`` allows and then tells
    ra's client itself (``Front._end_relays``), within the same budget."""
    server = ServerProcess(tmp_path / "front.log", "--no-enhance", "--workers", "2", "--drain-s", "4")
    wav = tmp_path / "tone.wav"
    write_audio(wav, tone(330.0, 60.0), RATE)
    clients: dict[str, subprocess.Popen] = {}
    outs = {}
    try:
        for n, room in enumerate(("ra", "rb"), 1):   # rb once ra is in: placed on the other worker
            clients[room] = start_client(server.url, room, "x", "--send", str(wav), "--duration", "60",
                                         "--no-reconnect", log=tmp_path / f"client-{room}.log")
            h = poll(lambda n=n: (lambda h: h if h["participants"] == n else None)(healthz(server)),
                     timeout=120, what=f"{n} participant(s) through the front")
        assert [w["rooms"] for w in h["workers"]] == [1, 1], h["workers"]   # a room per worker
        pids = [w["pid"] for w in h["workers"]]

        def media_in() -> bool:   # both calls are up (a stop while joining is another case)
            family = metrics(server).get("mediaserver_rtp_packets_in")
            per_worker = [x.value for x in family.samples if x.name.endswith("_total")] if family else []
            return len(per_worker) == 2 and min(per_worker) >= 100
        poll(media_in, timeout=120, what="2 s of each participant's audio at its worker")
        if frozen:
            host_of_ra = next(w["pid"] for w in h["workers"] if "ra" in w["room_names"])
            os.kill(host_of_ra, signal.SIGSTOP)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0, server.tail()
        if frozen:
            assert "did not stop within" in server.tail(20000), server.tail()   # it was killed
        for room, client in clients.items():
            outs[room], _ = client.communicate(timeout=60)
    finally:
        for client in clients.values():
            if client.poll() is None:
                client.kill()
        server.stop()
    for room, out in outs.items():
        summary = json.loads(out.decode()[out.decode().find("{"):])
        assert any(e["type"] == "server-shutdown" for e in summary["events"]), (room, summary["events"])
        assert [d["reason"] for d in summary["disconnects"]] == ["server-shutdown"], (room, summary)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), pid


def test_workers_of_a_front_killed_with_sigkill_stop_by_themselves(tmp_path: Path) -> None:
    """A front that cannot stop its workers (SIGKILL) leaves no orphan serving on: each worker,
    and the shared inference process, notices its parent is gone and stops."""
    server = ServerProcess(tmp_path / "front.log", "--workers", "2")
    pids: list[int] = []
    try:
        h = healthz(server)
        pids = [w["pid"] for w in h["workers"]] + [h["shared_enhancer"]["pid"]]
        server.proc.kill()
        server.proc.wait(30)

        def gone() -> bool:
            return all(not Path(f"/proc/{pid}").exists()
                       or "zombie" in Path(f"/proc/{pid}/status").read_text().lower() for pid in pids)
        poll(gone, timeout=60, what="the orphaned workers to stop")
    finally:
        server.stop()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_two_workers_share_one_enhancer_that_batches_both_rooms(tmp_path: Path) -> None:
    """With enhancement, the front starts ONE inference process; both workers' streams go
    through it in one batched call per tick (their clocks tick on the same 20 ms grid), and
    both rooms hear enhanced speech. When the inference process is killed the calls go on,
    the front restarts it and both workers reconnect and are batched together again."""
    from conftest import espeak_speech

    server = ServerProcess(tmp_path / "front.log", "--workers", "2", "--secret", SECRET)
    speech = espeak_speech(tmp_path / "speech.wav", "Please send an ambulance to twelve Baker "
                           "Street. The patient is breathing but not awake.", seconds=12.0)
    procs = {}
    try:
        health = healthz(server)
        shared = health["shared_enhancer"]
        assert shared is not None and shared["alive"] and shared["pid"] not in \
            [w["pid"] for w in health["workers"]]
        for room, who in (("ra", "a1"), ("ra", "a2"), ("rb", "b1"), ("rb", "b2")):
            procs[who] = start_client(server.url, room, who, "--send", str(speech),
                                      "--duration", "40", "--record-dir", str(tmp_path / who),
                                      "--token", mint(SECRET, room=room, identity=who),
                                      log=tmp_path / f"{who}.log")
        poll(lambda: healthz(server)["participants"] == 4, timeout=120, what="4 participants")

        def full_batch() -> bool:
            last = healthz(server)["shared_enhancer"]["last"]   # one entry per worker
            return any(v.get("last_batch") == 4 for v in last)
        poll(full_batch, timeout=60, what="one shared call with the 4 streams of both workers")
        assert [w["rooms"] for w in healthz(server)["workers"]] == [1, 1]
        start = packets_out(server)
        poll(lambda: all(v - start.get(k, 0) >= 500 for k, v in packets_out(server).items()),
             timeout=120, what="~5 s of audio in both rooms")
        # the inference process dies: the calls go on (unenhanced), the front restarts it, both
        # workers reconnect, reopen their streams and are batched together again
        dead = healthz(server)["shared_enhancer"]["pid"]
        os.kill(dead, signal.SIGKILL)

        def recovered() -> bool:
            h = healthz(server)
            views = h["shared_enhancer"]["last"]
            return (h["shared_enhancer"]["alive"] and h["shared_enhancer"]["pid"] != dead
                    and [v["index"] for v in views] == [0, 1]
                    and all(v["connected"] and v["reconnects"] >= 1 for v in views)
                    and any(v["last_batch"] == 4 for v in views))
        poll(recovered, timeout=180, what="a new inference process serving both workers in one call")
        summary = {who: stop_client(p) for who, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        server.stop()
    for me, other in (("a1", "a2"), ("a2", "a1"), ("b1", "b2"), ("b2", "b1")):
        s = summary[me]
        assert s["errors"] == [], (me, s["errors"])
        assert s["reconnects"] == 0, (me, s["disconnects"])   # the enhancer's death ended no call
        recording, _ = read_audio(s["remote"][other]["file"])
        assert len(recording) > 3 * RATE, (me, len(recording))
        assert float((recording ** 2).mean()) ** 0.5 > 0.005, me   # speech came through


def test_a_room_never_splits_whatever_a_socket_sends_before_its_join(tmp_path: Path) -> None:
    """Through the front, a socket whose first message is not a join (bad JSON, a stats
    request, binary) still joins the room where it lives: it sees the others, and an identity
    already in the room is refused there (before: a second room of the same name on the other
    worker). A worker's own port answers only its front."""
    import asyncio

    import aiohttp

    server = ServerProcess(tmp_path / "front.log", "--no-enhance", "--workers", "2")
    url = server.ws_url

    async def join(ws, identity: str) -> dict:
        await ws.send_json({"type": "join", "room": "r1", "identity": identity})
        while True:
            msg = json.loads((await ws.receive(timeout=30)).data)
            if msg["type"] in ("joined", "error"):
                return msg

    async def scenario() -> list:
        results = []
        async with aiohttp.ClientSession() as session:
            alpha = await session.ws_connect(url)
            first = await join(alpha, "alpha")
            assert first["type"] == "joined" and first["participants"] == []
            cases = [([("str", "{oops")], "eve"), ([("json", {"type": "stats"})], "mallory"),
                     ([("bytes", b"\x00\x01")], "trent"), ([("str", "hello")], "ALPHA")]
            for before, who in cases:
                ws = await session.ws_connect(url)
                for kind, payload in before:
                    await getattr(ws, f"send_{kind}")(payload)
                    reply = json.loads((await ws.receive(timeout=30)).data)
                    assert reply["type"] == "error", reply
                results.append((who, await join(ws, who)))
            await alpha.close()
        return results

    try:
        results = asyncio.run(scenario())
        ports = [w["port"] for w in healthz(server)["workers"]]
        for port in ports:   # straight to a worker: refused (no front token)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
            assert refused.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as no_models:   # as a --no-enhance process
            urllib.request.urlopen(server.url + "models", timeout=10)
        assert no_models.value.code == 404
    finally:
        server.stop()
    joined = {who: r for who, r in results}
    for who in ("eve", "mallory", "trent"):
        assert joined[who]["type"] == "joined", joined[who]
        assert "alpha" in [p["identity"] for p in joined[who]["participants"]], (who, joined[who])
    assert joined["ALPHA"]["type"] == "error", joined["ALPHA"]   # the same identity, same room


def test_a_worker_closes_a_clients_media_only_after_the_client_has_its_server_shutdown(tmp_path: Path) -> None:
    """On the front's SIGTERM a worker closes a participant's peer connection only once the
    client has answered the close that follows ``server-shutdown`` (relayed both ways by the
    front), or when the drain time runs out. Before, neither the worker nor the front waited
    for the answer (aiohttp's close, while another task reads the socket, does not), so the
    worker's DTLS close_notify raced the relayed message and a loaded client saw its media
    fail first (``media-failed``; 2 of 8 stops under load). Forced order: in room ``ra`` the
    client reads nothing after the signal, so it never answers; its media must close only
    when its worker's drain time ran out (logged), never before. In ``rb``, on the other
    worker, the client reads: its peer connection is still connected when it reads
    ``server-shutdown``."""
    import asyncio

    import aiohttp

    from rtc_peer import RtcPeer, loopback_ice
    from waiting import until

    class Watching(RtcPeer):
        """Notes its peer connection's state when it reads ``server-shutdown``."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)   # type: ignore[arg-type]
            self.told_while: list[str] = []

        async def _handle(self, data: dict) -> None:
            if data.get("type") == "server-shutdown" and self.pc is not None:
                self.told_while.append(self.pc.connectionState)
            await super()._handle(data)

    server = ServerProcess(tmp_path / "front.log", "--no-enhance", "--workers", "2")

    async def scenario() -> tuple[list[dict], list[str]]:
        silent = RtcPeer(server.ws_url, "ra", "ann")
        peers: list[RtcPeer] = [silent]
        with loopback_ice():
            async with aiohttp.ClientSession() as session:
                try:
                    await silent.connect(session)
                    await silent.join()
                    await silent.publish()
                    # bob's room on the other worker: a room placed while the workers' load
                    # report missed ann's may land on hers; bob then tries another room
                    for attempt in range(20):
                        reading = Watching(server.ws_url, f"rb{attempt}", "bob")
                        peers.append(reading)
                        await reading.connect(session)
                        await reading.join()
                        if [w["rooms"] for w in healthz(server)["workers"]] == [1, 1]:
                            break
                        await reading.close()
                        peers.remove(reading)
                    await reading.publish()
                    for peer in peers:
                        await until(lambda p=peer: p.pc.connectionState == "connected", timeout=60,
                                    what=f"{peer.identity}'s media connected")
                    workers = healthz(server)["workers"]
                    assert [w["rooms"] for w in workers] == [1, 1], workers   # a room per worker
                    await silent.stop_reading()   # ann reads nothing more: no answer to a close
                    server.proc.send_signal(signal.SIGTERM)
                    await until(reading.closed.is_set, timeout=60, what="bob's socket closed")
                    await until(lambda: silent.pc.connectionState in ("closed", "failed"), timeout=60,
                                what="ann's media closed by her worker")
                    told = []   # what ann's socket holds, read only now
                    while True:
                        msg = await silent.ws.receive(timeout=30)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        told.append(json.loads(msg.data))
                    return told, list(reading.told_while)
                finally:
                    for peer in peers:
                        await peer.close()

    try:
        told, bob_told_while = asyncio.run(scenario())
        assert server.proc.wait(60) == 0, server.tail()
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert bob_told_while == ["connected"], bob_told_while
    assert [m["type"] for m in told][-1:] == ["server-shutdown"], told
    # ann's media closed because her worker's drain time ran out, not before it
    assert log.count("telling 1 connected clients") == 2, log[-3000:]
    assert "1 sessions did not close in time" in log, log[-3000:]
