"""Graceful stop of ``mediaserver serve`` on SIGTERM / SIGINT, bounded by ``--drain-s``.

Order, all within ``drain_s`` seconds of the signal:

1. new ``/ws`` upgrades are refused (HTTP 503 with ``Retry-After``), so a client that
   reconnects at once is not admitted by the server that is going away;
2. every connected socket gets ``{"type": "server-shutdown", "retry_after_ms": N,
   "message": ...}`` and is then closed (code 1012, "service restart"); once the client has
   answered the close (it has read the event then; through a ``--workers`` front too,
   ``sfu/wsclose.py``) its session ends, which removes the participant and closes its peer
   connection;
3. the aiohttp runner is cleaned up (listening socket, ``on_shutdown``: the media clock and
   the enhancer stage); whatever has not finished by the deadline is cut off.

Sockets get half the budget to close and the cleanup runs until 80 % of it, which leaves
the interpreter's own teardown (about 1-2 s on a loaded machine) inside ``drain_s``. A
backstop timer ends the process at ``drain_s`` whatever still runs (a worker thread that
does not join, an executor that does not shut down).

A second signal during the drain exits at once. Clients (the page, ``mediaserver client``)
wait ``retry_after_ms`` (plus jitter) and rejoin with their reconnect ticket.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
from typing import Any, Optional, Protocol

from ..config import add_option

logger = logging.getLogger(__name__)

DEFAULT_DRAIN_S = 5.0
DEFAULT_RETRY_HINT_MS = 1000
CLOSE_SERVICE_RESTART = 1012   # RFC 6455 registry: "Service Restart"


def add_drain_options(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--drain-s", type=float, default=DEFAULT_DRAIN_S,
               help="on SIGTERM/SIGINT: seconds to tell every participant (server-shutdown), "
                    "close their calls and exit (Docker's grace period is 10 s)")
    add_option(parser, "--retry-hint-ms", type=int, default=DEFAULT_RETRY_HINT_MS,
               help="the server-shutdown event's retry_after_ms: how long clients wait before "
                    "they reconnect (about the time a restart takes)")


def validate_drain_args(args: argparse.Namespace) -> Optional[str]:
    if not 0.5 <= args.drain_s <= 600:
        return "--drain-s must be within 0.5..600 seconds"
    if not 0 <= args.retry_hint_ms <= 600_000:
        return "--retry-hint-ms must be within 0..600000"
    return None


def shutdown_message(retry_after_ms: int) -> dict[str, Any]:
    return {"type": "server-shutdown", "retry_after_ms": int(retry_after_ms),
            "message": "the server is stopping or restarting; reconnect after retry_after_ms"}


class Drain:
    """Runs the stop sequence once; ``ctx`` is the ``SfuContext``, ``runner`` the AppRunner.

    :param drain_s: the whole budget, seconds from the signal to the end of ``run``.
    :param retry_after_ms: the hint sent to clients.
    """

    def __init__(self, ctx: Any, runner: Any, *, drain_s: float, retry_after_ms: int) -> None:
        self.ctx = ctx
        self.runner = runner
        self.drain_s = drain_s
        self.retry_after_ms = retry_after_ms
        self.drained = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sessions = list(self.ctx.sessions)
        self.ctx.draining = True
        logger.info("shutting down: telling %d connected clients (retry after %d ms), "
                    "at most %g s", len(sessions), self.retry_after_ms, self.drain_s)
        for session in sessions:
            session.shutdown(self.retry_after_ms, CLOSE_SERVICE_RESTART)
        # sessions end when their socket closes: participant removed, peer connection closed
        waiting = [t for t in (getattr(s, "task", None) for s in sessions) if t is not None]
        if waiting:
            done, pending = await asyncio.wait(waiting, timeout=max(0.1, 0.5 * self.drain_s))
            if pending:
                logger.warning("%d sessions did not close in time; their connections are cut",
                               len(pending))
        left = start + 0.8 * self.drain_s - loop.time()
        try:
            await asyncio.wait_for(self.runner.cleanup(), timeout=max(0.1, left))
        except asyncio.TimeoutError:
            logger.warning("cleanup overran --drain-s %g s; exiting anyway", self.drain_s)
        self.drained = True
        logger.info("drained in %.2f s", loop.time() - start)


def exit_now_on_second_signal(loop: asyncio.AbstractEventLoop) -> None:
    """From now on SIGTERM/SIGINT end the process at once (someone wants it gone)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: os._exit(1))


class Drained(Protocol):
    drained: bool   # the stop sequence completed (a :class:`Drain`, or a start-up undone)


def backstop(seconds: float, drain: Drained) -> threading.Timer:
    """Exit the process if it is still alive ``seconds`` from now (a thread that will not join,
    an executor that does not shut down): the drain budget is a promise to the orchestrator.
    The exit status is 0 when the drain itself completed, else 1."""

    def fire() -> None:
        logger.error("still running %g s after the stop signal: exiting now", seconds)
        logging.shutdown()
        os._exit(0 if drain.drained else 1)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer
