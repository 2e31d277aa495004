"""The server's one 20 ms media clock: pull, enhance together, encode once, fan out.

Split like aioquic's ``QuicConnection`` / ``QuicConnectionProtocol``:

- :class:`ClockCore` is sans-I/O. Time is passed in (``now_ms``, the loop clock in ms); it
  never sleeps or awaits, and its only calls are synchronous ones into its seams (a
  publisher's ``pull``, ``encode_pts``). ``tick(now_ms)`` runs the tick that is due (lateness,
  catch-up and the skip rule, the pull of every publisher) and returns a :class:`TickResult`:
  the encoded packets per publisher, the speaking flips and the frames for the sinks. With an
  enhancer the pulled tick is queued instead (bounded backlog) and comes out of
  ``enhanced(batch, outputs)`` once the driver ran the batch through the stage.
- :class:`MediaClock` is the asyncio driver: one task sleeps until ``next_deadline_ms`` and
  calls ``tick``, a second runs queued batches through the enhancer stage in order; both hand
  each result to ``deliver`` (fan-out to subscriber tracks, ``on_speaking``, frame sinks) and
  update the Prometheus series. With no publisher and nothing queued it does not tick at
  all; the next added stream wakes it on the same grid (``ClockCore.resume``).

Every outgoing packet's pts is ``tick * 960``: the server owns time, not the publishers, so a
late or lost input never shifts or stalls an output stream. All publishers of this process
are pulled at the same instant, so the enhancer sees one batch per tick.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from ..enhance.shared_client import SharedStageError
from ..tasks import cancel_and_wait
from .metrics import SfuMetrics
from .stagegap import StageGap

logger = logging.getLogger(__name__)

FRAME = 960
_MUTED = np.zeros(FRAME, np.float32)  # what frame sinks get from a muted stream
PERIOD_S = 0.020
PERIOD_MS = 1000.0 * PERIOD_S
LATE_MS = 10.0     # a tick run this much after its deadline counts as late
MAX_CATCH_UP = 5  # frames caught up with full processing; beyond, frames are dropped
MAX_BACKLOG = 50  # ticks (1 s) queued for the enhancer; beyond, the oldest is dropped
STAGE_LOG_S = 10.0  # a failing enhancer stage is logged at most once per this many seconds


# -- the seams: what the clock needs of its neighbours ---------------------------------------
class Pulled(Protocol):
    pcm: np.ndarray   # float32 [960], 48 kHz mono
    kind: str         # "normal" | "fec" | "plc" | "cng" | "dtx" | "silence"
    wait_ms: Optional[float]   # jitter-buffer delay of the packet decoded for it (None: none)
    target_ms: Optional[float]   # the jitter buffer's target level then (None with wait_ms)


class InboundSource(Protocol):
    """A publisher's receive path (``media.inbound.InboundAudio``)."""

    def pull(self, *, now_ms: float) -> Pulled: ...


class Encoded(Protocol):
    """What an encoder returns for one tick (``sfu.outbound.EncodedTick``)."""


class Subscriber(Protocol):
    """A subscriber's outgoing track (``sfu.outbound.PacketTrack``)."""

    def offer(self, tick: Encoded) -> None: ...


class Enhanced(Protocol):
    raw: np.ndarray        # (960,) float32, the input delayed by the stage's latency
    enhanced: np.ndarray   # (960,) float32, aligned with raw
    speech: bool


class EnhancerStage(Protocol):
    """``enhance.stage.EnhancerStage``: one batched call per tick for every stream."""

    latency: int   # samples every output lags its input (480)

    async def process(self, items: Sequence[tuple[object, np.ndarray, str]], *,
                      overloaded: bool = False) -> Sequence[Enhanced]: ...


class FrameSink(Protocol):
    def on_frame(self, *, room: str, identity: str, t_ms: float, raw: np.ndarray,
                 enhanced: np.ndarray, speech: bool) -> None: ...


# encode_pts(stream.encoder, pcm, pts) -> what the stream's subscribers are offered
EncodeFn = Callable[[object, np.ndarray, int], Optional[Encoded]]


