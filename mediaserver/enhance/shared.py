"""One enhancer for the machine: the inference process that every media worker shares.

``python -m mediaserver.enhance.shared --socket PATH [--slots N] [--batch-window-ms MS] [--metrics-port P]
[stage flags]``
owns ONE :class:`~.stage.EnhancerStage` (built by :func:`~.stage.stage_from_args` from the same
flags as ``mediaserver serve``) and serves media workers on a Unix-domain socket. Audio moves
through the slot table in shared memory (:mod:`.shared_wire`); the socket carries only small
JSON control messages. A worker connects with :meth:`.shared_client.SharedStage.connect`.

Why a separate program (``subprocess``) and not a ``multiprocessing`` child or a thread of the
front: it starts from a clean interpreter (no fork after torch, aiohttp or CUDA initialised in
the parent), it is started the same way by the front, by tests and by hand, a crash of the
front or of a worker never takes it down, and its CPU/GPU threads are not the front's.

Batching: per 20 ms tick every worker sends one ``tick`` (its streams' slot frames, written
before). The first ``tick`` opens a batch; the batch closes as soon as every connected worker
that has open streams has sent its tick, or ``--batch-window-ms`` after the first one, whichever
is first. All items then go through ONE ``EnhancerStage.process`` call (two when some workers
marked their tick ``overloaded`` and others not: the flag is per call), outputs are written to
the slots and each worker gets ``done``. Workers whose media clocks tick in phase (start on the
same 20 ms grid of ``time.monotonic``) land in the same batch; out of phase, the window bounds
the wait and a late worker starts the next batch.

Messages (worker → inference; ``id`` is the worker's own stream id):

* ``open {id, enabled, atten, model, room}`` → ``opened {id, slot, model}`` or ``refused {id, error}``;
  without ``model`` the room's model (:meth:`.shared_admin.SharedAdmin.model_for`: an admin
  override, the canary's share, else the default)
* ``close {id}`` (no reply; the slot is free again once no batch still holds it)
* ``switch {id, model}`` (no reply; an unknown model is logged and ignored)
* ``load {req, spec}`` → ``loaded {req, model, loaded}`` or ``error {req, error}``
* ``tick {seq, over, items: [[id, kind], ...]}`` → ``done {seq, batch, step_ms, wait_ms, tele}``
  or ``failed {seq, error}``; ``tele``: ``{id: [active_model, quality snapshot]}`` for about one
  stream in 50 per tick (each stream about once a second); every 50th batch also ``sli``:
  ``{model: Counts fields}`` of the whole machine (``EnhancerStage.sli``, the canary's input).
* ``stats {req}`` → ``stats {req, ...}`` (:meth:`InferenceServer.stats`)
* ``admin {req, op, room, body}`` → ``admin {req, status, json | text}``: the model admin of
  ``--workers N``, relayed by the front (:mod:`.shared_admin`)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import mmap
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from ..logsetup import configure_logging
from ..tasks import cancel_and_wait
from .shared_process import USAGE_EXIT, USAGE_LINE
from .shared_wire import FRAME, FrameParser, ProtocolError, SlotPool, SlotTable, encode
from .model_control import router_from_args
from .shared_admin import SharedAdmin
from .stage import EnhancerStage, StreamHandle, add_stage_options, stage_from_args

logger = logging.getLogger("mediaserver.enhance.shared")   # (the same name when run with -m)

TELEMETRY_EVERY = 50  # ticks between two quality snapshots of a stream (1 s)


@dataclass
class _Stream:
    handle: StreamHandle
    slot: int
    room: Optional[str] = None   # the worker's room of the stream (the admin's room switch)


@dataclass
class _Tick:
    worker: "_Worker"
    seq: int
    overloaded: bool
    items: list[tuple[int, str]]


@dataclass(eq=False)
class _Worker:
    """One connected media worker (server side): its streams by the worker's own ids."""

    number: int
    transport: asyncio.Transport
    streams: dict[int, _Stream] = field(default_factory=dict)
    closed: bool = False

    def send(self, message: dict[str, Any]) -> None:
        if not self.closed:
            self.transport.write(encode(message))


