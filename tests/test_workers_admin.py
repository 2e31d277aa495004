"""The model admin and ``/debug`` behind ``mediaserver serve --workers 2`` (issue 14).

Real processes on 127.0.0.1: a front, two media workers, the shared inference process, and one
``mediaserver client`` per room publishing a tone; the two rooms are placed on the two workers.
The front relays the model admin to the inference process (which owns the models) and merges
the workers' ``/debug`` views. Claims:

- ``/models`` lists the registry and the loaded models through the front; a room switch through
  ``/admin`` reaches that room's stream whichever worker hosts it, and ``/debug/rooms`` shows both
  rooms (each participant with its ``worker``) with the new active model;
- ``--canary-model`` is accepted at start with ``--workers 2``: new rooms of both workers start
  on the candidate, and a rollback (asked for, or by itself when the candidate removes speech)
  moves every stream back;
- the admin's changes outlive the inference process: killed with SIGKILL and restarted by the
  front, it keeps the room overrides and the rollback, and the workers' reopened streams get
  their rooms' models again;
- the admin and debug refusals are the single process's (401 without the secret, the metrics
  token reads ``/models`` but does not switch, 400 for an unknown model, 409 without a canary,
  404 for a room no worker hosts unless the switch is a ``preset``);
- a canary rollback moves back the rooms the canary's share placed and keeps a room switched
  to the candidate by hand; its ``rolled_back_at`` is the wall-clock time, kept across a
  restart of the inference process.

Every test starts its front through the :func:`front` fixture, which stops the clients and
the server whatever the test's outcome.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from mediaserver.audio import write_audio
from mediaserver.sfu.tokens import mint

from conftest import METRICS_TOKEN, ServerProcess, server_metric, start_client
from model_variants import scaled_model, shipped_model_names
from test_reconnect import RATE, tone
from waiting import poll

pytestmark = pytest.mark.timeout(480)

SECRET = "workers-admin-secret"
ROOMS = {"ra": ("a1", 330.0), "rb": ("b1", 520.0)}


def call(server: ServerProcess, path: str, *, token: Optional[str] = SECRET,
         body: Optional[dict] = None, method: Optional[str] = None) -> tuple[int, str]:
    """GET (or POST with ``body``, or ``method``) through the front: (status, text)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    request = urllib.request.Request(server.url + path.lstrip("/"), data=data, headers=headers,
                                     method=method or ("POST" if body is not None else "GET"))
    try:
        with urllib.request.urlopen(request, timeout=150) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def get(server: ServerProcess, path: str) -> dict:
    status, text = call(server, path)
    assert status == 200, (path, status, text)
    return json.loads(text)


@dataclass
class Front:
    """A running ``serve --workers 2 --secret SECRET --model-root ROOT`` and its clients."""

    server: ServerProcess
    tmp_path: Path
    clients: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_rooms(self, wav: Optional[Path] = None, duration_s: float = 120.0) -> None:
        """One publishing client per room of ROOMS (a tone each, or ``wav``)."""
        for room, (who, hz) in ROOMS.items():
            send = wav
            if send is None:
                send = self.tmp_path / f"{who}.wav"
                write_audio(send, tone(hz, 120.0), RATE)
            self.clients[who] = start_client(self.server.url, room, who, "--send", str(send),
                                             "--duration", f"{duration_s:g}",
                                             "--token", mint(SECRET, room=room, identity=who),
                                             log=self.tmp_path / f"{who}.log")


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Callable[..., Front]]:
    """Factory: ``front(("quieter", 0.5), *flags)`` makes that candidate model (msenh-v2 with its
    output layer scaled) in a registry folder and starts the front with it; the clients and
    the server are stopped after the test, whatever its outcome."""
    started: list[Front] = []

    def start(candidate: tuple[str, float], *flags: str) -> Front:
        root = tmp_path / "candidates"
        scaled_model(root, *candidate)
        server = ServerProcess(tmp_path / "front.log", "--workers", "2", "--secret", SECRET,
                               "--model-root", str(root), *flags)
        started.append(Front(server, tmp_path))
        return started[-1]

    yield start
    for f in started:
        for proc in f.clients.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        f.server.stop()