class SpeakingDetector:
    """Hysteresis on per-frame speech decisions: on after 60 ms, off after 400 ms."""

    def __init__(self, *, on_frames: int = 3, off_frames: int = 20) -> None:
        self.on_frames = on_frames
        self.off_frames = off_frames
        self.speaking = False
        self.level = 0.0
        self._run = 0

    def update(self, speech: bool, rms: float) -> Optional[bool]:
        """Feed one frame; return the new state when it flips, else None."""
        db = 20.0 * math.log10(rms + 1e-9)
        self.level = 0.8 * self.level + 0.2 * min(1.0, max(0.0, (db + 60.0) / 60.0))
        if speech != self.speaking:
            self._run += 1
            if self._run >= (self.on_frames if speech else self.off_frames):
                self.speaking = speech
                self._run = 0
                return speech
        else:
            self._run = 0
        return None


@dataclass(eq=False)
class ClockStream:
    """One publisher as the clock sees it. The room adds and removes its subscribers with
    ``attach``/``detach``; ``subscribers`` is the fan-out list (read it, do not edit it)."""

    room: str
    identity: str
    inbound: InboundSource
    encoder: object                  # sfu.outbound.PublisherEncoders (encode once per codec)
    handle: object = None            # enhance.stage StreamHandle, None without enhancement
    open_handle: Optional[Callable[[], object]] = None   # opens ``handle``: see :meth:`ready`
    subscribers: list[Subscriber] = field(default_factory=list)
    muted: bool = False
    on_speaking: Optional[Callable[[bool, float], None]] = None
    on_close: Optional[Callable[[], None]] = None
    speaking: SpeakingDetector = field(default_factory=SpeakingDetector)
    frames: int = 0

    def ready(self) -> None:
        """Open the enhancer's state for this stream (``open_handle``), once, as it goes on the
        clock: a listener never does, so it holds no model state and no shared-memory slot.
        A failure to open (a model no longer loaded) is logged and the stream goes on
        unenhanced, as a stream the inference process refused."""
        if self.handle is not None or self.open_handle is None:
            return
        opener, self.open_handle = self.open_handle, None
        try:
            self.handle = opener()
        except Exception:
            logger.exception("%s/%s: the enhancer could not open this stream; it is forwarded "
                             "unenhanced", self.room, self.identity)

    def attach(self, track: Subscriber) -> None:
        """Fan this publisher's packets out to ``track`` too (idempotent)."""
        if track not in self.subscribers:
            self.subscribers.append(track)

    def detach(self, track: Subscriber) -> None:
        """Stop sending to ``track`` (absent: nothing happens)."""
        if track in self.subscribers:
            self.subscribers.remove(track)

    def detach_all(self) -> None:
        self.subscribers.clear()


@dataclass(slots=True)
class _Silent:
    """What a publisher whose receive path failed contributes to a tick."""

    pcm: np.ndarray = field(default_factory=lambda: np.zeros(FRAME, np.float32))
    kind: str = "silence"
    wait_ms: Optional[float] = None
    target_ms: Optional[float] = None


def _energy_speech(pcm: np.ndarray) -> tuple[bool, float]:
    rms = float(np.sqrt(np.dot(pcm, pcm) / len(pcm)))
    return rms > 0.003, rms  # about -50 dBFS


# -- what the core hands its driver ------------------------------------------------------------
@dataclass(slots=True)
class Frame:
    """One publisher's frame of one tick, for the frame sinks (ASR)."""

    room: str
    identity: str
    t_ms: float
    raw: np.ndarray
    enhanced: np.ndarray
    speech: bool


@dataclass(slots=True)
class EnhanceBatch:
    """A pulled tick waiting for the enhancer: one frame per stream, in stream order."""

    streams: list[ClockStream]
    pcms: list[np.ndarray]
    kinds: list[str]
    pts: int
    t_ms: float              # the tick's deadline
    overloaded: bool = False  # set by ``next_batch``: the stage must skip its network


@dataclass
class TickResult:
    """What the driver must do for one tick: send, tell, feed (``queued``: nothing yet, the
    tick waits in the enhancer backlog)."""

    packets: list[tuple[ClockStream, Encoded]] = field(default_factory=list)
    events: list[tuple[ClockStream, bool, float]] = field(default_factory=list)  # (stream, speaking, level)
    frames: list[Frame] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)   # pulled frame kinds (metrics)
    waits_ms: list[tuple[float, float]] = field(default_factory=list)   # jitter-buffer (wait,
    # target) ms of the frames that decoded a packet (metrics)
    lag_ms: float = 0.0           # how late the tick ran (0 for an enhanced batch)
    late: bool = False
    skipped: int = 0              # frames dropped by the skip rule or the full backlog
    queued: bool = False          # the tick went to the enhancer backlog


