"""The reconnection schedule (mediaserver/reconnect.py): exact tables, no clock, no I/O."""

from __future__ import annotations

import random

import pytest

from mediaserver.reconnect import Backoff, Reconnector

FLAT = Backoff(initial_s=0.5, factor=2.0, max_s=4.0, jitter=0.0)


def _schedule(r: Reconnector, failures: int, *, now: float = 100.0,
              hint_s: float | None = None) -> list[tuple[str, float]]:
    """(url, wait before trying) for the first attempt and ``failures`` more."""
    r.lost(now=now, hint_s=hint_s)
    out = []
    for _ in range(failures + 1):
        a = r.next_attempt()
        out.append((a.url, round(a.at - now, 6)))
        now = a.at
        r.failed(now=now)
    return out


def test_one_server_backs_off_exponentially_up_to_the_cap() -> None:
    r = Reconnector(["ws://a/ws"], backoff=FLAT)
    assert _schedule(r, 5) == [("ws://a/ws", 0.5), ("ws://a/ws", 0.5), ("ws://a/ws", 1.0),
                               ("ws://a/ws", 2.0), ("ws://a/ws", 4.0), ("ws://a/ws", 4.0)]


def test_the_servers_retry_hint_sets_the_first_wait() -> None:
    r = Reconnector(["ws://a/ws"], backoff=FLAT)
    assert _schedule(r, 1, hint_s=1.5) == [("ws://a/ws", 1.5), ("ws://a/ws", 0.5)]
    assert _schedule(r, 0, hint_s=60.0) == [("ws://a/ws", 4.0)]   # capped


def test_a_list_is_tried_in_turn_and_each_round_waits_longer() -> None:
    r = Reconnector(["ws://a/ws", "ws://b/ws"], backoff=FLAT)
    assert _schedule(r, 4) == [("ws://a/ws", 0.5), ("ws://b/ws", 0.5), ("ws://a/ws", 0.5),
                               ("ws://b/ws", 1.0), ("ws://a/ws", 1.0)]


def test_connected_resets_and_keeps_the_server_that_worked() -> None:
    r = Reconnector(["ws://a/ws", "ws://b/ws"], backoff=FLAT)
    _schedule(r, 2)
    r.connected("ws://b/ws", now=80.0)
    assert not r.reconnecting and r.url == "ws://b/ws"
    assert _schedule(r, 1) == [("ws://b/ws", 0.5), ("ws://a/ws", 0.5)]   # up 20 s: healthy


def _short_calls(r: Reconnector, calls: int, *, up_s: float, hint_s: float | None = None,
                 now: float = 100.0) -> list[float]:
    """Each call: in at ``now``, lost ``up_s`` later, back in at the attempt's time; the
    waits before those attempts."""
    waits = []
    r.connected(r.url, now=now)
    for _ in range(calls):
        now += up_s
        r.lost(now=now, hint_s=hint_s)
        a = r.next_attempt()
        waits.append(round(a.at - now, 6))
        now = a.at
        r.connected(a.url, now=now)
    return waits


def test_calls_lost_right_after_rejoining_back_off_as_failures_in_a_row() -> None:
    """A fresh user's trial: each rejoin got in (signalling) and its media failed 20-30 ms
    later; the schedule restarted at each join, so the server was tried every 0.5 s for as
    long as the call ran. A call up under healthy_s is one more failure: the waits grow."""
    r = Reconnector(["ws://a/ws"], backoff=FLAT, healthy_s=10.0)
    assert _short_calls(r, 6, up_s=0.03) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert r.failures == 6
    assert _short_calls(r, 1, up_s=9.99) == [4.0]   # just short of healthy: still failing


def test_short_calls_back_off_per_loss_however_many_servers_the_list_has() -> None:
    """The server's ``joined.nodes`` (a cluster; a single server names itself) grows the list;
    the schedule's rounds over the list pace attempts that go round it, not calls lost where
    they got in: with 3 URLs each short call was 0.5 s three times over (found through real
    processes, tests/test_client_rejoin_backoff.py)."""
    r = Reconnector(["ws://a/ws", "ws://b/ws", "ws://c/ws"], backoff=FLAT, healthy_s=10.0)
    assert _short_calls(r, 5, up_s=0.03) == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert r.url == "ws://a/ws"   # each rejoin went where the call had been


def test_a_call_that_stays_up_healthy_s_restarts_the_schedule() -> None:
    r = Reconnector(["ws://a/ws"], backoff=FLAT, healthy_s=10.0)
    _short_calls(r, 4, up_s=0.03)
    assert _short_calls(r, 2, up_s=10.0) == [0.5, 0.5]   # proven healthy: fresh each time
    assert r.failures == 0
    assert _short_calls(r, 2, up_s=0.03) == [0.5, 1.0]   # the count starts again from there


