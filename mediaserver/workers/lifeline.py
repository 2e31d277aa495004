"""A child process that ends with the process that started it (``serve --workers N``).

The front stops its media workers itself when it stops; a front that is killed (``kill -9``,
the OOM killer) or dies on an error it did not expect cannot. The worker asks Linux to send it
SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), from its first line, so it never outlives
the front: before, a worker that was still importing went on for its whole start-up (~10 s on
a busy machine) and only then noticed, polling ``getppid()`` once a second
(``sfu/server.py``'s ``_stop_when_front_dies``, kept for systems without ``prctl``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

FRONT_PID_ENV = "MEDIASERVER_FRONT_PID"   # the front's pid, in each worker's environment
_PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int, sig: int = signal.SIGTERM) -> bool:
    """Have ``sig`` sent to this process when its parent (the thread that forked it) dies, and
    send it now if ``parent`` is gone already (it died before this call). False where the
    system has no ``prctl`` (not Linux): the caller's own polling is all there is then."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:   # re-parented already: the signal would never come
        os.kill(os.getpid(), sig)
    return True