class ClockCore:
    """The clock's logic, sans-I/O: see the module docstring. Not thread-safe (one loop)."""

    def __init__(self, *, encode_pts: EncodeFn, enhance: bool = False, enhance_latency: int = 0,
                 enhance_budget_ms: float = 60.0, max_backlog: int = MAX_BACKLOG) -> None:
        self._encode = encode_pts
        self.enhance = enhance
        self.enhance_latency = enhance_latency   # samples the stage's outputs lag its input
        self._gaps: dict[ClockStream, StageGap] = {}   # per stream: ticks the stage misses
        self.enhance_budget_ms = enhance_budget_ms
        self.max_backlog = max_backlog
        self._streams: list[ClockStream] = []
        self._backlog: deque[EnhanceBatch] = deque()
        self.next_deadline_ms: Optional[float] = None
        self.index = 0       # the tick the next pull belongs to (pts = index * 960)
        self.late = 0
        self.skipped = 0
        self.idle_periods = 0   # periods ``resume`` advanced ``index`` by without a tick
        self.bypassed = 0

    # -- streams ---------------------------------------------------------------------------
    @property
    def streams(self) -> Sequence[ClockStream]:
        return self._streams

    def add(self, stream: ClockStream) -> None:
        self._streams.append(stream)

    def remove(self, stream: ClockStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
        self._gaps.pop(stream, None)

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    # -- time ------------------------------------------------------------------------------
    def start(self, now_ms: float) -> None:
        """The first tick is due at the next multiple of the period after ``now_ms``: every
        process on the machine ticks on the same 20 ms grid of the monotonic clock (the loop
        clock), so the media workers' frames reach the shared enhancer together
        (``enhance/shared.py`` batches what arrives within its window)."""
        self.next_deadline_ms = (math.floor(now_ms / PERIOD_MS) + 1) * PERIOD_MS

    @property
    def idle(self) -> bool:
        """No publisher and nothing queued for the enhancer: a tick would do nothing."""
        return not self._streams and not self._backlog

    def resume(self, now_ms: float) -> None:
        """Go on after an idle stretch (the driver did not tick meanwhile): the next tick is
        the next grid point after ``now_ms``, and ``index`` (so every output pts) advances by
        the periods that passed, as if each had ticked, none counted late or skipped."""
        if self.next_deadline_ms is None:
            self.start(now_ms)
            return
        if now_ms >= self.next_deadline_ms:
            missed = math.floor((now_ms - self.next_deadline_ms) / PERIOD_MS) + 1
            self.index += missed
            self.idle_periods += missed
            self.next_deadline_ms += missed * PERIOD_MS

    def tick(self, now_ms: float) -> TickResult:
        """Run the tick due at ``next_deadline_ms`` (call at or after it).

        Less than ``MAX_CATCH_UP`` periods late, the tick runs in full on its own schedule
        (the driver calls again at once for the next one); further behind, the frames of the
        missed ticks are pulled and dropped (every jitter buffer stays drained at real time;
        the outputs get a pts gap instead) and the clock goes on at the current tick.
        """
        if self.next_deadline_ms is None:
            raise RuntimeError("ClockCore.tick before start")
        deadline = self.next_deadline_ms
        lag = now_ms - deadline
        skipped = 0
        if lag > MAX_CATCH_UP * PERIOD_MS:
            skipped = int(lag / PERIOD_MS)
            for k in range(skipped):
                self._drain(deadline + k * PERIOD_MS)
            self.skipped += skipped
            self.index += skipped
            deadline += skipped * PERIOD_MS
            logger.warning("media clock %.0f ms behind: dropped %d frames per stream", lag, skipped)
        late = lag > LATE_MS
        self.late += late
        result = self.pull(deadline)
        result.lag_ms, result.late = lag, late
        result.skipped += skipped
        self.index += 1
        self.next_deadline_ms = deadline + PERIOD_MS
        return result

    def pull(self, t_ms: float) -> TickResult:
        """Pull every stream's frame for the current tick (``index``, not advanced: ``tick``
        does that) at ``t_ms`` and emit it, or queue it for the enhancer."""
        pts = self.index * FRAME
        streams = list(self._streams)
        if not streams:
            return TickResult()
        pulled = [self._pull(s, t_ms) for s in streams]
        kinds = [f.kind for f in pulled]
        pcms = [f.pcm for f in pulled]
        waits = [(f.wait_ms, f.target_ms or 0.0) for f in pulled if f.wait_ms is not None]
        if not self.enhance:
            result = self._emit(streams, pcms, pcms, [None] * len(pcms), pts, t_ms)
            result.kinds, result.waits_ms = kinds, waits
            return result
        result = TickResult(kinds=kinds, waits_ms=waits, queued=True)
        # Enhancement runs behind the clock, in order, so a slow batch delays packets
        # instead of delaying the next pull (which would starve every jitter buffer).
        if len(self._backlog) >= self.max_backlog:
            # The enhancer is over a second behind even with its bypass (CPU starved): the
            # oldest queued tick is dropped, so memory and delay stay bounded (not emitted
            # out of order); counted with the clock's skipped ticks.
            self._backlog.popleft()
            self.skipped += 1
            result.skipped = 1
        self._backlog.append(EnhanceBatch(streams, pcms, kinds, pts, t_ms))
        return result

    def _drain(self, t_ms: float) -> None:
        for s in self._streams:
            self._pull(s, t_ms)

    @staticmethod
    def _pull(stream: ClockStream, t_ms: float) -> Pulled:
        """One publisher's frame; a receive path that raises gives silence for this tick
        (logged) and never takes the other publishers' tick with it."""
        try:
            return stream.inbound.pull(now_ms=t_ms)
        except Exception:
            logger.exception("pull failed for %s/%s", stream.room, stream.identity)
            return _Silent()

    # -- the enhancer's side ---------------------------------------------------------------
    def next_batch(self, now_ms: float) -> Optional[EnhanceBatch]:
        """The oldest queued tick, with only the streams still on the clock (None: nothing
        queued). A tick older than ``enhance_budget_ms`` is marked ``overloaded``: the stage is
        slower than real time right now, so this tick skips the network (same delay,
        cross-faded) and the queue drains instead of growing."""
        while self._backlog:
            batch = self._backlog.popleft()
            live = [i for i, s in enumerate(batch.streams) if s in self._streams]
            if not live:
                continue
            batch.streams = [batch.streams[i] for i in live]
            batch.pcms = [batch.pcms[i] for i in live]
            batch.kinds = [batch.kinds[i] for i in live]
            batch.overloaded = now_ms - batch.t_ms > self.enhance_budget_ms
            self.bypassed += batch.overloaded
            return batch
        return None

    def enhanced(self, batch: EnhanceBatch, outputs: Optional[Sequence[Enhanced]]) -> TickResult:
        """Emit ``batch`` with the stage's ``outputs`` (None: the stage failed or missed its
        deadline; the tick goes out unprocessed, delayed like the stage's outputs and faded:
        :mod:`.stagegap`). A stream removed while the stage ran has left: its frame goes
        nowhere (fed to the ASR hub after its participant_left, it would open state that
        nothing closes)."""
        streams: list[ClockStream] = []
        raws: list[np.ndarray] = []
        cleaned: list[np.ndarray] = []
        speech: list[Optional[bool]] = []
        for i, s in enumerate(batch.streams):
            if s not in self._streams:
                continue
            gap = self._gaps.get(s)
            if gap is None:
                gap = self._gaps[s] = StageGap(self.enhance_latency)
            delayed = gap.push(batch.pcms[i])
            if outputs is None:
                raw, clean, sp = delayed, gap.missing(delayed), None
            else:
                raw, clean = gap.answered(delayed, outputs[i].raw, outputs[i].enhanced)
                sp = bool(outputs[i].speech)
            streams.append(s)
            raws.append(raw)
            cleaned.append(clean)
            speech.append(sp)
        return self._emit(streams, raws, cleaned, speech, batch.pts, batch.t_ms)

    # -- encode, speaking state, frames ----------------------------------------------------
    def _emit(self, streams: list[ClockStream], raws: list[np.ndarray],
              cleaned: list[np.ndarray], speech: list[Optional[bool]], pts: int,
              t_ms: float) -> TickResult:
        """Encode once per publisher, update speaking state, collect the sinks' frames."""
        result = TickResult()
        for s, raw, clean, sp in zip(streams, raws, cleaned, speech):
            try:
                packet = self._encode(s.encoder, _MUTED if s.muted else clean, pts)
            except Exception:
                logger.exception("encode failed for %s/%s", s.room, s.identity)
                packet = None
            if packet is not None:
                result.packets.append((s, packet))
            s.frames += 1
            energy_speech, rms = _energy_speech(raw)
            is_speech = (energy_speech if sp is None else sp) and not s.muted
            flipped = s.speaking.update(is_speech, 0.0 if s.muted else rms)
            if flipped is not None:
                result.events.append((s, flipped, s.speaking.level))
            if s.muted:   # a muted voice is not forwarded, so not transcribed either
                raw = clean = _MUTED
            result.frames.append(Frame(s.room, s.identity, t_ms, raw, clean, is_speech))
        return result


class MediaClock:
    """The asyncio driver of a :class:`ClockCore`: owns the tick task and the enhancer task.

    ``add``/``remove`` streams; ``sinks`` get every frame. ``stage`` None: no enhancement.
    """

    def __init__(self, *, stage: Optional[EnhancerStage] = None, metrics: Optional[SfuMetrics] = None,
                 encode_pts: EncodeFn) -> None:
        self.core = ClockCore(encode_pts=encode_pts, enhance=stage is not None,
                              enhance_latency=stage.latency if stage is not None else 0)
        self._stage = stage
        self._metrics = metrics or SfuMetrics()
        self.sinks: list[FrameSink] = []
        self._task: Optional[asyncio.Task] = None
        self._worker: Optional[asyncio.Task] = None
        self._queued = asyncio.Event()
        self._woken = asyncio.Event()   # a stream was added: an idle clock ticks again
        self._failure_logged: Optional[float] = None   # loop time of the last stage-failure log
        self._failures = 0                             # failed ticks since that log
        self._outage: Optional[tuple[float, int]] = None   # (loop time of its first failed tick, ticks)
        self._recovery_logged: Optional[float] = None  # loop time of the last "answers again" line

    # -- the core's state, as the rest of the server reads it ---------------------------------
    @property
    def streams(self) -> Sequence[ClockStream]:
        return self.core.streams

    def add(self, stream: ClockStream) -> None:
        self.core.add(stream)
        self._woken.set()

    def remove(self, stream: ClockStream) -> None:
        self.core.remove(stream)

    @property
    def tick(self) -> int:
        return self.core.index

    @tick.setter
    def tick(self, index: int) -> None:   # a test seam, with _step
        self.core.index = index

    @property
    def ticks_run(self) -> int:
        """Ticks this clock ran (those it skipped behind schedule included), not the periods
        it slept through with no publisher: ``/healthz`` ``ticks``, the base of
        ``late_tick_pct``. ``tick`` (the pts position) also counts the idle periods."""
        return self.core.index - self.core.idle_periods

    @property
    def late(self) -> int:
        return self.core.late

    @property
    def skipped(self) -> int:
        return self.core.skipped

    @property
    def bypassed(self) -> int:
        return self.core.bypassed

    @property
    def enhance_budget_ms(self) -> float:
        return self.core.enhance_budget_ms

    # -- tasks -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="media-clock")

    async def stop(self) -> None:
        await cancel_and_wait(self._worker)
        self._worker = None
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self.core.start(loop.time() * 1000.0)
        while True:
            if self.core.idle:   # nobody to pull: sleep until a stream comes (not 50 wake-ups
                self._woken.clear()   # a second: 1.2 % of a core per idle media worker here)
                await self._woken.wait()
                self.core.resume(loop.time() * 1000.0)
                continue
            assert self.core.next_deadline_ms is not None
            delay = self.core.next_deadline_ms / 1000.0 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            try:
                result = self.core.tick(now * 1000.0)
            except Exception:
                logger.exception("media clock tick %d failed", self.core.index)
                self.core.next_deadline_ms = (self.core.next_deadline_ms or now * 1000.0) + PERIOD_MS
                continue
            self._metrics.tick_lag.observe(max(0.0, result.lag_ms / 1000.0))
            self._handle(result)
            self._metrics.tick_work.observe(loop.time() - now)
            self._metrics.ticks.inc()

    async def _step(self, now_ms: float) -> None:
        """Pull and emit (or queue) the current tick (``tick``, not advanced) at ``now_ms``,
        without the schedule: tests drive the clock tick by tick with it."""
        self._handle(self.core.pull(now_ms))

    def _handle(self, result: TickResult) -> None:
        """A pulled tick: count it, wake the enhancer for a queued one, deliver the rest."""
        m = self._metrics
        if result.late:
            m.late_ticks.inc()
        if result.skipped:
            m.skipped_ticks.inc(result.skipped)
        for kind in result.kinds:
            m.frames.labels(kind).inc()
        for wait, target in result.waits_ms:
            m.jitter_wait.observe(wait / 1000.0)
            m.jitter_target.observe(target / 1000.0)
        if result.queued:
            self._queued.set()
            if self._worker is None or self._worker.done():
                self._worker = asyncio.get_running_loop().create_task(self._enhance_loop(),
                                                                      name="media-clock-enhance")
        self.deliver(result)

    async def _enhance_loop(self) -> None:
        """Run queued ticks through the stage, in order, one batched call each."""
        assert self._stage is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = self.core.next_batch(loop.time() * 1000.0)
            if batch is None:
                self._queued.clear()
                await self._queued.wait()
                continue
            if batch.overloaded:
                self._metrics.enhance_bypassed.inc()
            outputs: Optional[Sequence[Enhanced]]
            try:
                outputs = await self._stage.process(
                    [(s.handle, p, k) for s, p, k in zip(batch.streams, batch.pcms, batch.kinds)],
                    overloaded=batch.overloaded)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._stage_failed(exc, loop.time())
                outputs = None
            else:
                self._stage_answered(loop.time())
            self.deliver(self.core.enhanced(batch, outputs))
            self._metrics.enhance_delay.observe(max(0.0, loop.time() - batch.t_ms / 1000.0))

    def _stage_failed(self, exc: Exception, now: float) -> None:
        """Log a failing stage without flooding: the first failure, then one line per
        ``STAGE_LOG_S`` with the count (a dead shared enhancer fails every tick).

        The shared enhancer out of reach (:class:`~..enhance.shared_client.SharedStageError`:
        a reply past its deadline, the inference process restarting, or a batch it failed and
        logged with its own traceback) is expected: one WARNING line with the reason, no
        traceback (the traceback of a wait on a socket says nothing). Anything else is a bug
        here: its first occurrence is logged at ERROR with the traceback."""
        self._metrics.enhance_failed.inc()
        self._failures += 1
        start, ticks = self._outage if self._outage is not None else (now, 0)
        self._outage = (start, ticks + 1)
        expected = isinstance(exc, SharedStageError)
        level = logging.WARNING if expected else logging.ERROR
        if self._failure_logged is None or (ticks == 0 and now - self._failure_logged >= STAGE_LOG_S):
            logger.log(level, "enhancer stage failed; forwarding the tick unprocessed%s",
                       f" until it answers again: {exc}" if expected else "", exc_info=not expected)
        elif now - self._failure_logged >= STAGE_LOG_S:
            logger.log(level, "enhancer stage still failing (%d ticks forwarded unprocessed since the "
                       "last report): %s", self._failures, exc)
        else:
            return
        self._failure_logged, self._failures = now, 0

    def _stage_answered(self, now: float) -> None:
        """The stage answered a tick: an outage (failed ticks since the last answer) ends with
        one INFO line saying how long it lasted, at most one per ``STAGE_LOG_S`` (a stage that
        flaps is summed up by the failure lines' counts)."""
        if self._outage is None:
            return
        (start, ticks), self._outage = self._outage, None
        if self._recovery_logged is None or now - self._recovery_logged >= STAGE_LOG_S:
            logger.info("enhancer stage answers again: %d tick(s) forwarded unprocessed in %.2f s",
                        ticks, now - start)
            self._recovery_logged = now

    # -- I/O: the only place packets, callbacks and sinks are touched -----------------------
    def deliver(self, result: TickResult) -> None:
        """Fan each packet out to its publisher's subscribers, tell ``on_speaking``, feed the
        sinks. A failing callback or sink is logged and never stops the others."""
        for stream, packet in result.packets:
            for track in stream.subscribers:
                track.offer(packet)
            self._metrics.packets_out.inc(len(stream.subscribers))
        for stream, speaking, level in result.events:
            if stream.on_speaking is not None:
                try:
                    stream.on_speaking(speaking, level)
                except Exception:
                    logger.exception("speaking callback of %s/%s failed", stream.room, stream.identity)
        for frame in result.frames:
            for sink in self.sinks:
                try:
                    sink.on_frame(room=frame.room, identity=frame.identity, t_ms=frame.t_ms,
                                  raw=frame.raw, enhanced=frame.enhanced, speech=frame.speech)
                except Exception:
                    logger.exception("frame sink %r failed", sink)
