"""Per-stream voice-activity gate: skip the network while nobody talks.

Why it works without clipping word onsets:

* Decision lag is the pre-roll. The gate decides on the *input* frame of this tick, but the
  output of this tick is the input delayed by 480 samples (10 ms): it ends half a frame
  before the newest input. An onset anywhere in this frame reaches the output at sample
  >= 480 of the tick, and the stage's fade-in to the network path is over by sample 480.
  So if webrtcvad flags the frame holding the onset (tests: espeak-ng words after silence,
  onset early or late in its frame), the word starts at full level, with no look-ahead.
  The gate opens on the first speech frame (no confirmation count): a false opening only
  costs compute, a late one costs syllables.
* Bypass is not silence. While closed, the stream outputs the same 480-sample-delayed raw
  signal, attenuated (``atten_db``, 20 dB by default, never more than the stream's
  attenuation limit, and never more than the network itself was attenuating the noise in the
  last hangover frames, so the background level does not pump at the switch). Anything the
  VAD misses is quieter, not gone.
* Hangover keeps the network running ``hangover_ms`` after the last speech frame, so word
  ends and short pauses are enhanced, and the GRU state that is kept while closed is a
  noise-only context, i.e. what the network would have after a pause anyway. When the gate
  reopens the network continues from it (the STFT tails were moved on by the bypass, see
  :meth:`Enhancer.skip`), so its first frames are not a cold start.
* Concealed frames (PLC/FEC/CNG output, ``concealed=True``) are a guess at the audio, not
  the talker: they may keep an open gate open, but never open a closed one.

webrtcvad needs 16-bit PCM at 8/16/32/48 kHz; it runs here at 16 kHz on a decimated copy
(streaming 24-tap FIR low-pass, then every third sample) in 10/20/30 ms pieces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import webrtcvad
from scipy.signal import firwin, lfilter

logger = logging.getLogger(__name__)

IN_RATE = 48000
VAD_RATE = 16000
DECIMATE = IN_RATE // VAD_RATE
# webrtcvad only looks at 0–4 kHz (it splits the 16 kHz signal into sub-bands below 4 kHz), so
# the decimation filter must keep 0–4 kHz flat and stop 12–24 kHz (what folds onto 0–4 kHz at
# 16 kHz); 24 taps give < 0.01 dB ripple and 50 dB stop-band. Short = cheap for many streams.
_TAPS = firwin(24, 8000, fs=IN_RATE).astype(np.float64)
_TAPS32 = _TAPS.astype(np.float32)


@dataclass(frozen=True)
class GateConfig:
    """Gate knobs shared by every stream of one stage."""

    mode: int = 2  # webrtcvad aggressiveness 0..3 (3 = most eager to call noise non-speech)
    hangover_ms: int = 300  # keep the network on this long after the last speech frame
    atten_db: float = 20.0  # most the bypass path is attenuated while the gate is closed

    def __post_init__(self) -> None:
        if self.mode not in (0, 1, 2, 3):
            raise ValueError(f"VAD mode must be 0..3, got {self.mode}")
        if self.hangover_ms < 0:
            raise ValueError(f"hangover must be >= 0 ms, got {self.hangover_ms}")
        if not 0.0 <= self.atten_db <= 100.0:
            raise ValueError(f"gate attenuation must be 0..100 dB, got {self.atten_db}")


class Decimator:
    """48 kHz → 16 kHz for one stream: FIR low-pass with carried filter state, keep every 3rd."""

    def __init__(self) -> None:
        self._zi = np.zeros(len(_TAPS) - 1)
        self._phase = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y, self._zi = lfilter(_TAPS, 1.0, x.astype(np.float64, copy=False), zi=self._zi)
        out = y[self._phase :: DECIMATE]
        self._phase = (self._phase - len(x)) % DECIMATE
        return out


def decimate_batch(frames: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Many streams at once: frames [N, 3k] at 48 kHz, history [N, taps-1] (the previous
    samples of each stream) → ([N, k] at 16 kHz, new history). Same filter as
    :class:`Decimator`, vectorised over streams instead of N ``lfilter`` calls."""
    taps = len(_TAPS32)
    ext = np.concatenate([history, frames], axis=1).astype(np.float32, copy=False)  # [N, taps-1+T]
    k = frames.shape[1] // DECIMATE
    y = np.zeros((frames.shape[0], k), dtype=np.float32)
    for j in range(taps):  # y[:, i] = sum_j h[j] x[3i - j]; one vectorised pass per tap
        start = taps - 1 - j
        y += _TAPS32[j] * ext[:, start : start + DECIMATE * k : DECIMATE]
    return y, ext[:, -(taps - 1):].copy()


class VadGate:
    """Speech decision with hangover for one stream; ``update`` once per incoming frame."""

    def __init__(self, config: GateConfig = GateConfig()) -> None:
        self.config = config
        self._vad = webrtcvad.Vad(config.mode)
        self._decimate = Decimator()
        self._pending = np.zeros(0)  # 16 kHz samples waiting for a full 10 ms piece
        self._hang_left = 0.0  # ms of hangover left
        self.is_open = False
        self.last_vad = False  # raw webrtcvad decision for the latest frame

    def update(self, frame: np.ndarray, *, concealed: bool = False) -> bool:
        """Feed one 48 kHz frame (any multiple of 3 samples); return whether the gate is open."""
        return self.update16(self._decimate(frame), 1000.0 * len(frame) / IN_RATE, concealed=concealed)

    def update16(self, x16: np.ndarray, frame_ms: float, *, concealed: bool = False) -> bool:
        """Same, for a frame already decimated to 16 kHz (see :func:`decimate_batch`)."""
        if self._pending.size:
            x16 = np.concatenate([self._pending, x16])
        piece = self._piece_len(len(x16))
        speech = False
        used = 0
        while piece and len(x16) - used >= piece:
            pcm = (np.clip(x16[used : used + piece], -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
            speech = self._vad.is_speech(pcm, VAD_RATE) or speech
            used += piece
        self._pending = x16[used:]
        self.last_vad = speech
        if speech and (self.is_open or not concealed):
            self.is_open = True
            self._hang_left = float(self.config.hangover_ms)
        elif self.is_open:
            self._hang_left -= frame_ms
            if self._hang_left <= 0.0:
                self.is_open = False
        return self.is_open

    @staticmethod
    def _piece_len(n: int) -> int:
        """Largest webrtcvad frame (30/20/10 ms at 16 kHz) that tiles n samples, else 10 ms."""
        for piece in (480, 320, 160):
            if n and n % piece == 0:
                return piece
        return 160


def vad_history() -> np.ndarray:
    """Zeroed decimation filter memory for one stream (for :func:`decimate_batch`)."""
    return np.zeros(len(_TAPS) - 1, dtype=np.float32)
