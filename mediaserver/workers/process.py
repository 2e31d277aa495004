"""One media worker process, kept running by the front (``mediaserver serve --workers N``).

A worker is an ordinary single-process ``mediaserver serve`` on 127.0.0.1 and a free port,
with its own event loop, media clock, enhancer and aiortc peer connections. It trusts the
client address and ``Origin`` the front forwards only with the front's token
(``MEDIASERVER_FRONT_TOKEN``, in its environment, never on its command line). The front
reads its port from the line it prints when listening.

:class:`WorkerProcess` starts it, notices its exit (a crash, ``kill -9``) at once through the
process handle, calls ``on_exit`` so the front drops its rooms, and starts it again after a
backoff (0.5 s doubling to 10 s; reset after a minute of uptime).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass
from typing import Callable, Optional

from ..logsetup import WORKER_INDEX_ENV
from ..sfu.websec import FRONT_TOKEN_ENV
from ..tasks import cancel_and_wait
from .lifeline import FRONT_PID_ENV

logger = logging.getLogger(__name__)

_LISTENING = re.compile(rb"mediaserver listening: open http://[^:/]+:(\d+)/")
START_TIMEOUT_S = 120.0   # model load and imports on a busy 2-core machine
_BACKOFF_MIN_S, _BACKOFF_MAX_S, _STABLE_S = 0.5, 10.0, 60.0


@dataclass
class WorkerState:
    """What ``/healthz`` shows of a worker besides its own report."""

    index: int
    pid: Optional[int] = None
    port: Optional[int] = None
    alive: bool = False
    starts: int = 0
    crashes: int = 0
    last_exit: Optional[int] = None   # return code (negative: the signal that killed it)


class WorkerProcess:
    """Start, watch and restart one worker; ``argv``: its ``mediaserver`` command line.

    ``on_up(index, port)`` runs when it listens, ``on_exit(index, returncode)`` when it dies.
    """

    def __init__(self, index: int, argv: list[str], *, token: str,
                 on_up: Callable[[int, int], None], on_exit: Callable[[int, int], None],
                 env: Optional[dict[str, str]] = None) -> None:
        self.state = WorkerState(index)
        self._argv = argv
        self._token = token
        # more environment (the shared enhancer's socket, the front's cluster API), read at each start
        self.env: dict[str, str] = dict(env or {})
        self._on_up = on_up
        self._on_exit = on_exit
        self._proc: Optional[asyncio.subprocess.Process] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._stopping = False
        self.ready = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"worker-{self.state.index}")

    async def _spawn(self) -> int:
        """Start the process and return its port; raises RuntimeError when it does not listen."""
        env = dict(os.environ)
        env[FRONT_TOKEN_ENV] = self._token
        env[WORKER_INDEX_ENV] = str(self.state.index)
        env[FRONT_PID_ENV] = str(os.getpid())   # it ends with us, however we end (workers/lifeline.py)
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mediaserver", *self._argv,
            stdout=asyncio.subprocess.PIPE, stderr=None, env=env,
            start_new_session=True)   # a Ctrl-C at the terminal reaches the front only
        self._proc = proc
        self.state.pid, self.state.starts = proc.pid, self.state.starts + 1
        assert proc.stdout is not None
        try:
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
                if not line:
                    raise RuntimeError(f"worker {self.state.index} exited before listening "
                                       f"(code {await proc.wait()})")
                match = _LISTENING.search(line)
                if match:
                    return int(match.group(1))
        except asyncio.TimeoutError:
            proc.kill()
            raise RuntimeError(f"worker {self.state.index} did not listen within "
                               f"{START_TIMEOUT_S:g} s") from None

    async def _drain_stdout(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while await proc.stdout.readline():
            pass   # the worker prints little after its listening line; keep the pipe empty

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = _BACKOFF_MIN_S
        while not self._stopping:
            started = loop.time()
            try:
                port = await self._spawn()
            except (RuntimeError, OSError) as exc:
                if self._stopping:   # stopped while it started (a stop signal to the front)
                    logger.info("media worker %d stopped during its start-up (code %s)",
                                self.state.index, self._proc.returncode if self._proc else None)
                else:
                    logger.error("%s", exc)
                code = self._proc.returncode if self._proc is not None else None
                self._exited(code if code is not None else -1)
            else:
                assert self._proc is not None
                self.state.port, self.state.alive = port, True
                logger.info("media worker %d (pid %d) listening on 127.0.0.1:%d",
                            self.state.index, self._proc.pid, port)
                self._on_up(self.state.index, port)
                self.ready.set()
                drain = loop.create_task(self._drain_stdout(self._proc))
                code = await self._proc.wait()
                await drain
                self._exited(code)
            if self._stopping:
                break
            if loop.time() - started > _STABLE_S:
                backoff = _BACKOFF_MIN_S
            logger.warning("media worker %d: restarting in %.1f s", self.state.index, backoff)
            await asyncio.sleep(backoff)
            backoff = min(_BACKOFF_MAX_S, backoff * 2)

    def _exited(self, code: int) -> None:
        was_alive = self.state.alive
        self.state.alive, self.state.port, self.state.last_exit = False, None, code
        self.ready.clear()
        if not self._stopping:
            self.state.crashes += 1
            logger.error("media worker %d (pid %s) exited with %s: its rooms are lost",
                         self.state.index, self.state.pid,
                         f"signal {-code}" if code < 0 else f"code {code}")
        if was_alive or not self._stopping:
            self._on_exit(self.state.index, code)

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM (the worker drains its calls), SIGKILL after ``timeout_s``; awaits the watcher."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), timeout_s)
            except asyncio.TimeoutError:
                logger.warning("media worker %d did not stop within %.1f s: killed",
                               self.state.index, timeout_s)
                proc.kill()
                await proc.wait()
            except ProcessLookupError:
                pass
        await cancel_and_wait(self._task)
