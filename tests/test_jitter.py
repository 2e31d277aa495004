"""Packet-sequence tables for the pure jitter buffer (no decoding, no I/O, milliseconds)."""

from __future__ import annotations

from mediaserver.media.jitter import (
    Conceal,
    DecodeFec,
    JitterBuffer,
    JitterConfig,
    Play,
    Silence,
    unwrap,
)

F = 960  # 20 ms at 48 kHz


def label(d) -> str:
    if isinstance(d, Play):
        return f"P{d.packet.seq}"
    if isinstance(d, DecodeFec):
        return f"F{d.packet.seq}"
    if isinstance(d, Conceal):
        return "C"
    return "S"


def run(arrivals, ticks, *, ssrc=1, seq0=0, ts0=0, fec=False, config=None, jb=None):
    """arrivals: list of (arrival_ms, index) or (arrival_ms, index, ts_index); pops every 20 ms."""
    jb = jb or JitterBuffer(config)
    out: list[str] = []
    arrivals = sorted(arrivals, key=lambda a: a[0])
    ai = 0
    results = []
    for tick in range(ticks):
        now = tick * 20.0
        while ai < len(arrivals) and arrivals[ai][0] <= now:
            a = arrivals[ai]
            idx = a[1]
            ts_idx = a[2] if len(a) > 2 else idx
            results.append(
                jb.insert(
                    seq=(seq0 + idx) & 0xFFFF,
                    timestamp=(ts0 + ts_idx * F) & 0xFFFFFFFF,
                    ssrc=a[3] if len(a) > 3 else ssrc,
                    samples=F,
                    payload=b"x",
                    now_ms=a[0],
                    has_fec=fec,
                )
            )
            ai += 1
        out.append(label(jb.pop(now_ms=now + 0.5)))
    return jb, out, results


def steady(n, skip=()):
    return [(i * 20.0, i) for i in range(n) if i not in skip]


def played(out):
    return [int(x[1:]) for x in out if x[0] in "PF" and x[0] == "P"]


def test_unwrap():
    assert unwrap(5, 65534, 1 << 16) == 65541
    assert unwrap(65534, 65541, 1 << 16) == 65534
    assert unwrap(10, None, 1 << 16) == 10
    assert unwrap(100, (1 << 32) - 100, 1 << 32) == (1 << 32) + 100


def test_in_order_waits_for_target_then_plays_each_packet():
    jb, out, _ = run(steady(20), 21)
    assert out[0] == "S"  # waits until the level reaches the 40 ms target
    assert played(out) == list(range(20))
    assert jb.stats.concealed_samples == 0
    assert jb.lost == 0


def test_reorder_is_played_in_order():
    arr = steady(10, skip={3, 4}) + [(79.0, 4), (80.0, 3)]  # 3 arrives after 4
    jb, out, _ = run(arr, 14)
    assert played(out) == list(range(10))
    assert jb.stats.reordered == 1
    assert jb.lost == 0


def test_duplicate_is_dropped():
    arr = steady(10) + [(61.0, 3), (62.0, 3)]
    jb, out, res = run(arr, 14)
    assert played(out) == list(range(10))
    assert jb.stats.duplicate == 2
    assert res.count("duplicate") == 2


def test_sequence_wrap_at_65535():
    jb, out, _ = run(steady(20), 21, seq0=65530)
    assert len(played(out)) == 20
    assert jb.lost == 0 and jb.stats.reordered == 0
    assert jb.stats.concealed_samples == 0


def test_timestamp_wrap_at_2_32():
    jb, out, _ = run(steady(20), 21, ts0=(1 << 32) - 5 * F)
    assert played(out) == list(range(20))
    assert jb.stats.concealed_samples == 0
    assert jb.stats.resets == 0


def test_loss_with_fec_recovers_from_next_packet():
    jb, out, _ = run(steady(12, skip={5}), 14, fec=True)
    assert "F6" in out
    assert out.index("F6") == out.index("P4") + 1
    assert out[out.index("F6") + 1] == "P6"
    assert jb.stats.fec == 1 and jb.lost == 1


def test_loss_without_fec_conceals():
    jb, out, _ = run(steady(12, skip={5}), 13)
    i = out.index("P4")
    assert out[i + 1 : i + 3] == ["C", "P6"]
    assert jb.stats.concealed_samples == F


def test_burst_loss_conceals_then_fec_for_the_last_frame():
    jb, out, _ = run(steady(20, skip=set(range(5, 10))), 22, fec=True)
    i = out.index("P4")
    assert out[i + 1 : i + 7] == ["C", "C", "C", "C", "F10", "P10"]
    assert jb.lost == 5


def test_late_packet_is_counted_and_not_played():
    arr = steady(15, skip={5}) + [(200.0, 5)]  # way after its playout time
    jb, out, res = run(arr, 17)
    assert 5 not in played(out)
    assert jb.stats.late == 1
    assert "late" in res