def test_failed_attempts_and_short_calls_are_one_count() -> None:
    """Attempts that did not get in, then a call that failed at once: the next wait follows
    on from the failed attempts (the server came back broken), not from initial_s."""
    r = Reconnector(["ws://a/ws"], backoff=FLAT, healthy_s=10.0)
    r.connected("ws://a/ws", now=0.0)
    assert _schedule(r, 2) == [("ws://a/ws", 0.5), ("ws://a/ws", 0.5), ("ws://a/ws", 1.0)]
    r.connected("ws://a/ws", now=200.0)
    r.lost(now=200.03)
    assert round(r.next_attempt().at - 200.03, 6) == 4.0   # failures 1-3, then the short call
    assert r.next_attempt().number == 0                  # (attempts since this loss)


def test_a_short_call_waits_at_least_the_servers_hint() -> None:
    r = Reconnector(["ws://a/ws"], backoff=FLAT, healthy_s=10.0)
    assert _short_calls(r, 3, up_s=1.0, hint_s=1.5) == [1.5, 1.5, 2.0]


def test_a_redirect_is_no_failure_and_rejoins_at_the_hint() -> None:
    r = Reconnector(["ws://a/ws", "ws://b/ws"], backoff=FLAT, healthy_s=10.0)
    _short_calls(r, 3, up_s=0.03)
    assert r.failures == 3
    r.connected("ws://a/ws", now=300.0)
    r.moved("ws://b/ws")
    r.lost(now=301.0, hint_s=0.0)
    a = r.next_attempt()
    assert (a.url, a.at, r.failures) == ("ws://b/ws", 301.0, 3)


def test_nodes_from_the_server_join_the_list_once_in_order() -> None:
    r = Reconnector(["ws://a/ws"], backoff=FLAT)
    r.add_urls(["ws://a/ws", "ws://b/ws", "ws://c/ws", "ws://b/ws"])
    assert r.urls == ["ws://a/ws", "ws://b/ws", "ws://c/ws"]


def test_jitter_spreads_clients_within_its_bounds() -> None:
    backoff = Backoff(initial_s=1.0, factor=2.0, max_s=8.0, jitter=0.3)
    waits = [backoff.delay(0, rng=random.Random(seed)) for seed in range(200)]
    assert min(waits) >= 0.7 and max(waits) <= 1.3
    assert len({round(w, 3) for w in waits}) > 150   # not all in the same millisecond


@pytest.mark.parametrize("bad", [dict(initial_s=0), dict(factor=0.5), dict(max_s=0.1),
                                 dict(jitter=1.0)])
def test_bad_schedules_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**bad)


def test_no_url_is_refused() -> None:
    with pytest.raises(ValueError):
        Reconnector([])
    with pytest.raises(ValueError):
        Reconnector(["ws://a/ws"], healthy_s=-1.0)


@pytest.mark.parametrize("env, expected", [(None, True), ("0", False), ("false", False), ("1", True)])
def test_reconnect_flag_and_its_env_twin(monkeypatch: pytest.MonkeyPatch, env: str | None,
                                         expected: bool) -> None:
    """``--reconnect`` is on by default; ``MEDIASERVER_RECONNECT=0`` turns it off, and
    ``--no-reconnect`` / ``--reconnect`` win over the variable."""
    from mediaserver.cli import build_parser

    if env is None:
        monkeypatch.delenv("MEDIASERVER_RECONNECT", raising=False)
    else:
        monkeypatch.setenv("MEDIASERVER_RECONNECT", env)
    base = ["client", "--room", "r"]
    assert build_parser("client").parse_args(base).reconnect is expected
    assert build_parser("client").parse_args([*base, "--no-reconnect"]).reconnect is False
    assert build_parser("client").parse_args([*base, "--reconnect"]).reconnect is True


def test_drain_settings_and_their_env_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    from mediaserver.cli import build_parser
    from mediaserver.sfu.drain import validate_drain_args

    monkeypatch.setenv("MEDIASERVER_DRAIN_S", "3.5")
    monkeypatch.setenv("MEDIASERVER_RETRY_HINT_MS", "2500")
    args = build_parser("serve").parse_args(["serve"])
    assert (args.drain_s, args.retry_hint_ms) == (3.5, 2500)
    assert validate_drain_args(args) is None
    assert build_parser("serve").parse_args(["serve", "--drain-s", "2"]).drain_s == 2.0
    args.drain_s = 0.1
    assert "--drain-s" in validate_drain_args(args)