class TickBatcher:
    """Which workers' ticks go into one batched call. Sans-I/O: the time is passed in (loop
    seconds) and :attr:`deadline` says when to ask again.

    A batch opens with its first tick and is :meth:`ready` once every worker that has open
    streams sent a tick, or at ``window_s`` after it opened, whichever is first. :meth:`take`
    hands out at most one tick per worker; a second tick of the same worker (its clock caught
    up on a missed period) opens the next batch.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.pending: list[_Tick] = []
        self.opened_at: Optional[float] = None

    @property
    def deadline(self) -> Optional[float]:
        """When the open batch closes without the missing workers (None: no batch is open)."""
        return None if self.opened_at is None else self.opened_at + self.window_s

    def add(self, tick: _Tick, now: float) -> None:
        self.pending.append(tick)
        if self.opened_at is None:
            self.opened_at = now

    def ready(self, now: float, expected: Iterable[_Worker]) -> bool:
        """The open batch can run: every ``expected`` worker sent its tick, or the window ended."""
        deadline = self.deadline
        if deadline is None:
            return False
        if now >= deadline:
            return True
        waiting = {t.worker for t in self.pending}
        return all(w in waiting for w in expected)

    def take(self, now: float) -> tuple[list[_Tick], float]:
        """The batch (one tick per worker, in arrival order) and how long it waited (s)."""
        batch: list[_Tick] = []
        rest: list[_Tick] = []
        seen: set[int] = set()
        for tick in self.pending:
            (rest if tick.worker.number in seen else batch).append(tick)
            seen.add(tick.worker.number)
        waited = now - (self.opened_at or now)
        self.pending = rest
        self.opened_at = now if rest else None
        return batch, waited


class _WorkerProtocol(asyncio.Protocol):
    """One worker's connection: each message is handled as soon as its bytes are in (a tick
    that completes a batch runs it in the same loop iteration; no reader task)."""

    def __init__(self, server: "InferenceServer", number: int) -> None:
        self._server = server
        self._number = number
        self._parser = FrameParser()
        self.worker: Optional[_Worker] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.worker = _Worker(self._number, transport)
        self._server._connected(self.worker)

    def data_received(self, data: bytes) -> None:
        worker = self.worker
        if worker is None or worker.closed:
            return
        try:
            for message in self._parser.feed(data):
                self._server._handle(worker, message)
        except (ProtocolError, KeyError, TypeError, ValueError) as exc:
            logger.error("worker connection %d: bad message (%r); closing it", worker.number, exc)
            self._server._drop(worker)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.worker is not None:
            self._server._drop(self.worker)


class InferenceServer:
    """The socket server and batcher around one stage (see the module docstring).

    Args:
        stage: the one real enhancer stage of the machine (owned by the caller).
        socket_path: Unix socket to listen on (an old socket file there is replaced).
        capacity: slots in shared memory (streams of all workers together), fixed for life.
        window_ms: most a batch waits for the other workers after its first tick.
    """

    def __init__(self, stage: EnhancerStage, *, socket_path: str, capacity: int = 512,
                 window_ms: float = 5.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.stage = stage
        self.socket_path = socket_path
        self.window_s = window_ms / 1000.0
        self.pool = SlotPool(capacity)
        self._fd = os.memfd_create("mediaserver-slots", os.MFD_CLOEXEC)
        self.shm_bytes = SlotTable.size(capacity)
        os.ftruncate(self._fd, self.shm_bytes)
        self.table = SlotTable(mmap.mmap(self._fd, self.shm_bytes), capacity)
        self._listener: Optional[socket.socket] = None
        self._workers: set[_Worker] = set()
        self._numbers = 0
        self.batcher = TickBatcher(self.window_s)
        self._window: Optional[asyncio.TimerHandle] = None   # the open batch's deadline
        self._tasks: set[asyncio.Task[None]] = set()
        self._accept_task: Optional[asyncio.Task[None]] = None
        self.batches = 0
        self.items = 0  # stream frames over all batches
        self.max_batch = 0
        self.last_batch = 0
        self.last_step_ms = 0.0
        self.last_wait_ms = 0.0
        self.admin: Optional[SharedAdmin] = None   # the model admin (set by the entry point)

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        path = Path(self.socket_path)
        if path.exists() or path.is_symlink():
            path.unlink()
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(self.socket_path)
        lsock.listen(64)
        lsock.setblocking(False)
        self._listener = lsock
        loop = asyncio.get_running_loop()
        self._accept_task = loop.create_task(self._accept_loop(), name="shared-enhancer-accept")

    async def stop(self) -> None:
        await cancel_and_wait(self._accept_task)
        if self._window is not None:
            self._window.cancel()
        for worker in list(self._workers):
            self._drop(worker)
        for task in list(self._tasks):
            await cancel_and_wait(task)
        if self._listener is not None:
            self._listener.close()
            Path(self.socket_path).unlink(missing_ok=True)
        self.table.close()
        os.close(self._fd)

    def stats(self) -> dict[str, Any]:
        """Batching and slot numbers (JSON-ready): batch size and step time of the last call."""
        return {
            "batches": self.batches, "items": self.items, "last_batch": self.last_batch,
            "max_batch": self.max_batch, "mean_batch": self.items / self.batches if self.batches else 0.0,
            "last_step_ms": self.last_step_ms, "last_wait_ms": self.last_wait_ms,
            "window_ms": 1000.0 * self.window_s, "workers": len(self._workers),
            "streams": sum(len(w.streams) for w in self._workers), "pending": len(self.batcher.pending),
            "slots": self.pool.capacity, "slots_in_use": self.pool.in_use,
            "slots_high_water": self.pool.high_water, "shm_bytes": self.shm_bytes, "pid": os.getpid(),
            "model_version": self.stage.model_version, "loaded": self.stage.loaded_models,
        }

    # ---- connections --------------------------------------------------------------------------
    async def _accept_loop(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            hello = encode({"t": "hello", "slots": self.pool.capacity, "bytes": self.shm_bytes,
                            "frame": FRAME, "latency": EnhancerStage.latency,
                            "model": self.stage.model_version, "loaded": self.stage.loaded_models,
                            "pid": os.getpid()})
            self._numbers += 1
            number = self._numbers
            try:  # a fresh socket's buffer takes this small message whole
                conn.setblocking(True)
                socket.send_fds(conn, [hello], [self._fd])
                conn.setblocking(False)
                await loop.connect_accepted_socket(lambda: _WorkerProtocol(self, number), sock=conn)
            except OSError as exc:
                logger.warning("worker connection failed during hello: %s", exc)
                conn.close()

    def _connected(self, worker: _Worker) -> None:
        self._workers.add(worker)
        logger.info("worker connection %d opened", worker.number)

    def _drop(self, worker: _Worker) -> None:
        if worker.closed:
            return
        worker.closed = True
        self._workers.discard(worker)
        for stream in worker.streams.values():
            self.stage.close(stream.handle)
            self.pool.give_back(stream.slot)
        logger.info("worker connection %d closed (%d streams released)", worker.number, len(worker.streams))
        worker.streams.clear()
        worker.transport.close()
        self._service()  # a batch waiting for this worker need not wait any more

    def _handle(self, worker: _Worker, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind == "tick":
            tick = _Tick(worker, int(msg["seq"]), bool(msg.get("over")),
                         [(int(i), str(k)) for i, k in msg["items"]])
            self.batcher.add(tick, asyncio.get_running_loop().time())
            self._service()
        elif kind == "open":
            self._open(worker, msg)
        elif kind == "close":
            stream = worker.streams.pop(int(msg["id"]), None)
            if stream is not None:
                self.stage.close(stream.handle)
                self.pool.give_back(stream.slot)
        elif kind == "switch":
            stream = worker.streams.get(int(msg["id"]))
            if stream is not None:
                try:
                    self.stage.switch(stream.handle, str(msg["model"]))
                except KeyError as exc:
                    logger.error("worker %d: switch refused: %s", worker.number, exc)
        elif kind == "load":
            task = asyncio.get_running_loop().create_task(self._load(worker, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "stats":
            worker.send({"t": "stats", "req": msg.get("req"), **self.stats()})
        elif kind == "admin":
            task = asyncio.get_running_loop().create_task(self._admin(worker, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            raise ProtocolError(f"unknown message type {kind!r}")

    def _open(self, worker: _Worker, msg: dict[str, Any]) -> None:
        sid = int(msg["id"])
        slot = self.pool.take()
        if slot is None:
            worker.send({"t": "refused", "id": sid, "error": f"all {self.pool.capacity} shared slots in use"})
            return
        room = msg.get("room") if isinstance(msg.get("room"), str) else None
        model = msg.get("model") or (self.admin.model_for(room) if self.admin is not None else None)
        try:
            handle = self.stage.open(enabled=bool(msg.get("enabled", True)),
                                     atten_lim_db=float(msg.get("atten", 100.0)), model=model)
        except (KeyError, ValueError) as exc:
            self.pool.give_back(slot)
            worker.send({"t": "refused", "id": sid, "error": str(exc)})
            return
        worker.streams[sid] = _Stream(handle, slot, room)
        worker.send({"t": "opened", "id": sid, "slot": slot, "model": handle.model})

    async def _load(self, worker: _Worker, msg: dict[str, Any]) -> None:
        try:
            name = await asyncio.to_thread(self.stage.load, msg.get("spec"))
        except Exception as exc:  # WeightsError, RegistryError: the reason goes back
            worker.send({"t": "error", "req": msg.get("req"), "error": f"{type(exc).__name__}: {exc}"})
            return
        worker.send({"t": "loaded", "req": msg.get("req"), "model": name, "loaded": self.stage.loaded_models})

    async def _admin(self, worker: _Worker, msg: dict[str, Any]) -> None:
        if self.admin is None:
            reply = {"t": "admin", "req": msg.get("req"), "status": 503,
                     "text": "this inference process serves no model admin"}
        else:
            reply = await self.admin.answer(msg)
        worker.send(reply)

    def room_handles(self, room: str) -> list[StreamHandle]:
        """The stage handles of ``room``'s open streams, over every connected worker."""
        return [s.handle for w in self._workers for s in w.streams.values() if s.room == room]

    # ---- batching -----------------------------------------------------------------------------
    def _service(self) -> None:
        """Run every batch the :class:`TickBatcher` says is ready now, then set the timer for
        the open one's window. Called when a tick arrives, when a worker leaves, and by that
        timer: no task waits between the socket and the stage call (a batch-loop task woken
        through an ``asyncio.Event`` and ``wait_for`` took 7.5 loop iterations per batch of
        2 workers, 2 this way; its CPU per tick did not move measurably:
        ``benchmarks/results/shared_enhancer_protocol_ab.json``)."""
        loop = asyncio.get_running_loop()
        while self.batcher.ready(loop.time(), (w for w in self._workers if w.streams)):
            batch, waited = self.batcher.take(loop.time())
            self.last_wait_ms = 1000.0 * waited
            self._run(batch)
        if self._window is not None:
            self._window.cancel()
        deadline = self.batcher.deadline
        self._window = loop.call_at(deadline, self._window_ended) if deadline is not None else None

    def _window_ended(self) -> None:
        self._window = None
        self._service()

    def _run(self, batch: list[_Tick]) -> None:
        """One batched stage call (per overloaded flag) over every item of every worker's tick.

        The call runs on this process's event-loop thread, not in the stage's executor thread
        as in a media process: this loop has nothing else to do meanwhile (a tick arriving
        during the call waits in its socket for the next batch either way), and handing the
        result back from a thread costs a wake-up of the loop through its self-pipe
        (``call_soon_threadsafe``), a tenth of this process's samples at 8 streams (py-spy).
        Measured (``benchmarks/shared_enhancer.py``, 2 workers x 4 streams, 3 interleaved
        pairs, load 1.5-2): 5.24 -> 4.91 ms CPU per tick, round trip p50 5.84 -> 5.34 ms.
        """
        groups: dict[bool, list[tuple[_Stream, str]]] = {False: [], True: []}
        for tick in batch:
            if tick.worker.closed:
                continue
            for sid, kind in tick.items:
                stream = tick.worker.streams.get(sid)
                if stream is not None:  # else closed after its tick was sent: the worker reads silence
                    groups[tick.overloaded].append((stream, kind))
        n = len(groups[False]) + len(groups[True])
        self.pool.hold({s.slot for g in groups.values() for s, _ in g})
        start = time.perf_counter()
        error: Optional[str] = None
        try:
            for overloaded, group in groups.items():
                if group:   # on this loop's thread: see the docstring
                    self._process(group, self.stage.process_sync(
                        [(s.handle, self._settings(s), k) for s, k in group], overloaded=overloaded))
        except Exception as exc:
            logger.exception("shared enhancer batch of %d streams failed", n)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self.pool.release_held()
        step_ms = 1000.0 * (time.perf_counter() - start)
        self.batches += 1
        self.items += n
        self.last_batch, self.last_step_ms = n, step_ms
        self.max_batch = max(self.max_batch, n)
        sli = ({m: c.astuple() for m, c in self.stage.sli().items()}
               if self.batches % TELEMETRY_EVERY == 1 else None)  # machine-wide canary input, once a second
        for tick in batch:
            if error is not None:
                tick.worker.send({"t": "failed", "seq": tick.seq, "error": error})
                continue
            done = {"t": "done", "seq": tick.seq, "batch": n, "step_ms": step_ms, "wait_ms": self.last_wait_ms,
                    "tele": self._telemetry(tick)}
            if sli is not None:
                done["sli"] = sli
            tick.worker.send(done)

    def _settings(self, stream: _Stream) -> np.ndarray:
        """Apply the worker's per-slot settings to the stage handle; return a copy of the input."""
        slot = stream.slot
        stream.handle.enabled = bool(self.table.enabled[slot])
        stream.handle.atten_lim_db = float(self.table.atten[slot])
        return self.table.inp[slot].copy()

    def _process(self, group: list[tuple[_Stream, str]], outputs: list[Any]) -> None:
        for (stream, _), out in zip(group, outputs):
            slot = stream.slot
            self.table.raw[slot] = out.raw
            self.table.enh[slot] = out.enhanced
            self.table.speech[slot] = out.speech

    def _telemetry(self, tick: _Tick) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for sid, _ in tick.items:
            stream = tick.worker.streams.get(sid)
            if stream is not None and (sid + self.batches) % TELEMETRY_EVERY == 0:
                out[str(sid)] = [stream.handle.active_model, stream.handle.telemetry.snapshot()]
        return out


