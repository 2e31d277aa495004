"""The SFU benchmark's delay definition (benchmarks/sfu.py ``stream_delays``).

The server-added delay targets of the media-path issue (p50 <= 40 ms, p95 <= 60 ms) are read
from this function, so its arithmetic is checked here against streams whose mouth-to-ear delay
is known by construction: the publisher's own Opus packets arriving D ms after they were sent
(a direct link: 20 ms of packetisation + the encoder's look-ahead L + D), and a relay that
decodes them, delays the audio by X samples and encodes it again, its packet m leaving D ms
after the publisher's packet m (20 ms + 2 L + X + D).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from sfu import FRAME, RATE, Received, encode_clip, speech_clip, stream_delays  # noqa: E402

from mediaserver.media.opus import OpusDecoder, OpusEncoder
from requires import require_program

SENT0 = 100.0   # loop time of the first frame (s)


def decode(packets: list[bytes]) -> np.ndarray:
    decoder = OpusDecoder()
    return np.concatenate([decoder.decode(p).copy() for p in packets])


def lag_samples(reference: np.ndarray, delayed: np.ndarray) -> int:
    """How many samples ``delayed`` lags ``reference`` (integer cross-correlation peak)."""
    size = len(reference) + len(delayed)
    corr = np.fft.irfft(np.fft.rfft(delayed, size) * np.conj(np.fft.rfft(reference, size)), size)
    return int(np.argmax(corr[: size // 2]))


def received(packets: list[bytes], arrivals: np.ndarray) -> Received:
    rec = Received()
    origin = 123456   # any RTP timestamp origin
    for m, (payload, a) in enumerate(zip(packets, arrivals)):
        rec.arrivals.append(float(a))
        rec.timestamps.append((origin + m * FRAME) % (1 << 32))
        rec.payloads.append(payload)
    return rec


@pytest.fixture(scope="module")
def publisher(tmp_path_factory) -> tuple[np.ndarray, list[bytes], np.ndarray, int]:
    """The benchmark's own espeak-ng speech, its pre-encoded packets, send times, look-ahead."""
    require_program("espeak-ng")
    clip = speech_clip(None, 8.0, tmp_path_factory.mktemp("speech"))
    clip = clip[: len(clip) // FRAME * FRAME]
    packets = encode_clip(clip)
    sent_at = SENT0 + np.arange(len(packets)) * FRAME / RATE
    look_ahead = lag_samples(clip, decode(packets))
    assert 0 < look_ahead < FRAME, look_ahead   # libopus: 312 samples at 48 kHz
    return clip, packets, sent_at, look_ahead


@pytest.mark.parametrize("late_ms", [0.5, 7.0, 23.0])
def test_direct_link_reads_packetisation_plus_look_ahead_plus_transit(publisher, late_ms):
    clip, packets, sent_at, look_ahead = publisher
    rec = received(packets, sent_at + late_ms / 1000.0)
    d = np.array(stream_delays(rec, clip, sent_at, SENT0, SENT0 + 60.0)) * 1000.0
    assert 200 < len(d) <= len(packets)   # each packet once (the 1 s windows overlap)
    expected = 20.0 + look_ahead * 1000.0 / RATE + late_ms
    assert np.median(d) == pytest.approx(expected, abs=0.3)
    assert np.percentile(d, 95) - np.percentile(d, 5) < 0.5


@pytest.mark.parametrize("shift,late_ms", [(0, 1.0), (480, 1.0), (480, 15.0), (700, 4.0)])
def test_transcoding_relay_reads_its_sample_delay_and_its_wall_clock_delay(publisher, shift,
                                                                             late_ms):
    """A relay's sub-frame sample delay (the enhancer's 480 samples, an Opus look-ahead) counts
    exactly; rounding a packet to a whole source frame would misread it by up to 20 ms."""
    clip, packets, sent_at, look_ahead = publisher
    relayed = np.concatenate([np.zeros(shift, np.float32), decode(packets)])
    encoder = OpusEncoder(bitrate=32000)
    out = [encoder.encode(relayed[i:i + FRAME]) for i in range(0, len(packets) * FRAME, FRAME)]
    rec = received(out, sent_at + late_ms / 1000.0)
    d = np.array(stream_delays(rec, clip, sent_at, SENT0, SENT0 + 60.0)) * 1000.0
    assert len(d) > 200
    expected = 20.0 + (2 * look_ahead + shift) * 1000.0 / RATE + late_ms
    assert np.median(d) == pytest.approx(expected, abs=0.3)
