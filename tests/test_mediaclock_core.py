"""Issue 14: the media clock's sans-I/O core, driven with explicit times (no event loop).

``ClockCore.tick(now_ms)`` runs the tick due at ``next_deadline_ms``: on time or a little late
it runs in full on its own schedule (late ones counted); more than ``MAX_CATCH_UP`` periods
behind it pulls and drops exactly the missed frames (a pts gap, no shift). With an enhancer
the tick is queued (bounded, oldest dropped and counted), ``next_batch(now_ms)`` marks a tick
older than the budget ``overloaded`` and leaves out streams that left, and
``enhanced(batch, outputs)`` emits it. Every result carries the encoded packets, speaking flips
and sink frames; the core itself never sends, calls back or awaits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

from mediaserver.media.inbound import InboundAudio
from mediaserver.media.opus import OpusEncoder
from mediaserver.sfu.mediaclock import FRAME, MAX_CATCH_UP, PERIOD_MS, ClockCore, ClockStream

TONE = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(200 * FRAME) / 48000.0)).astype(np.float32)


class PacedTone:
    """A publisher's receive path fed in real time: Opus packets of a 440 Hz tone, packet k
    arriving 5 ms before the k-th pull after the first (pulls come at the ticks' deadlines)."""

    def __init__(self, frames: int) -> None:
        encoder = OpusEncoder(bitrate=32000)
        self._packets = [encoder.encode(TONE[k * FRAME:(k + 1) * FRAME]) for k in range(frames)]
        self._inbound = InboundAudio()
        self._t0: float | None = None
        self._next = 0

    def pull(self, *, now_ms: float):  # noqa: ANN201
        if self._t0 is None:
            self._t0 = now_ms
        while (self._next < len(self._packets)
               and (arrival := self._t0 + PERIOD_MS * self._next - 5.0) <= now_ms):
            self._inbound.push(self._packets[self._next], seq=self._next,
                               timestamp=FRAME * self._next, ssrc=7, arrival_ms=arrival)
            self._next += 1
        return self._inbound.pull(now_ms=now_ms)


def tone_stream(name: str, frames: int = 200) -> ClockStream:
    """A publisher of a 440 Hz tone whose packets arrive in real time (``PacedTone``)."""
    return ClockStream(room="r", identity=name, inbound=PacedTone(frames), encoder=name)


def encode(encoder: object, pcm: np.ndarray, pts: int) -> tuple[object, int, float]:
    """Stands in for the Opus encoder: (publisher, pts, level) of what would be sent."""
    return encoder, pts, float(np.sqrt(np.mean(pcm ** 2)))


def pts_of(result) -> list[int]:  # noqa: ANN001
    return [packet[1] for _, packet in result.packets]


def test_ticks_run_on_their_deadlines_and_late_ones_are_counted() -> None:
    core = ClockCore(encode_pts=encode)
    core.add(tone_stream("a"))
    core.start(1000.0)
    assert core.next_deadline_ms == 1000.0 + PERIOD_MS
    on_time = core.tick(1020.0)
    slightly = core.tick(1045.0)        # deadline 1040: 5 ms late is on time
    late = core.tick(1075.0)            # deadline 1060: 15 ms late
    assert pts_of(on_time) == [0] and pts_of(slightly) == [FRAME] and pts_of(late) == [2 * FRAME]
    assert (on_time.late, slightly.late, late.late) == (False, False, True)
    assert late.lag_ms == 15.0 and core.late == 1 and core.skipped == 0
    assert core.next_deadline_ms == 1080.0      # the schedule is absolute: lateness is not carried


@pytest.mark.parametrize("now", [1000.0, 1007.3, 1019.99, 5.0])
def test_every_clock_ticks_on_the_same_20_ms_grid(now: float) -> None:
    """Processes started at any moment tick together (the shared enhancer batches the media
    workers' frames only when their ticks coincide): deadlines are multiples of 20 ms."""
    core = ClockCore(encode_pts=encode)
    core.start(now)
    first = core.next_deadline_ms
    assert first % PERIOD_MS == 0 and now < first <= now + PERIOD_MS
    core.tick(first)
    assert core.next_deadline_ms == first + PERIOD_MS


def test_a_core_a_little_behind_catches_up_on_its_own_schedule() -> None:
    core = ClockCore(encode_pts=encode)
    core.add(tone_stream("a"))
    core.start(0.0)
    core.tick(20.0)
    now = 20.0 + MAX_CATCH_UP * PERIOD_MS      # stalled: four ticks are overdue
    sent, frames = [], []
    while core.next_deadline_ms <= now:        # what the driver does: no sleep while overdue
        result = core.tick(now)
        sent += pts_of(result)
        frames += [f.t_ms for f in result.frames]
    assert sent == [FRAME * k for k in range(1, 6)] and core.skipped == 0
    assert frames == [40.0, 60.0, 80.0, 100.0, 120.0]   # each frame keeps its own time


def test_a_core_far_behind_drops_exactly_the_missed_frames() -> None:
    core = ClockCore(encode_pts=encode)
    stream = tone_stream("a")
    core.add(stream)
    core.start(0.0)
    core.tick(20.0)
    result = core.tick(40.0 + 150.0)           # deadline 40, 150 ms behind: 7 frames dropped
    assert result.skipped == 7 and core.skipped == 7
    assert pts_of(result) == [8 * FRAME]       # ticks 1-7 pulled and dropped, a gap in pts
    assert result.frames[0].t_ms == 40.0 + 7 * PERIOD_MS
    assert core.next_deadline_ms == 200.0 and core.index == 9
    assert stream.frames == 2                  # only emitted frames count


def test_enhancer_backlog_is_bounded_and_batches_are_judged_by_their_age() -> None:
    core = ClockCore(encode_pts=encode, enhance=True, enhance_budget_ms=60.0, max_backlog=3)
    a, b = tone_stream("a"), tone_stream("b")
    core.add(a)
    core.add(b)
    core.start(0.0)
    results = [core.tick(20.0 * k) for k in range(1, 6)]     # five ticks, nobody enhancing
    assert all(r.queued and not r.packets for r in results)
    assert [r.skipped for r in results] == [0, 0, 0, 1, 1] and core.skipped == 2
    assert core.backlog == 3                                  # ticks 2, 3, 4 are left
    core.remove(b)                                            # b leaves while they wait
    fresh = core.next_batch(now_ms=60.0 + 30.0)
    assert fresh is not None and fresh.pts == 2 * FRAME and not fresh.overloaded
    assert [s.identity for s in fresh.streams] == ["a"] and len(fresh.pcms) == 1
    stale = core.next_batch(now_ms=80.0 + 61.0)
    assert stale is not None and stale.overloaded and core.bypassed == 1

    @dataclass
    class Out:
        raw: np.ndarray
        enhanced: np.ndarray
        speech: bool

    out = core.enhanced(fresh, [Out(p, 0.5 * p, True) for p in fresh.pcms])
    assert pts_of(out) == [2 * FRAME] and [f.identity for f in out.frames] == ["a"]
    level = out.packets[0][1][2]
    assert abs(level - 0.5 * float(np.sqrt(np.mean(fresh.pcms[0] ** 2)))) < 1e-6   # the stage's output is sent
    failed = core.enhanced(stale, None)                       # the stage raised: sent unprocessed
    assert pts_of(failed) == [3 * FRAME]
    # (its first 10 ms fade up from the stage's last level, 0.5: see the test at the end)
    rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(480) + 0.5) / 480)
    expected = stale.pcms[0].copy()
    expected[:480] *= 0.5 * (1 - rise) + rise
    assert abs(failed.packets[0][1][2] - float(np.sqrt(np.mean(expected ** 2)))) < 1e-6
    assert float(np.sqrt(np.mean(stale.pcms[0] ** 2))) > 0.05