# ---- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mediaserver.enhance.shared",
                                     description="the machine's one shared enhancer for media workers")
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    parser.add_argument("--slots", type=int, default=512,
                        help="shared-memory slots (streams of all workers together; ~11.5 kB each)")
    parser.add_argument("--batch-window-ms", type=float, default=5.0,
                        help="most a batch waits for the other workers' ticks after the first")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="serve the stage's mediaserver_enhancer_* series on 127.0.0.1:PORT/metrics "
                             "for the front to scrape (0: off)")
    parser.add_argument("--parent-pid", type=int, default=0,
                        help="stop when this process (the front that started it) is gone (0: never)")
    parser.add_argument("--admin-state", default=None,
                        help="JSON file of the model admin's changes (room overrides, a canary rollback), "
                             "saved after each and taken back at start (the front's restarts)")
    parser.add_argument("--log-level", default="INFO",
                        help="logging level from the first line (the front passes its own --log-level)")
    add_stage_options(parser)
    return parser


async def _stop_when_parent_dies(parent: int, stop: asyncio.Event, pidfd: Optional[int],
                                 period_s: float = 1.0) -> None:
    """Started by a front that was then killed (SIGKILL: it could not stop us): stop instead of
    holding the model and the socket forever. Linux says the moment it exits (``pidfd``, from
    :func:`_parent_pidfd`, turns readable; this task closes it); without one, a poll every
    ``period_s`` notices that we were re-parented (up to ``period_s`` late: it was so
    everywhere, a second)."""
    if pidfd is not None:
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()
        loop.add_reader(pidfd, gone.set)
        try:
            await gone.wait()
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    else:
        while os.getppid() == parent:
            await asyncio.sleep(period_s)
    logger.warning("the process that started this inference process (%d) is gone: stopping", parent)
    stop.set()