def test_ssrc_change_restarts_stream():
    first = [(i * 20.0, i, i, 1) for i in range(10)]
    # new SSRC with unrelated seq/ts numbering (index offsets keep it simple)
    second = [(200.0 + i * 20.0, 5000 + i, 777 + i, 2) for i in range(10)]
    jb, out, res = run(first + second, 26)
    assert "reset" in res
    assert jb.stats.ssrc_changes == 1
    # packets of the old SSRC still buffered at the switch are dropped
    assert played(out)[:8] == list(range(8))
    assert [p for p in played(out) if p >= 5000] == [5000 + i for i in range(10)]
    assert jb.lost == 0


def test_dtx_gap_is_not_loss():
    # packets 0..9, then a 10-frame timestamp gap with contiguous sequence numbers
    arr = [(i * 20.0, i, i) for i in range(10)] + [(200.0 + 200.0 + i * 20.0, 10 + i, 20 + i) for i in range(10)]
    jb, out, _ = run(arr, 32)
    assert played(out) == list(range(20))
    assert jb.lost == 0
    assert jb.stats.late == 0


def test_long_idle_reanchors_on_next_talkspurt():
    arr = steady(10) + [(3000.0 + i * 20.0, 10 + i, 500 + i) for i in range(10)]
    jb, out, _ = run(arr, 200)
    assert played(out) == list(range(20))
    assert out[-1] == "S"
    # between the talkspurts the buffer went quiet instead of concealing forever
    assert out[100] == "S"


def test_target_follows_jitter_and_forgets():
    cfg = JitterConfig()
    jb = JitterBuffer(cfg)
    for i in range(200):  # 60 ms of jitter on every 4th packet
        jb.insert(seq=i, timestamp=i * F, ssrc=1, samples=F, payload=b"x",
                  now_ms=i * 20.0 + (60.0 if i % 4 == 0 else 0.0))
    high = jb.target_ms
    assert 70.0 <= high <= 100.0
    for i in range(200, 500):
        jb.insert(seq=i, timestamp=i * F, ssrc=1, samples=F, payload=b"x", now_ms=i * 20.0)
    assert jb.target_ms == cfg.min_delay_ms  # 6 s of calm: back to the floor


def _drift(rate: float, seconds: float = 60.0) -> JitterBuffer:
    jb = JitterBuffer()
    n = int(seconds * 50)
    arrivals = [(i * 20.0 / rate, i) for i in range(n)]
    ai = 0
    queued = 0
    for tick in range(int(seconds * 50) - 10):
        now = tick * 20.0
        while ai < len(arrivals) and arrivals[ai][0] <= now:
            jb.insert(seq=ai, timestamp=ai * F, ssrc=1, samples=F, payload=b"x", now_ms=arrivals[ai][0])
            ai += 1
        # A caller that honours the time-scale requests by +-2.5 ms per frame.
        while queued < F:
            d = jb.pop(now_ms=now, queued=queued)
            if isinstance(d, Play):
                queued += F + 120 * d.time_scale
            else:
                queued += d.samples
        queued -= F
    return jb


def test_sender_clock_fast_is_absorbed_by_accelerate():
    jb = _drift(1.01)
    assert jb.stats.accelerate > 0
    assert jb.current_delay_ms < jb.target_ms + 30.0
    assert jb.stats.dropped_overflow == 0


def test_sender_clock_slow_is_absorbed_by_expand():
    jb = _drift(0.99)
    assert jb.stats.expand > 0
    # a few underruns at most, not one every 2 s
    assert jb.stats.concealed_samples <= 3 * F


def test_silence_before_first_packet():
    jb = JitterBuffer()
    assert isinstance(jb.pop(now_ms=0.0), Silence)
    assert jb.lost == 0


def test_delay_step_conceals_then_plays_the_delayed_packets():
    # from packet 5 on the network adds 50 ms: the buffer runs dry, conceals, and then
    # plays the delayed packets instead of discarding them as late (NetEq's delayed outage)
    arr = [(i * 20.0 + (50.0 if i >= 5 else 0.0), i) for i in range(20)]
    jb, out, res = run(arr, 26)
    assert played(out) == list(range(20))
    assert "C" in out
    assert jb.stats.late == 0 and jb.stats.delayed_outage == 1


def test_consumer_stall_flushes_down_to_target():
    # the consumer stops pulling for 1 s while packets keep arriving
    jb = JitterBuffer()
    for i in range(100):
        jb.insert(seq=i, timestamp=i * F, ssrc=1, samples=F, payload=b"x", now_ms=i * 20.0)
        if i < 10 or i >= 60:
            jb.pop(now_ms=i * 20.0 + 0.5)
    assert jb.stats.flushed > 30
    assert jb.level_ms(0, 99 * 20.0 + 0.5) <= jb.target_ms + 20.0