def test_speaking_flips_and_mute_are_in_the_result() -> None:
    core = ClockCore(encode_pts=encode)
    stream = tone_stream("a")
    core.add(stream)
    core.start(0.0)
    events = []
    for k in range(1, 6):
        events += core.tick(20.0 * k).events
    assert [(s.identity, speaking) for s, speaking, _ in events] == [("a", True)]   # after 3 frames
    stream.muted = True
    muted = [core.tick(20.0 * k) for k in range(6, 30)]
    assert all(r.packets[0][1][2] == 0.0 for r in muted)          # silence is sent
    assert all(not f.raw.any() and not f.enhanced.any() and not f.speech
               for r in muted for f in r.frames)                  # and nothing reaches the sinks
    assert [speaking for r in muted for _, speaking, _ in r.events] == [False]


def test_a_receive_path_that_raises_costs_only_its_own_frame() -> None:
    class Broken:
        def pull(self, *, now_ms: float):  # noqa: ANN201
            raise RuntimeError("decoder state corrupt")

    core = ClockCore(encode_pts=encode)
    good = tone_stream("good")
    core.add(ClockStream(room="r", identity="broken", inbound=Broken(), encoder="broken"))
    core.add(good)
    core.start(0.0)
    results = [core.tick(20.0 * k) for k in range(1, 6)]
    assert [pts_of(r) for r in results] == [[FRAME * k, FRAME * k] for k in range(5)]  # no tick lost
    levels = {who: [p[2] for r in results for s, p in r.packets if s.identity == who]
              for who in ("good", "broken")}
    assert levels["broken"] == [0.0] * 5 and max(levels["good"]) > 0.05
    assert results[-1].kinds[0] == "silence"


