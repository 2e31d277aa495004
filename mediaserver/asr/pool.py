"""A pool of recogniser workers shared by all talkers: fair, bounded, self-healing.

:class:`FairQueue` (sans-I/O) holds each talker's pending jobs: finals in order, bounded
per talker (the oldest is dropped and counted when a talker's queue is full; early finals, queued
with them, are dropped uncounted), and at most
one partial (a newer one supersedes it). It hands out finals before partials, round-robin
over talkers, and never two jobs of one talker at once (a final may depend on the previous
final's carry-over, and one talker must not hold every worker).

:class:`RecogniserPool` runs ``workers`` asyncio tasks, each with its own thread and its own
recogniser from ``factory``. A recogniser that raises is treated as dead: the worker is
replaced (new thread, new recogniser, counted) and the job tried once more.

Each decode runs with an :class:`~.abort.AbortSignal`: :meth:`RecogniserPool.abort` stops
running decodes the caller no longer wants (stale ones), :meth:`RecogniserPool.preempt` the
newest running partial when a final must not wait for it (the sink asks only with
``StreamConfig.preempt_partials``, off by default); an engine that stops raises
``DecodeAborted``, which is no failure (no replacement, ``on_aborted`` instead of a result).

Recogniser threads run at a lower CPU priority (``nice``, default +10 over the server): a
caption may come late, a media clock tick may not. Measured in the soak (2 cores, Whisper
tiny.en, 2 workers at the server's priority): every decode made the 20 ms media clock drop
5-17 frames per stream.

A recogniser is built (and warmed up) in a daemon thread of its own, which a start-up cut
short by a stop signal abandons: loading Moonshine takes 3-5 s in calls that cannot be
interrupted (onnxruntime optimising the decoder graph), and an executor thread would hold
the process's exit until it finished (a media worker then outlived its 4.5 s stop allowance).
:func:`abandoned_loads` counts those still running; :func:`exit_leaving_loads` ends the
process without waiting for them (a normal interpreter exit would also abort: onnxruntime's
globals are destroyed under the running load, SIGABRT).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import sys
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NoReturn, Optional, Protocol

import numpy as np

from ..tasks import cancel_and_wait
from . import metrics
from .abort import AbortSignal, DecodeAborted
from .streaming import DecodeJob, Word

logger = logging.getLogger(__name__)

Key = tuple[str, str]


class WordRecogniser(Protocol):
    def recognise(self, pcm: np.ndarray, *, prompt: str = "", word_times: bool = False,
                  fallback: bool = True, prefix: str = "", draft: str = "",
                  abort: Optional[AbortSignal] = None) -> list[Word]:
        """``pcm``: int16 or float32 [T] at 16 kHz; ``prefix``: words the result may be forced
        to start with, ``draft``: words it probably starts with, which an engine may check at
        once (one that cannot ignores both). ``abort``: raise ``DecodeAborted`` once it is
        requested, as soon as the engine can. Raises on engine failure."""
        ...


class FairQueue:
    """Pending decode jobs of all talkers; see the module docstring for the policy."""

    def __init__(self, *, finals_per_talker: int = 4) -> None:
        if finals_per_talker < 1:
            raise ValueError("finals_per_talker must be >= 1")
        self.finals_per_talker = finals_per_talker
        self._finals: OrderedDict[Key, deque[DecodeJob]] = OrderedDict()
        self._partials: OrderedDict[Key, DecodeJob] = OrderedDict()
        self._busy: set[Key] = set()
        self.dropped_finals = 0
        self.superseded_partials = 0

    def put_final(self, job: DecodeJob) -> Optional[DecodeJob]:
        """Queue a final; returns the talker's oldest final if it had to be dropped."""
        q = self._finals.setdefault(job.key, deque())
        dropped = None
        if len(q) >= self.finals_per_talker:
            dropped = q.popleft()
            if not dropped.early:     # an early final's segment is still decoded
                self.dropped_finals += 1
        q.append(job)
        return dropped

    def put_partial(self, job: DecodeJob) -> Optional[DecodeJob]:
        """Queue a partial; returns the older partial of that talker it superseded."""
        old = self._partials.pop(job.key, None)
        if old is not None:
            self.superseded_partials += 1
        self._partials[job.key] = job
        return old

    def drop_partial(self, key: Key) -> Optional[DecodeJob]:
        return self._partials.pop(key, None)

    def has_finals(self, key: Key) -> bool:
        """Whether finals of ``key`` wait in the queue (one being decoded does not count)."""
        return bool(self._finals.get(key))

    def pop(self) -> Optional[DecodeJob]:
        """The next job: finals first, round-robin over idle talkers, then partials."""
        for key in list(self._finals):
            if key in self._busy:
                continue
            q = self._finals.pop(key)      # re-inserted at the end: round-robin
            job = q.popleft()
            if q:
                self._finals[key] = q
            self._busy.add(key)
            return job
        for key in list(self._partials):
            if key in self._busy:
                continue
            job = self._partials.pop(key)
            self._busy.add(key)
            return job
        return None

    def done(self, key: Key) -> None:
        """The job of ``key`` that :meth:`pop` handed out has finished."""
        self._busy.discard(key)

    @property
    def depth(self) -> int:
        return sum(len(q) for q in self._finals.values()) + len(self._partials)

    @property
    def idle(self) -> bool:
        return not self._busy and self.depth == 0


