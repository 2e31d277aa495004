"""Helpers shared by the interop (conformance) tests: judging audio by its content.

A participant in these tests sends a pure tone of its own frequency; what another one
receives is judged by the frequency that dominates it, so a stream mapped to the wrong
person, silence, or noise all fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

import numpy as np

from rtc_peer import Heard

RATE = 48000


def dominant_hz(pcm: np.ndarray, rate: int = RATE) -> float:
    """Frequency (Hz) of the strongest spectral peak of ``pcm`` (Hann window)."""
    x = np.asarray(pcm, np.float64)
    if len(x) < rate // 10:
        return 0.0
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    spectrum[: int(50 * len(x) / rate)] = 0   # below 50 Hz: DC and hum
    return float(np.argmax(spectrum) * rate / len(x))


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(pcm, np.float64) ** 2))) if len(pcm) else 0.0


def decode_file(data: bytes, workdir: Path, name: str) -> np.ndarray:
    """Any audio file ffmpeg reads (Ogg/Opus from a MediaRecorder) -> float32 48 kHz mono."""
    src = workdir / f"{name}.bin"
    src.write_bytes(data)
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-f", "f32le", "-ac", "1",
                          "-ar", str(RATE), "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.float32)


class KeptHeard(Heard):
    """``Heard`` that also keeps the last ``keep_s`` seconds of decoded audio."""

    def __init__(self, keep_s: float = 3.0) -> None:
        super().__init__()
        self._frames: list[np.ndarray] = []
        self._keep = int(keep_s * 50)

    def add(self, payload: bytes) -> None:
        try:
            pcm = self.decoder.decode(payload)
        except Exception:
            return
        self.frames += 1
        self.loud += int(np.sqrt(np.mean(pcm ** 2)) > self.LOUD)
        self._frames.append(pcm)
        del self._frames[:-self._keep]

    def last(self, seconds: float) -> np.ndarray:
        n = int(seconds * 50)
        return np.concatenate(self._frames[-n:]) if self._frames else np.zeros(0, np.float32)


def tone_in_some_window(pcm: np.ndarray, hz: float, window_s: float = 0.5) -> Optional[str]:
    """None if some ``window_s`` stretch of ``pcm`` is a tone of ``hz`` (see ``tone_ok``).

    With enhancement on, the server's denoiser attenuates a steady tone once it has heard it
    for a while (to it, a stationary tone is noise), so the judge looks at every half second
    received, not only the last: the claim here is that the right stream arrives, mapped to
    the right person, not what the denoiser makes of a tone.
    """
    n = int(window_s * RATE)
    windows = [pcm[i:i + n] for i in range(0, max(len(pcm) - n, 0) + 1, n // 2)]
    if any(tone_ok(w, hz) is None for w in windows):
        return None
    if not windows or not len(pcm):
        return "nothing received"
    loudest = max(windows, key=rms)
    return (f"no {window_s:g} s window is a {hz:.0f} Hz tone; the loudest: "
            f"{tone_ok(loudest, hz)}; {len(pcm) / RATE:.1f} s judged")


async def wait_for_tone(heard: KeptHeard, hz: float, what: str, timeout: float = 60.0) -> None:
    """Poll until the last 3 s ``heard`` decoded hold a ``hz`` tone (see ``tone_in_some_window``);
    AssertionError with the last verdict after ``timeout`` s. A new subscription starts with
    silence and, on a loaded machine, concealed frames: the deadline only bounds a dead call."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    problem: Optional[str] = "nothing received"
    while time.monotonic() < deadline:
        problem = tone_in_some_window(heard.last(3.0), hz)
        if problem is None:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: {problem}")


def tone_ok(pcm: np.ndarray, hz: float, *, tolerance: float = 0.03,
            min_rms: float = 0.01) -> Optional[str]:
    """None if ``pcm`` is a tone of ``hz`` (within ``tolerance``) above ``min_rms``; else why not."""
    level, peak = rms(pcm), dominant_hz(pcm)
    if level < min_rms:
        return f"silent (rms {level:.4f})"
    if abs(peak - hz) > tolerance * hz:
        return f"dominant frequency {peak:.0f} Hz, expected {hz:.0f} Hz (rms {level:.3f})"
    return None