def _parent_pidfd(parent: int) -> Optional[int]:
    """A pidfd on ``parent`` (``os.pidfd_open``, Linux 5.3+), readable once it exits; None where
    there is none, or when ``parent`` is not our parent any more (it died already: the pid may
    name another process now; the caller's poll then stops at once)."""
    if not hasattr(os, "pidfd_open") or os.getppid() != parent:
        return None
    try:
        fd = os.pidfd_open(parent)
    except OSError:
        return None
    if os.getppid() != parent:   # it died while we opened it
        os.close(fd)
        return None
    return fd


class _BadModel(Exception):
    """A model flag naming a file that is no enhancer checkpoint (or an unusable model): the
    front's usage error, not this process's crash (:data:`~.shared_process.USAGE_EXIT`)."""

    def __init__(self, flag: str, reason: str) -> None:
        super().__init__(f"{flag}: {reason}")


async def _loaded(flag: str, build: Any, *args: Any) -> Any:
    """``build(*args)`` in a thread; a model that cannot load is :class:`_BadModel` naming ``flag``."""
    from .registry import RegistryError
    from .weights import WeightsError

    try:
        return await asyncio.to_thread(build, *args)
    except (WeightsError, RegistryError) as exc:
        raise _BadModel(flag, (str(exc).strip().splitlines() or [""])[0]) from None   # as one process


