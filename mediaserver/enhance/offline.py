"""``mediaserver enhance IN.wav [IN2.wav ...] --out-dir DIR``: files through the server's path.

Each file goes hop by hop through the same streaming :class:`Enhancer` the server runs (at
48 kHz, resampled there and back when the file has another rate), in the server's 20 ms
frames. The output is time-aligned with the input: ``latency`` zeros are fed after the end and
the first ``latency`` output samples dropped, so it has exactly the input's length and rate.
A file that cannot be read is reported by name and skipped; the others are still processed,
and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from ..audio import AudioFileError, read_audio, resample, write_audio
from ..config import add_option
from .streaming import Enhancer
from .weights import WeightsError, load_model

logger = logging.getLogger(__name__)

FRAME = 960  # the media clock's 20 ms frame


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN.wav", help="audio files to enhance")
    add_option(parser, "--out-dir", required=True, help="folder for the enhanced files (same names)")
    add_option(parser, "--model", default=None, help="weights file or model folder (default: shipped model)")
    add_option(parser, "--atten-lim-db", type=float, default=100.0,
               help="most the enhancer may attenuate, in dB (100 = no limit)")
    add_option(parser, "--device", default="cpu", help="torch device (cpu, cuda)")
    add_option(parser, "--threads", type=int, default=1, help="torch threads")


def enhance_signal(enhancer: Enhancer, x: np.ndarray, rate: int, atten_lim_db: float = 100.0) -> np.ndarray:
    """Enhance one mono signal at any rate; returns the same length, time-aligned."""
    x48 = resample(x, rate, Enhancer.sample_rate)
    n = len(x48)
    lat = enhancer.latency
    padded = np.zeros(n + lat + (-(n + lat) % FRAME), dtype=np.float32)
    padded[:n] = x48
    slot = enhancer.allocate()
    lim = np.array([atten_lim_db], dtype=np.float32)
    try:
        out = np.empty_like(padded)
        for start in range(0, len(padded), FRAME):
            out[start : start + FRAME] = enhancer.process([slot], padded[None, start : start + FRAME], lim)[0]
    finally:
        enhancer.free(slot)
    y48 = out[lat : lat + n]
    y = resample(y48, Enhancer.sample_rate, rate)
    if len(y) < len(x):
        y = np.concatenate([y, np.zeros(len(x) - len(y), dtype=np.float32)])
    return y[: len(x)].astype(np.float32)


def main(args: argparse.Namespace) -> int:
    if not 0.0 <= args.atten_lim_db <= 1000.0:
        print(f"error: --atten-lim-db must be >= 0, got {args.atten_lim_db}", file=sys.stderr)
        return 2
    try:
        enhancer = Enhancer(load_model(args.model, device=args.device), device=args.device,
                            capacity=1, num_threads=args.threads)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out_dir)
    failed = 0
    for name in args.inputs:
        path = Path(name)
        try:
            x, rate = read_audio(path)
            if rate < 8000:
                raise AudioFileError(f"{path}: sample rate {rate} Hz is too low (need >= 8000)")
            y = enhance_signal(enhancer, x, rate, args.atten_lim_db)
            target = out_dir / path.name
            if target.suffix.lower() != ".wav":
                target = target.with_suffix(".wav")
            write_audio(target, y, rate)
        except AudioFileError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        except OSError as exc:
            failed += 1
            print(f"error: {path}: cannot write output ({exc})", file=sys.stderr)
            continue
        logger.info("%s -> %s (%.2f s at %d Hz)", path, target, len(x) / rate, rate)
    if failed:
        print(f"{failed} of {len(args.inputs)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


def run(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mediaserver enhance")
    add_arguments(parser)
    return main(parser.parse_args(argv))
