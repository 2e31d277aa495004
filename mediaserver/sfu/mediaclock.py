"""The server's one 20 ms media clock: pull, enhance together, encode once, fan out.

One asyncio task on an absolute schedule (``loop.time()``), so every publisher of
this process is pulled at the same instant and the enhancer sees one batch per
tick. pts of every outgoing packet is ``tick * 960``: the server owns time, not
the publishers, so a late or lost input never shifts or stalls an output stream.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from ..tasks import cancel_and_wait
from .metrics import SfuMetrics
from .outbound import PacketTrack

logger = logging.getLogger(__name__)

FRAME = 960
_MUTED = np.zeros(FRAME, np.float32)  # what frame sinks get from a muted stream
PERIOD_S = 0.020
MAX_CATCH_UP = 5  # frames caught up with full processing; beyond, frames are dropped
MAX_BACKLOG = 50  # ticks (1 s) queued for the enhancer; beyond, the oldest is dropped


class FrameSink(Protocol):
    def on_frame(self, *, room: str, identity: str, t_ms: float, raw: np.ndarray,
                 enhanced: np.ndarray, speech: bool) -> None: ...


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
    """One publisher as the clock sees it; the room fills ``subscribers``."""

    room: str
    identity: str
    inbound: Any            # media.inbound.InboundAudio
    encoder: Any            # sfu.outbound.PublisherEncoders (encode once per codec)
    handle: Any = None      # enhance.stage StreamHandle, None without enhancement
    subscribers: list[PacketTrack] = field(default_factory=list)
    muted: bool = False
    on_speaking: Optional[Callable[[bool, float], None]] = None
    on_close: Optional[Callable[[], None]] = None
    speaking: SpeakingDetector = field(default_factory=SpeakingDetector)
    last_kind: str = "silence"
    frames: int = 0


def _energy_speech(pcm: np.ndarray) -> tuple[bool, float]:
    rms = float(np.sqrt(np.dot(pcm, pcm) / len(pcm)))
    return rms > 0.003, rms  # about -50 dBFS


class MediaClock:
    """Owns the tick task. ``add``/``remove`` streams; sinks get every frame."""

    def __init__(self, *, stage: Any = None, metrics: Optional[SfuMetrics] = None,
                 encode_pts: Callable[[Any, np.ndarray, int], Any]) -> None:
        self._stage = stage
        self._metrics = metrics or SfuMetrics()
        self._encode = encode_pts
        self._streams: list[ClockStream] = []
        self.sinks: list[FrameSink] = []
        self._task: Optional[asyncio.Task] = None
        self._pending: asyncio.Queue = asyncio.Queue()
        self._worker: Optional[asyncio.Task] = None
        self.enhance_budget_ms = 60.0
        self.bypassed = 0
        self.tick = 0
        self.late = 0
        self.skipped = 0
        self.lag_ms: list[float] = []   # recent lags, for stats and benchmarks

    @property
    def streams(self) -> Sequence[ClockStream]:
        return self._streams

    def add(self, stream: ClockStream) -> None:
        self._streams.append(stream)

    def remove(self, stream: ClockStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

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
        deadline = loop.time()
        while True:
            deadline += PERIOD_S
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            lag = now - deadline
            self._metrics.tick_lag.observe(max(0.0, lag))
            self.lag_ms.append(lag * 1000.0)
            if len(self.lag_ms) > 3000:
                del self.lag_ms[:1000]
            if lag > 0.010:
                self.late += 1
                self._metrics.late_ticks.inc()
            if lag > MAX_CATCH_UP * PERIOD_S:
                # Far behind (a stalled loop): pull and drop the missed frames so every
                # jitter buffer stays drained at real time; outputs get a pts gap instead.
                behind = int(lag / PERIOD_S)
                for k in range(behind):
                    self._drain((deadline + k * PERIOD_S) * 1000.0)
                self.skipped += behind
                self.tick += behind
                self._metrics.skipped_ticks.inc(behind)
                deadline += behind * PERIOD_S
                logger.warning("media clock %.0f ms behind: dropped %d frames per stream",
                               lag * 1000, behind)
            try:
                await self._step(deadline * 1000.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("media clock tick %d failed", self.tick)
            self._metrics.tick_work.observe(loop.time() - now)
            self._metrics.ticks.inc()
            self.tick += 1

    def _drain(self, now_ms: float) -> None:
        for s in self._streams:
            try:
                s.inbound.pull(now_ms=now_ms)
            except Exception:
                logger.exception("pull failed for %s/%s", s.room, s.identity)

    async def _step(self, now_ms: float) -> None:
        streams = list(self._streams)
        if not streams:
            return
        pulled = [s.inbound.pull(now_ms=now_ms) for s in streams]
        for s, frame in zip(streams, pulled):
            s.last_kind = frame.kind
            self._metrics.frames.labels(frame.kind).inc()
        pts = self.tick * FRAME
        if self._stage is not None:
            # Enhancement runs behind the clock, in order, so a slow batch delays packets
            # instead of delaying the next pull (which would starve every jitter buffer).
            if self._pending.qsize() >= MAX_BACKLOG:
                # The enhancer is over a second behind even with its bypass (CPU starved): the
                # oldest queued tick is dropped, so memory and delay stay bounded (not emitted
                # out of order); counted with the clock's skipped ticks.
                self._pending.get_nowait()
                self.skipped += 1
                self._metrics.skipped_ticks.inc()
            self._pending.put_nowait((streams, [f.pcm for f in pulled], [f.kind for f in pulled],
                                      pts, now_ms))
            self._ensure_worker()
            return
        raws = [f.pcm for f in pulled]
        self._emit(streams, raws, raws, [None] * len(raws), pts, now_ms)

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._enhance_loop(),
                                                                  name="media-clock-enhance")

    async def _enhance_loop(self) -> None:
        """Enhance queued ticks in order; ticks older than the budget bypass the network."""
        loop = asyncio.get_running_loop()
        while True:
            streams, pcms, kinds, pts, now_ms = await self._pending.get()
            live = [i for i, s in enumerate(streams) if s in self._streams]
            streams = [streams[i] for i in live]
            pcms = [pcms[i] for i in live]
            kinds = [kinds[i] for i in live]
            if not streams:
                continue
            overloaded = loop.time() * 1000.0 - now_ms > self.enhance_budget_ms
            if overloaded:
                # The stage is slower than real time right now: this tick skips the network
                # (same delay, cross-faded), so the queue drains instead of growing.
                self.bypassed += 1
                self._metrics.enhance_bypassed.inc()
            try:
                outs = await self._stage.process(
                    [(s.handle, p, k) for s, p, k in zip(streams, pcms, kinds)], overloaded=overloaded)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("enhancer stage failed; forwarding the tick unprocessed")
                self._emit(streams, pcms, pcms, [None] * len(pcms), pts, now_ms)
                continue
            # A stream removed while the stage ran has left: its frame goes nowhere (fed to the
            # ASR hub after its participant_left, it would open state that nothing closes).
            kept = [i for i, s in enumerate(streams) if s in self._streams]
            self._emit([streams[i] for i in kept], [outs[i].raw for i in kept],
                       [outs[i].enhanced for i in kept], [bool(outs[i].speech) for i in kept],
                       pts, now_ms)

    def _emit(self, streams: list[ClockStream], raws: list[np.ndarray],
              cleaned: list[np.ndarray], speech: list[Optional[bool]], pts: int,
              now_ms: float) -> None:
        """Encode once per publisher, fan out, update speaking state, feed the sinks."""
        sends = [np.zeros(FRAME, np.float32) if s.muted else c for s, c in zip(streams, cleaned)]
        # Inline: one libopus call is ~0.1 ms; a thread hop per tick costs more than that
        # in wake-up latency on a busy host.
        packets = self._encode_all(streams, sends, pts)
        for s, packet in zip(streams, packets):
            if packet is None:
                continue
            for track in s.subscribers:
                track.offer(packet)
            self._metrics.packets_out.inc(len(s.subscribers))
        for s, raw, clean, sp in zip(streams, raws, cleaned, speech):
            s.frames += 1
            energy_speech, rms = _energy_speech(raw)
            is_speech = (energy_speech if sp is None else sp) and not s.muted
            flipped = s.speaking.update(is_speech, 0.0 if s.muted else rms)
            if flipped is not None and s.on_speaking is not None:
                s.on_speaking(flipped, s.speaking.level)
            if s.muted and self.sinks:  # a muted voice is not forwarded, so not transcribed either
                raw = clean = _MUTED
            for sink in self.sinks:
                try:
                    sink.on_frame(room=s.room, identity=s.identity, t_ms=now_ms, raw=raw,
                                  enhanced=clean, speech=is_speech)
                except Exception:
                    logger.exception("frame sink %r failed", sink)

    def _encode_all(self, streams: list[ClockStream], pcms: list[np.ndarray],
                    pts: int) -> list[Any]:
        """One encode per publisher, shared by all its subscribers."""
        out = []
        for s, pcm in zip(streams, pcms):
            try:
                out.append(self._encode(s.encoder, pcm, pts))
            except Exception:
                logger.exception("encode failed for %s/%s", s.room, s.identity)
                out.append(None)
        return out
