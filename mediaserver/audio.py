"""Reading, writing and resampling audio files; shared by every command that touches WAVs."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

PathLike = Union[str, Path]


class AudioFileError(ValueError):
    """A file that is missing, unreadable, empty or not audio."""


def read_audio(path: PathLike) -> tuple[np.ndarray, int]:
    """Return ``(samples[T] float32 mono in -1..1, sample_rate)``; stereo is averaged."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types, all mean "not readable audio"
        raise AudioFileError(f"{path}: cannot read audio ({exc})") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: file holds no audio samples")
    return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32), int(rate)


def write_audio(path: PathLike, samples: np.ndarray, rate: int) -> None:
    """Write mono float samples as 16-bit PCM WAV."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16")


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling (offline use: whole signals, not streaming frames)."""
    if src_rate == dst_rate:
        return samples.astype(np.float32, copy=False)
    g = np.gcd(src_rate, dst_rate)
    return resample_poly(samples, dst_rate // g, src_rate // g).astype(np.float32)
