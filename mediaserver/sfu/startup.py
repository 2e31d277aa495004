"""Stop signals from the first line of a server's life: SIGINT/SIGTERM during start-up abort it.

Start-up takes seconds (the enhancer's model, the local recognisers' weights and warm-up
decode, the media workers of ``--workers N``). The stop handlers used to be installed only
once the site listened: a SIGTERM before that killed the process with the default action (no
clean-up, exit -15, the workers of a front left behind) and a SIGINT depended on asyncio's
own Ctrl-C handling, which cancels whatever the start-up awaits. :class:`StopSignals` is
installed first; :meth:`StopSignals.guard` runs the start-up as a task and cancels it when a
signal comes in, so the caller undoes what was started and exits as after a normal stop.

:func:`interrupt_on_sigterm` covers the synchronous part before the event loop exists (flag
checks, patches): SIGTERM raises ``KeyboardInterrupt`` there, as Ctrl-C does.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Awaitable, Optional, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupt_on_sigterm() -> None:
    """SIGTERM raises ``KeyboardInterrupt`` (as SIGINT does) until the loop's handlers take over;
    call from the main thread before anything slow starts."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


class StopSignals:
    """Records the first SIGINT/SIGTERM on ``loop`` and sets :attr:`event`.

    Installed at once by the constructor (``loop.add_signal_handler``: the handler runs on the
    loop, so a blocking start-up step only delays noticing the signal, never loses it).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.event = asyncio.Event()
        self.signal: Optional[int] = None
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._received, sig)

    def _received(self, sig: int) -> None:
        if self.signal is None:
            self.signal = sig
            logger.info("%s received", signal.Signals(sig).name)
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()

    async def guard(self, startup: Awaitable[T]) -> Optional[T]:
        """Run ``startup`` until it returns or a stop signal comes in.

        Returns its result, or None after a signal (logged): the start-up task is then
        cancelled and awaited, and the caller undoes whatever it had started. An exception
        of the start-up itself propagates.
        """
        task = asyncio.ensure_future(startup)
        stopped = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not task.done() and not self.event.is_set():   # we were cancelled ourselves
                task.cancel()
        if not self.event.is_set():
            return task.result()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:   # a start-up step that failed while being cancelled
            logger.debug("start-up ended with %r after the stop signal", exc)
        assert self.signal is not None
        logger.info("%s during start-up: stopping before the server listens",
                    signal.Signals(self.signal).name)
        return None
