"""ASR path without network: decimator, segmenter contract, feeds, hub fan-out."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

from mediaserver.asr.feed import FeedMixer
from mediaserver.asr.hub import AsrHub, FeedConfig, ParticipantPipeline
from mediaserver.asr.resample import StreamingDecimator
from mediaserver.asr.segmenter import Segment, SegmenterConfig, VadSegmenter
from mediaserver.asr.sink import QueuedSink
from mediaserver.audio import resample
from requires import require_program



@pytest.fixture(autouse=True)
def _needs_espeak_ng() -> None:
    require_program("espeak-ng", "apt-get install -y espeak-ng")


def espeak48(text: str, tmp_path, name: str = "s") -> np.ndarray:
    path = tmp_path / f"{name}.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    x, rate = sf.read(str(path), dtype="float32")
    return resample(x, rate, 48000) * 0.5


def call_with_pauses(tmp_path) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Two phrases separated by 1.5 s of silence, 1 s lead-in; returns audio and true spans (ms)."""
    a = espeak48("Good morning everyone, the meeting starts now.", tmp_path, "a")
    b = espeak48("Please send the report before Friday.", tmp_path, "b")
    gap = np.zeros(48000 * 3 // 2, dtype=np.float32)
    lead = np.zeros(48000, dtype=np.float32)
    x = np.concatenate([lead, a, gap, b, gap])
    x = np.pad(x, (0, (-len(x)) % 960))
    spans = []
    for start, sig in ((len(lead), a), (len(lead) + len(a) + len(gap), b)):
        loud = np.flatnonzero(np.abs(sig) > 0.01)
        spans.append(((start + loud[0]) / 48.0, (start + loud[-1]) / 48.0))
    return x.astype(np.float32), spans


def run_pipeline(x: np.ndarray, feed: FeedConfig, enhanced: np.ndarray | None = None) -> list[Segment]:
    pipe = ParticipantPipeline("room1", "alice", feed)
    enhanced = x if enhanced is None else enhanced
    segs = []
    for i in range(0, len(x), 960):
        s = pipe.push(1000.0 + i / 48.0, x[i:i + 960], enhanced[i:i + 960])
        if s:
            segs.append(s)
    last = pipe.flush()
    return segs + ([last] if last else [])


def test_decimator_streaming_equals_one_shot_and_filters() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(48000).astype(np.float32)
    ref = lfilter(StreamingDecimator().taps, [1.0], x)[::3]
    for chunk in (960, 701, 7):
        d = StreamingDecimator()
        y = np.concatenate([d.process(x[i:i + chunk]) for i in range(0, len(x), chunk)])
        assert y.shape == ref.shape
        assert np.max(np.abs(y - ref)) < 1e-4
    t = np.arange(48000 * 2) / 48000.0
    for freq, lo, hi in ((1000.0, 0.98, 1.02), (12000.0, 0.0, 1e-3), (9000.0, 0.0, 1e-3)):
        d = StreamingDecimator()
        y = np.concatenate([d.process(s) for s in np.split(np.sin(2 * np.pi * freq * t).astype(np.float32), 100)])
        gain = np.sqrt(2 * np.mean(y[1000:] ** 2))
        assert lo <= gain <= hi, (freq, gain)


def test_segments_carry_identity_and_call_clock_times(tmp_path) -> None:
    x, spans = call_with_pauses(tmp_path)
    segs = run_pipeline(x, FeedConfig(feed="raw"))
    assert len(segs) == 2
    for seg, (on, off) in zip(segs, spans):
        assert (seg.room, seg.identity, seg.feed, seg.sample_rate) == ("room1", "alice", "raw", 16000)
        assert seg.pcm.dtype == np.int16
        assert abs(seg.duration_ms - (seg.end_ms - seg.start_ms)) < 1.0
        # the clock started at 1000 ms; pre-roll puts the start before the true onset,
        # hangover puts the end after the true offset, neither by more than their settings
        assert 1000 + on - 400 <= seg.start_ms <= 1000 + on + 1
        assert 1000 + off <= seg.end_ms <= 1000 + off + 800
    assert segs[0].seq == 1 and segs[1].seq == 2


def test_segmenter_rejects_wrong_frame_size_and_bad_config() -> None:
    seg = VadSegmenter("r", "i")
    with pytest.raises(ValueError, match="320"):
        seg.push(0.0, np.zeros(480, dtype=np.int16))
    with pytest.raises(ValueError):
        SegmenterConfig(aggressiveness=5)


def test_long_speech_is_cut_at_max_length(tmp_path) -> None:
    a = espeak48("one two three four five six seven eight nine ten " * 4, tmp_path)
    a = np.pad(a, (0, (-len(a)) % 960))
    pipe = ParticipantPipeline("r", "bob", FeedConfig(feed="raw"),
                               SegmenterConfig(soft_max_ms=2000, max_ms=3000))
    segs = [s for i in range(0, len(a), 960) if (s := pipe.push(i / 48.0, a[i:i + 960], a[i:i + 960]))]
    assert len(segs) >= 3
    assert all(s.duration_ms <= 3000 + 1 for s in segs)


def test_live_chunks_tell_the_hangover_and_segments_where_speech_ended(tmp_path) -> None:
    """Issue 11 (finals after the end of the utterance): a live chunk tells the pause that will
    close its segment (the soft hangover once the segment is ``soft_max_ms`` long), so the
    streaming recogniser can start its early final before that; a closed segment tells where
    its speech ended (its end less the trailing pause), which the benchmark's final lag uses."""
    x, spans = call_with_pauses(tmp_path)
    pipe = ParticipantPipeline("room1", "alice", FeedConfig(feed="raw"),
                               SegmenterConfig(soft_max_ms=1500, soft_hangover_ms=200, hangover_ms=600))
    told: dict[int, set[float]] = {}
    segs = []
    for i in range(0, len(x), 960):
        seg = pipe.push(1000.0 + i / 48.0, x[i:i + 960], x[i:i + 960])
        chunk = pipe.live_chunk()
        if chunk is not None and not chunk.discarded:
            told.setdefault(chunk.seq, set()).add(chunk.hangover_ms)
        if seg is not None:
            segs.append(seg)
    assert told and all(h == {600.0, 200.0} for h in told.values()), told   # both > 1.5 s
    pauses = [s for s in segs if s.meta["cut"] == "pause"]
    assert pauses, [s.meta for s in segs]
    for seg in pauses:
        assert seg.end_ms - seg.meta["speech_end_ms"] == pytest.approx(200.0)
    for seg in segs:
        assert seg.start_ms < seg.meta["speech_end_ms"] <= seg.end_ms
    # the last phrase's speech ends within a frame or two of its loud samples
    last = [s for s in segs if s.start_ms > 1000 + spans[1][0] - 400]
    assert last and abs(last[-1].meta["speech_end_ms"] - (1000 + spans[1][1])) <= 200, (
        last[-1].meta, spans)


def test_feeds_pick_raw_enhanced_or_mix(tmp_path) -> None:
    x, _ = call_with_pauses(tmp_path)
    silent = np.zeros_like(x)
    # raw hears the speech, enhanced (here: a signal that removed everything) hears nothing
    assert len(run_pipeline(x, FeedConfig(feed="raw"), enhanced=silent)) == 2
    assert run_pipeline(x, FeedConfig(feed="enhanced"), enhanced=silent) == []
    # the speech only in enhanced: the enhanced feed hears it
    assert len(run_pipeline(silent, FeedConfig(feed="enhanced"), enhanced=x)) == 2
    # mix: share of raw added to enhanced, with raw delayed to line up
    mix = run_pipeline(x, FeedConfig(feed="mix", raw_share=0.3), enhanced=silent)
    raw = run_pipeline(x, FeedConfig(feed="raw"), enhanced=silent)
    assert len(mix) == 2
    ratio = np.abs(mix[0].pcm).max() / np.abs(raw[0].pcm).max()
    assert 0.25 < ratio < 0.35


def test_mix_aligns_delayed_enhanced_signal() -> None:
    delay = 480
    rng = np.random.default_rng(1)
    raw = rng.standard_normal(960 * 10).astype(np.float32)
    enhanced = np.concatenate([np.zeros(delay, np.float32), raw[:-delay]])  # enhancer latency
    m = FeedMixer("mix", raw_share=0.5, raw_delay=delay)
    out = np.concatenate([m.select(raw[i:i + 960], enhanced[i:i + 960]).copy()
                          for i in range(0, len(raw), 960)])
    np.testing.assert_allclose(out, enhanced, atol=1e-6)
    with pytest.raises(ValueError, match="unknown ASR feed"):
        FeedMixer("wet")
    with pytest.raises(ValueError, match="raw share"):
        FeedMixer("mix", raw_share=1.5)


class RecordingSink(QueuedSink):
    """A real queued sink that keeps what it handled (the contract under test is the hub's)."""

    def __init__(self, name: str, queue_size: int = 16) -> None:
        super().__init__(name, queue_size=queue_size)
        self.items: list = []

    async def handle(self, item) -> None:
        self.items.append(item)


async def test_hub_fans_out_segments_per_participant_and_flushes_on_leave(tmp_path) -> None:
    x, _ = call_with_pauses(tmp_path)
    a, b = RecordingSink("a"), RecordingSink("b")
    hub = AsrHub([a, b], feed=FeedConfig(feed="raw"))
    await hub.start()
    n = len(x) // 960
    cut = n - 40  # leave while the second phrase's hangover is still open for bob
    for k in range(n):
        frame = x[k * 960:(k + 1) * 960]
        hub.on_frame(room="r", identity="alice", t_ms=20.0 * k, raw=frame, enhanced=frame, speech=True)
        if k < cut:
            hub.on_frame(room="r", identity="bob", t_ms=20.0 * k, raw=frame, enhanced=frame, speech=True)
    hub.participant_left("r", "bob")
    hub.on_frame(room="r", identity="alice", t_ms=0.0, raw=np.zeros(10, np.float32),
                 enhanced=np.zeros(10, np.float32), speech=False)  # bad frame: ignored
    await a.drain()
    await b.drain()
    await hub.stop()
    for sink in (a, b):
        who = sorted((s.identity, s.seq) for s in sink.items)
        assert who == [("alice", 1), ("alice", 2), ("bob", 1), ("bob", 2)]
    assert hub.frames == n + cut


async def test_full_queue_drops_oldest_and_counts() -> None:
    from mediaserver.asr.metrics import REGISTRY

    sink = RecordingSink("slowtest", queue_size=2)
    before = REGISTRY.get_sample_value("mediaserver_asr_sink_dropped_total", {"sink": "slowtest"}) or 0.0
    pcm = np.zeros(320, np.int16)
    for i in range(5):  # the worker is not started: nothing is consumed
        sink.submit_segment(Segment("r", "i", i, i + 20, pcm, seq=i))
    assert sink.dropped == 3
    after = REGISTRY.get_sample_value("mediaserver_asr_sink_dropped_total", {"sink": "slowtest"})
    assert after - before == 3
    await sink.start(lambda t: None)
    await sink.drain()
    await sink.stop()
    assert [s.seq for s in sink.items] == [3, 4]


def test_auto_feed_is_raw_when_clean_and_mostly_enhanced_in_noise(tmp_path) -> None:
    x, _ = call_with_pauses(tmp_path)
    enhanced = np.zeros_like(x)  # tell the two signals apart by level
    clean = FeedMixer("auto", raw_share=0.2, raw_delay=480)
    for i in range(0, len(x), 960):
        clean.select(x[i:i + 960], enhanced[i:i + 960])
    assert clean.current_share > 0.95
    noisy_in = x + np.random.default_rng(2).standard_normal(len(x)).astype(np.float32) * 0.05
    noisy = FeedMixer("auto", raw_share=0.2, raw_delay=480)
    shares = []
    for i in range(0, len(x), 960):
        noisy.select(noisy_in[i:i + 960], enhanced[i:i + 960])
        shares.append(noisy.current_share)
    assert max(shares[100:]) < 0.5