def _warm_up(stage: EnhancerStage) -> None:
    """One throwaway frame through every path, so the first worker tick is not the slow one."""
    handle = stage.open(enabled=True)
    stage.process_sync([(handle, np.zeros(FRAME, np.float32), "normal")])
    stage.close(handle)
    stage.process_sync([])  # frees its slot


async def _serve_forever(args: argparse.Namespace) -> None:
    registry = None
    if args.metrics_port:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        start_http_server(args.metrics_port, addr="127.0.0.1", registry=registry)
    stage = await _loaded("--model", stage_from_args, args, registry)
    await asyncio.to_thread(_warm_up, stage)
    router = await _loaded("--canary-model", router_from_args, args, stage)   # loads it now
    server = InferenceServer(stage, socket_path=args.socket, capacity=args.slots,
                             window_ms=args.batch_window_ms)
    server.admin = SharedAdmin(stage=stage, router=router, room_handles=server.room_handles,
                               registry=registry, state_path=args.admin_state)
    await asyncio.to_thread(server.admin.restore_saved, now=asyncio.get_running_loop().time())
    await server.start()
    server.admin.driver.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch = (loop.create_task(_stop_when_parent_dies(args.parent_pid, stop, _parent_pidfd(args.parent_pid)),
                              name="parent-watch")   # (the pidfd is open before "ready")
             if args.parent_pid else None)
    print(f"ready {args.socket} pid {os.getpid()} model {stage.model_version} slots {args.slots}", flush=True)
    try:
        await stop.wait()
    finally:
        await cancel_and_wait(watch)
        await server.admin.driver.stop()
        await server.stop()
        await asyncio.to_thread(stage.shutdown)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # (as the mediaserver command's; its lines say which process of serve --workers N wrote them)
    configure_logging(args.log_level, process_name=args.worker_id or "enhancer")
    try:
        asyncio.run(_serve_forever(args))
    except _BadModel as exc:   # one line for the front to say as its own usage error, exit 2
        print(f"{USAGE_LINE}{exc}", flush=True)
        return USAGE_EXIT
    return 0


def _exit_stopped(code: int) -> None:
    """The program's end once :func:`main` returned: its stop closed everything it opened (the
    socket, the slot table, the stage's threads), so the atexit handlers run (logging's flush)
    and the process exits with ``code`` at once, without the interpreter's teardown: with torch
    loaded that freed every module and object one by one for 0.55 s at load 0.8 (0.8 s with a
    canary's second model), which the front's stop of ``--workers N`` waited for after its
    workers had exited (``benchmarks/stop.py --servers workers``)."""
    import atexit
    import gc

    gc.freeze()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_stopped(main())
