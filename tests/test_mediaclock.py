"""The media clock under overload, with explicit time.

* A tick the enhancer gets late (``now_ms`` older than ``enhance_budget_ms``) skips the
  network for that tick only: the stage is told ``overloaded`` and its output for the tick is
  not the network's; the ticks around it are enhanced as usual, and none is lost.
* A clock that falls behind by less than ``MAX_CATCH_UP`` frames runs the missed ticks back to
  back on their own schedule (no frame dropped, no pts gap); further behind, it drops the missed
  frames (pulled, so jitter buffers stay drained) and leaves a pts gap of exactly those frames.

The clock's own ``_run`` is driven on an event loop whose ``time()`` is virtual: it only moves
when the loop would otherwise wait for a timer, or when a test stalls it on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from mediaserver.enhance.stage import EnhancerStage
from mediaserver.media.inbound import InboundAudio
from mediaserver.media.opus import OpusEncoder
from mediaserver.sfu.mediaclock import FRAME, MAX_CATCH_UP, PERIOD_S, ClockStream, MediaClock
from mediaserver.sfu.metrics import SfuMetrics

from test_enhance_common import constant_mask_model, saved

MASK = 0.5  # the network's gain in these tests: an enhanced tick is the input at half level


@dataclass
class Tick:
    t_ms: float
    ratio: float      # rms(enhanced) / rms(raw) of the frame


@dataclass
class RecordingSink:
    """A frame sink of the clock: every emitted frame's time and enhanced/raw level ratio."""

    ticks: list[Tick] = field(default_factory=list)
    on_tick: Optional[Callable[[int], None]] = None

    def on_frame(self, *, room: str, identity: str, t_ms: float, raw: np.ndarray,
                 enhanced: np.ndarray, speech: bool) -> None:
        raw_rms = float(np.sqrt(np.mean(raw ** 2)))
        self.ticks.append(Tick(t_ms, float(np.sqrt(np.mean(enhanced ** 2))) / max(raw_rms, 1e-9)))
        if self.on_tick is not None:
            self.on_tick(len(self.ticks))


def _tone_stream(frames: int) -> ClockStream:
    """A publisher whose Opus packets of a 440 Hz tone all arrived at t=0 (pulled in order)."""
    encoder = OpusEncoder(bitrate=32000)
    inbound = InboundAudio()
    t = np.arange(frames * FRAME) / 48000.0
    x = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    for k in range(frames):
        inbound.push(encoder.encode(x[k * FRAME:(k + 1) * FRAME]), seq=k, timestamp=FRAME * k,
                     ssrc=7, arrival_ms=0.0)
    return ClockStream(room="r", identity="tone", inbound=inbound, encoder=OpusEncoder(bitrate=32000))


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``time()`` is virtual: when nothing is ready it jumps to the next timer; ``stall(s)``
    moves it on as if the running callback had taken ``s`` seconds."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 1000.0

    def time(self) -> float:
        return self._now

    def stall(self, seconds: float) -> None:
        self._now += seconds

    def _run_once(self) -> None:  # CPython's BaseEventLoop step
        if not self._ready:
            pending = [h.when() for h in self._scheduled if not h.cancelled()]
            if pending:
                self._now = max(self._now, min(pending))
        super()._run_once()



# ---- overload bypass: the clock's tick handed to its enhancer worker, time stalled on purpose ------
def test_a_late_tick_bypasses_the_enhancer_for_that_tick_only(tmp_path: Path) -> None:
    stage = EnhancerStage(saved(constant_mask_model(MASK), tmp_path), gate=False)
    pts_out: list[int] = []
    clock = MediaClock(stage=stage, encode_pts=lambda enc, pcm, pts: pts_out.append(pts))
    sink = RecordingSink()
    clock.sinks.append(sink)
    sender = OpusEncoder(bitrate=32000)
    stream = ClockStream(room="r", identity="tone", inbound=InboundAudio(),
                         encoder=OpusEncoder(bitrate=32000), handle=stage.open())
    clock.add(stream)
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(FRAME) / 48000.0)).astype(np.float32)
    late = set(range(40, 50))
    loop = VirtualTimeLoop()

    async def main() -> None:
        emitted = asyncio.Event()
        sink.on_tick = lambda n: emitted.set()
        for k in range(90):
            t_ms = loop.time() * 1000.0
            stream.inbound.push(sender.encode(tone), seq=k, timestamp=FRAME * k, ssrc=7, arrival_ms=t_ms)
            emitted.clear()
            clock.tick = k                   # what the clock's own loop counts
            await clock._step(t_ms)          # queued for the enhancer worker
            if k in late:                    # the loop is held up before the worker gets the tick
                loop.stall(5 * clock.enhance_budget_ms / 1000.0)
            await emitted.wait()             # one tick at a time: each judged on its own
            loop.stall(PERIOD_S)
        await clock.stop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        stage.shutdown()

    assert pts_out == [FRAME * k for k in range(90)]       # every tick emitted once, in order
    assert clock.bypassed == len(late) and stage.frames_bypass == len(late), (
        clock.bypassed, stage.frames_bypass)
    assert stage.frames_net == 90 - len(late)
    ratios = [t.ratio for t in sink.ticks]
    # enhanced ticks carry the network's gain; each switch is one cross-faded tick (skipped here)
    for k in list(range(10, 40)) + list(range(51, 90)):
        assert abs(ratios[k] - MASK) < 0.05, (k, ratios[k])
    for k in range(41, 50):
        assert abs(ratios[k] - MASK) > 0.2, (k, ratios[k])


