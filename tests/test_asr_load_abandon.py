"""Issue 11: a stop while the recognisers load does not wait for the load.

Moonshine takes 3-5 s to load in calls that cannot be interrupted (onnxruntime optimising
its decoder graph). Built in the worker's executor thread, the load held the process's exit
until it finished: a media worker stopped during its start-up outlived its 4.5 s allowance
(``test_serve_startup``). The pool now builds each recogniser in a daemon thread that a
cancelled start-up abandons, and ``serve`` exits past such a load (``pool.exit_leaving_loads``).

Here a recogniser whose construction blocks until the test releases it stands in for the slow
load (the real engine's stop is ``test_serve_startup``'s); the deadlines only bound a hang.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from conftest import ROOT
from mediaserver.asr.pool import FairQueue, RecogniserPool, abandoned_loads
from mediaserver.asr.streaming import Word
from waiting import until


class Blocked:
    """A recogniser whose construction waits for ``release`` (set by the test)."""

    entered = threading.Event()
    release = threading.Event()

    def __init__(self) -> None:
        Blocked.entered.set()
        Blocked.release.wait()

    def recognise(self, pcm: np.ndarray, **_: object) -> list[Word]:
        return []


async def test_a_cancelled_start_returns_while_the_load_still_runs() -> None:
    Blocked.entered.clear()
    Blocked.release.clear()
    pool = RecogniserPool(Blocked, workers=1, queue=FairQueue(), on_result=lambda j, w: None)
    start = asyncio.ensure_future(pool.start())
    try:
        await asyncio.get_running_loop().run_in_executor(None, Blocked.entered.wait, 60)
        assert Blocked.entered.is_set(), "the recogniser was never built"
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start
        # the start is over while the build still blocks: nothing waited for it
        assert not Blocked.release.is_set()
        assert abandoned_loads() == 1
        await pool.stop()
    finally:
        Blocked.release.set()
    await until(lambda: abandoned_loads() == 0, timeout=60, what="the abandoned load to end")


CHILD = textwrap.dedent("""
    import asyncio, atexit, threading
    from mediaserver.asr.pool import FairQueue, RecogniserPool, abandoned_loads, exit_leaving_loads

    entered = threading.Event()

    def never_loads():
        entered.set()
        threading.Event().wait()      # a load that never ends

    async def main():
        pool = RecogniserPool(never_loads, workers=2, queue=FairQueue(), on_result=lambda j, w: None)
        start = asyncio.ensure_future(pool.start())
        await asyncio.get_running_loop().run_in_executor(None, entered.wait)
        start.cancel()                 # what a stop signal during start-up does
        try:
            await start
        except asyncio.CancelledError:
            pass
        await pool.stop()

    atexit.register(lambda: print("atexit ran", flush=True))
    asyncio.run(main())
    print("abandoned", abandoned_loads(), flush=True)
    if abandoned_loads():              # as serve does after its loop ended
        exit_leaving_loads(0)
""")


def test_a_process_stopped_while_loading_exits_without_waiting_for_the_load() -> None:
    """Without the daemon thread (or the exit past it) the child never exits: the load never
    ends. Its ``atexit`` handlers still run (logging flushed, temporary folders removed)."""
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, timeout=120)
    out = proc.stdout.decode()
    assert proc.returncode == 0, (out, proc.stderr.decode()[-3000:])
    assert "abandoned 2" in out and "atexit ran" in out, (out, proc.stderr.decode()[-3000:])
