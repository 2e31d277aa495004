"""Issue 11, finals <= 1.5 s after the utterance: a decode that is no longer wanted gives its
worker back instead of running to its end.

Logic table first (no model): which decodes in flight a talker no longer wants
(``TalkerStream.superseded``). Then the live sink and its pool with a stand-in engine that
decodes in steps and checks its abort signal between them (as Moonshine does), so the
tests count which decodes ran to completion and which stopped, in which order: a final
does not wait for its talker's partial in flight, a final preempts another talker's partial
when no worker is free, an early final whose pause ended in speech stops. The real engines'
abort paths are tested in test_asr_moonshine.py (between decoder steps and inside an
onnxruntime run) and here for Whisper (only before it starts).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import numpy as np
import pytest

from mediaserver.asr.abort import AbortSignal, DecodeAborted
from mediaserver.asr.local import LocalRecogniserSink
from mediaserver.asr.segmenter import Segment
from mediaserver.asr.sink import LiveChunk, Transcript
from mediaserver.asr.streaming import DecodeJob, StreamConfig, TalkerStream, Word
from test_asr_streaming import needs_whisper
from waiting import until


def live(t: TalkerStream, seq: int, ms: float, silence_ms: float = 0.0) -> None:
    t.add_live(LiveChunk("r", "a", seq, 0.0, np.ones(int(16 * ms), np.int16), silence_ms=silence_ms))


def segment(seq: int, end_ms: float, who: str = "a") -> Segment:
    return Segment("r", who, 0.0, end_ms, np.ones(int(16 * end_ms), np.int16), seq=seq,
                   meta={"cut": "pause"})


# ------------------------------------------------------------------ logic, no model
def early_at_pause(t: TalkerStream, seq: int) -> DecodeJob:
    """Silent 20 ms frames up to 200 ms of pause; the early final they started."""
    jobs = []
    for s in range(20, 220, 20):
        live(t, seq, 20, silence_ms=s)
        jobs.append(t.early_job())
    (early,) = [j for j in jobs if j is not None]
    return early


def test_which_decodes_in_flight_a_talker_no_longer_wants() -> None:
    t = TalkerStream("r", "a", StreamConfig(early_final_ms=200))
    live(t, 1, 1500)
    partial = t.begin_partial(t.partial_job())
    assert partial is not None and not t.superseded(partial)      # it will be shown
    t.partial_done(partial, [Word("send")])
    live(t, 1, 400)
    partial = t.begin_partial(t.partial_job())
    assert partial is not None
    early = early_at_pause(t, 1)                                  # a pause begins
    assert t.superseded(partial)                                  # its final waits for the worker
    t.aborted(partial)
    assert not t.superseded(t.begin_early(early))                 # the early decode is wanted
    live(t, 1, 20, silence_ms=0)                                  # until speech resumes
    assert t.superseded(early) and t.early_discarded == 1
    # the aborted partial's audio counts as not decoded: the next one is asked at once
    # (220 ms after the aborted one's end; it would wait for 300 ms of new audio)
    assert t.partial_job() is not None
    # a partial of a segment that closed is stale; a final never is
    final = t.close(segment(1, 2400))
    assert isinstance(final, DecodeJob) and not t.superseded(final) and t.superseded(partial)
    # an early decode its segment adopted is the final: never superseded
    live(t, 2, 1500)
    running = t.begin_early(early_at_pause(t, 2))
    assert running is not None
    assert t.close(segment(2, 2000)) is None and t.early_state == "adopted"
    assert not t.superseded(running)


# ------------------------------------------------------------------ the sink and its pool
class Steps:
    """Stands in for an abortable engine: a decode is ``steps(kind, n)`` steps of 5 ms (``n``:
    how many decodes of that kind came before), checking its abort signal before each, as
    Moonshine checks before its encoder and each decoder step. ``log`` records, in order,
    ``(event, kind, seconds of audio)`` with event "start", "done" or "stopped"; kind is
    "partial" or "final" (early finals decode as finals)."""

    abortable = True

    def __init__(self, steps: Callable[[str, int], int]) -> None:
        self.steps = steps
        self.log: list[tuple[str, str, float]] = []
        self._count = {"partial": 0, "final": 0}
        self._lock = threading.Lock()

    def recognise(self, pcm: np.ndarray, *, fallback: bool = True,
                  abort: Optional[AbortSignal] = None, **_: object) -> list[Word]:
        if abort is None:                   # the pool's warm-up decode
            return []
        kind = "final" if fallback else "partial"
        with self._lock:
            n = self._count[kind]
            self._count[kind] += 1
            self.log.append(("start", kind, len(pcm) / 16000))
        try:
            for _ in range(self.steps(kind, n)):
                abort.check()
                time.sleep(0.005)
        except DecodeAborted:
            self.log.append(("stopped", kind, len(pcm) / 16000))
            raise
        self.log.append(("done", kind, len(pcm) / 16000))
        return [Word(kind), Word(str(n))]

    def events(self, event: str) -> list[str]:
        return [k for e, k, _ in self.log if e == event]


LONG = 2000     # steps of a decode that would hold the worker for 10 s or more


async def started(engine: Steps, kind: str, count: int = 1) -> None:
    await until(lambda: engine.events("start").count(kind) >= count, timeout=60,
                what=f"{count} {kind} decode(s) started")


async def test_a_final_does_not_wait_for_its_talkers_partial_in_flight() -> None:
    """The segment closes while a long partial of it runs on the only worker: the partial
    stops (its result would be discarded) and the final runs at once; it used to wait for
    the partial's end."""
    engine = Steps(lambda kind, n: LONG if kind == "partial" else 2)
    sink = LocalRecogniserSink(workers=1, recogniser_factory=lambda: engine,
                               stream=StreamConfig(early_final_ms=0))
    got: list[Transcript] = []
    await sink.start(got.append)
    try:
        sink.submit_live(LiveChunk("r", "a", 1, 0.0, np.ones(16 * 1500, np.int16)))
        await started(engine, "partial")
        sink.submit_segment(segment(1, 1500))
        await sink.drain()
        health = sink.health()
    finally:
        await sink.stop()
    assert engine.events("done") == ["final"] and engine.events("stopped") == ["partial"]
    assert [t.text for t in got if t.final] == ["final 0"]
    assert health["aborts"] == {"stale": 1, "preempted": 0, "stopped": 1}
    assert health["worker_restarts"] == 0 and health["failed"] == 0   # an abort is no failure


