"""When and where a client tries again after losing its connection (sans-I/O).

``Reconnector`` holds the server list (``mediaserver client --url A,B``, plus the node URLs a
server names in ``joined.nodes``) and a jittered exponential backoff. The client reports
what happens (``lost``, ``failed``, ``connected``) and asks ``next_attempt()``
for the URL to try and the time to try it; it never sleeps or does I/O itself. Times are
seconds on any monotonic clock. The browser client follows the same schedule
(``static/js/signalling.js``, ``Backoff`` and ``RejoinPolicy``), the healthy-call rule below
included.

Schedule after a loss: the first attempt waits the server's hint (``server-shutdown``'s
``retry_after_ms``) or ``initial_s``; each further attempt goes to the next URL of the list,
and every full round over the list multiplies the wait by ``factor``, up to ``max_s``. Each
wait is scaled by a random factor in ``[1 - jitter, 1 + jitter]`` so that the participants
of a restarted server do not all come back in the same millisecond.

The schedule restarts only once a call has proven healthy: a connection that stayed up
``healthy_s`` (10 s, twice ``Backoff.max_s``) or longer. A call lost sooner (its signalling
succeeded, its media failed 20 ms later) counts as one more failed attempt: the wait after it
goes on growing from the schedule of the losses before it, one step per such loss whatever the
list's length (its rounds pace attempts that go round the list), so a call that keeps failing is
soon tried once every ``max_s`` (5 s), not every ``initial_s`` (0.5 s). A server's ``redirect`` (the room moved)
is no failure: the loss that follows it keeps the count as it was.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Optional


HEALTHY_S = 10.0   # a connection up this long has proven healthy (Reconnector.healthy_s)


@dataclass(frozen=True)
class Backoff:
    """Wait before attempt ``k`` (0-based) of a reconnection, seconds."""

    initial_s: float = 0.5
    factor: float = 1.5
    max_s: float = 5.0
    jitter: float = 0.3

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.factor < 1 or self.max_s < self.initial_s \
                or not 0 <= self.jitter < 1:
            raise ValueError("backoff needs initial_s > 0, factor >= 1, max_s >= initial_s, "
                             "0 <= jitter < 1")

    def delay(self, attempt: int, *, servers: int = 1, hint_s: Optional[float] = None,
              rng: random.Random) -> float:
        """Seconds to wait before ``attempt`` (0 = the first after the loss)."""
        if attempt == 0:
            base = self.initial_s if hint_s is None else max(0.0, hint_s)
        else:
            rounds = (attempt - 1) // max(1, servers)
            base = self.initial_s * self.factor ** min(rounds, 64)
        base = min(self.max_s, base)
        return base * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)


@dataclass(frozen=True)
class Attempt:
    url: str
    at: float      # when to try (same clock as ``now``)
    number: int    # 0-based, since the connection was lost


class Reconnector:
    """Server list + backoff state of one client.

    :param urls: signalling URLs in the order to try; the first is where the client starts.
    :param backoff: the schedule; :param rng: randomness for the jitter (seeded in tests).
    :param healthy_s: seconds a connection must stay up before its loss starts a fresh
        schedule; one lost sooner counts as a failed attempt (module docstring).
    """

    def __init__(self, urls: Iterable[str], *, backoff: Backoff = Backoff(),
                 rng: Optional[random.Random] = None, healthy_s: float = HEALTHY_S) -> None:
        self.urls: list[str] = []
        self.add_urls(urls)
        if not self.urls:
            raise ValueError("at least one server URL is needed")
        if healthy_s < 0:
            raise ValueError("healthy_s must be >= 0")
        self.backoff = backoff
        self.healthy_s = healthy_s
        self._rng = rng or random.Random()
        self._current = 0          # index of the URL in use (or last used)
        self._attempt = 0          # attempts since the loss
        self._lost_at: Optional[float] = None
        self._hint_s: Optional[float] = None
        self._next_at = 0.0
        self._up_since: Optional[float] = None   # when the connection in use came up
        self._moved = False        # the server redirected the connection in use
        # since the last healthy call: attempts that did not get in, plus calls lost before
        # they stayed up healthy_s; the index of the next wait in the schedule
        self.failures = 0

    def add_urls(self, urls: Iterable[str]) -> None:
        """Append URLs not yet known (the server's ``joined.nodes``), keeping the order."""
        for url in urls:
            if url and url not in self.urls:
                self.urls.append(url)

    @property
    def url(self) -> str:
        """The URL in use, or the one to try next."""
        return self.urls[self._current]

    @property
    def reconnecting(self) -> bool:
        return self._lost_at is not None

    def lost(self, *, now: float, hint_s: Optional[float] = None) -> None:
        """The connection ended; ``hint_s``: the server's retry hint, if it sent one.

        A connection up for ``healthy_s`` or more starts a fresh schedule: the first wait is
        the hint, else ``initial_s``. One lost sooner is one more failure in a row: it waits as
        the attempt after the previous failures would (at least the hint). After a
        :meth:`moved` the first wait is the hint and the count stays as it was."""
        moved, self._moved = self._moved, False
        if not moved:   # (never connected: nothing to judge, a fresh schedule)
            healthy = self._up_since is None or now - self._up_since >= self.healthy_s
            self.failures = 0 if healthy else self.failures + 1
        self._up_since = None
        self._lost_at = now
        self._attempt = 0
        self._hint_s = hint_s
        if moved or self.failures == 0:
            wait = self.backoff.delay(0, servers=len(self.urls), hint_s=hint_s, rng=self._rng)
        else:
            # a call lost soon after it got in failed where it was: each such loss is a step of
            # the schedule, however many servers the list has (its rounds pace the attempts
            # that go round the list; a cluster's node list made a short call wait 0.5 s N times)
            wait = max(hint_s or 0.0, self.backoff.delay(self.failures, servers=1, rng=self._rng))
        self._next_at = now + wait

    def next_attempt(self) -> Attempt:
        """Where and when to try next (call ``failed`` or ``connected`` after trying)."""
        return Attempt(url=self.url, at=self._next_at, number=self._attempt)

    def failed(self, *, now: float) -> None:
        """The attempt did not get the client back in: next URL, longer wait."""
        self._attempt += 1
        self.failures += 1
        self._current = (self._current + 1) % len(self.urls)
        self._next_at = now + self._delay()

    def connected(self, url: str, *, now: float) -> None:
        """In again (through ``url``) at ``now``: the next loss starts from ``url``, and from a
        fresh schedule if this connection stays up ``healthy_s`` (see :meth:`lost`)."""
        if url in self.urls:
            self._current = self.urls.index(url)
        self._lost_at = None
        self._attempt = 0
        self._hint_s = None
        self._up_since = now
        self._moved = False

    def moved(self, url: str) -> None:
        """The server moved the connection in use to ``url`` (``redirect``): the loss that
        follows is planned, it neither counts as a failure nor proves the call healthy."""
        if url in self.urls:
            self._current = self.urls.index(url)
        self._moved = True

    def _delay(self) -> float:
        """The wait before the next attempt: ``failures`` places into the schedule."""
        return self.backoff.delay(self.failures, servers=len(self.urls), rng=self._rng)
