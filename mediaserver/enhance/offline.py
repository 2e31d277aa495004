"""``mediaserver enhance IN.wav [IN2.wav ...] --out-dir DIR [--vad-gate 0|1]``: files through the server's path.

Each file goes through the very stage the server runs (:class:`EnhancerStage`, VAD gate
included unless ``--vad-gate 0``; the gate's settings are the server's defaults) at 48 kHz,
resampled there and back when the file has another rate, in the server's 20 ms frames: the
file is what a listener of the call would hear. The output is time-aligned with the input:
``latency`` zeros are fed after the end and the first ``latency`` output samples dropped, so
it has exactly the input's length and rate.
A file that cannot be read is reported by name and skipped; the others are still processed,
and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ..audio import AudioFileError, check_inputs, read_audio, resample, write_audio
from ..config import UsageError, add_option, number_in, print_problem
from ..devices import torch_device_problem
from .stage import EnhancerStage
from .streaming import Enhancer
from .registry import RegistryError
from .weights import WeightsError

logger = logging.getLogger(__name__)

FRAME = 960  # the media clock's 20 ms frame
MIN_RATE = 8000  # Hz: the lowest input rate (narrowband telephone audio)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN.wav", help="audio files to enhance")
    add_option(parser, "--out-dir", required=True, help="folder for the enhanced files (same names)")
    add_option(parser, "--model", default=None, help="weights file or model folder (default: shipped model)")
    add_option(parser, "--atten-lim-db", type=number_in(0), default=100.0,
               help="most the enhancer may attenuate, in dB (100 = no limit)")
    add_option(parser, "--device", default="cpu", help="torch device (cpu, cuda)")
    add_option(parser, "--threads", type=int, default=1, help="torch threads")
    add_option(parser, "--vad-gate", type=int, choices=(0, 1), default=1,
               help="1: the server's VAD gate (network skipped in pauses, as in a call); 0: network always on")


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


def enhance_signal_stage(stage: EnhancerStage, x: np.ndarray, rate: int, atten_lim_db: float = 100.0) -> np.ndarray:
    """One mono signal at any rate through the server's stage (a fresh stream, gate as the
    stage is configured); returns the same length, time-aligned."""
    x48 = resample(x, rate, Enhancer.sample_rate)
    n = len(x48)
    lat = stage.latency
    padded = np.zeros(n + lat + (-(n + lat) % FRAME), dtype=np.float32)
    padded[:n] = x48
    handle = stage.open(atten_lim_db=min(atten_lim_db, 100.0))
    try:
        out = np.concatenate([stage.process_sync([(handle, padded[i : i + FRAME])])[0].enhanced
                              for i in range(0, len(padded), FRAME)])
    finally:
        stage.close(handle)
    y = resample(out[lat : lat + n], Enhancer.sample_rate, rate)
    if len(y) < len(x):
        y = np.concatenate([y, np.zeros(len(x) - len(y), dtype=np.float32)])
    return y[: len(x)].astype(np.float32)


def main(args: argparse.Namespace) -> int:
    problem = torch_device_problem(args.device)   # before anything loads: one line, not a traceback
    if problem:
        raise UsageError(f"--device {args.device}: {problem}")
    if not 0.0 <= args.atten_lim_db <= 1000.0:
        raise UsageError(f"--atten-lim-db must be within 0..1000, got {args.atten_lim_db}")
    bad = check_inputs(args, args.inputs, min_rate=MIN_RATE)   # each one line on stderr now
    if len(bad) == len(args.inputs):
        return 2   # nothing to enhance: refused before the model loads
    try:
        stage = EnhancerStage(args.model, device=args.device, threads=args.threads,
                              gate=bool(args.vad_gate), capacity=1)
    except WeightsError as exc:
        raise UsageError(f"--model: {exc}") from None
    except RegistryError as exc:   # an unknown name: its text starts "--model NAME: ..."
        raise UsageError(str(exc)) from None
    out_dir = Path(args.out_dir)
    unreadable = len(bad)
    unwritten = 0
    for name in args.inputs:
        path = Path(name)
        if str(name) in bad:
            continue
        try:
            x, rate = read_audio(path)
            y = enhance_signal_stage(stage, x, rate, args.atten_lim_db)
            target = out_dir / path.name
            if target.suffix.lower() != ".wav":
                target = target.with_suffix(".wav")
            write_audio(target, y, rate)
        except AudioFileError as exc:   # its header was fine, its data is not
            unreadable += 1
            print_problem(args, str(exc))
            continue
        except OSError as exc:
            unwritten += 1
            print_problem(args, f"{path}: cannot write output ({exc})")
            continue
        logger.info("%s -> %s (%.2f s at %d Hz)", path, target, len(x) / rate, rate)
    stage.shutdown()
    failed = unreadable + unwritten
    if failed:
        print_problem(args, f"{failed} of {len(args.inputs)} file(s) failed")
    # an unreadable input is an input error (2, as a bad flag); an output not written, 1
    return 2 if unreadable else 1 if unwritten else 0


def run(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mediaserver enhance")
    add_arguments(parser)
    return main(parser.parse_args(argv))