# ---- catch-up: the clock's own loop on virtual time ---------------------------------------------
def run_clock_with_stall(stall_s: float, *, at: int = 10, frames: int = 40) -> tuple[MediaClock, RecordingSink, list[int]]:
    """Run the clock (no enhancer) until ``frames`` frames were emitted; the frame sink stalls
    the loop by ``stall_s`` while handling frame ``at``."""
    loop = VirtualTimeLoop()
    pts_out: list[int] = []
    clock = MediaClock(stage=None, encode_pts=lambda enc, pcm, pts: pts_out.append(pts))
    sink = RecordingSink()
    clock.sinks.append(sink)
    clock.add(_tone_stream(frames + 40))

    async def main() -> None:
        done = asyncio.Event()

        def on_tick(n: int) -> None:
            if n == at + 1:
                loop.stall(stall_s)
            if n == frames:
                done.set()

        sink.on_tick = on_tick
        clock.start()
        try:
            await done.wait()
        finally:
            await clock.stop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return clock, sink, pts_out


@pytest.mark.parametrize("stall_ms", [40, 60, 110])
def test_a_late_clock_catches_up_without_dropping_frames(stall_ms: int) -> None:
    clock, sink, pts = run_clock_with_stall(stall_ms / 1000.0)
    t0 = sink.ticks[0].t_ms
    assert clock.skipped == 0 and clock.late >= 1, (clock.skipped, clock.late)
    assert pts == [FRAME * k for k in range(len(pts))]          # no frame dropped, no pts gap
    # every tick keeps its place on the absolute 20 ms schedule (the stall is not carried on)
    assert [t.t_ms for t in sink.ticks] == pytest.approx([t0 + 20.0 * k for k in range(len(pts))])


