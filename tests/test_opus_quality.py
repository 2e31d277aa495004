"""The project's Opus encoder, as the client and the server use it by default, does not cost
quality a plain libopus encode does not (issue 15 §3): clean espeak-ng speech through two
encode/decode passes at 32 kb/s scores PESQ-WB >= 3.45 (ffmpeg libopus, complexity 10, two
passes: 3.65; the old defaults, complexity 5 with FEC for 10 % loss: 2.95)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.signal import correlate

from mediaserver.audio import read_audio, resample
from mediaserver.media.opus import OpusDecoder, OpusEncoder

from conftest import espeak_speech
from requires import require_module

TEXT = ("The quick brown fox jumps over the lazy dog. Please call Stella and ask her to bring "
        "these things with her from the store.")


def two_passes(x: np.ndarray) -> np.ndarray:
    for _ in range(2):
        enc, dec = OpusEncoder(), OpusDecoder()  # the defaults the client and server use
        x = np.concatenate([x, np.zeros(1920, np.float32)])
        x = np.concatenate([dec.decode(enc.encode(x[i:i + 960])).copy()
                            for i in range(0, len(x) - 959, 960)])
    return x


def test_two_default_opus_passes_keep_clean_speech_quality(tmp_path: Path) -> None:
    pesq = require_module("pesq", "pip install -e '.[eval]'").pesq
    audio, rate = read_audio(espeak_speech(tmp_path / "s.wav", TEXT))
    x16 = resample(audio, rate, 16000)
    y16 = resample(two_passes(audio.astype(np.float32)), rate, 16000)
    lag = int(np.argmax(correlate(y16[: len(x16) + 800], x16, mode="valid", method="fft")))
    score = float(pesq(16000, x16, y16[lag: lag + len(x16)], "wb"))
    print(f"PESQ-WB after two default passes: {score:.3f}")
    assert score >= 3.45