async def test_a_final_preempts_another_talkers_partial_when_no_worker_is_free() -> None:
    """With ``preempt_partials`` (off by default): talker a's long partial holds the only
    worker when talker b's segment closes; the partial gives the worker up for b's final, and
    a's next partial is asked again at once."""
    engine = Steps(lambda kind, n: LONG if (kind, n) == ("partial", 0) else 2)
    sink = LocalRecogniserSink(workers=1, recogniser_factory=lambda: engine,
                               stream=StreamConfig(early_final_ms=0, preempt_partials=True))
    got: list[Transcript] = []
    await sink.start(got.append)
    try:
        sink.submit_live(LiveChunk("r", "a", 1, 0.0, np.ones(16 * 1500, np.int16)))
        await started(engine, "partial")
        sink.submit_segment(segment(1, 2000, who="b"))
        await started(engine, "final")
        sink.submit_live(LiveChunk("r", "a", 1, 0.0, np.ones(320, np.int16)))   # 20 ms more
        await sink.drain()
        health = sink.health()
    finally:
        await sink.stop()
    assert engine.events("stopped") == ["partial"]
    assert engine.events("done") == ["final", "partial"]     # b's final first, then a's partial
    assert [(t.identity, t.final) for t in got] == [("b", True), ("a", False)]
    assert health["aborts"] == {"stale": 0, "preempted": 1, "stopped": 1}


async def test_by_default_a_final_waits_for_another_talkers_partial() -> None:
    """Another talker's partial is still wanted: by default a final waits for it (preempting
    it cost the other talkers' partials more than it gained the finals)."""
    engine = Steps(lambda kind, n: 40 if kind == "partial" else 2)
    sink = LocalRecogniserSink(workers=1, recogniser_factory=lambda: engine,
                               stream=StreamConfig(early_final_ms=0))
    got: list[Transcript] = []
    await sink.start(got.append)
    try:
        sink.submit_live(LiveChunk("r", "a", 1, 0.0, np.ones(16 * 1500, np.int16)))
        await started(engine, "partial")
        sink.submit_segment(segment(1, 2000, who="b"))
        await sink.drain()
        health = sink.health()
    finally:
        await sink.stop()
    assert engine.events("done") == ["partial", "final"] and engine.events("stopped") == []
    assert health["aborts"] == {"stale": 0, "preempted": 0, "stopped": 0}


