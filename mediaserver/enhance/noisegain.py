"""The network's own gain on a stream's noise, per STFT bin, for the closed VAD gate.

While the gate is closed the stage does not run the network; it filters the (delayed) input
with the per-bin gain the network itself applied to that stream's recent noise-only frames
(:meth:`streaming.Enhancer.skip` with ``gain``). The listener then hears the same background,
at the same level and colour, whether the network runs or not: no pumping when the gate
switches, whatever the noise's level or spectrum. A broadband cut cannot do that: the network
removes 20–50 dB of noise, unevenly across frequency.

Measured from the signals, not from the model: on a noise-only frame the stage hands over the
input frame and the network's output frame (sample-aligned, both delayed by the enhancer's
latency); their Hann-windowed power spectra are averaged per bin (exponentially, over the last
~60 ms) and
the gain is sqrt(output power / input power), smoothed over 5 bins (250 Hz). So it does not
depend on the network's architecture, and it includes the mask's extension above 8 kHz.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

_WINDOWS: dict[int, np.ndarray] = {}
_SMOOTH = np.ones(5) / 5.0


def power_spectra(frames: np.ndarray) -> np.ndarray:
    """Hann-windowed power spectra: frames [N, T] → [N, T // 2 + 1] (same bins as the enhancer
    when T is its window, 960 at 48 kHz)."""
    t = frames.shape[1]
    win = _WINDOWS.get(t)
    if win is None:
        win = _WINDOWS[t] = np.hanning(t + 1)[:-1].astype(np.float32)
    return np.abs(np.fft.rfft(frames * win, axis=1)) ** 2


class NoiseGain:
    """Per-bin noise gain of one stream, learnt from the frames the network processed.

    Args:
        bins: number of STFT bins (window // 2 + 1).
        alpha: weight of each new frame in the running power averages (0.5: the last ~3 frames, i.e. the level just
            heard before the gate closes; the network's suppression often still deepens
            100–200 ms after a word).
        min_frames: noise-only frames needed before the gain is :attr:`ready`.
    """

    def __init__(self, bins: int, *, alpha: float = 0.5, min_frames: int = 8) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.bins = bins
        self.alpha = alpha
        self.min_frames = min_frames
        self.frames = 0
        self.atten_lim_db: Optional[float] = None  # the limit in force while it was measured
        self._pxx = np.zeros(bins)
        self._pyy = np.zeros(bins)
        self._levels: list[float] = []  # broadband gain (dB) after each of the last updates

    SETTLE_FRAMES = 3
    SETTLE_DB = 1.5

    @property
    def settled(self) -> bool:
        """Ready, and the broadband gain moved less than ``SETTLE_DB`` over the last
        ``SETTLE_FRAMES`` updates: the network's suppression has stopped deepening (it often
        keeps deepening for 100–300 ms after a word), so the filter continues at the level
        the listener heard last."""
        if not self.ready or len(self._levels) < self.SETTLE_FRAMES:
            return False
        return max(self._levels) - min(self._levels) < self.SETTLE_DB

    @property
    def ready(self) -> bool:
        return self.frames >= self.min_frames

    def reset(self) -> None:
        self.frames = 0
        self.atten_lim_db = None
        self._pxx[:] = 0.0
        self._pyy[:] = 0.0
        self._levels.clear()

    def update(self, x_power: np.ndarray, y_power: np.ndarray, atten_lim_db: float) -> None:
        """One noise-only frame: input and network-output power spectra [bins], and the
        stream's attenuation limit (a change of limit restarts the measurement)."""
        if self.atten_lim_db != atten_lim_db:
            self.reset()
            self.atten_lim_db = atten_lim_db
        a = 1.0 if self.frames == 0 else self.alpha
        self._pxx += a * (x_power - self._pxx)
        self._pyy += a * (y_power - self._pyy)
        self.frames += 1
        self._levels.append(10.0 * float(np.log10((self._pyy.sum() + 1e-20) / (self._pxx.sum() + 1e-20))))
        del self._levels[: -self.SETTLE_FRAMES]

    def gain(self, floor: float) -> np.ndarray:
        """Per-bin gain [bins] in [floor, 1]; ``floor`` where nothing is measured yet."""
        if self.frames == 0:
            return np.full(self.bins, floor, dtype=np.float32)
        pxx = np.convolve(self._pxx, _SMOOTH, mode="same")
        pyy = np.convolve(self._pyy, _SMOOTH, mode="same")
        g = np.sqrt((pyy + 1e-20) / (pxx + 1e-20))
        return np.clip(g, floor, 1.0).astype(np.float32)
