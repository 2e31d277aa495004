"""A media worker's side of the shared enhancer: :class:`SharedStage` stands in for
:class:`~.stage.EnhancerStage` (what the media clock, signalling and the server use of it).
:class:`~.shared_process.InferenceProcess` starts the inference process.

No torch here: a worker process never loads the model. Per tick, :meth:`SharedStage.process`
writes each stream's frame and settings into its slot in shared memory, sends ONE small
``tick`` message, awaits ``done`` on the event loop (no thread blocks), and returns copies of the
slots' outputs. Errors:

* :class:`SharedStageTimeout`: the reply missed ``deadline_ms``; counted in
  ``mediaserver_enhancer_shared_deadline_misses_total``. The media clock then forwards that tick
  unprocessed, delayed like the stage's outputs and cross-faded (``sfu.stagegap``). Until the
  late reply arrives, further ticks are refused the same way (one tick in flight per worker:
  the slots are still the inference's).
* :class:`SharedStageError`: the inference process is gone (socket closed, killed) or failed the
  batch; raised at once, never after a hang. From the moment the connection is lost the stage
  tries to connect again, once per :data:`RECONNECT_S`, whether or not it has streams (an idle
  worker must be ready when its next room arrives); once the front has restarted the process,
  every open stream is opened again (a fresh model state, a new slot) and enhancement resumes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import mmap
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from ..tasks import cancel_and_wait
from .shared_wire import FRAME, FrameParser, ProtocolError, SlotTable, encode
from .stage_options import check_atten_lim_db
from .telemetry import Counts

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)

RECONNECT_S = 1.0   # while the inference process is gone: one connection attempt per this many s


class SharedStageError(RuntimeError):
    """The inference process is unreachable or failed this tick."""


class SharedStageTimeout(SharedStageError):
    """The inference process did not answer this tick within the deadline."""


@dataclass
class SharedOutput:
    """One stream's result (the same fields as ``stage.StageOutput``)."""

    raw: np.ndarray  # (960,) float32, input delayed by `latency` samples
    enhanced: np.ndarray  # (960,) float32, aligned with raw
    speech: bool  # VAD speech with hangover


class SharedTelemetry:
    """The quality snapshot the inference process last sent for a stream (about once a second)."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    def snapshot(self) -> dict[str, Any]:
        return dict(self.last)


class SharedHandle:
    """A stream of this worker in the shared enhancer. ``enabled`` and ``atten_lim_db`` are set
    live and reach the inference process with the stream's next frame (through its slot)."""

    def __init__(self, sid: int, *, enabled: bool, atten_lim_db: float, model: Optional[str],
                 room: Optional[str] = None) -> None:
        self.id = sid
        self.enabled = bool(enabled)
        self._atten = 100.0
        self.atten_lim_db = atten_lim_db
        self.model = model  # requested model (None: the inference process's default)
        self.requested = model  # as asked at open (None: the room's model, chosen there)
        self.room = room  # the room it was opened for (the inference process's model admin)
        self._active: Optional[str] = model
        self.telemetry = SharedTelemetry()
        self.closed = False
        self.slot: Optional[int] = None  # set by ``opened``
        self.refused: Optional[str] = None  # why the inference process refused the stream
        self.opened = asyncio.get_running_loop().create_future()

    @property
    def atten_lim_db(self) -> float:
        return self._atten

    @atten_lim_db.setter
    def atten_lim_db(self, value: float) -> None:
        self._atten = check_atten_lim_db(value)

    @property
    def active_model(self) -> Optional[str]:
        """The model this stream hears now, as the inference process last reported it."""
        return self._active

    def __repr__(self) -> str:
        return f"SharedHandle(id={self.id}, slot={self.slot}, enabled={self.enabled}, atten_lim_db={self._atten})"