async def test_a_partial_of_an_engine_that_cannot_stop_is_not_preempted() -> None:
    """Whisper cannot stop inside a call: another talker's final waits for its partial, whose
    caption still comes, and nothing is counted as preempted."""
    engine = Steps(lambda kind, n: 40 if kind == "partial" else 2)
    engine.abortable = False
    sink = LocalRecogniserSink(workers=1, recogniser_factory=lambda: engine,
                               stream=StreamConfig(early_final_ms=0, preempt_partials=True))
    got: list[Transcript] = []
    await sink.start(got.append)
    try:
        sink.submit_live(LiveChunk("r", "a", 1, 0.0, np.ones(16 * 1500, np.int16)))
        await started(engine, "partial")
        sink.submit_segment(segment(1, 2000, who="b"))
        await sink.drain()
        health = sink.health()
    finally:
        await sink.stop()
    assert engine.events("done") == ["partial", "final"] and engine.events("stopped") == []
    assert [(t.identity, t.final) for t in got] == [("a", False), ("b", True)]
    assert health["aborts"] == {"stale": 0, "preempted": 0, "stopped": 0}


async def test_an_early_final_stops_when_speech_resumes() -> None:
    """A pause starts an early final; speech resumes while it decodes: it stops (its result
    would be discarded) and the next pause's early final runs at once and is the final."""
    engine = Steps(lambda kind, n: LONG if (kind, n) == ("final", 0) else 2)
    sink = LocalRecogniserSink(workers=1, recogniser_factory=lambda: engine,
                               stream=StreamConfig(partials=False, early_final_ms=200))
    got: list[Transcript] = []

    def pause(upto_ms: int) -> None:
        for s in range(20, upto_ms + 20, 20):
            sink.submit_live(LiveChunk("r", "a", 1, 0.0, np.zeros(320, np.int16), silence_ms=s))

    await sink.start(got.append)
    try:
        sink.submit_live(LiveChunk("r", "a", 1, 0.0, np.ones(16 * 1500, np.int16)))
        pause(200)
        await started(engine, "final")
        sink.submit_live(LiveChunk("r", "a", 1, 0.0, np.ones(16 * 800, np.int16)))  # speech again
        pause(200)
        await started(engine, "final", 2)
        await until(lambda: sink.stream_of("r", "a").early_state == "done", timeout=60,
                    what="the second early decode")
        sink.submit_segment(Segment("r", "a", 0.0, 3100.0, np.ones(16 * 3100, np.int16), seq=1,
                                    meta={"cut": "pause"}))
        await sink.drain()
        health = sink.health()
    finally:
        await sink.stop()
    assert engine.log[0][:2] == ("start", "final") and engine.events("stopped") == ["final"]
    assert [(e, k) for e, k, _ in engine.log[1:]] == [("stopped", "final"), ("start", "final"),
                                                     ("done", "final")]
    assert engine.log[2][2] > engine.log[0][2]                # the second heard the new speech
    assert [t.text for t in got if t.final] == ["final 1"]
    assert health["early_finals"] == {"used": 1, "discarded": 1}
    assert health["aborts"] == {"stale": 1, "preempted": 0, "stopped": 1}


def test_whisper_honours_an_abort_only_before_it_decodes() -> None:
    """faster-whisper cannot stop inside a call: an abort requested before the decode stops
    it; one requested while it runs lets it finish (the streaming state drops a stale result)."""
    needs_whisper()
    from mediaserver.asr.local import WhisperRecogniser

    whisper = WhisperRecogniser()
    assert whisper.abortable is False
    stop = AbortSignal()
    stop.request()
    with pytest.raises(DecodeAborted):
        whisper.recognise(np.zeros(16000, np.float32), abort=stop)
    assert isinstance(whisper.recognise(np.zeros(16000, np.float32), abort=AbortSignal()), list)
