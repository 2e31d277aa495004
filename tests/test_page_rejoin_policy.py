"""The page's rejoin backoff (static/js/signalling.js ``RejoinPolicy`` + ``Backoff``, run in Node)
follows ``mediaserver/reconnect.py``'s healthy-call rule: a fresh user saw a call whose media
failed right after each join rejoin about twice a second for as long as it lasted, because the
schedule restarted at every successful join. A call lost before it stayed up 10 s is one more
failure in a row; one that stayed up 10 s starts afresh. The same sequences go through the
Python ``Reconnector`` (jitter off), and both give the same waits.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

from mediaserver.reconnect import Backoff, Reconnector

from requires import require_program

SIGNALLING_JS = Path(__file__).resolve().parent.parent / "static" / "js" / "signalling.js"
URL = "ws://127.0.0.1:1/ws"


def page_waits(events: list[list]) -> list[float]:
    """Drive the page's policy as app.js does: ``["join", t_ms, failed_attempts]``,
    ``["lose", t_ms, hint_ms]`` (the wait before the reconnection's first try, ``firstDelay``)
    or ``["fail", t_ms, None]`` (that try failed: the wait before the next, ``delay``); the
    waits in ms."""
    node = require_program("node", "apt-get install nodejs")
    script = f"""
import {{ Backoff, RejoinPolicy }} from {json.dumps(SIGNALLING_JS.as_uri())};
const backoff = new Backoff({{ jitter: 0 }});
const policy = new RejoinPolicy();
const waits = [];
let attempt = 0;
for (const [kind, t, extra] of {json.dumps(events)}) {{
  if (kind === "join") {{ policy.joined(t, extra); continue; }}
  if (kind === "fail") {{ attempt += 1; waits.push(backoff.delay(attempt)); continue; }}
  attempt = policy.lost(t);
  waits.push(backoff.firstDelay(attempt, extra));
}}
console.log(JSON.stringify(waits));
"""
    out = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def client_waits(events: list[list]) -> list[float]:
    """The same events through ``mediaserver client``'s Reconnector, waits in ms."""
    r = Reconnector([URL], backoff=Backoff(jitter=0.0), rng=random.Random(0))
    waits = []
    for kind, t_ms, extra in events:
        if kind == "join":
            for _ in range(extra):
                r.failed(now=t_ms / 1000.0)
            r.connected(URL, now=t_ms / 1000.0)
        elif kind == "fail":
            r.failed(now=t_ms / 1000.0)
            waits.append(round(1000.0 * (r.next_attempt().at - t_ms / 1000.0), 3))
        else:
            r.lost(now=t_ms / 1000.0, hint_s=None if extra is None else extra / 1000.0)
            waits.append(round(1000.0 * (r.next_attempt().at - t_ms / 1000.0), 3))
    return waits


def _short_calls(n: int, up_ms: float) -> list[list]:
    """A call that gets in and is lost ``up_ms`` later, ``n`` times (joined as soon as allowed)."""
    events, t = [["join", 0, 0]], 0.0
    for _ in range(n):
        t += up_ms
        events.append(["lose", t, None])
        t += 6000   # (past any wait: the next join)
        events.append(["join", t, 0])
    return events


def test_calls_lost_right_after_their_join_back_off_to_the_longest_wait() -> None:
    events = _short_calls(8, up_ms=30)
    waits = page_waits(events)
    assert waits == [500, 750, 1125, 1687.5, 2531.25, 3796.875, 5000, 5000], waits
    assert waits == client_waits(events)


def test_a_call_up_ten_seconds_starts_afresh_and_one_just_short_does_not() -> None:
    healthy = [["join", 0, 0], ["lose", 30, None], ["join", 6000, 0], ["lose", 16000, None]]
    assert page_waits(healthy) == [500, 500] == client_waits(healthy)
    short = [["join", 0, 0], ["lose", 30, None], ["join", 6000, 0], ["lose", 15990, None]]
    assert page_waits(short) == [500, 750] == client_waits(short)


def test_failed_attempts_and_a_short_call_count_together_and_the_hint_is_a_floor() -> None:
    # first join; a loss; 2 attempts fail before it gets in; lost 1 s later with a 4 s hint
    events = [["join", 0, 0], ["lose", 20000, None], ["join", 26000, 2], ["lose", 27000, 4000]]
    waits = page_waits(events)
    assert waits == [500, 4000], waits   # the schedule's 1125 ms (failure 3): the hint is longer
    assert waits == client_waits(events)
    fresh = [["join", 0, 0], ["lose", 20000, 4000]]   # a healthy call: the hint alone
    assert page_waits(fresh) == [4000] == client_waits(fresh)


def test_the_hint_sets_a_reconnections_first_wait_only() -> None:
    """A server restarting with a 4 s ``retry_after_ms``: the first try waits the hint, a try
    after it that failed waits the schedule's 0.75 s, not the hint again (also after a short
    call, whose first try waits at least the hint)."""
    fresh = [["join", 0, 0], ["lose", 20000, 4000], ["fail", 24000, None], ["fail", 25000, None]]
    assert page_waits(fresh) == [4000, 500, 750] == client_waits(fresh)
    short = [["join", 0, 0], ["lose", 30, 4000], ["fail", 4030, None]]
    assert page_waits(short) == [4000, 750] == client_waits(short)