def wall_time(iso: str) -> float:
    """An ISO 8601 UTC time (``...Z``) as epoch seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def kill_the_enhancer(server: ServerProcess) -> None:
    """SIGKILL the shared inference process; return once the front has restarted it."""
    dead = json.loads(call(server, "healthz", token=METRICS_TOKEN)[1])["shared_enhancer"]["pid"]
    os.kill(dead, signal.SIGKILL)

    def restarted() -> bool:
        shared = json.loads(call(server, "healthz", token=METRICS_TOKEN)[1])["shared_enhancer"]
        return shared["alive"] and shared["pid"] != dead and call(server, "models")[0] == 200
    poll(restarted, timeout=180, what="the inference process restarted")


def debug_models(server: ServerProcess) -> dict[str, tuple[Optional[str], int]]:
    """``{room: (active model, worker_index)}`` of each room's one participant in the front's /debug."""
    rooms = get(server, "debug/rooms")["rooms"]
    return {room: (ps[0]["model"], ps[0]["worker_index"]) for room, ps in rooms.items() if ps}


def test_the_model_admin_through_the_front_switches_rooms_on_both_workers(front) -> None:
    f = front(("quieter", 0.5))
    server = f.server
    # refusals, as a single process answers them
    assert call(server, "admin/rooms/ra/model", token=None, body={"model": "quieter"})[0] == 401
    assert call(server, "admin/rooms/ra/model", token=METRICS_TOKEN, body={"model": "quieter"})[0] == 401
    assert call(server, "models", token="wrong")[0] == 401
    assert call(server, "debug/rooms", token=None)[0] == 401
    assert call(server, "admin/canary/rollback", token=None, body={})[0] == 401
    code, text = call(server, "admin/rooms/ra/model", body={"model": "nope"})
    assert code == 400 and "unknown model 'nope'" in text, (code, text)
    assert call(server, "admin/canary/rollback", body={}) == (409, "no canary configured")
    # a room no worker hosts: 404 (it was 200 {"streams": 0} and kept the override), unless
    # the operator presets the model of its next call
    code, text = call(server, "admin/rooms/later/model", body={"model": "quieter"})
    assert code == 404 and text.startswith("room 'later' is not live"), (code, text)
    models = json.loads(call(server, "models", token=METRICS_TOKEN)[1])   # the token reads
    assert models["default"] == "msenh-v2" and models["loaded"] == ["msenh-v2"], models   # nothing loaded
    assert {r["name"] for r in models["registry"]} == {*shipped_model_names(), "quieter"}
    assert models["canary"] is None and models["overrides"] == {}
    code, text = call(server, "admin/rooms/later/model", body={"model": "quieter", "preset": True})
    assert (code, json.loads(text)) == (200, {"room": "later", "model": "quieter", "streams": 0}), text
    assert get(server, "models")["overrides"] == {"later": "quieter"}
    code, text = call(server, "admin/rooms/later/model", method="DELETE")   # taken back
    assert (code, json.loads(text)) == (200, {"room": "later", "model": "msenh-v2", "streams": 0}), text
    assert call(server, "admin/rooms/later/model", method="DELETE") == (404, "room 'later' has no model override")
    assert call(server, "admin/rooms/later/model", token=METRICS_TOKEN, method="DELETE")[0] == 401
    assert call(server, "admin/rooms/later/model", body={"model": "quieter", "preset": True})[0] == 200

    f.start_rooms()
    poll(lambda: get(server, "models")["streams"] == {"msenh-v2": 2}, timeout=120,
         what="both rooms' streams in the shared stage")
    placed = poll(lambda: (lambda d: d if set(d) == set(ROOMS) and all(m for m, _ in d.values())
                           else None)(debug_models(server)), timeout=60, what="both rooms in /debug")
    assert sorted(w for _, w in placed.values()) == [0, 1], placed   # one room per worker
    assert all(m == "msenh-v2" for m, _ in placed.values()), placed

    for room in ROOMS:   # each room's switch reaches its stream, whichever worker has it
        code, text = call(server, f"admin/rooms/{room}/model", body={"model": "quieter"})
        assert code == 200, text
        assert json.loads(text) == {"room": room, "model": "quieter", "streams": 1}
    models = get(server, "models")
    assert models["streams"] == {"quieter": 2}, models
    assert models["overrides"] == {"later": "quieter", "ra": "quieter", "rb": "quieter"}
    assert models["loaded"] == ["msenh-v2", "quieter"]
    switched = poll(lambda: (lambda d: d if all(m == "quieter" for m, _ in d.values()) else None)
                    (debug_models(server)), timeout=60, what="both streams heard through the new model")
    assert switched.keys() == placed.keys() and all(switched[r][1] == placed[r][1] for r in ROOMS)
    # a participant's spectra come from its room's worker (fed by the shared stage's outputs)
    who = ROOMS["rb"][0]
    spectra = poll(lambda: (lambda s: s if s["columns"] else None)(
        get(server, f"debug/spectra?room=rb&identity={who}")), timeout=60, what="rb's spectra")
    assert spectra["model"] == "quieter" and len(spectra["columns"][0]["raw"]) == spectra["bands"]
    assert call(server, "debug/spectra?room=nowhere&identity=x")[0] == 404
    # the inference process dies: its successor keeps the overrides, the reopened streams
    # get their rooms' model again
    kill_the_enhancer(server)
    assert get(server, "models")["overrides"] == {"later": "quieter", "ra": "quieter", "rb": "quieter"}
    poll(lambda: get(server, "models")["streams"] == {"quieter": 2}, timeout=120,
         what="the reopened streams on their rooms' model")


def test_a_canary_is_accepted_at_start_with_workers_and_rolled_back_on_both(front) -> None:
    """Every new room starts on the candidate (share 1.0), on both workers. A rollback moves
    back what the canary placed (ra) and keeps rb, switched to the candidate by hand: an
    operator's explicit choice. ``rolled_back_at`` is the wall-clock time of the rollback
    (it was the inference process's monotonic clock), also after that process's restart."""
    f = front(("quieter", 0.5), "--canary-model", "quieter", "--canary-share", "1.0")
    server = f.server
    canary = get(server, "models")["canary"]
    assert canary["state"] == "active" and canary["candidate"] == "quieter", canary
    assert canary["rolled_back_at"] is None
    f.start_rooms()
    poll(lambda: get(server, "models")["streams"] == {"quieter": 2}, timeout=120,
         what="both rooms' streams on the canary")
    placed = poll(lambda: (lambda d: d if set(d) == set(ROOMS) and all(m == "quieter" for m, _ in d.values())
                           else None)(debug_models(server)), timeout=60, what="both rooms on the canary in /debug")
    assert sorted(w for _, w in placed.values()) == [0, 1], placed
    assert call(server, "admin/rooms/rb/model", body={"model": "quieter"})[0] == 200   # by hand
    before = time.time()
    code, text = call(server, "admin/canary/rollback", body={"reason": "test"})
    after = time.time()
    assert code == 200, text
    answer = json.loads(text)
    assert answer["state"] == "rolled-back" and answer["reason"] == "manual: test", answer
    assert answer["rooms_kept"] == ["rb"], answer
    assert before - 1.0 <= wall_time(answer["rolled_back_at"]) <= after + 1.0, (before, answer, after)
    models = get(server, "models")
    assert models["streams"] == {"msenh-v2": 1, "quieter": 1}, models   # ra moved back, rb kept
    assert models["overrides"] == {"rb": "quieter"}, models
    poll(lambda: debug_models(server).get("ra", (None,))[0] == "msenh-v2", timeout=60,
         what="ra's stream back on the stable model")
    assert call(server, "admin/canary/rollback", body={}) == (409, "canary is rolled-back")
    assert server_metric(server, "mediaserver_canary_rollbacks_total", model_version="quieter",
                         reason="manual") == 1   # the inference process's series, through the front
    assert server_metric(server, "mediaserver_canary_active", model_version="quieter") == 0
    kill_the_enhancer(server)   # a rollback outlives the inference process, with its time
    canary = get(server, "models")["canary"]
    assert canary["state"] == "rolled-back" and canary["reason"] == "manual: test", canary
    assert canary["rolled_back_at"] == answer["rolled_back_at"], canary
    poll(lambda: get(server, "models")["streams"] == {"msenh-v2": 1, "quieter": 1}, timeout=120,
         what="the reopened streams on their models")
    assert server_metric(server, "mediaserver_canary_active", model_version="quieter") == 0


def test_an_over_suppressing_canary_is_rolled_back_by_itself_on_both_workers(front) -> None:
    """The inference process runs the canary's driver over the whole machine's SLI counters:
    a candidate that removes speech is rolled back during the calls, with no admin call, and
    both workers' streams move back to the stable model."""
    from test_canary import noisy_speech

    f = front(("cuts-speech", 0.02), "--canary-model", "cuts-speech", "--canary-share", "1.0",
              "--canary-window-s", "20", "--canary-min-speech-s", "2")
    server = f.server
    f.start_rooms(wav=noisy_speech(f.tmp_path, 16.0), duration_s=60.0)
    placed = poll(lambda: (lambda d: d if set(d) == set(ROOMS) else None)(debug_models(server)),
                  timeout=120, what="both rooms in /debug")
    assert sorted(w for _, w in placed.values()) == [0, 1], placed
    poll(lambda: server_metric(server, "mediaserver_canary_rollbacks_total", model_version="cuts-speech",
                               reason="over_suppression") >= 1, timeout=120, what="automatic rollback")
    models = get(server, "models")
    assert models["canary"]["state"] == "rolled-back", models
    assert models["canary"]["reason"].startswith("over-suppression"), models
    assert models["streams"] == {"msenh-v2": 2}, models   # both workers' streams moved back
    poll(lambda: all(m == "msenh-v2" for m, _ in debug_models(server).values()), timeout=60,
         what="both streams heard through the stable model")