@dataclass
class StageOut:
    raw: np.ndarray
    enhanced: np.ndarray
    speech: bool


@dataclass
class Pcm:
    pcm: np.ndarray
    kind: str = "normal"
    wait_ms: Optional[float] = None
    target_ms: Optional[float] = None


class ToneSource:
    """A receive path that yields a clean tone, 20 ms per pull. 437 Hz: no switch of the test
    below falls on a zero crossing, where a step would be invisible."""

    def __init__(self) -> None:
        self._n = 0

    def pull(self, *, now_ms: float) -> Pcm:
        t = (self._n + np.arange(FRAME)) / 48000.0
        self._n += FRAME
        return Pcm((0.3 * np.sin(2 * np.pi * 437.0 * t)).astype(np.float32))


@pytest.mark.parametrize("latency", [480, 0])
def test_a_tick_the_stage_does_not_answer_keeps_the_streams_timing_and_fades(latency: int) -> None:
    """Ticks 15-19 get no output from the stage (failed, or the shared enhancer past its
    deadline). They go out as the input delayed like the stage's outputs (no 10 ms skip and
    repeat), the gap's first 10 ms fade up from the stage's level and the first answered tick
    cross-fades back: the waveform never steps."""
    sent: list[np.ndarray] = []

    def capture(encoder: object, pcm: np.ndarray, pts: int) -> tuple[object, int, float]:
        sent.append(pcm.copy())
        return encoder, pts, 0.0

    core = ClockCore(encode_pts=capture, enhance=True, enhance_latency=latency)
    core.add(ClockStream(room="r", identity="a", inbound=ToneSource(), encoder="a"))
    core.start(0.0)
    line, delayed = np.zeros(latency, np.float32), []
    for k in range(30):
        now = 20.0 * (k + 1)
        core.tick(now)
        batch = core.next_batch(now)
        x = np.concatenate([line, batch.pcms[0]])   # what a stage with this latency outputs
        line, d = x[len(x) - latency:], x[:FRAME]
        delayed.append(d)
        answer = None if 15 <= k < 20 else [StageOut(d, 0.5 * d, True)]
        result = core.enhanced(batch, answer)
        assert [f.raw for f in result.frames][0] is not None
    y, d = np.concatenate(sent), np.concatenate(delayed)
    fade = 480
    gap, back = 15 * FRAME, 20 * FRAME
    np.testing.assert_array_equal(y[:gap], 0.5 * d[:gap])                      # enhanced
    np.testing.assert_allclose(y[gap + fade:back], d[gap + fade:back], atol=1e-7)  # raw, same timing
    np.testing.assert_allclose(y[back + fade:], 0.5 * d[back + fade:], atol=1e-7)  # enhanced again
    assert np.max(np.abs(np.diff(y))) <= 1.5 * np.max(np.abs(np.diff(d)))     # no step anywhere
