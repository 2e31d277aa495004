"""Impairment policy determinism and the aiortc transport wrapper on real loopback peers."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from mediaserver.media.impair import Impairment, ImpairmentConfig, is_srtp_media
from mediaserver.patches import impair_peer_connection


def trace(imp: Impairment, n: int) -> list[tuple[float, ...]]:
    return [tuple(imp.decide()) for _ in range(n)]


def test_same_seed_same_decisions():
    cfg = ImpairmentConfig(loss=0.1, burst=3, jitter_ms=40, reorder=0.05, duplicate=0.02, seed=7)
    assert trace(Impairment(cfg), 2000) == trace(Impairment(cfg), 2000)
    other = ImpairmentConfig(loss=0.1, burst=3, jitter_ms=40, reorder=0.05, duplicate=0.02, seed=8)
    assert trace(Impairment(cfg), 2000) != trace(Impairment(other), 2000)


def test_random_loss_rate():
    imp = Impairment(loss=0.05, seed=1)
    lost = sum(1 for d in trace(imp, 20000) if not d)
    assert 0.04 < lost / 20000 < 0.06
    assert imp.dropped == lost


def test_gilbert_elliott_bursts():
    imp = Impairment(loss=0.1, burst=4, seed=2)
    flags = [not d for d in trace(imp, 40000)]
    rate = sum(flags) / len(flags)
    runs = [len(list(g)) for k, g in itertools.groupby(flags) if k]
    assert 0.08 < rate < 0.12
    assert 3.3 < sum(runs) / len(runs) < 4.7
    # independent loss at the same rate has much shorter runs
    flat = [not d for d in trace(Impairment(loss=0.1, seed=2), 40000)]
    flat_runs = [len(list(g)) for k, g in itertools.groupby(flat) if k]
    assert sum(flat_runs) / len(flat_runs) < 1.3


def test_delay_jitter_reorder_duplicate():
    imp = Impairment(delay_ms=10, jitter_ms=20, reorder=0.1, reorder_ms=30, duplicate=0.1, seed=3)
    decisions = trace(imp, 5000)
    delays = [d[0] for d in decisions]
    assert min(delays) >= 10 and max(delays) <= 10 + 20 + 30
    assert sum(1 for d in delays if d >= 40) > 300  # the held-back ones
    dups = sum(1 for d in decisions if len(d) == 2)
    assert 350 < dups < 650 and imp.duplicated == dups


def test_explicit_drop_list():
    imp = Impairment(drop=frozenset({2, 3, 7}))
    assert [bool(d) for d in trace(imp, 9)] == [True, True, False, False, True, True, True, False, True]


@pytest.mark.parametrize("kwargs", [{"loss": 1.0}, {"loss": -0.1}, {"burst": 0.5}, {"jitter_ms": -1},
                                    {"duplicate": 2}])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        ImpairmentConfig(**kwargs)


def test_media_classification():
    assert is_srtp_media(bytes([0x80, 111]) + b"\0" * 10)  # RTP, PT 111
    assert is_srtp_media(bytes([0x80, 111 | 0x80]) + b"\0" * 10)  # marker bit
    assert not is_srtp_media(bytes([0x80, 200]) + b"\0" * 10)  # RTCP SR
    assert not is_srtp_media(bytes([0x81, 201]) + b"\0" * 10)  # RTCP RR
    assert not is_srtp_media(bytes([22, 254]) + b"\0" * 10)  # DTLS
    assert not is_srtp_media(bytes([0, 1]) + b"\0" * 10)  # STUN


@pytest.mark.usefixtures("ice_on_loopback")
async def test_wrapper_drops_exactly_the_chosen_media_packets():
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    # no ICE servers: aiortc's default would contact a public STUN server
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    seqs: list[int] = []
    enough = asyncio.Event()
    try:
        sender.addTrack(AudioStreamTrack())

        @receiver.on("track")
        def on_track(track) -> None:
            rx = next(t.receiver for t in receiver.getTransceivers() if t.receiver.track is track)
            orig = rx._handle_rtp_packet

            async def hook(packet, arrival_time_ms):
                seqs.append(packet.sequence_number)
                if len(seqs) >= 25:
                    enough.set()
                await orig(packet, arrival_time_ms)

            rx._handle_rtp_packet = hook

        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        # impair before media flows: ordinal 0 is the first media packet sent
        wrapped = impair_peer_connection(sender, Impairment(drop=frozenset({5, 6, 7, 12}), duplicate=0.0))
        assert len(wrapped) == 1
        await sender.setRemoteDescription(receiver.localDescription)
        await asyncio.wait_for(enough.wait(), 30)
        first = seqs[0]
        got = {(s - first) & 0xFFFF for s in seqs}
        assert {5, 6, 7, 12}.isdisjoint(got)
        assert set(range(20)) - {5, 6, 7, 12} <= got
        # calling again (after renegotiation) does not wrap twice
        assert impair_peer_connection(sender, Impairment()) == []
        for w in wrapped:
            w.remove()
    finally:
        await sender.close()
        await receiver.close()
