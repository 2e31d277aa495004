"""The front of ``serve --workers N``, piece by piece (no processes): room placement, the
``join`` parsing that routes a socket, the metrics merge, and which forwarded address a
worker believes."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from mediaserver.sfu import websec
from mediaserver.workers.front import room_of, worker_argv
from mediaserver.workers.metrics import merge_worker_metrics
from mediaserver.workers.placement import NoWorker, Placement, WorkerLoad, load_rank


def _live(n: int) -> Placement:
    placement = Placement(n)
    for i in range(n):
        placement.report(i, publishers=0)
    return placement


def test_a_room_lives_on_one_worker_and_new_rooms_go_to_the_least_loaded():
    p = _live(2)
    a = p.acquire("alpha")
    assert p.acquire("alpha") == a            # the room's second socket: same worker
    b = p.acquire("bravo")
    assert b != a                             # alpha's two pending sockets count as load
    p.report(a, publishers=0)
    p.report(b, publishers=5)                 # the workers' reports replace the pending counts
    assert p.acquire("charlie") == a


def test_new_rooms_go_by_publishers_and_pending_sockets_then_rooms_then_index():
    """The ranking compares publishers (participants that send audio, the workers'
    /healthz ``publishers``), never participants: a worker whose room is all listeners
    is not loaded with publishers."""
    p = _live(2)
    assert p.acquire("talk") == 0             # all equal: the lowest index
    assert p.acquire("listen") == 1           # talk's socket is pending on worker 0
    assert p.acquire("listen") == 1 and p.acquire("listen") == 1
    p.report(0, publishers=1)                 # the talker publishes, the three listeners do not
    p.report(1, publishers=0)
    assert p.load_of(1) == {"publishers": 0, "pending": 0, "rooms": 1}
    assert p.acquire("next") == 1             # 0 publishers against 1 (it had 3 participants)
    assert p.acquire("more") == 0             # next's socket may publish: 1 + 0 against 0 + 1, 1 room against 2
    p.report(0, publishers=2)                 # more's joiner talks, next's listens
    p.report(1, publishers=0)
    assert p.least_loaded() == 1
    p.release("next", 1)
    assert p.load_of(1)["rooms"] == 1
    # pure ranking: publishers (+ pending) first, then rooms, then index
    assert load_rank(0, WorkerLoad(True, publishers=2), 0) > load_rank(1, WorkerLoad(True, publishers=1), 9)
    assert load_rank(0, WorkerLoad(True, publishers=1, pending=1), 0) > load_rank(1, WorkerLoad(True, publishers=1), 9)
    assert load_rank(0, WorkerLoad(True, publishers=1), 2) < load_rank(1, WorkerLoad(True, publishers=1), 2)


def test_a_report_that_does_not_count_a_new_room_yet_leaves_it_counted():
    """Rooms are the front's own: a worker's /healthz read before it handled a room's join
    (no room, no publisher yet) does not make that worker look empty."""
    p = _live(2)
    assert p.acquire("ra") == 0
    p.report(0, publishers=0)                 # polled before worker 0 read ra's join
    assert p.load_of(0) == {"publishers": 0, "pending": 0, "rooms": 1}
    assert p.acquire("rb") == 1


def test_a_room_is_forgotten_when_its_last_socket_closes():
    p = _live(2)
    w = p.acquire("alpha")
    p.acquire("alpha")
    p.release("alpha", w)
    assert p.worker_of("alpha") == w          # one socket still open
    p.release("alpha", w)
    assert p.worker_of("alpha") is None


def test_a_lost_worker_loses_only_its_rooms_and_takes_no_new_ones():
    p = _live(2)
    a, b = p.acquire("alpha"), p.acquire("bravo")
    assert a != b
    assert p.lost(a) == ["alpha"]
    assert p.worker_of("alpha") is None and p.worker_of("bravo") == b
    assert p.acquire("alpha") == b            # the reconnecting room goes to a live worker
    p.release("alpha", a)                     # a late close of the old socket changes nothing
    assert p.worker_of("alpha") == b
    p.lost(b)
    with pytest.raises(NoWorker):
        p.acquire("charlie")


@pytest.mark.parametrize("text, room", [
    ('{"type": "join", "room": "ward-3", "identity": "a"}', "ward-3"),
    ('{"type": "offer", "room": "ward-3"}', None),
    ('{"type": "join", "room": 7}', None),
    ('{"type": "join", "room": ""}', None),
    ('not json', None),
    ('[1, 2]', None),
])
def test_only_a_join_names_the_room_that_routes_the_socket(text, room):
    assert room_of(text) == room


def test_workers_get_the_users_flags_then_loopback_a_free_port_and_one_process():
    argv = worker_argv(["--log-level", "info", "serve", "--workers", "4", "--port", "8080",
                        "--host", "0.0.0.0", "--ice-host", "10.0.0.5"], 2)
    assert argv[:9] == ["--log-level", "info", "serve", "--workers", "4", "--port", "8080",
                        "--host", "0.0.0.0"]
    tail = argv[9:]
    # argparse: the last one wins, so the worker listens on loopback, any port, in one process
    assert tail[tail.index("--host") + 1] == "127.0.0.1"
    assert tail[tail.index("--port") + 1] == "0"
    assert tail[tail.index("--workers") + 1] == "1"
    assert "--ice-host" in argv and "10.0.0.5" in argv   # media still on the user's address
    assert tail[tail.index("--worker-id") + 1].endswith("-w2")


WORKER_TEXT = """# HELP mediaserver_packets_out_total packets sent
# TYPE mediaserver_packets_out_total counter
mediaserver_packets_out_total {n}
# HELP mediaserver_enhancer_streams streams
# TYPE mediaserver_enhancer_streams gauge
mediaserver_enhancer_streams{{model="msenh-v2",worker="{w}"}} {s}
"""


def test_metrics_of_all_workers_merge_with_a_worker_label():
    body = merge_worker_metrics({"h-w0": WORKER_TEXT.format(n=10, w="h-w0", s=1),
                                 "h-w1": WORKER_TEXT.format(n=32, w="h-w1", s=3)})
    families = {f.name: f for f in text_string_to_metric_families(body)}
    out = {s.labels["worker"]: s.value for s in families["mediaserver_packets_out"].samples
           if s.name == "mediaserver_packets_out_total"}
    assert out == {"h-w0": 10.0, "h-w1": 32.0}
    streams = {s.labels["worker"]: s.value for s in families["mediaserver_enhancer_streams"].samples}
    assert streams == {"h-w0": 1.0, "h-w1": 3.0}   # the worker's own label kept, not doubled
    assert body.count("# TYPE mediaserver_packets_out_total counter") == 1


def test_a_worker_believes_the_forwarded_address_only_with_the_front_token(monkeypatch):
    monkeypatch.setattr(websec, "_FRONT_TOKEN", "front-secret")
    forged = make_mocked_request("GET", "/ws", headers={"X-Forwarded-For": "203.0.113.9"})
    assert websec.client_address(forged) != "203.0.113.9"
    wrong = make_mocked_request("GET", "/ws", headers={"X-Forwarded-For": "203.0.113.9",
                                                        websec.FRONT_HEADER: "guess"})
    assert websec.client_address(wrong) != "203.0.113.9" and not websec.from_front(wrong)
    front = make_mocked_request("GET", "/ws", headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1",
                                                        websec.FRONT_HEADER: "front-secret"})
    assert websec.client_address(front) == "203.0.113.9" and websec.from_front(front)
    monkeypatch.setattr(websec, "_FRONT_TOKEN", None)   # a single-process server trusts no header
    assert not websec.from_front(front) and websec.client_address(front) != "203.0.113.9"
