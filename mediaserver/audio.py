"""Reading, writing and resampling audio files; shared by every command that touches WAVs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .config import print_problem

PathLike = Union[str, Path]


class AudioFileError(ValueError):
    """A file that is missing, unreadable, empty or not audio."""


def _unreadable(path: PathLike, exc: Exception) -> AudioFileError:
    """Why ``path`` could not be opened, in words (libsndfile says "System error." for a
    missing file and "Format not recognised." for a folder)."""
    p = Path(path)
    if not p.exists():
        why = "no such file"
    elif p.is_dir():
        why = "is a folder, not an audio file"
    elif not os.access(p, os.R_OK):
        why = "cannot read audio (permission denied)"
    else:
        detail = str(exc).split(": ", 1)[-1].rstrip(".") if ": " in str(exc) else str(exc)
        why = f"cannot read audio ({detail or type(exc).__name__})"
    return AudioFileError(f"{path}: {why}")


def check_audio_file(path: PathLike, min_rate: int = 1) -> None:
    """Raise :class:`AudioFileError` (the message :func:`read_audio` would give) unless
    ``path`` is an audio file with samples at ``min_rate`` Hz or more; reads the header only,
    so a command can refuse its bad inputs before it loads anything."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types, all mean "not readable audio"
        raise _unreadable(path, exc) from None
    if info.frames == 0:
        raise AudioFileError(f"{path}: file holds no audio samples")
    if info.samplerate < min_rate:
        raise AudioFileError(f"{path}: sample rate {info.samplerate} Hz is too low (need >= {min_rate})")


def check_inputs(args: Optional[argparse.Namespace], paths: Sequence[PathLike],
                 min_rate: int = 1) -> dict[str, str]:
    """The problem of each of ``paths`` that is no readable audio (:func:`check_audio_file`),
    by path, each printed as one ``mediaserver CMD: error:`` line on stderr at once. A command
    with several inputs processes the others and exits 2 (an input error), as ``grep`` does;
    with none left it exits 2 before it loads anything."""
    problems: dict[str, str] = {}
    for path in paths:
        try:
            check_audio_file(path, min_rate)
        except AudioFileError as exc:
            problems[str(path)] = str(exc)
            print_problem(args, str(exc))
    return problems


def read_audio(path: PathLike) -> tuple[np.ndarray, int]:
    """Return ``(samples[T] float32 mono in -1..1, sample_rate)``; stereo is averaged."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types, all mean "not readable audio"
        raise _unreadable(path, exc) from None
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
