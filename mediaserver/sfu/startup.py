"""Stop signals from the first line of a server's life: SIGINT/SIGTERM during start-up abort it.

Start-up takes seconds (imports, the enhancer's model, the local recognisers' weights and
warm-up decode, the media workers of ``--workers N``). The stop handlers used to be installed
only once the site listened: a SIGTERM before that ended the process by the default action
(exit -15, nothing undone, a front's workers SIGKILLed), and a SIGINT relied on asyncio's own
Ctrl-C handling. :class:`StopSignals` is installed first thing in the loop;
:meth:`StopSignals.guard` runs the start-up as a task and cancels it when a signal comes in,
so the caller undoes what was started and exits as after a normal stop.

:func:`remember_stop_signals` covers the part before the event loop exists (imports, flag
checks): there a signal only records itself, and :class:`StopSignals` (or the caller, through
:func:`stop_requested`) acts on it. Raising ``KeyboardInterrupt`` there instead (Python's own
SIGINT handler) can lose the signal: an interrupt that lands in a library's import inside a
bare ``except:`` is swallowed and the server starts anyway (seen once in 16 early signals).
When the process is ``mediaserver`` itself (``exit_at_once``), nothing started before the
loop needs undoing, so a signal there ends the process at once (exit 0) instead of waiting
1-3 s for the remaining imports and checks (``benchmarks/stop.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Awaitable, Optional, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


_pending: list[int] = []   # the signals seen before the loop's handlers (process-wide, as signals)


def _remember(sig: int, frame: object) -> None:
    _pending.append(sig)


def _exit_at_once(sig: int, frame: object) -> None:
    text = f"{signal.Signals(sig).name} before start-up: not starting"
    try:   # (a signal handler: a log line that cannot be written must not stop the exit)
        if logging.getLogger().handlers:
            logger.info("%s", text)
            logging.shutdown()
        else:   # serve's imports come before the logging set-up: the same line, by hand
            os.write(2, f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO {__name__}: {text}\n".encode())
    except Exception:
        pass
    os._exit(0)


def remember_stop_signals(*, exit_at_once: bool = False) -> None:
    """From now until :class:`StopSignals` takes over, SIGINT/SIGTERM only record themselves
    (:func:`stop_requested`), or with ``exit_at_once`` end the process at once, exit 0: for
    the ``mediaserver`` process itself, where nothing before the loop needs undoing (not for
    a caller that runs a command in its own process). Calling it again keeps the handlers in
    force. Main thread only; call before anything slow (imports) starts."""
    if signal.getsignal(signal.SIGTERM) in (_remember, _exit_at_once):
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, _exit_at_once if exit_at_once else _remember)


def stop_requested() -> Optional[int]:
    """The first stop signal recorded by :func:`remember_stop_signals`, or None."""
    return _pending[0] if _pending else None


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
        early = stop_requested()
        if early is not None:   # came before these handlers: act on it now
            self._received(early)

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
