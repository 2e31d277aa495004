"""Encode once per codec per publisher (sfu/outbound.py), through the media clock's fan-out.

One publisher, subscribers taking Opus, PCMU (two of them), PCMA and one whose codec is not
agreed yet: each tick encodes Opus, PCMU and PCMA once each, both PCMU subscribers get the
very same packet, the unagreed slot gets nothing, and every stream carries the publisher's
tone (frequency and level judged after decoding).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mediaserver.media import g711
from mediaserver.media.inbound import InboundAudio
from mediaserver.media.opus import OpusDecoder, OpusEncoder
from mediaserver.sfu.mediaclock import FRAME, ClockStream, MediaClock
from mediaserver.sfu.outbound import PacketTrack, PublisherEncoders

RATE = 48000
TICKS = 50
HZ, AMP = 440.0, 0.3


def tone_stream() -> tuple[ClockStream, list[bytes]]:
    """A publisher and the Opus packets of its 440 Hz tone, one per 20 ms tick."""
    encoder = OpusEncoder(bitrate=32000)
    x = (AMP * np.sin(2 * np.pi * HZ * np.arange(TICKS * FRAME) / RATE)).astype(np.float32)
    packets = [encoder.encode(x[k * FRAME:(k + 1) * FRAME]) for k in range(TICKS)]
    stream = ClockStream(room="r", identity="tone", inbound=InboundAudio(),
                         encoder=PublisherEncoders())
    return stream, packets


def peak_hz_and_rms(x: np.ndarray, rate: int) -> tuple[float, float]:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x)), float(np.sqrt(np.mean(x ** 2)))


def run_ticks(stream: ClockStream, packets: list[bytes], tracks: list[PacketTrack]) -> list[list]:
    """Drive the clock's tick (no enhancer), a packet arriving before each, and collect what
    each track was handed."""
    clock = MediaClock(stage=None, encode_pts=lambda enc, pcm, pts: enc.encode_packet(pcm, pts))
    clock.add(stream)
    for track in tracks:
        stream.attach(track)
    got: list[list] = [[] for _ in tracks]
    for track, sink in zip(tracks, got):
        track.push = sink.append  # type: ignore[method-assign]  # record instead of queueing

    async def main() -> None:
        for tick in range(TICKS):
            stream.inbound.push(packets[tick], seq=tick, timestamp=tick * FRAME, ssrc=7,
                                arrival_ms=tick * 20.0)
            await clock._step(tick * 20.0 + 1.0)
            clock.tick += 1

    asyncio.run(main())
    return got


def test_each_codec_is_encoded_once_per_tick_and_shared() -> None:
    stream, sent = tone_stream()
    codecs = ["opus", "pcmu", "pcmu", "pcma", None]
    tracks = [PacketTrack() for _ in codecs]
    for track, codec in zip(tracks, codecs):
        track.set_codec(codec)
    got = run_ticks(stream, sent, tracks)
    assert dict(stream.encoder.encodes) == {"opus": TICKS, "pcmu": TICKS, "pcma": TICKS}
    assert got[4] == []  # no codec agreed yet: nothing encoded for it
    assert all(a is b for a, b in zip(got[1], got[2]))  # the same packet, not an equal copy
    assert [p.pts for p in got[1]] == [k * FRAME for k in range(TICKS)]
    for codec, packets in zip(codecs[:4], got[:4]):
        assert len(packets) == TICKS
        if codec == "opus":
            dec = OpusDecoder()
            pcm, rate = np.concatenate([dec.decode(bytes(p)).copy() for p in packets]), RATE
        else:
            assert {len(bytes(p)) for p in packets} == {160}
            pcm, rate = g711.decode(codec, b"".join(bytes(p) for p in packets)), 8000
        hz, rms = peak_hz_and_rms(pcm[len(pcm) // 2:], rate)  # past the jitter buffer's start
        assert abs(hz - HZ) < 15 and abs(rms - AMP / np.sqrt(2)) < 0.03, (codec, hz, rms)


@pytest.mark.parametrize("codec", g711.CODECS)
def test_g711_encoder_band_limits_before_decimating(codec: str) -> None:
    """48 kHz -> 8 kHz G.711: a 1 kHz tone passes at its level, a 6 kHz tone (which would
    alias to 2 kHz without the low-pass) is gone; 20 ms frames join without edges."""
    t = np.arange(RATE) / RATE
    enc = g711.G711Encoder(codec)
    out = {}
    for hz in (1000.0, 6000.0):
        x = (0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
        enc = g711.G711Encoder(codec)
        y = g711.decode(codec, b"".join(enc.encode(x[i:i + FRAME]) for i in range(0, RATE, FRAME)))
        out[hz] = y[800:]
    hz, rms = peak_hz_and_rms(out[1000.0], 8000)
    assert abs(hz - 1000.0) < 10 and abs(rms - 0.4 / np.sqrt(2)) < 0.02
    assert np.sqrt(np.mean(out[6000.0] ** 2)) < 0.004  # < -45 dB of the input
    steps = np.abs(np.diff(out[1000.0]))
    assert steps.max() < 1.3 * 0.4 * 2 * np.pi * 1000.0 / 8000  # no step at frame joins
    with pytest.raises(ValueError):
        g711.G711Encoder("g722")
