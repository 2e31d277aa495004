"""One stream's frames around ticks the enhancer stage does not answer (sans-I/O).

The stage's outputs are the tick's input delayed by the stage's latency (480 samples, 10 ms:
``enhance.stage``'s timing contract). A tick the stage fails, or that the shared inference
process does not answer within its deadline (``enhance.shared_client``), has no output.
Forwarding that tick's own input would move the stream 10 ms earlier, and back when the stage
answers again: a skipped and a repeated 10 ms, each with a step in the waveform. So:

* every tick's input goes through a delay line of ``latency`` samples (:meth:`StageGap.push`),
  whether or not the stage answers, and a tick without output gets the delayed input;
* the first such tick fades from the level the stage's output last had, relative to its input,
  up to the input's level over 10 ms (the stage's output for it does not exist, so it cannot
  be cross-faded);
* the first tick the stage answers again is cross-faded over 10 ms from the delayed input into
  the stage's output (both exist for it), like any switch inside the stage.

10 ms is the stage's own switch length: one STFT hop of its 20 ms sqrt-Hann window.
"""

from __future__ import annotations

import math

import numpy as np

FRAME = 960   # samples per tick (20 ms at 48 kHz)
FADE = 480    # samples (10 ms)
_RISE = (0.5 - 0.5 * np.cos(np.pi * (np.arange(FADE) + 0.5) / FADE)).astype(np.float32)  # 0 → 1
_FALL = (1.0 - _RISE).astype(np.float32)


class StageGap:
    """Delay line and fades of one stream (see the module docstring).

    ``latency``: the stage's output delay in samples, 0 <= latency <= 960. Call :meth:`push`
    with every tick's input, in order, then :meth:`missing` or :meth:`answered` for that tick.
    """

    def __init__(self, latency: int) -> None:
        if not 0 <= latency <= FRAME:
            raise ValueError(f"stage latency must be within 0..{FRAME} samples, not {latency}")
        self.latency = latency
        self._line = np.zeros(latency + FRAME, np.float32)
        self.in_gap = False
        self._gain = 1.0   # the stage's last output level / its raw level, over its last 10 ms

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """This tick's input ((960,) float32) delayed by ``latency``: a new (960,) array."""
        line = self._line
        line[self.latency:] = pcm
        delayed = line[:FRAME].copy()
        line[:self.latency] = line[FRAME:]
        return delayed

    def missing(self, delayed: np.ndarray) -> np.ndarray:
        """The output of a tick the stage did not answer: ``delayed`` (from :meth:`push`), its
        first 10 ms faded up from the stage's last output level at the start of a gap."""
        if self.in_gap:
            return delayed
        self.in_gap = True
        out = delayed.copy()
        out[:FADE] *= self._gain * _FALL + _RISE
        return out

    def answered(self, delayed: np.ndarray, raw: np.ndarray,
                 enhanced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(raw, enhanced) to forward for a tick the stage answered with ``raw``/``enhanced``
        ((960,) float32 each): as given, except on the first tick after a gap, which is
        cross-faded from ``delayed`` (and whose raw is ``delayed``: a stage that missed ticks
        may still hold an older input in its own delay line)."""
        self._gain = _level_ratio(enhanced, raw)
        if not self.in_gap:
            return raw, enhanced
        self.in_gap = False
        out = enhanced.copy()
        out[:FADE] = delayed[:FADE] * _FALL + enhanced[:FADE] * _RISE
        return delayed, out


def _level_ratio(enhanced: np.ndarray, raw: np.ndarray) -> float:
    """RMS of ``enhanced`` over that of ``raw`` in their last 10 ms, within 0..1."""
    e, r = enhanced[-FADE:], raw[-FADE:]
    er, rr = float(np.dot(e, e)), float(np.dot(r, r))
    if rr <= 1e-12:
        return 1.0
    return min(1.0, math.sqrt(er / rr))
