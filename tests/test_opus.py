"""libopus wrappers: round trip, in-band FEC, PLC, av.Packet output, bad input."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest

from mediaserver.audio import read_audio
from mediaserver.media.opus import (
    OpusDecoder,
    OpusEncoder,
    OpusError,
    packet_has_fec,
    packet_samples,
)

from conftest import SPEECH_TEXT, espeak_speech


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """About 5 s of 48 kHz espeak-ng speech."""
    wav = espeak_speech(tmp_path_factory.mktemp("speech") / "speech.wav", SPEECH_TEXT, seconds=5.0)
    return read_audio(wav)[0]


def encode_all(x: np.ndarray, **kwargs) -> list[bytes]:
    enc = OpusEncoder(**kwargs)
    n = enc.frame_samples
    return [enc.encode(x[i : i + n]) for i in range(0, len(x) - n + 1, n)]


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    return 10 * np.log10(np.sum(ref**2) / (np.sum((ref - est) ** 2) + 1e-12) + 1e-12)


def test_round_trip_reproduces_the_speech(speech):
    packets = encode_all(speech, bitrate=32000)
    dec = OpusDecoder()
    out = np.concatenate([dec.decode(p).copy() for p in packets])
    assert len(out) == len(packets) * 960
    n = len(out) - 1000
    corr = max(np.corrcoef(out[lag : lag + n], speech[:n])[0, 1] for lag in range(0, 1000, 4))
    assert corr > 0.85


@pytest.mark.parametrize("frame", [480, 960, 1920, 2880])
def test_packet_durations(speech, frame):
    packets = encode_all(speech[: 48000], frame_samples=frame)
    dec = OpusDecoder()
    for p in packets:
        assert packet_samples(p) == frame
        assert len(dec.decode(p)) == frame


def test_fec_is_emitted_only_when_enabled(speech):
    with_fec = encode_all(speech, fec=True, packet_loss_perc=10)
    without = encode_all(speech, fec=False)
    assert sum(map(packet_has_fec, with_fec)) > len(with_fec) // 3
    assert sum(map(packet_has_fec, without)) == 0


def test_fec_recovers_better_than_plc(speech):
    packets = encode_all(speech, fec=True, packet_loss_perc=20)
    ref_dec = OpusDecoder()
    reference = [ref_dec.decode(p).copy() for p in packets]
    fec_snr, plc_snr = [], []
    for k in range(20, len(packets) - 1, 7):
        if not packet_has_fec(packets[k + 1]) or np.sum(reference[k] ** 2) < 1e-3:
            continue
        a, b = OpusDecoder(), OpusDecoder()
        for p in packets[:k]:
            a.decode(p)
            b.decode(p)
        fec_snr.append(snr_db(reference[k], a.decode_fec(packets[k + 1], 960)))
        plc_snr.append(snr_db(reference[k], b.conceal(960)))
    assert len(fec_snr) >= 10
    assert np.median(fec_snr) > np.median(plc_snr) + 1.0


def test_plc_fades_over_a_long_outage(speech):
    packets = encode_all(speech)
    dec = OpusDecoder()
    for p in packets[:60]:
        dec.decode(p)
    energies = [float(np.sum(dec.conceal(960) ** 2)) for _ in range(25)]
    assert all(np.isfinite(energies))
    assert energies[-1] < 0.1 * max(energies[0], 1e-9) + 1e-6


def test_encode_packet_for_aiortc(speech):
    enc = OpusEncoder()
    p0 = enc.encode_packet(speech[:960])
    p1 = enc.encode_packet(speech[960:1920])
    assert (p0.pts, p1.pts) == (0, 960)
    assert p0.time_base == fractions.Fraction(1, 48000)
    assert bytes(p1) and packet_samples(bytes(p1)) == 960
    p2 = enc.encode_packet(speech[:960], pts=48000)
    assert p2.pts == 48000


def test_bad_input_is_a_clear_error():
    dec = OpusDecoder()
    with pytest.raises(OpusError):
        dec.decode(b"")
    with pytest.raises(OpusError):
        packet_samples(b"\xff\xff\xff")
    with pytest.raises(ValueError):
        dec.conceal(100)  # not a multiple of 2.5 ms
    enc = OpusEncoder()
    with pytest.raises(ValueError):
        enc.encode(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError):
        OpusEncoder(bitrate=1)
    with pytest.raises(ValueError):
        OpusEncoder(frame_samples=1000)
    # the decoder still works after the errors
    assert len(dec.decode(enc.encode(np.zeros(960, dtype=np.float32)))) == 960
