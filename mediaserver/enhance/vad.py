"""Per-stream voice-activity gate: skip the network while nobody talks.

Why it works without clipping word onsets:

* Decision lag is the pre-roll. The gate decides on the *input* frame of this tick, but the
  output of this tick is the input delayed by 480 samples (10 ms): it ends half a frame
  before the newest input. An onset anywhere in this frame reaches the output at sample
  >= 480 of the tick, after the 10 ms overlap-add cross-fade to the network path.
* Two triggers. webrtcvad is slow on fricatives and breathy onsets (s, sh, f, h: it flagged
  espeak-ng "six"/"sound"/"sim" 50–70 ms late), so the gate also opens on an energy rise in
  any band over that band's tracked noise floor (:class:`OnsetDetector`). A false opening
  only costs compute, a late one costs syllables. The ``speech`` flag stays webrtcvad's.
* Closed is not a broadband cut. While closed, the stage filters the delayed input with the
  network's own recent per-bin gain on this stream's noise (``noisegain.py``), so the
  background keeps its level and colour across every switch (no pumping); ``atten_db`` is
  only the cut used before anything is measured.
* Hangover keeps the network running ``hangover_ms`` after the last trigger, so word ends and
  short pauses are enhanced and the noise gain is measured on noise-only frames; the stage
  keeps the network on past it until that gain has settled (the network's suppression often
  deepens for 100–300 ms after a word). The GRU state kept while closed is a noise-only
  context; when the gate reopens the network continues from it (the STFT tails were moved
  on by :meth:`Enhancer.skip`), so its first frames are not a cold start.
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
    atten_db: float = 20.0  # broadband bypass cut until the network has measured the stream's noise
    onset_db: float = 3.0  # a band at least this far (dB) above its noise floor may open the gate,
    onset_sigmas: float = 4.0  # if that is also this many of its fluctuations (sigma) above it
    onset_min_dbfs: float = -75.0  # a band quieter than this (dBFS) never opens it

    def __post_init__(self) -> None:
        if self.mode not in (0, 1, 2, 3):
            raise ValueError(f"VAD mode must be 0..3, got {self.mode}")
        if self.hangover_ms < 0:
            raise ValueError(f"hangover must be >= 0 ms, got {self.hangover_ms}")
        if not 0.0 <= self.atten_db <= 100.0:
            raise ValueError(f"gate attenuation must be 0..100 dB, got {self.atten_db}")
        if not 0.0 < self.onset_db <= 60.0 or not 0.0 < self.onset_sigmas <= 20.0:
            raise ValueError(f"onset threshold must be in (0, 60] dB and (0, 20] sigmas, got "
                             f"{self.onset_db}, {self.onset_sigmas}")


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
    """Gate decision with hangover for one stream; ``update`` once per incoming frame.

    Two decisions with the same hangover: ``speech`` (webrtcvad alone: the ``speech`` flag the
    stage reports to speaking indicators and ASR) and ``is_open`` (webrtcvad *or* an energy
    rise from :class:`OnsetDetector`: whether the network runs). webrtcvad is slow to call
    fricatives and breathy onsets speech (s, sh, f, h: 40–80 ms late), the energy rise is not.
    """

    def __init__(self, config: GateConfig = GateConfig()) -> None:
        self.config = config
        self._vad = webrtcvad.Vad(config.mode)
        self._decimate = Decimator()
        self._pending = np.zeros(0)  # 16 kHz samples waiting for a full 10 ms piece
        self._hang_left = 0.0  # ms of hangover left (gate)
        self._speech_left = 0.0  # ms of hangover left (speech flag)
        self.is_open = False
        self.speech = False
        self.last_vad = False  # raw webrtcvad decision for the latest frame

    def update(self, frame: np.ndarray, *, concealed: bool = False, onset: bool = False) -> bool:
        """Feed one 48 kHz frame (any multiple of 3 samples); return whether the gate is open."""
        return self.update16(self._decimate(frame), 1000.0 * len(frame) / IN_RATE,
                             concealed=concealed, onset=onset)

    def update16(self, x16: np.ndarray, frame_ms: float, *, concealed: bool = False,
                 onset: bool = False) -> bool:
        """Same, for a frame already decimated to 16 kHz (see :func:`decimate_batch`).

        ``onset``: the frame's energy rose above the stream's noise floor (opens the gate like
        speech, but does not set ``speech``). Concealed frames never open a closed gate.
        """
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
        hang = float(self.config.hangover_ms)
        if speech and (self.speech or not concealed):
            self.speech, self._speech_left = True, hang
        elif self.speech:
            self._speech_left -= frame_ms
            self.speech = self._speech_left > 0.0
        if (speech or onset) and (self.is_open or not concealed):
            self.is_open, self._hang_left = True, hang
        elif self.is_open:
            self._hang_left -= frame_ms
            self.is_open = self._hang_left > 0.0
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


# ---- energy rise over a tracked noise floor ------------------------------------------------
# Bands (Hz) for the onset detector: >= 300 Hz wide (6 bins), so even the narrowest band's
# level fluctuates by only ~2 dB on stationary noise; up to 20 kHz, where fricatives live.
BAND_EDGES_HZ = (100, 400, 700, 1000, 1400, 1800, 2300, 2900, 3600, 4500, 5600, 7000, 9000,
                 12000, 16000, 20000)
_LEVEL_WINDOW: dict[int, np.ndarray] = {}


def band_levels(frames: np.ndarray, rate: int = IN_RATE) -> np.ndarray:
    """Band levels of many frames: [N, T] float → [N, len(BAND_EDGES_HZ) - 1] dBFS.

    Hann-windowed power spectrum, summed per band and scaled so the bands of white noise add
    up to the frame's mean square (a band's share of the frame's power, in dB re full scale).
    """
    t = frames.shape[1]
    win = _LEVEL_WINDOW.get(t)
    if win is None:
        win = _LEVEL_WINDOW[t] = np.hanning(t + 1)[:-1].astype(np.float32)
    power = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2 * (2.0 / (t * float(np.sum(win * win))))
    edges = np.round(np.asarray(BAND_EDGES_HZ) * t / rate).astype(int)
    csum = np.concatenate([np.zeros((frames.shape[0], 1)), np.cumsum(power, axis=1)], axis=1)
    bands = csum[:, edges[1:]] - csum[:, edges[:-1]]
    return 10.0 * np.log10(bands + 1e-12)


class OnsetDetector:
    """An energy rise in any band over that band's noise floor, for one stream.

    Sans-I/O: feed :func:`band_levels` of each incoming frame. Per band it tracks the noise
    floor (mean level, dB) and how much the level fluctuates around it (sigma, dB; at least
    the chi-square spread a band of that width has on stationary noise). A rise is a band at
    least ``max(onset_db, onset_sigmas · sigma)`` above its floor and above ``onset_min_dbfs``:
    wide high bands fluctuate by well under 1 dB, so a fricative 3 dB over white noise (0 dB
    SNR) is seen in the frame it starts, long before webrtcvad calls it speech.

    The floor follows a band's level (10 % of the gap per frame, half of it when the level is
    6 dB below) but not during a rise, not while ``hold`` (the caller knows it is speech), and
    not from a level above the quiet band: it creeps up 2 dB/s there instead, so a lasting step
    up in the noise is learnt in seconds (the gate stays open meanwhile: compute, not quality).

    ``update`` returns ``(rise, quiet)``; quiet = every band within ``QUIET_SIGMAS`` sigmas
    (and 2 dB) of its floor: a noise-only frame.
    """

    CREEP_DB_PER_S = 2.0
    QUIET_SIGMAS = 3.0

    def __init__(self, config: GateConfig = GateConfig(), rate: int = IN_RATE, frame: int = 960) -> None:
        self.config = config
        widths = np.diff(np.round(np.asarray(BAND_EDGES_HZ) * frame / rate))
        # std (dB) of a Hann-windowed band of w bins of Gaussian noise: ~2w/1.5 degrees of freedom
        self._sigma_min = 10.0 / np.log(10.0) * np.sqrt(1.5 / widths)
        self._var = self._sigma_min ** 2
        self._floor: np.ndarray | None = None

    @property
    def floor(self) -> np.ndarray | None:
        return None if self._floor is None else self._floor.copy()

    def update(self, levels: np.ndarray, frame_ms: float, *, hold: bool = False) -> tuple[bool, bool]:
        """One frame's band levels (dBFS) → ``(rise, quiet)``. ``hold``: the stream is known to
        be in speech (e.g. webrtcvad said so on the last frame): the floor does not follow."""
        levels = np.asarray(levels, dtype=np.float64)
        if self._floor is None:
            self._floor = levels.copy()
            return False, False
        cfg = self.config
        d = levels - self._floor
        sigma = np.sqrt(self._var)
        above = (d >= np.maximum(cfg.onset_db, cfg.onset_sigmas * sigma)) & (levels >= cfg.onset_min_dbfs)
        rise = bool(above.any())
        near = d < np.maximum(2.0, self.QUIET_SIGMAS * sigma)
        quiet = bool(near.all())
        creep = self.CREEP_DB_PER_S * frame_ms / 1000.0
        if rise or hold:  # speech: no band follows it, down or up, except a real drop
            step = np.where(d < -6.0, 0.5 * d, np.where(d > 0.0, creep, 0.0))
        else:
            step = np.where(d < -6.0, 0.5 * d, np.where(near, 0.1 * d, creep))
            # fluctuation: every band learns it (clipped at the rise threshold, so a fast noise
            # is learnt rather than locked out, and a missed onset cannot blow it up)
            lim = np.maximum(cfg.onset_db, cfg.onset_sigmas * sigma)
            self._var = np.maximum(self._sigma_min ** 2, self._var + 0.05 * (np.minimum(d * d, lim * lim) - self._var))
        self._floor = self._floor + step
        return rise, quiet