@pytest.mark.parametrize("stall_ms", [150, 410])
def test_a_clock_far_behind_drops_exactly_the_missed_frames(stall_ms: int) -> None:
    clock, sink, pts = run_clock_with_stall(stall_ms / 1000.0)
    t0 = sink.ticks[0].t_ms
    emitted = [p // FRAME for p in pts]
    missing = sorted(set(range(emitted[-1] + 1)) - set(emitted))
    # tick 11 found the clock stall_ms - 20 ms behind: that many whole frames are dropped
    behind = int((stall_ms / 1000.0 - PERIOD_S) / PERIOD_S)
    assert behind > MAX_CATCH_UP
    assert clock.skipped == behind and missing == list(range(11, 11 + behind)), (clock.skipped, missing)
    # the frames that are sent keep their place on the schedule: pts and time agree
    assert [t.t_ms for t in sink.ticks] == pytest.approx([t0 + 20.0 * k for k in emitted])


# ---- an idle clock: no ticks without a publisher, back on the grid when one comes ---------------
def _idle_then_a_stream(idle_s: float) -> tuple[MediaClock, SfuMetrics, RecordingSink, list[int], float]:
    """A clock without streams for ``idle_s`` (virtual) seconds, then one tone stream until 5
    frames went out: (clock, metrics, sink, pts sent, ticks counted at the end of the idle time)."""
    loop = VirtualTimeLoop()
    metrics = SfuMetrics()
    pts_out: list[int] = []
    clock = MediaClock(metrics=metrics, encode_pts=lambda enc, pcm, pts: pts_out.append(pts))
    sink = RecordingSink()
    clock.sinks.append(sink)
    idle_ticks: list[float] = []

    async def main() -> None:
        clock.start()
        await asyncio.sleep(idle_s)   # virtual: the loop jumps to the next timer
        idle_ticks.append(metrics.registry.get_sample_value("mediaserver_clock_ticks_total") or 0.0)
        done = asyncio.Event()
        sink.on_tick = lambda n: done.set() if n == 5 else None
        clock.add(_tone_stream(10))
        try:
            await done.wait()
        finally:
            await clock.stop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return clock, metrics, sink, pts_out, idle_ticks[0]


def test_an_idle_clock_does_not_tick_and_resumes_on_its_grid_when_a_stream_comes() -> None:
    """With no publisher the clock sleeps instead of waking 50 times a second (1.2 % of a core
    per idle media worker on the 2-core test machine). A stream added after an idle second
    gets its first tick at the next point of the same 20 ms grid, with the pts advanced by the
    idle periods (time and pts still agree), and the pause counts no late or skipped tick."""
    clock, metrics, sink, pts_out, idle_ticks = _idle_then_a_stream(idle_s=1.0)
    assert idle_ticks == 0.0 and clock.late == 0 and clock.skipped == 0, (idle_ticks, clock.late)
    first_deadline_ms = 1000.0 * 1000.0 + 20.0   # the loop starts at 1000 s: the grid's next point
    assert [t.t_ms for t in sink.ticks] == pytest.approx([sink.ticks[0].t_ms + 20.0 * k for k in range(5)])
    assert sink.ticks[0].t_ms - first_deadline_ms >= 1000.0   # it did not tick while idle
    assert [p // FRAME for p in pts_out[:5]] == [round((t.t_ms - first_deadline_ms) / 20.0) for t in sink.ticks]


def test_the_ticks_an_idle_clock_slept_through_are_not_counted_as_ticks_run() -> None:
    """``/healthz`` ``ticks`` (and ``late_tick_pct``'s base) is ``ticks_run``: an idle clock's
    ticks stop, and stay stopped when a stream comes. Fresh-user trial 7: it was the pts
    index, which ``resume`` advances by the idle periods, so a worker's ``ticks`` jumped by
    ~50 a second of idle time (3102 -> 7058 at a call's first second after 79 s idle) and
    its late share was divided by them."""
    clock, metrics, _sink, _pts, _idle = _idle_then_a_stream(idle_s=2.0)   # 100 idle periods
    ran = metrics.registry.get_sample_value("mediaserver_clock_ticks_total")
    assert clock.ticks_run == ran and 5 <= ran <= 6, (clock.ticks_run, ran)
    assert clock.tick - clock.ticks_run >= 100   # the pts still moved with the idle time


# ---- a failing stage: every tick still goes out, and the log is not flooded --------------------
def test_a_failing_stage_forwards_every_tick_and_logs_once_per_interval(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A stage that fails every tick (here: its worker thread shut down; in production a dead
    shared inference process) costs no frame: each tick is forwarded unprocessed and counted
    in ``mediaserver_enhance_failed_ticks_total``; the log gets the first failure with its
    traceback and then one line per STAGE_LOG_S, not 50 tracebacks a second."""
    from mediaserver.sfu.mediaclock import STAGE_LOG_S
    from mediaserver.sfu.metrics import SfuMetrics

    stage = EnhancerStage(saved(constant_mask_model(MASK), tmp_path), gate=False)
    metrics = SfuMetrics()
    loop = VirtualTimeLoop()
    pts_out: list[int] = []
    clock = MediaClock(stage=stage, metrics=metrics, encode_pts=lambda enc, pcm, pts: pts_out.append(pts))
    sink = RecordingSink()
    clock.sinks.append(sink)
    frames = int(2.5 * STAGE_LOG_S * 50)   # 25 s of ticks
    stream = _tone_stream(frames + 40)
    stream.handle = stage.open()
    clock.add(stream)
    stage.shutdown()   # from now on every process() raises

    with caplog.at_level(logging.ERROR, logger="mediaserver.sfu.mediaclock"):
        _run_clock_for(loop, clock, sink, frames)
    assert pts_out[:frames] == [FRAME * k for k in range(frames)]   # nothing lost
    failed = metrics.registry.get_sample_value("mediaserver_enhance_failed_ticks_total")
    assert failed is not None and failed >= frames
    records = [r for r in caplog.records if "enhancer stage" in r.getMessage()]
    assert records and records[0].exc_info is not None            # the first one, with traceback
    assert 2 <= len(records) <= 3, [r.getMessage() for r in records]   # then one per 10 s
    assert "ticks forwarded unprocessed" in records[1].getMessage()


def _run_clock_for(loop: VirtualTimeLoop, clock: MediaClock, sink: RecordingSink, frames: int) -> None:
    """Run ``clock`` on ``loop`` (virtual time) until ``sink`` saw ``frames`` ticks; close the loop."""
    async def main() -> None:
        done = asyncio.Event()
        sink.on_tick = lambda n: done.set() if n == frames else None
        clock.start()
        try:
            await done.wait()
        finally:
            await clock.stop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


class _FlakyStage(EnhancerStage):
    """A real stage whose calls number ``failing`` (0-based) miss their deadline, as a worker's
    shared stage does while the inference process is slow or restarting; the others answer."""

    def __init__(self, *args, failing, **kwargs) -> None:   # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.failing, self.calls = failing, 0

    async def process(self, items, *, overloaded: bool = False):   # type: ignore[override]
        from mediaserver.enhance.shared_client import SharedStageTimeout

        call, self.calls = self.calls, self.calls + 1
        if self.failing(call):
            raise SharedStageTimeout("no reply from the inference process within 40 ms")
        # on the loop's thread: the virtual clock would jump while it waited for a worker thread
        return self.process_sync(items, overloaded=overloaded)


def _stage_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture, failing,
                 seconds: float) -> tuple[list[logging.LogRecord], list[int]]:
    """Run a clock with one tone stream for ``seconds`` (virtual time) on a ``_FlakyStage``;
    the clock's "enhancer stage" log records (INFO and up) and the pts it encoded."""
    from mediaserver.sfu.metrics import SfuMetrics

    stage = _FlakyStage(saved(constant_mask_model(MASK), tmp_path), gate=False, failing=failing)
    loop = VirtualTimeLoop()
    pts_out: list[int] = []
    clock = MediaClock(stage=stage, metrics=SfuMetrics(), encode_pts=lambda enc, pcm, pts: pts_out.append(pts))
    sink = RecordingSink()
    clock.sinks.append(sink)
    frames = int(seconds * 50)
    stream = _tone_stream(frames + 40)
    stream.handle = stage.open()
    clock.add(stream)
    with caplog.at_level(logging.INFO, logger="mediaserver.sfu.mediaclock"):
        try:
            _run_clock_for(loop, clock, sink, frames)
        finally:
            stage.shutdown()
    return [r for r in caplog.records if "enhancer stage" in r.getMessage()], pts_out


def test_an_enhancer_out_of_reach_is_one_warning_line_without_a_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A fresh user's trial: with ``--workers`` a restart of the shared inference process (an
    expected outage: the front restarts it, the calls go on unenhanced) logged a
    ``SharedStageTimeout`` traceback in each worker. The stage out of reach is now one WARNING
    line saying why, then one per STAGE_LOG_S; a stage that fails for any other reason keeps
    its traceback at ERROR (the test above)."""
    from mediaserver.sfu.mediaclock import STAGE_LOG_S

    frames = int(1.5 * STAGE_LOG_S * 50)
    records, pts_out = _stage_lines(tmp_path, caplog, lambda call: True, seconds=1.5 * STAGE_LOG_S)
    assert pts_out[:frames] == [FRAME * k for k in range(frames)]   # nothing lost
    assert len(records) == 2, [r.getMessage() for r in records]
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in records), records
    assert "within 40 ms" in records[0].getMessage() and "ticks forwarded unprocessed" in records[1].getMessage()


def test_an_enhancer_outage_that_ends_says_so_with_its_length(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A fresh user saw "forwarding the tick unprocessed until it answers again" and no line
    when it did: the end of an outage is one INFO line with its ticks and length."""
    records, _ = _stage_lines(tmp_path, caplog, lambda call: 50 <= call <= 60, seconds=3.0)
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO], [r.getMessage() for r in records]
    assert re.search(r"answers again: 11 tick\(s\) forwarded unprocessed in 0\.2\d s", records[1].getMessage()), \
        records[1].getMessage()


def test_a_flapping_enhancer_is_not_two_lines_per_flap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One missed tick a second for 25 s (25 outages): the failures and the recoveries are
    each logged at most once per STAGE_LOG_S (10 s), the counts in between summed up."""
    records, _ = _stage_lines(tmp_path, caplog, lambda call: call % 50 == 25, seconds=25.0)
    failed = [r for r in records if r.levelno == logging.WARNING]
    answered = [r for r in records if r.levelno == logging.INFO]
    assert 2 <= len(failed) <= 3 and 2 <= len(answered) <= 3, [r.getMessage() for r in records]
    assert all("1 tick(s)" in r.getMessage() for r in answered), [r.getMessage() for r in answered]
