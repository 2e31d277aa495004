"""Sampled MOS proxy: DNSMOS on one 9 s window per stream every N seconds, off the media path.

Off by default (``--dnsmos-sample-s 0``). With N > 0, each stream's raw and enhanced audio
(the stage's aligned outputs) is copied for 9 s starting at a staggered offset, then every N s
(N ≥ 9); the finished window goes to a bounded queue (full: dropped and counted) and ONE
background thread resamples both to 16 kHz and scores them with DNSMOS P.835 (the ONNX models
of ``speechmos``, ``pip install mediaserver[mos]``; nothing is downloaded). Scores are exported
by model version, never by participant:

* ``mediaserver_enhancer_dnsmos{model_version,worker,signal=raw|enhanced,score=sig|bak|ovrl}``
  histogram,
* ``mediaserver_enhancer_dnsmos_samples_total`` / ``..._dropped_total`` counters,
* ``mediaserver_enhancer_dnsmos_cpu_seconds_total``: the scoring thread's CPU time (its cost).

:meth:`MosSampler.on_batch` runs in the stage's worker thread and only copies frames
(a memcpy of 2 × 960 floats per capturing stream per tick).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)

FRAME = 960
WINDOW_FRAMES = 451  # 9.02 s: DNSMOS's 9.01 s input once (shorter input is looped to 18 s and scored 7 times)
WINDOW_S = WINDOW_FRAMES / 50
QUEUE = 4


@dataclass
class _Capture:
    model: str
    raw: np.ndarray
    enhanced: np.ndarray
    filled: int = 0


class _StreamState:
    __slots__ = ("frames", "next_start", "capture")

    def __init__(self, next_start: int) -> None:
        self.frames = 0
        self.next_start = next_start  # frame count of the stream at which the next window starts
        self.capture: Optional[_Capture] = None


class MosSampler:
    """Captures windows in the stage's worker thread, scores them in its own thread.

    Args:
        period_s: one window per stream every this many seconds (≥ 9).
        registry / worker: Prometheus registry and the ``worker`` label (None: no metrics).
        scorer: callable 16 kHz float32 → {"dnsmos_sig","dnsmos_bak","dnsmos_ovrl"}; default
            DNSMOS (``enhance/metrics.py``), built in the thread. Raises RuntimeError when
            ``speechmos`` is missing, at construction (server start), not mid-call.
    """

    def __init__(self, period_s: float, *, registry: Optional["CollectorRegistry"] = None, worker: str = "0",
                 scorer: Optional[Callable[[np.ndarray], dict[str, float]]] = None) -> None:
        if period_s < 9.0:
            raise ValueError(f"--dnsmos-sample-s must be at least 9 s (the DNSMOS window), got {period_s}")
        if scorer is None:
            from .metrics import load_dnsmos

            scorer, why = load_dnsmos()
            if scorer is None:
                raise RuntimeError(why)
        self._scorer = scorer
        self.period_frames = int(round(period_s * 50))
        self._streams: dict[int, _StreamState] = {}
        self._queue: "queue.Queue[Optional[_Capture]]" = queue.Queue(maxsize=QUEUE)
        self._lock = threading.Lock()
        self._mos: dict[str, tuple[float, int]] = {}  # model -> (sum of enhanced OVRL, samples)
        self.scored = 0
        self.dropped = 0
        self.cpu_s = 0.0
        self._metrics = _MosMetrics(registry, worker) if registry is not None else None
        self._thread = threading.Thread(target=self._run, name="dnsmos", daemon=True)
        self._thread.start()

    # ---- stage worker thread ----------------------------------------------------------------
    def on_batch(self, handles: Sequence[Any], raw: np.ndarray, enhanced: np.ndarray, speech: np.ndarray) -> None:
        live = set()
        for i, h in enumerate(handles):
            live.add(h.id)
            st = self._streams.get(h.id)
            if st is None:  # stagger: streams that join together are not all scored together
                st = self._streams[h.id] = _StreamState((h.id * 97) % self.period_frames)
            st.frames += 1
            frames = st.frames
            cap = st.capture
            if cap is None:
                if frames < st.next_start:
                    continue
                cap = st.capture = _Capture(h.active_model, np.empty(WINDOW_FRAMES * FRAME, np.float32),
                                            np.empty(WINDOW_FRAMES * FRAME, np.float32))
                st.next_start = frames + self.period_frames
            if cap.model != h.active_model:  # switched model mid-window: not one model's sample
                st.capture = None
                continue
            k = cap.filled * FRAME
            cap.raw[k:k + FRAME] = raw[i]
            cap.enhanced[k:k + FRAME] = enhanced[i]
            cap.filled += 1
            if cap.filled == WINDOW_FRAMES:
                st.capture = None
                try:
                    self._queue.put_nowait(cap)
                except queue.Full:
                    self.dropped += 1
                    if self._metrics is not None:
                        self._metrics.dropped.labels(cap.model, self._metrics.worker).inc()
        if len(self._streams) > len(live):  # forget closed streams
            for sid in [s for s in self._streams if s not in live]:
                if self._streams[sid].capture is None or len(self._streams) > 4 * len(live) + 16:
                    del self._streams[sid]

    # ---- scoring thread -----------------------------------------------------------------------
    def _run(self) -> None:
        from scipy.signal import resample_poly

        while True:
            cap = self._queue.get()
            if cap is None:
                self._queue.task_done()
                return
            t0 = time.thread_time()
            try:
                scores = {sig: self._scorer(resample_poly(x, 1, 3).astype(np.float32))
                          for sig, x in (("raw", cap.raw), ("enhanced", cap.enhanced))}
            except Exception:
                logger.exception("DNSMOS scoring failed")
                self._queue.task_done()
                continue
            cost = time.thread_time() - t0
            ovrl = scores["enhanced"].get("dnsmos_ovrl", math.nan)
            with self._lock:
                self.cpu_s += cost
                self.scored += 1
                if math.isfinite(ovrl):
                    s, n = self._mos.get(cap.model, (0.0, 0))
                    self._mos[cap.model] = (s + ovrl, n + 1)
            if self._metrics is not None:
                self._metrics.observe(cap.model, scores, cost)
            self._queue.task_done()

    def mos_by_model(self) -> dict[str, tuple[float, int]]:
        """(sum of enhanced OVRL, number of samples) per model since start (the canary's input)."""
        with self._lock:
            return dict(self._mos)

    def wait_idle(self, timeout: float) -> bool:
        """Block until the queue is empty and the last window is scored (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop the scoring thread (queued windows are scored first)."""
        self._queue.put(None)
        self._thread.join()


class _MosMetrics:
    def __init__(self, registry: "CollectorRegistry", worker: str) -> None:
        from prometheus_client import Counter, Histogram

        self.worker = worker
        labels = ["model_version", "worker"]
        self.score = Histogram("mediaserver_enhancer_dnsmos", "DNSMOS P.835 of sampled 9 s windows "
                               "(signal: raw or enhanced; score: sig, bak, ovrl)", [*labels, "signal", "score"],
                               registry=registry, buckets=(1.0, 1.5, 2.0, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0, 4.5, 5.0))
        self.samples = Counter("mediaserver_enhancer_dnsmos_samples_total", "windows scored", labels, registry=registry)
        self.dropped = Counter("mediaserver_enhancer_dnsmos_dropped_total",
                               "windows dropped because the scoring queue was full", labels, registry=registry)
        self.cpu = Counter("mediaserver_enhancer_dnsmos_cpu_seconds_total", "CPU time of the DNSMOS thread",
                           labels, registry=registry)

    def observe(self, model: str, scores: dict[str, dict[str, float]], cost: float) -> None:
        w = self.worker
        for signal, values in scores.items():
            for key, value in values.items():
                if math.isfinite(value):
                    self.score.labels(model, w, signal, key.replace("dnsmos_", "")).observe(value)
        self.samples.labels(model, w).inc()
        self.cpu.labels(model, w).inc(cost)
