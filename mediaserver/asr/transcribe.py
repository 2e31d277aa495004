"""``mediaserver transcribe IN.wav [...]``: the server's ASR path, offline or in real time.

Same feed (raw / enhanced / mix through the project's streaming Enhancer at 48 kHz),
same streaming decimator and VAD segmenter, same local recogniser as a live call; the
text of a file is its finals joined in order (each decoded with the previous text as
context, length cuts carried over at a word boundary: ``streaming.py``).

``--realtime`` feeds each file at real-time pace through the live sink (worker pool,
partials, finals) and records every caption as an event: ``{"final", "text",
"audio_end_s", "emit_s"}`` (``audio_end_s``: how far into the file the caption's audio
reaches; ``emit_s``: wall-clock seconds since the file started playing); a partial is
recorded when its stable prefix grew.
:func:`simulate_live` replays the same decisions with a simulated clock for benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..audio import AudioFileError, check_inputs, read_audio, resample
from ..config import UsageError, add_option, name_sources, print_problem
from .feed import DEFAULT_FEED, DEFAULT_RAW_SHARE, FEEDS, check_feed
from .hub import FRAME_48K, FeedConfig, ParticipantPipeline
from .local import (DEFAULT_ENGINE, DEVICES, ENGINES, WINDOW_TAIL_S, LocalRecogniserSink,
                    Recogniser, make_recogniser, recogniser_kwargs)
from .segmenter import Segment, SegmenterConfig
from .streaming import Caption, DecodeJob, StreamConfig, TalkerStream

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
    """Each segment decoded alone, no context, no carry-over: the path before streaming
    (kept as the benchmark's baseline)."""
    texts = (recogniser.transcribe(s.pcm) for s in segments)
    return " ".join(t for t in texts if t).strip()


def finals_of(recogniser: Recogniser, segments: Sequence[Segment],
              stream: Optional[StreamConfig] = None) -> str:
    """The live path's final text: segments in order through one :class:`TalkerStream`."""
    talker = TalkerStream("offline", "file", stream)
    texts = []
    for segment in segments:
        job = talker.begin_final(talker.close(segment))
        caption = talker.final_done(job, _run(recogniser, job))
        if caption is not None:
            texts.append(caption.text)
    return " ".join(texts).strip()


def _run(recogniser: Recogniser, job: DecodeJob) -> list:
    from .pool import decode

    return decode(recogniser, job)  # type: ignore[arg-type]


def _event(caption: Caption, emit_s: float, with_start: bool = False,
           duration_s: Optional[float] = None, speech_end_ms: Optional[dict] = None) -> dict:
    """``text`` is the stable prefix of a partial, ``audio_end_s`` how far its audio reaches.
    ``with_start`` (the benchmark's events) adds ``audio_start_s``; for a final, ``speech_end_s``
    (where the VAD heard the last speech of its segment: ``speech_end_ms`` maps a segment's end
    to it; a final not ending at a segment's end, as one cut for length, gets its audio end);
    for a partial with provisional words past its stable prefix, ``unstable`` and
    ``unstable_audio_end_s`` (how far the newest decode's audio reaches). ``duration_s``: the
    file's length, which audio times never pass (the last segment closes in the silence
    appended after the file)."""
    def at(ms: float) -> float:
        return round(min(ms / 1000.0, duration_s) if duration_s is not None else ms / 1000.0, 3)

    event = {"final": caption.final, "text": caption.text,
             "audio_end_s": at(caption.end_ms), "emit_s": round(emit_s, 3)}
    if with_start:
        event["audio_start_s"] = at(caption.start_ms)
        if caption.final:
            event["speech_end_s"] = at((speech_end_ms or {}).get(caption.end_ms, caption.end_ms))
        if not caption.final and caption.unstable and caption.unstable_end_ms is not None:
            event["unstable"] = caption.unstable
            event["unstable_audio_end_s"] = at(caption.unstable_end_ms)
    return event


# simulate_live: an aborted decode gives its worker back this long after the request (a
# Moonshine decoder step is about 19 ms; an onnxruntime run terminated mid-graph raised
# 2-12 ms after the request: abort.py). Frames come every 20 ms, so it is at most a frame late.
ABORT_S = 0.02
ABORTED: list = []   # the words of a decode that was aborted (identity-compared)


def simulate_live(recogniser: Recogniser, raw48: np.ndarray, enhanced48: Optional[np.ndarray],
                  feed: FeedConfig, seg: Optional[SegmenterConfig] = None,
                  stream: Optional[StreamConfig] = None,
                  duration_s: Optional[float] = None) -> list[dict]:
    """The live sink's decisions for one talker and one worker on a simulated clock.
    ``duration_s``: the file's length, which no event's audio times pass.

    Frame ``i`` arrives at ``(i + 1) * 20 ms``; a decode starts when the worker is free and
    takes the wall time it really took here. A decode the talker no longer wants
    (:meth:`TalkerStream.superseded`, checked after every frame) ends ``ABORT_S`` after that
    frame, without a result, when the engine is ``abortable`` and ``stream.aborts`` is on (as
    the live sink aborts it); otherwise it holds the worker to its end. Returns the events as
    ``--realtime`` does, each with ``audio_start_s`` too (where its utterance starts:
    first-partial latency), finals with ``speech_end_s`` (where its speech ended: final latency).
    """
    enhanced48 = raw48 if enhanced48 is None else enhanced48
    pipe = ParticipantPipeline("sim", "file", feed, seg)
    talker = TalkerStream("sim", "file", stream)
    aborts = talker.cfg.aborts and bool(getattr(recogniser, "abortable", False))
    finals: list[DecodeJob] = []
    partial: Optional[DecodeJob] = None
    flight: Optional[tuple[DecodeJob, list, float]] = None
    events: list[dict] = []
    speech_end: dict[float, float] = {}    # segment end_ms -> speech_end_ms

    def start(now: float) -> Optional[tuple[DecodeJob, list, float]]:
        nonlocal partial
        while finals or partial is not None:
            if finals:
                job: Optional[DecodeJob] = finals.pop(0)
                job = talker.begin_early(job) if job.early else talker.begin_final(job)
            else:
                job, partial = talker.begin_partial(partial), None  # type: ignore[arg-type]
            if job is None:
                continue
            t0 = time.perf_counter()
            words = _run(recogniser, job)
            return job, words, now + time.perf_counter() - t0
        return None

    def finish(until: float) -> None:
        nonlocal flight
        while flight is not None and flight[2] <= until:
            job, words, done = flight
            if words is ABORTED:
                talker.aborted(job)
                flight = start(done)
                continue
            if job.early:
                caption = talker.early_done(job, words)
            elif job.final:
                caption = talker.final_done(job, words)
            else:
                caption = talker.partial_done(job, words)
            if caption is not None:
                events.append(_event(caption, done, with_start=True, duration_s=duration_s,
                                     speech_end_ms=speech_end))
            flight = start(done)

    def accept(segment: Optional[Segment], now: float) -> None:
        nonlocal partial, flight
        chunk = pipe.live_chunk()
        if chunk is not None:
            talker.add_live(chunk)
            early = talker.early_job()
            if early is not None:
                finals.append(early)
                if partial is not None:
                    talker.partial_dropped(partial)
                partial = None
            else:
                job = talker.partial_job()
                if job is not None:
                    partial = job
        if segment is not None:
            speech_end[segment.end_ms] = segment.meta.get("speech_end_ms", segment.end_ms)
            closed = talker.close(segment)
            if isinstance(closed, DecodeJob):
                finals.append(closed)
            elif closed is not None:       # the early decode already heard all of it
                events.append(_event(closed, now, with_start=True, duration_s=duration_s,
                                     speech_end_ms=speech_end))
            partial = None
        if (aborts and flight is not None and flight[1] is not ABORTED
                and flight[2] > now + ABORT_S and talker.superseded(flight[0])):
            flight = (flight[0], ABORTED, now + ABORT_S)     # type: ignore[assignment]
        if flight is None:
            flight = start(now)

    n = len(raw48) // FRAME_48K
    for i in range(n):
        now = (i + 1) * FRAME_48K / RATE
        finish(now)
        a, b = i * FRAME_48K, (i + 1) * FRAME_48K
        accept(pipe.push(a / 48.0, raw48[a:b], enhanced48[a:b]), now)
    end = n * FRAME_48K / RATE
    finish(end)
    accept(pipe.flush(), end)
    finish(float("inf"))
    return events


async def realtime_events(sink: LocalRecogniserSink, raw48: np.ndarray,
                          enhanced48: Optional[np.ndarray], feed: FeedConfig, name: str,
                          seg: Optional[SegmenterConfig] = None,
                          duration_s: Optional[float] = None) -> list[dict]:
    """Play one file at real-time pace through an :class:`AsrHub` with ``sink`` (started
    here, stopped at the end); returns its caption events. ``duration_s``: the file's length
    (before the silence :func:`to_frames48` appends), the limit of every event's audio times."""
    from .hub import AsrHub

    enhanced48 = raw48 if enhanced48 is None else enhanced48
    hub = AsrHub([sink], feed=feed, segmenter=seg)
    loop = asyncio.get_running_loop()
    events: list[dict] = []
    t0 = loop.time()

    shown = [""]   # the stable text of the open utterance

    def listen(room: str, identity: str, text: str, start_ms: float, end_ms: float,
               final: bool) -> None:
        # the events keep exactly their four keys: a partial is recorded when its stable
        # prefix grew (its unstable words reach the page only)
        if not final and (not text or text == shown[0]):
            return
        shown[0] = "" if final else text
        events.append(_event(Caption(room, identity, text, start_ms, end_ms, final),
                             loop.time() - t0, duration_s=duration_s))

    hub.add_transcript_listener(listen)
    await hub.start()
    try:
        t0 = loop.time()
        for i in range(len(raw48) // FRAME_48K):
            a, b = i * FRAME_48K, (i + 1) * FRAME_48K
            delay = t0 + b / RATE - loop.time()   # frame i is complete at (i + 1) * 20 ms
            if delay > 0:
                await asyncio.sleep(delay)
            hub.on_frame(room="file", identity=name, t_ms=a / 48.0, raw=raw48[a:b],
                         enhanced=enhanced48[a:b], speech=False)
        hub.participant_left("file", name)
        await sink.drain()
    finally:
        await hub.stop()
    return events


def feed_config(feed: str, raw_share: float, latency: int) -> FeedConfig:
    """Offline the enhanced signal lags raw by the enhancer latency: delay raw to match."""
    return FeedConfig(feed=feed, raw_share=raw_share, raw_delay=latency if feed in ("mix", "auto") else 0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN.wav", help="audio files to transcribe")
    # Flags named as serve's (so one MEDIASERVER_* variable sets both); the old spellings
    # --feed, --mix-raw-share and --weights are still accepted.
    add_option(parser, "--asr-feed", "--feed", choices=FEEDS, default=DEFAULT_FEED,
               help=f"audio the recogniser hears (default {DEFAULT_FEED})")
    add_option(parser, "--asr-mix-raw-share", "--mix-raw-share", type=float,
               default=DEFAULT_RAW_SHARE, help="share of raw audio in the mix feed, 0..1")
    add_option(parser, "--json", dest="json_path", default=None, metavar="PATH",
               help="also write a JSON list of {file, text}; with --realtime each entry also "
                    "has events: every caption as {final, text, audio_end_s, emit_s}, partials "
                    "and finals in the order they came")
    add_option(parser, "--model", "--weights", default=None,
               help="enhancer weights file or model folder for the enhanced and mix feeds "
                    "(default: shipped model)")
    add_option(parser, "--asr-engine", choices=ENGINES, default=DEFAULT_ENGINE,
               help=f"local recogniser (default {DEFAULT_ENGINE})")
    add_option(parser, "--asr-threads", type=int, default=1, help="recogniser CPU threads")
    add_option(parser, "--asr-device", choices=DEVICES, default="cpu", help="where Whisper runs")
    add_option(parser, "--asr-window-tail", type=float, default=WINDOW_TAIL_S, metavar="S",
               help="seconds of padding after the audio of each partial decode (0: Whisper's "
                    "30 s window); finals and the whole-file transcript use 30 s windows")
    add_option(parser, "--realtime", action="store_true",
               help="feed each file at real-time pace through the live path (partials, finals); "
                    "the JSON gains an events list per file")


def flags_without_effect(args: argparse.Namespace) -> list[str]:
    """Warnings for flags set (``args._changed``, see ``config.changed_flags``) that do nothing
    with the other settings, by ``serve``'s rules (``asr/options.py``) plus ``--model``."""
    from .options import MIX_SHARE_RULE, WINDOW_TAIL_RULE, asr_flags_without_effect

    rules = (MIX_SHARE_RULE,
             (("--model",), lambda a, names: a.asr_feed != "raw", "with --asr-feed raw (no enhancer runs)"),
             WINDOW_TAIL_RULE)
    return asr_flags_without_effect(args, rules, names=["local"])


def main(args: argparse.Namespace) -> int:
    try:
        check_feed(args.asr_feed, args.asr_mix_raw_share)
    except ValueError as exc:
        raise UsageError(f"--asr-feed / --asr-mix-raw-share: {exc}") from None
    for warning in flags_without_effect(args):
        logger.warning("%s", name_sources(warning, args))
    from .options import local_engine_problem

    problem = local_engine_problem(args.asr_engine, args.asr_device)   # before any loading
    if problem:
        raise UsageError(problem)
    bad = check_inputs(args, args.inputs)   # each one line on stderr now; exit 2 at the end
    if len(bad) == len(args.inputs):
        return 2   # nothing to transcribe: refused before the models load
    enhancer = None
    if args.asr_feed != "raw":
        try:
            enhancer = load_enhancer(args.model)
        except Exception as exc:  # WeightsError, missing module: say what is missing
            raise UsageError(f"--model: the {args.asr_feed} feed needs the enhancer: {exc}") from None
    try:
        kwargs = recogniser_kwargs(args.asr_engine, threads=args.asr_threads,
                                   device=args.asr_device, window_tail_s=args.asr_window_tail)
        recogniser = make_recogniser(args.asr_engine, **kwargs)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--asr-engine {args.asr_engine}: {exc}") from None
    feed = feed_config(args.asr_feed, args.asr_mix_raw_share, enhancer.latency if enhancer else 0)
    results: list[dict] = []
    failed = 0
    for path in args.inputs:
        try:
            if str(path) in bad:
                raise AudioFileError(bad[str(path)])   # said already
            samples, rate = read_audio(path)
        except AudioFileError as exc:
            if str(path) not in bad:   # its header was fine, its data is not
                print_problem(args, str(exc))
            results.append({"file": str(path), "text": "", "error": str(exc)})
            failed += 1
            continue
        t0 = time.perf_counter()
        raw48 = to_frames48(samples, rate)
        enh48 = enhance48(enhancer, raw48) if enhancer is not None else None
        entry: dict = {"file": str(path)}
        if getattr(args, "realtime", False):
            sink = LocalRecogniserSink(engine=args.asr_engine, workers=1,
                                       recogniser_factory=lambda: recogniser)
            events = asyncio.run(realtime_events(sink, raw48, enh48, feed, Path(path).stem,
                                                 duration_s=len(samples) / rate))
            text = " ".join(e["text"] for e in events if e["final"])
            entry.update(text=text, events=events)
        else:
            segments = segments_of(raw48, enh48, feed, name=Path(path).stem)
            text = finals_of(recogniser, segments)
            entry["text"] = text
        logger.info("%s: %.1f s audio in %.1f s", path, len(samples) / rate,
                    time.perf_counter() - t0)
        print(f"{path}\t{text}")
        results.append(entry)
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n")
    return 2 if failed else 0   # an unreadable input is an input error, as a bad flag
