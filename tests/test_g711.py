"""G.711 tables and the G.711 receive path at 48 kHz (InboundAudio with PCMU / PCMA packets)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from mediaserver.media import g711
from mediaserver.media.inbound import InboundAudio


def test_tables_follow_the_standard_codes():
    # G.711: mu-law 0xFF / A-law 0xD5 are +0 (+8/32768 for A-law), 0x80 / 0xAA the loudest
    assert g711.ULAW[0xFF] == 0.0 and g711.ULAW[0x7F] == 0.0
    assert g711.ULAW[0x80] * 32768 == 32124 and g711.ULAW[0x00] * 32768 == -32124
    assert g711.ALAW[0xD5] * 32768 == 8 and g711.ALAW[0x55] * 32768 == -8
    assert g711.ALAW[0xAA] * 32768 == 32256 and g711.ALAW[0x2A] * 32768 == -32256


@pytest.mark.parametrize("codec", g711.CODECS)
def test_encode_decode_round_trip_is_g711_quality(codec):
    t = np.arange(8000) / 8000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = g711.decode(codec, g711.encode(codec, x))
    snr = 10 * np.log10(np.sum(x**2) / np.sum((y - x) ** 2))
    assert snr > 35.0
    with pytest.raises(ValueError):
        g711.decode("opus", b"\x00")


@pytest.mark.parametrize("codec", g711.CODECS)
def test_g711_stream_plays_at_48k_without_frame_edges(codec):
    t = np.arange(8000 * 4) / 8000
    tone8 = (0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    packets = [g711.encode(codec, tone8[i:i + 160]) for i in range(0, len(tone8), 160)]
    ib = InboundAudio()
    out, kinds = [], []
    for tick in range(len(packets) + 5):
        if tick < len(packets):
            ib.push(packets[tick], seq=tick, timestamp=1000 + tick * 160, ssrc=9,
                    arrival_ms=tick * 20.0, codec=codec)
        f = ib.pull(now_ms=tick * 20.0 + 0.3)
        out.append(f.pcm)
        kinds.append(f.kind)
    s = ib.stats()
    assert s["packets_lost"] == 0
    first, last = kinds.index("normal"), len(kinds) - kinds[::-1].index("normal")
    assert kinds[first:last] == ["normal"] * len(packets)  # nothing concealed in between
    pcm = np.concatenate(out)
    start = kinds.index("normal") * 960
    body = pcm[start + 960: start + 960 * (len(packets) - 2)]
    ref = resample_poly(tone8, 6, 1).astype(np.float32)
    # a clean 300 Hz tone at 48 kHz: level kept, no steps at the 20 ms frame edges
    assert abs(np.sqrt(np.mean(body**2)) - 0.4 / np.sqrt(2)) < 0.02
    assert np.max(np.abs(np.diff(body))) <= 1.2 * np.max(np.abs(np.diff(ref)))


def test_g711_loss_is_concealed_then_faded():
    t = np.arange(8000 * 2) / 8000
    tone8 = (0.4 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    packets = [g711.encode("pcmu", tone8[i:i + 160]) for i in range(0, len(tone8), 160)]
    lost = set(range(40, 50))
    ib = InboundAudio()
    kinds = []
    for tick in range(len(packets)):
        if tick not in lost:
            ib.push(packets[tick], seq=tick, timestamp=tick * 160, ssrc=9, arrival_ms=tick * 20.0,
                    codec="pcmu")
        kinds.append(ib.pull(now_ms=tick * 20.0 + 0.3).kind)
    assert ib.stats()["packets_lost"] == len(lost)
    assert "plc" in kinds and "cng" in kinds
    assert kinds[-5:] == ["normal"] * 5
