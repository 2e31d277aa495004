"""``mediaserver transcribe IN.wav [...]``: the server's ASR path, offline.

Same feed (raw / enhanced / mix through the project's streaming Enhancer at 48 kHz),
same streaming decimator and VAD segmenter, same local recogniser as a live call; the
text of a file is its segments' transcripts joined in order.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..audio import AudioFileError, read_audio, resample
from ..config import add_option
from .feed import DEFAULT_FEED, DEFAULT_RAW_SHARE, FEEDS, check_feed
from .hub import FRAME_48K, FeedConfig, ParticipantPipeline
from .local import ENGINES, Recogniser, make_recogniser
from .segmenter import Segment, SegmenterConfig

logger = logging.getLogger(__name__)

RATE = 48000
TAIL_MS = 1000  # silence appended so the segmenter's hangover closes the last segment


def to_frames48(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample to 48 kHz and pad (silence tail, whole 20 ms frames)."""
    x = resample(samples, rate, RATE)
    total = len(x) + RATE * TAIL_MS // 1000
    total += (-total) % FRAME_48K
    out = np.zeros(total, dtype=np.float32)
    out[:len(x)] = x
    return out


def load_enhancer(weights: Optional[str] = None):
    """The project's streaming Enhancer with the shipped (or given) weights."""
    from ..enhance.streaming import Enhancer
    from ..enhance.weights import load_model

    return Enhancer(load_model(weights), capacity=1)


def enhance48(enhancer, x48: np.ndarray, block_hops: int = 50) -> np.ndarray:
    """Run one signal through a fresh Enhancer slot in blocks; output delayed by ``latency``."""
    slot = enhancer.allocate()
    try:
        step = enhancer.hop * block_hops
        out = np.empty_like(x48)
        for i in range(0, len(x48), step):
            block = x48[i:i + step]
            n = len(block)
            if n % enhancer.hop:
                block = np.pad(block, (0, enhancer.hop - n % enhancer.hop))
            out[i:i + n] = enhancer.process([slot], block[None, :].astype(np.float32))[0, :n]
        return out
    finally:
        enhancer.free(slot)


def segments_of(raw48: np.ndarray, enhanced48: Optional[np.ndarray], feed: FeedConfig,
                seg: Optional[SegmenterConfig] = None, name: str = "file") -> list[Segment]:
    """Drive the live per-participant pipeline frame by frame over a whole signal."""
    if enhanced48 is None:
        enhanced48 = raw48
    pipe = ParticipantPipeline("offline", name, feed, seg)
    out: list[Segment] = []
    for i in range(0, len(raw48) - FRAME_48K + 1, FRAME_48K):
        s = pipe.push(i / 48.0, raw48[i:i + FRAME_48K], enhanced48[i:i + FRAME_48K])
        if s is not None:
            out.append(s)
    last = pipe.flush()
    if last is not None:
        out.append(last)
    return out


def recognise_segments(recogniser: Recogniser, segments: Sequence[Segment]) -> str:
    texts = (recogniser.transcribe(s.pcm) for s in segments)
    return " ".join(t for t in texts if t).strip()


def feed_config(feed: str, raw_share: float, latency: int) -> FeedConfig:
    """Offline the enhanced signal lags raw by the enhancer latency: delay raw to match."""
    return FeedConfig(feed=feed, raw_share=raw_share, raw_delay=latency if feed in ("mix", "auto") else 0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN.wav", help="audio files to transcribe")
    add_option(parser, "--feed", choices=FEEDS, default=DEFAULT_FEED,
               help=f"audio the recogniser hears (default {DEFAULT_FEED})")
    add_option(parser, "--mix-raw-share", type=float, default=DEFAULT_RAW_SHARE,
               help="share of raw audio in the mix feed, 0..1")
    add_option(parser, "--json", dest="json_path", default=None, metavar="PATH",
               help="also write a JSON list of {file, text}")
    add_option(parser, "--weights", default=None,
               help="enhancer weights file or model folder (default: shipped model)")
    add_option(parser, "--asr-engine", choices=ENGINES, default="whisper", help="local recogniser")
    add_option(parser, "--asr-threads", type=int, default=1, help="recogniser CPU threads")


def main(args: argparse.Namespace) -> int:
    try:
        check_feed(args.feed, args.mix_raw_share)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    enhancer = None
    if args.feed != "raw":
        try:
            enhancer = load_enhancer(args.weights)
        except Exception as exc:  # WeightsError, missing module: say what is missing
            print(f"error: the {args.feed} feed needs the enhancer: {exc}", file=sys.stderr)
            return 2
    try:
        recogniser = make_recogniser(args.asr_engine, **(
            {"threads": args.asr_threads} if args.asr_engine == "whisper" else {}))
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    feed = feed_config(args.feed, args.mix_raw_share, enhancer.latency if enhancer else 0)
    results: list[dict] = []
    failed = 0
    for path in args.inputs:
        try:
            samples, rate = read_audio(path)
        except AudioFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            results.append({"file": str(path), "text": "", "error": str(exc)})
            failed += 1
            continue
        t0 = time.perf_counter()
        raw48 = to_frames48(samples, rate)
        enh48 = enhance48(enhancer, raw48) if enhancer is not None else None
        segments = segments_of(raw48, enh48, feed, name=Path(path).stem)
        text = recognise_segments(recogniser, segments)
        logger.info("%s: %d segments, %.1f s audio in %.1f s", path, len(segments),
                    len(samples) / rate, time.perf_counter() - t0)
        print(f"{path}\t{text}")
        results.append({"file": str(path), "text": text})
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0