Result = Callable[[DecodeJob, Optional[list[Word]]], None]


def decode(recogniser: WordRecogniser, job: DecodeJob,
           abort: Optional[AbortSignal] = None) -> list[Word]:
    """Run ``job`` on ``recogniser`` (a partial passes its stable prefix, finals never; both
    pass the talker's newest hypothesis as a draft when there is one; ``abort`` when given)."""
    extra = {k: v for k, v in (("prefix", job.prefix), ("draft", job.draft), ("abort", abort)) if v}
    return recogniser.recognise(job.pcm, prompt=job.prompt, word_times=job.word_times,
                                fallback=job.final, **extra)


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux: per thread; threads it
    starts afterwards inherit it, so a recogniser built here runs all its compute threads
    there). A platform without per-thread priorities leaves it unchanged (logged)."""
    if nice <= 0:
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError) as exc:   # not Linux, or a sandbox that forbids it
        logger.warning("could not lower the ASR worker's CPU priority: %s", exc)


_abandoned: set[threading.Thread] = set()   # loads whose start-up was cancelled


def abandoned_loads() -> int:
    """Recogniser loads still running although the start-up that wanted them was cancelled."""
    _abandoned.difference_update([t for t in _abandoned if not t.is_alive()])
    return len(_abandoned)


def exit_leaving_loads(code: int) -> NoReturn:
    """End the process with ``code`` now, as a normal exit would (``atexit`` handlers: logging
    flushed, temporary folders removed) but without waiting for abandoned loads or tearing down
    the interpreter under them."""
    logger.info("exiting without waiting for %d recogniser load(s) still running", abandoned_loads())
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # closed or broken pipe: nothing more to say
            pass
    os._exit(code)


async def build_abandonable(build: Callable[[], WordRecogniser], name: str) -> WordRecogniser:
    """``build()`` in a new daemon thread; cancelling the caller abandons the thread (counted
    by :func:`abandoned_loads`; what it builds afterwards is dropped)."""
    done: concurrent.futures.Future[WordRecogniser] = concurrent.futures.Future()

    def run() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(build())
        except BaseException as exc:  # noqa: BLE001  (handed to the awaiting task)
            done.set_exception(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    logger.info("%s: loading the recogniser", name)
    try:
        return await asyncio.wrap_future(done)
    except asyncio.CancelledError:
        if thread.is_alive():
            _abandoned.add(thread)
        raise


class _Worker:
    """One decode thread (at ``nice``) and the recogniser it runs."""

    def __init__(self, index: int, generation: int, nice: int = 0) -> None:
        self.index = index
        self.name = f"asr-worker{index}.{generation}"
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name,
                                           initializer=lower_thread_priority, initargs=(nice,))
        self.recogniser: Optional[WordRecogniser] = None


class RecogniserPool:
    """Runs jobs from a :class:`FairQueue` on ``workers`` recognisers; results via ``on_result``.

    ``prepare(job)`` is called when a job is handed to a worker (a final picks up its carry
    there, a partial the audio up to now); None skips the job. ``on_result(job, words)`` gets None when the job failed even on a fresh worker.
    ``nice``: how much lower than the server's the workers' CPU priority is (0..19).
    ``on_aborted(job)``: the decode of ``job`` stopped on an abort request (no result).
    """

    def __init__(self, factory: Callable[[], WordRecogniser], *, workers: int, queue: FairQueue,
                 on_result: Result, prepare: Callable[[DecodeJob], Optional[DecodeJob]] = lambda j: j,
                 nice: int = 10,
                 on_aborted: Callable[[DecodeJob], None] = lambda j: None) -> None:
        if workers < 1:
            raise ValueError("the recogniser pool needs at least one worker")
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be 0..19, got {nice}")
        self.nice = nice
        self._factory = factory
        self._queue = queue
        self._on_result = on_result
        self._prepare = prepare
        self._on_aborted = on_aborted
        # worker index -> (job being decoded, its abort signal, order it started in)
        self._running: dict[int, tuple[DecodeJob, AbortSignal, int]] = {}
        self._started = 0
        self.aborted = 0          # decodes that stopped on an abort request before their end
        self._workers = [_Worker(i, 0, nice) for i in range(workers)]
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.restarts = 0
        self.failed = 0
        self.in_flight = 0

    @property
    def size(self) -> int:
        return len(self._workers)

    async def start(self) -> None:
        await asyncio.gather(*(self._load(w) for w in self._workers))
        self._tasks = [asyncio.create_task(self._run(i), name=f"asr-worker-{i}")
                       for i in range(len(self._workers))]
        metrics.WORKERS.set(len(self._workers))

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        for w in self._workers:
            w.executor.shutdown(wait=False, cancel_futures=True)
        metrics.WORKERS.set(0)

    def wake(self) -> None:
        """New work was queued."""
        self._idle.clear()
        self._wake.set()

    @property
    def free_workers(self) -> int:
        """Workers not handling a job now."""
        return len(self._workers) - self.in_flight

    def decoding(self, key: Key) -> Optional[DecodeJob]:
        """The job of talker ``key`` being decoded now, if any."""
        for job, _, _ in self._running.values():
            if job.key == key:
                return job
        return None

    def abort(self, unwanted: Callable[[DecodeJob], bool]) -> list[DecodeJob]:
        """Request the abort of every running decode whose job is ``unwanted`` (not already
        requested); returns their jobs. The decode stops as soon as its engine can
        (``on_aborted``), or returns its result as usual if the engine cannot stop."""
        hit = []
        for job, signal, _ in list(self._running.values()):
            if not signal.requested and unwanted(job):
                signal.request()
                hit.append(job)
        return hit

    def preempt(self) -> Optional[DecodeJob]:
        """Abort the running partial that started last (the least decoding lost), when no
        worker is free and none is being aborted already: a final waits. Only an engine that
        can stop mid-decode (``abortable``) is asked: Whisper's partial would run on anyway
        and its result is still wanted. Returns the job."""
        if self.free_workers > 0 or any(s.requested for _, s, _ in self._running.values()):
            return None
        partials = [(order, job, signal) for index, (job, signal, order) in self._running.items()
                    if not job.final and getattr(self._workers[index].recogniser, "abortable", False)]
        if not partials:
            return None
        _, job, signal = max(partials, key=lambda p: p[0])
        signal.request()
        return job

    async def drain(self) -> None:
        """Wait until nothing is queued or running."""
        while not (self._queue.idle and self.in_flight == 0):
            self._idle.clear()
            await self._idle.wait()

    async def _load(self, worker: _Worker) -> None:
        def build() -> WordRecogniser:
            # threads the engine starts here (onnxruntime's, CTranslate2's) inherit the priority
            lower_thread_priority(self.nice)
            recogniser = self._factory()
            # the engine's first decode is slow (lazy init): pay it now, not on a caption
            recogniser.recognise(np.zeros(16000, np.float32), fallback=False)
            return recogniser

        worker.recogniser = await build_abandonable(build, f"{worker.name}-load")

    async def _replace(self, index: int) -> _Worker:
        old = self._workers[index]
        old.executor.shutdown(wait=False, cancel_futures=True)
        self.restarts += 1
        metrics.WORKER_RESTARTS.inc()
        new = _Worker(index, self.restarts, self.nice)
        await self._load(new)
        self._workers[index] = new
        logger.warning("ASR worker %d failed and was replaced (%d replacements so far)",
                       index, self.restarts)
        return new

    async def _run(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = self._queue.pop()
            metrics.QUEUE_DEPTH.labels("local").set(self._queue.depth)
            if job is None:
                if self.in_flight == 0 and self._queue.idle:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            self.in_flight += 1
            words: Optional[list[Word]] = None
            try:
                ready = self._prepare(job)
                if ready is None:
                    continue
                job = ready
                aborted = False
                signal = AbortSignal()      # one per job: a request holds for its retry too
                self._started += 1
                self._running[index] = (job, signal, self._started)
                for attempt in (0, 1):
                    worker = self._workers[index]
                    t0 = time.perf_counter()
                    try:
                        words = await loop.run_in_executor(
                            worker.executor, lambda: decode(worker.recogniser, job, signal))  # type: ignore[arg-type]
                        metrics.RECOGNISE_SECONDS.observe(time.perf_counter() - t0)
                        break
                    except asyncio.CancelledError:
                        raise
                    except DecodeAborted:
                        aborted = True
                        self.aborted += 1
                        break
                    except Exception as exc:
                        metrics.ERRORS.labels("local").inc()
                        logger.warning("ASR worker %d: recognition failed: %s", index, exc)
                        try:
                            await self._replace(index)
                        except Exception as load_exc:  # cannot even load: keep the old one
                            logger.error("ASR worker %d could not be replaced: %s", index, load_exc)
                            break
                self._running.pop(index, None)
                if aborted:
                    try:
                        self._on_aborted(job)
                    except Exception as exc:
                        logger.warning("ASR abort handling failed: %s", exc)
                    continue
                if words is None:
                    self.failed += 1
                try:
                    self._on_result(job, words)
                except Exception as exc:
                    logger.warning("ASR result handling failed: %s", exc)
            finally:
                self._running.pop(index, None)
                self.in_flight -= 1
                self._queue.done(job.key)
                self._wake.set()     # the talker's next job may run now