class _Metrics:
    def __init__(self, registry: "CollectorRegistry", worker: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.worker = worker
        self.misses = Counter("mediaserver_enhancer_shared_deadline_misses_total",
                              "ticks the shared inference process did not answer within the deadline "
                              "(forwarded raw)", ["worker"], registry=registry).labels(worker)
        self.errors = Counter("mediaserver_enhancer_shared_errors_total",
                              "ticks failed by a dead or failing inference process (forwarded raw)",
                              ["worker"], registry=registry).labels(worker)
        self.roundtrip = Histogram("mediaserver_enhancer_shared_roundtrip_seconds",
                                   "tick sent to done received, this worker", ["worker"], registry=registry,
                                   buckets=(0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.08)).labels(worker)
        self.batch = Gauge("mediaserver_enhancer_shared_batch_streams",
                           "streams of all workers in the inference call that served this worker's last tick",
                           ["worker"], registry=registry).labels(worker)
        self.step = Gauge("mediaserver_enhancer_shared_step_seconds",
                          "duration of that inference call", ["worker"], registry=registry).labels(worker)


class SharedStage:
    """Duck-typed :class:`~.stage.EnhancerStage` over the shared inference process.

    Make one with :meth:`connect` on the worker's event loop; use it from that loop only (except
    :meth:`load`, which is for another thread, as ``EnhancerStage.load``).
    """

    def __init__(self, path: str, sock: socket.socket, hello: dict[str, Any], table: SlotTable, *,
                 deadline_ms: float, registry: Optional["CollectorRegistry"], worker: str) -> None:
        self.path = path
        self.deadline_s = deadline_ms / 1000.0
        self.latency: int = int(hello["latency"])
        self.model_version: str = str(hello["model"])
        self.loaded_models: list[str] = list(hello["loaded"])
        self.server_pid: int = int(hello["pid"])
        self.table = table
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._connection: Optional[_Connection] = None
        self._open: dict[int, SharedHandle] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}  # seq or ("req", n)
        self._inflight: Optional[int] = None   # seq of the tick whose reply has not come yet
        self._error: Optional[str] = None
        self._metrics = _Metrics(registry, worker) if registry is not None else None
        self.deadline_misses = 0
        self.errors = 0
        self.refused = 0
        self._last: dict[str, float] = {"batch": 0, "step_ms": 0.0, "wait_ms": 0.0, "roundtrip_ms": 0.0}
        self.ticks = 0
        self._sli: dict[str, Counts] = {}
        self._closed = False   # shut down by its owner: no reconnection
        self._reconnecting: Optional[asyncio.Task[None]] = None
        self.reconnects = 0
        self.frame_sinks: list[Any] = []  # on_batch(handles, raw, enhanced, speech) after each tick (loop)

    @classmethod
    async def connect(cls, path: str, *, deadline_ms: float = 40.0, registry: Optional["CollectorRegistry"] = None,
                      worker: str = "0", timeout_s: float = 10.0) -> "SharedStage":
        """Connect to the inference process listening on ``path`` and map its slot table.

        ``deadline_ms``: most a tick waits for its reply. ``registry``: this worker's Prometheus
        registry for the ``mediaserver_enhancer_shared_*`` series. Raises SharedStageError
        when nothing listens there or the hello does not come within ``timeout_s``."""
        sock, hello, fd = await asyncio.to_thread(handshake, path, timeout_s)
        try:
            table = SlotTable(mmap.mmap(fd, int(hello["bytes"])), int(hello["slots"]))
        finally:
            os.close(fd)
        stage = cls(path, sock, hello, table, deadline_ms=deadline_ms, registry=registry, worker=worker)
        await stage._attach(sock)
        return stage

    # ---- EnhancerStage surface ----------------------------------------------------------------
    @property
    def streams(self) -> int:
        return len(self._open)

    @property
    def busy(self) -> bool:
        """A tick is still with the inference process (a late reply not arrived yet)."""
        return self._inflight is not None

    def open(self, *, enabled: bool = True, atten_lim_db: float = 100.0, model: Optional[str] = None,
             room: Optional[str] = None) -> SharedHandle:
        """A new stream; its slot arrives with ``opened`` (the first tick waits for it). KeyError
        for a model this worker does not know as loaded (as ``EnhancerStage.open``).
        ``room``: the room it is opened for; without ``model`` the inference process gives it
        the room's model (an admin override, the canary's share, else the default)."""
        if model is not None and model not in self.loaded_models:
            raise KeyError(f"model {model!r} is not loaded")
        handle = SharedHandle(next(self._ids), enabled=enabled, atten_lim_db=atten_lim_db, model=model,
                              room=room)
        self._open[handle.id] = handle
        self._send(_open_message(handle))
        return handle

    def close(self, handle: SharedHandle) -> None:
        """Release the stream; a tick already sent returns silence for it."""
        if handle.closed:
            return
        handle.closed = True
        self._open.pop(handle.id, None)
        self._send({"t": "close", "id": handle.id})

    def switch(self, handle: SharedHandle, model: str) -> None:
        """Move the stream to a loaded model, live (see ``EnhancerStage.switch``)."""
        if model not in self.loaded_models:
            raise KeyError(f"model {model!r} is not loaded (loaded: {', '.join(self.loaded_models)})")
        handle.model = model
        self._send({"t": "switch", "id": handle.id, "model": model})

    def handles(self, model: Optional[str] = None) -> list[SharedHandle]:
        return [h for h in self._open.values() if model is None or h.model == model]

    def load(self, spec: Optional[str]) -> str:
        """Have the inference process load a model; blocking: call it from another thread."""
        future = asyncio.run_coroutine_threadsafe(self._request({"t": "load", "spec": spec}), self._loop)
        reply = future.result()
        if reply["t"] == "error":
            raise SharedStageError(reply["error"])
        self.loaded_models = list(reply["loaded"])
        return str(reply["model"])

    async def server_stats(self) -> dict[str, Any]:
        """The inference process's :meth:`~.shared.InferenceServer.stats` now."""
        return await self._request({"t": "stats"})

    def sli(self) -> dict[str, Counts]:
        """Cumulative telemetry counters per model over ALL workers' streams (the inference
        process's ``EnhancerStage.sli``), as last sent (about once a second)."""
        return dict(self._sli)

    def stats(self) -> dict[str, float]:
        """This worker's view: last batch size and step time reported by the inference process."""
        return {"ticks": self.ticks, "streams": self.streams, "last_batch": self._last["batch"],
                "last_step_ms": self._last["step_ms"], "last_wait_ms": self._last["wait_ms"],
                "last_roundtrip_ms": self._last["roundtrip_ms"], "deadline_misses": self.deadline_misses,
                "errors": self.errors, "reconnects": self.reconnects, "connected": self._error is None}

    async def process(self, items: Sequence[tuple[Any, ...]], *, overloaded: bool = False) -> list[SharedOutput]:
        """Enhance one 960-sample frame per stream: items ``(handle, pcm (960,) float32, kind)``.

        Returns one :class:`SharedOutput` per item (copies). Raises SharedStageTimeout past the
        deadline and SharedStageError when the inference process is gone (see the module doc)."""
        if self._error is not None:
            self._count_error()
            raise SharedStageError(self._error)
        if not items:
            return []
        if self.busy:
            self._count_miss()
            raise SharedStageTimeout("the previous tick is still with the inference process")
        start = self._loop.time()
        waiting = [it[0].opened for it in items if not it[0].opened.done() and not it[0].closed]
        if waiting:
            await self._within(asyncio.gather(*waiting), start)
        sent: list[tuple[int, str]] = []
        for item in items:
            h = item[0]
            if h.slot is None or h.closed:
                continue
            self.table.inp[h.slot] = _frame(h, item[1])
            self.table.enabled[h.slot] = h.enabled
            self.table.atten[h.slot] = h.atten_lim_db
            sent.append((h.id, str(item[2]) if len(item) > 2 else "normal"))
        if sent:
            seq = next(self._seq)
            reply_future = self._expect(seq)
            self._inflight = seq
            self._send({"t": "tick", "seq": seq, "over": bool(overloaded), "items": sent})
            reply = await self._reply(reply_future, start)
            if reply["t"] == "failed":
                self._count_error()
                raise SharedStageError(f"inference process failed the tick: {reply['error']}")
            self._took(reply, self._loop.time() - start)
        outputs = [self._output(item) for item in items]
        if self.frame_sinks:
            self._to_sinks(items, outputs)
        return outputs

    def shutdown(self) -> None:
        """Close the connection (sync, as ``EnhancerStage.shutdown``; any thread: off the loop it is
        handed to the loop); the inference process frees this worker's slots. Prefer
        ``await aclose()`` on the loop: it also waits for the reader task to end."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._close_now()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._close_now)

    def _start_reconnecting(self) -> None:
        """The connection is gone: one task tries again every :data:`RECONNECT_S` until the
        (restarted) inference process answers or this stage is shut down."""
        if not self._closed and (self._reconnecting is None or self._reconnecting.done()):
            self._reconnecting = self._loop.create_task(self._reconnect_loop(), name="shared-stage-reconnect")

    async def _reconnect_loop(self) -> None:
        while not self._closed and self._error is not None:
            if not await self._reconnect():
                await asyncio.sleep(RECONNECT_S)

    async def _reconnect(self) -> bool:
        """Connect to the inference process at the same path and open every stream of this
        worker there again; False when it does not answer (yet)."""
        try:
            sock, hello, fd = await asyncio.to_thread(handshake, self.path, 2.0)
        except SharedStageError:
            return False
        try:
            table = SlotTable(mmap.mmap(fd, int(hello["bytes"])), int(hello["slots"]))
        finally:
            os.close(fd)
        if self._connection is not None:   # (the old one ended with the connection)
            self._connection.close()
        self._sock, self.table = sock, table
        self.server_pid, self.latency = int(hello["pid"]), int(hello["latency"])
        self.model_version, self.loaded_models = str(hello["model"]), list(hello["loaded"])
        await self._attach(sock)
        self._error, self._inflight = None, None
        self._replies.clear()
        for h in self._open.values():   # (a fresh process: the room's model is chosen anew)
            h.slot, h.refused, h.opened = None, None, self._loop.create_future()
            h.model = h.requested
            self._send(_open_message(h))
        self.reconnects += 1
        logger.warning("reconnected to the inference process (pid %d) at %s: %d streams "
                       "opened again", self.server_pid, self.path, len(self._open))
        return True

    def _close_now(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        self._fail("this SharedStage was shut down")
        if self._connection is not None:
            self._connection.close()

    async def aclose(self) -> None:
        self.shutdown()
        await cancel_and_wait(self._reconnecting)
        self._reconnecting = None

    # ---- internals ----------------------------------------------------------------------------
    def _output(self, item: tuple[Any, ...]) -> SharedOutput:
        h = item[0]
        if h.closed:
            return SharedOutput(np.zeros(FRAME, np.float32), np.zeros(FRAME, np.float32), False)
        if h.slot is None:  # refused (slots full, unknown model): passed through, not enhanced
            pcm = _frame(h, item[1])
            return SharedOutput(pcm, pcm.copy(), False)
        s = h.slot
        return SharedOutput(self.table.raw[s].copy(), self.table.enh[s].copy(), bool(self.table.speech[s]))

    async def _reply(self, future: "asyncio.Future[dict[str, Any]]", start: float) -> dict[str, Any]:
        """The tick's reply, or SharedStageTimeout at ``start`` + the deadline (SharedStageError
        when the connection is lost meanwhile). The wait is the future itself with a timer, so
        the reply wakes this task in the loop iteration after the one that read it. With a
        reader task and ``wait_for(shield(...))`` a tick took 7 loop iterations, now 4; the
        workers' CPU per tick went 1.16 -> 1.05 ms (2 workers x 4 streams, median of 4
        interleaved pairs: ``benchmarks/results/shared_enhancer_protocol_ab.json``).
        A reply that comes after the deadline still frees the worker (:attr:`busy`)."""
        timer = self._loop.call_at(start + self.deadline_s, self._expire, future)
        try:
            return await future
        except SharedStageTimeout:
            self._count_miss()
            raise
        except SharedStageError:
            self._count_error()
            raise
        finally:
            timer.cancel()

    def _expire(self, future: "asyncio.Future[dict[str, Any]]") -> None:
        if not future.done():
            future.set_exception(SharedStageTimeout(
                f"no reply from the inference process within {1000 * self.deadline_s:g} ms"))

    async def _within(self, awaitable: Any, start: float) -> Any:
        try:
            return await asyncio.wait_for(asyncio.shield(awaitable), max(0.0, start + self.deadline_s - self._loop.time()))
        except asyncio.TimeoutError:
            if self._error is not None:
                self._count_error()
                raise SharedStageError(self._error) from None
            self._count_miss()
            raise SharedStageTimeout(f"no reply from the inference process within {1000 * self.deadline_s:g} ms") from None
        except SharedStageError:
            self._count_error()
            raise

    def _to_sinks(self, items: Sequence[tuple[Any, ...]], outputs: list[SharedOutput]) -> None:
        """Hand the tick's enhanced streams to the frame sinks (``sfu/debug_view.DebugTap``), as
        ``EnhancerStage`` does: handles, raw [N, 960], enhanced [N, 960], speech [N]. A sink
        whose ``watching`` is False (nobody looks at the debug view) costs nothing: the arrays
        are built only for a sink that wants them (33 µs a tick for 20 streams otherwise)."""
        sinks = [s for s in self.frame_sinks if getattr(s, "watching", True)]
        rows = [i for i, item in enumerate(items) if item[0].slot is not None and not item[0].closed]
        if not rows or not sinks:
            return
        handles = [items[i][0] for i in rows]
        raw = np.stack([outputs[i].raw for i in rows])
        enhanced = np.stack([outputs[i].enhanced for i in rows])
        speech = np.array([outputs[i].speech for i in rows], dtype=bool)
        for sink in sinks:
            try:
                sink.on_batch(handles, raw, enhanced, speech)
            except Exception:
                logger.exception("frame sink %r failed", sink)

    def _took(self, reply: dict[str, Any], seconds: float) -> None:
        self.ticks += 1
        self._last = {"batch": reply["batch"], "step_ms": reply["step_ms"], "wait_ms": reply["wait_ms"],
                      "roundtrip_ms": 1000.0 * seconds}
        if "sli" in reply:
            self._sli = {m: Counts(*row) for m, row in reply["sli"].items()}
        for sid, (model, snap) in reply["tele"].items():
            h = self._open.get(int(sid))
            if h is not None:
                h._active, h.telemetry.last = model, snap
        if self._metrics is not None:
            self._metrics.roundtrip.observe(seconds)
            self._metrics.batch.set(reply["batch"])
            self._metrics.step.set(reply["step_ms"] / 1000.0)

    def _count_miss(self) -> None:
        self.deadline_misses += 1
        if self._metrics is not None:
            self._metrics.misses.inc()

    def _count_error(self) -> None:
        self.errors += 1
        if self._metrics is not None:
            self._metrics.errors.inc()

    def _expect(self, key: Any) -> "asyncio.Future[dict[str, Any]]":
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._replies[key] = future
        return future

    async def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self._error is not None:
            raise SharedStageError(self._error)
        req = next(self._seq)
        future = self._expect(("req", req))
        self._send({**msg, "req": req})
        return await future

    def _send(self, msg: dict[str, Any]) -> None:
        if self._error is not None or self._connection is None:
            return  # the next process() raises the reason
        try:
            self._connection.write(encode(msg))
        except (ConnectionError, RuntimeError) as exc:
            self._fail(f"inference process at {self.path} unreachable: {exc}")

    async def _attach(self, sock: socket.socket) -> None:
        """Read ``sock`` through a :class:`_Connection` from now on."""
        def lost(connection: _Connection, problem: Optional[str]) -> None:
            if connection is not self._connection or self._closed:
                return   # an old connection, or shut down by its owner
            reason = (f"inference process at {self.path} sent a bad message: {problem}" if problem else
                      f"inference process (pid {self.server_pid}) at {self.path} closed the connection")
            logger.error("%s; this worker's streams go on unenhanced while it reconnects (every %.0f s)",
                         reason, RECONNECT_S)
            self._fail(reason)

        _, self._connection = await self._loop.create_unix_connection(
            lambda: _Connection(self._dispatch, lost), sock=sock)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg["t"]
        if kind in ("opened", "refused"):
            h = self._open.get(int(msg["id"]))
            if h is None:
                return
            if kind == "opened":
                h.slot, h._active = int(msg["slot"]), msg["model"]
                h.model = h.model or msg["model"]  # the default resolved: handles(model) finds it
            else:
                h.refused = str(msg["error"])
                self.refused += 1
                logger.error("stream %d refused by the inference process: %s (passed through)", h.id, h.refused)
            if not h.opened.done():
                h.opened.set_result(None)
        elif kind in ("done", "failed"):
            if int(msg["seq"]) == self._inflight:
                self._inflight = None   # (also when it came after the deadline)
            future = self._replies.pop(int(msg["seq"]), None)
            if future is not None and not future.done():
                future.set_result(msg)
        else:  # stats, loaded, error: answers to _request
            future = self._replies.pop(("req", msg.get("req")), None)
            if future is not None and not future.done():
                future.set_result(msg)

    def _fail(self, reason: str) -> None:
        self._inflight = None
        if self._error is None:
            self._error = reason
            self._start_reconnecting()
        futures = [*self._replies.values(), *(h.opened for h in self._open.values())]
        self._replies.clear()
        for future in futures:
            if not future.done():
                future.set_exception(SharedStageError(self._error))
                future.exception()  # retrieved: whoever awaits it still gets the error, nobody else logs it


class _Connection(asyncio.Protocol):
    """The socket to the inference process. Each message is handed to ``on_message`` as soon as
    its bytes are in (no reader task between the socket and the waiting tick);
    ``on_lost(self, problem)`` when the connection ends (``problem``: a malformed message, which
    also closes it; None: closed by the other side or by :meth:`close`)."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None],
                 on_lost: Callable[["_Connection", Optional[str]], None]) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._parser = FrameParser()
        self._transport: Optional[asyncio.Transport] = None
        self._problem: Optional[str] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._problem is not None:
            return
        try:
            messages = self._parser.feed(data)
        except ProtocolError as exc:
            self._problem = str(exc)
            self.close()
            return
        for message in messages:
            self._on_message(message)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._on_lost(self, self._problem)

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("connection closed")
        self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _open_message(h: SharedHandle) -> dict[str, Any]:
    return {"t": "open", "id": h.id, "enabled": h.enabled, "atten": h.atten_lim_db,
            "model": h.requested, "room": h.room}


