"""Limits on what clients may take: sockets, rooms, message rate, time to publish.

Sans-I/O: the signalling layer asks and acts; nothing here touches a socket or the clock
(time is passed in as ``now``, seconds on any monotonic clock).

- ``ConnectionGate``: WebSocket connections in total and per client address.
- ``RateLimiter``: a token bucket on one socket's inbound messages, with a verdict that
  says whether to process, warn (once per excess streak), drop, or close the socket.
- ``Limits``: every bound, from the ``serve`` flags (each with its ``MEDIASERVER_*`` twin).
"""

from __future__ import annotations

import argparse
import enum
from collections import Counter
from dataclasses import dataclass, fields
from typing import Optional

from ..config import add_option


@dataclass(frozen=True)
class Limits:
    """Every bound, with defaults a small deployment (one machine, a few rooms) can live with."""

    max_rooms: int = 50                 # rooms with at least one participant
    max_sockets: int = 200              # open /ws connections in all
    max_sockets_per_ip: int = 20        # open /ws connections from one client address
    offer_timeout_s: float = 30.0       # seconds from connecting to the first offer
    ws_rate: float = 20.0               # inbound messages per second per socket (sustained)
    ws_burst: int = 60                  # inbound messages a socket may send at once
    ws_send_queue: int = 256            # messages waiting for one socket before it is dropped
    ws_send_timeout_s: float = 10.0     # seconds one message may take to reach a socket
    dtls_timeout_s: float = 10.0        # seconds from ICE connected to the DTLS handshake's end

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Limits":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def problem(self) -> Optional[str]:
        """What is wrong with these values (for a CLI error), or None."""
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                return f"--{f.name.removesuffix('_s').replace('_', '-')} must be positive"
        if self.max_sockets_per_ip > self.max_sockets:
            return "--max-sockets-per-ip must not exceed --max-sockets"
        return None


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` flags of :class:`Limits` (attribute names match the field names)."""
    d = Limits()
    add_option(parser, "--max-rooms", type=int, default=d.max_rooms,
               help="rooms that may exist at once; a join that would open one more is refused")
    add_option(parser, "--max-sockets", type=int, default=d.max_sockets,
               help="open /ws connections in all; more are refused with HTTP 503")
    add_option(parser, "--max-sockets-per-ip", type=int, default=d.max_sockets_per_ip,
               help="open /ws connections from one client address (HTTP 429 beyond)")
    add_option(parser, "--dtls-timeout", dest="dtls_timeout_s", type=float, default=d.dtls_timeout_s,
               help="seconds the DTLS handshake may take once ICE has connected; then the client "
                    "gets a dtls-failed error and is disconnected")
    add_option(parser, "--offer-timeout", dest="offer_timeout_s", type=float, default=d.offer_timeout_s,
               help="seconds a socket has, from connecting, to join and send its first offer")
    add_option(parser, "--ws-rate", type=float, default=d.ws_rate,
               help="inbound signalling messages per second per socket (sustained)")
    add_option(parser, "--ws-burst", type=int, default=d.ws_burst,
               help="inbound signalling messages a socket may send at once above the rate")
    add_option(parser, "--ws-send-queue", type=int, default=d.ws_send_queue,
               help="messages that may wait for one socket; a client further behind is dropped")
    add_option(parser, "--ws-send-timeout", dest="ws_send_timeout_s", type=float,
               default=d.ws_send_timeout_s,
               help="seconds one message may take to reach a client before it is dropped")


class ConnectionGate:
    """Counts open connections in all and per address; refuses beyond the caps."""

    def __init__(self, *, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._per_address: Counter[str] = Counter()
        self.open_count = 0

    def refusal(self, address: str) -> Optional[str]:
        """``"sockets"`` or ``"sockets_per_ip"`` when a new connection must be refused, else None."""
        if self.open_count >= self.max_total:
            return "sockets"
        if self._per_address[address] >= self.max_per_address:
            return "sockets_per_ip"
        return None

    def open(self, address: str) -> None:
        self._per_address[address] += 1
        self.open_count += 1

    def close(self, address: str) -> None:
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]
        self.open_count -= 1

    def addresses(self) -> int:
        return len(self._per_address)


class Verdict(enum.Enum):
    PROCESS = "process"   # within the rate
    WARN = "warn"         # first message over the rate in this streak: refuse it and say so
    DROP = "drop"         # over the rate again: refuse it silently
    CLOSE = "close"       # kept flooding after the warning: close the socket


class RateLimiter:
    """Token bucket: ``rate`` tokens per second, at most ``burst`` stored; one per message.

    A message without a token is refused. The first refusal of a streak is a ``WARN`` (the
    session replies ``rate-limited``), later ones are ``DROP`` (no reply: a flood must not be
    answered with a flood), and the ``close_after``-th refusal of one streak is ``CLOSE``.
    A message that gets a token ends the streak.
    """

    def __init__(self, *, rate: float, burst: int, close_after: Optional[int] = None,
                 now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.close_after = close_after if close_after is not None else burst
        self._tokens = float(burst)
        self._last = now
        self._streak = 0
        self.refused = 0

    def check(self, *, now: float) -> Verdict:
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0 - 1e-9:   # (exactly at the rate, float sums land just below 1)
            self._tokens = max(0.0, self._tokens - 1.0)
            self._streak = 0
            return Verdict.PROCESS
        self._streak += 1
        self.refused += 1
        if self._streak >= self.close_after:
            return Verdict.CLOSE
        return Verdict.WARN if self._streak == 1 else Verdict.DROP
