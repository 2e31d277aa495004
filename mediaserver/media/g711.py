"""G.711 (PCMU / PCMA, ITU-T G.711) for the 48 kHz media path: table decode, 8 -> 48 kHz.

Pure numpy/scipy (Python's ``audioop`` is gone in 3.13). ``G711Decoder`` turns one RTP
payload (one byte per 8 kHz sample) into 48 kHz float32 through a stateful polyphase
low-pass, so 20 ms frames join without edges, and conceals a lost frame by repeating the
last pitch period with a fade (G.711 Appendix I in spirit). ``G711Encoder`` is the way
back for subscribers that take only G.711: a stateful 3.6 kHz low-pass, every 6th sample,
table encode.
"""

from __future__ import annotations

import fractions
from typing import Any

import numpy as np
from scipy.signal import firwin, lfilter

UP = 6  # 8 kHz -> 48 kHz
CODECS = ("pcmu", "pcma")


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(sign, -magnitude, magnitude) / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8,
                         ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return (np.where(sign, magnitude, -magnitude) / 32768.0).astype(np.float32)


ULAW = _ulaw_table()
ALAW = _alaw_table()
_TABLES = {"pcmu": ULAW, "pcma": ALAW}


def decode(codec: str, payload: bytes) -> np.ndarray:
    """8 kHz float32 samples of one payload. Raises ``ValueError`` for an unknown codec."""
    table = _TABLES.get(codec)
    if table is None:
        raise ValueError(f"not a G.711 codec: {codec!r}")
    return table[np.frombuffer(payload, dtype=np.uint8)]


def _sorted(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(table, kind="stable")
    return order, table[order]


_SORTED = {codec: _sorted(table) for codec, table in _TABLES.items()}


def encode(codec: str, pcm: np.ndarray) -> bytes:
    """8 kHz float32 in [-1, 1] -> payload: the nearest code of the decode table."""
    if codec not in _SORTED:
        raise ValueError(f"not a G.711 codec: {codec!r}")
    order, values = _SORTED[codec]
    x = np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 1.0)
    i = np.clip(np.searchsorted(values, x), 1, len(values) - 1)
    left_closer = (x - values[i - 1]) < (values[i] - x)
    return order[np.where(left_closer, i - 1, i)].astype(np.uint8).tobytes()


class Upsampler:
    """Stateful 8 -> 48 kHz: zero-stuffing and a 96-tap low-pass (3.6 kHz) kept across calls."""

    _taps = (firwin(96, 3600.0, fs=8000 * UP) * UP).astype(np.float64)

    def __init__(self) -> None:
        self._zi = np.zeros(len(self._taps) - 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        stuffed = np.zeros(len(x) * UP)
        stuffed[::UP] = x
        y, self._zi = lfilter(self._taps, [1.0], stuffed, zi=self._zi)
        return y.astype(np.float32)

    def reset(self) -> None:
        self._zi[:] = 0.0


class Downsampler:
    """Stateful 48 -> 8 kHz: a 96-tap low-pass (3.6 kHz) kept across calls, every 6th sample.

    Input length must be a multiple of 6 (a 20 ms frame of 960 gives 160).
    """

    _taps = firwin(96, 3600.0, fs=8000 * UP).astype(np.float64)

    def __init__(self) -> None:
        self._zi = np.zeros(len(self._taps) - 1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) % UP:
            raise ValueError(f"input length {len(x)} is not a multiple of {UP}")
        y, self._zi = lfilter(self._taps, [1.0], np.asarray(x, dtype=np.float64), zi=self._zi)
        return y[UP - 1::UP].astype(np.float32)

    def reset(self) -> None:
        self._zi[:] = 0.0


class G711Encoder:
    """One outgoing G.711 stream from the 48 kHz path: 960 float32 samples -> 160-byte payload.

    ``codec`` is "pcmu" or "pcma" (``ValueError`` otherwise). The low-pass state is kept,
    so consecutive frames join without edges.
    """

    def __init__(self, codec: str) -> None:
        if codec not in _TABLES:
            raise ValueError(f"not a G.711 codec: {codec!r}")
        self.codec = codec
        self._down = Downsampler()

    def encode(self, pcm: np.ndarray) -> bytes:
        """One frame at 48 kHz (length a multiple of 6) -> one payload, a byte per 8 kHz sample."""
        return encode(self.codec, self._down(pcm))

    def encode_packet(self, pcm: np.ndarray, pts: int) -> Any:
        """Encode into an ``av.Packet`` with ``pts`` in 1/48000 (aiortc's PCM packer converts)."""
        import av  # local: only the SFU and the client need PyAV

        packet = av.Packet(self.encode(pcm))
        packet.pts = pts
        packet.dts = pts
        packet.time_base = _TIME_BASE
        return packet


_TIME_BASE = fractions.Fraction(1, 8000 * UP)


class G711Decoder:
    """One stream's G.711 decoder at 48 kHz with a simple pitch-repeat concealment."""

    def __init__(self) -> None:
        self._up = Upsampler()
        self._last = np.zeros(0, dtype=np.float32)  # last decoded 48 kHz frame
        self._gain = 1.0

    def decode(self, codec: str, payload: bytes) -> np.ndarray:
        """float32 at 48 kHz, ``6 * len(payload)`` samples."""
        out = self._up(decode(codec, payload))
        self._last = out
        self._gain = 1.0
        return out

    def conceal(self, samples: int) -> np.ndarray:
        """Repeat the last ~10 ms, fading out over 60 ms of concealment."""
        if len(self._last) < 480:
            return np.zeros(samples, dtype=np.float32)
        period = self._last[-480:]
        reps = np.resize(period, samples)
        g0 = self._gain
        self._gain = max(0.0, g0 - samples / 2880.0)
        return (reps * np.linspace(g0, self._gain, samples, dtype=np.float32)).astype(np.float32)

    def reset(self) -> None:
        self._up.reset()
        self._last = np.zeros(0, dtype=np.float32)
        self._gain = 1.0