def _frame(h: SharedHandle, pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm.shape != (FRAME,):
        logger.error("stream %d: frame of shape %s, expected (%d,); using silence", h.id, pcm.shape, FRAME)
        return np.zeros(FRAME, np.float32)
    return pcm


def handshake(path: str, timeout_s: float) -> tuple[socket.socket, dict[str, Any], int]:
    """Blocking: connect, receive the hello and the shared block's file descriptor.

    Raises :class:`SharedStageError`; on any failure the socket and a descriptor already
    received are closed (a worker retrying every ``RECONNECT_S`` must not leak them)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    fds: list[int] = []
    try:
        sock.connect(path)
        data, fds, _, _ = socket.recv_fds(sock, 65536, 1)
        if not fds:
            raise SharedStageError(f"inference process at {path} sent no shared-memory descriptor")
        parser = FrameParser()   # the same framing as every later message (shared_wire.py)
        messages = parser.feed(data)
        while not messages:
            more = sock.recv(65536)
            if not more:
                raise SharedStageError(f"inference process at {path} closed during hello")
            messages = parser.feed(more)
        hello = messages[0]
    except BaseException as exc:
        sock.close()
        for fd in fds:
            os.close(fd)
        if isinstance(exc, (OSError, ProtocolError)):
            raise SharedStageError(f"cannot connect to the inference process at {path}: {exc}") from exc
        raise
    sock.settimeout(None)
    sock.setblocking(False)
    return sock, hello, fds[0]
