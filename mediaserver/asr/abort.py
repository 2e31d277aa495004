"""Stopping a decode in flight that is no longer wanted, from another thread.

A decode holds its recogniser worker until it returns. One that became stale while it ran
(a partial whose segment closed, an early final whose pause ended in speech) or that is
worth less than a final waiting for the worker (a partial) should give the worker back at
once: the pool hands each decode an :class:`AbortSignal` and the event loop calls
:meth:`AbortSignal.request`. An engine that can stop checks :meth:`AbortSignal.check`
between its steps (Moonshine: before the encoder and before each decoder step) and attaches
each onnxruntime ``RunOptions`` it runs with (:meth:`AbortSignal.attach`): a request sets
their ``terminate`` flag, which onnxruntime checks between graph nodes, so a long encoder
run stops too (measured on the Moonshine encoder over 20 s of audio, onnxruntime 1.32: the
run raised 2-12 ms after the request). The engine then raises :class:`DecodeAborted`.

An engine that cannot stop inside a call (faster-whisper: CTranslate2's encode and generate
are one call each) checks only before it starts and between the windows it decodes; its
result then arrives as usual and the streaming state discards it if it is stale.

No asyncio here: ``request`` may be called from any thread, ``check`` from the decoding one.
"""

from __future__ import annotations

import threading
from typing import Any


class DecodeAborted(Exception):
    """The decode stopped because its :class:`AbortSignal` was requested (not a failure:
    the recogniser is fine and the worker is not replaced)."""


class AbortSignal:
    """One decode's stop request (see the module docstring)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._runs: list[Any] = []

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        """Ask the decode to stop: its next :meth:`check` raises, attached runs terminate."""
        with self._lock:
            self._event.set()
            for run_options in self._runs:
                run_options.terminate = True

    def attach(self, run_options: Any) -> None:
        """Terminate onnxruntime ``run_options`` (``RunOptions``) on a request, now if it came
        already."""
        with self._lock:
            self._runs.append(run_options)
            if self._event.is_set():
                run_options.terminate = True

    def check(self) -> None:
        """Raise :class:`DecodeAborted` when a stop was requested (engines call it between steps)."""
        if self._event.is_set():
            raise DecodeAborted("decode aborted: its result is no longer wanted")
