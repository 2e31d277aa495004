"""The media clock's enhancement step: VAD gate + batched Enhancer, off the event loop.

Every 20 ms the media clock hands over one 960-sample frame per publishing stream. All of
them are processed together in ONE worker thread (``ThreadPoolExecutor(max_workers=1)``):
one gate decision per stream, then one batched network call for the streams whose gate is
open, then cheap paths for the rest. torch releases the GIL inside its kernels, so the
event loop keeps running while the network computes.

Each stream takes one of three paths per frame, all through the enhancer's STFT synthesis:

* ``network``: gate open (webrtcvad speech, or an energy rise over the stream's noise floor,
  plus hangover), or ``gate=False``, or the stream's noise gain is not measured yet.
* ``filter`` (gate closed): the delayed input times the network's own recent per-bin gain on
  this stream's noise (:mod:`.noisegain`), two FFTs per hop and no network. The background
  keeps its level and colour across every gate switch (no pumping).
* ``pass`` (enhancement disabled, or an overloaded tick during speech): the delayed input.

Timing contract: both outputs, ``raw`` and ``enhanced``, are the input delayed by
:attr:`EnhancerStage.latency` = 480 samples (10 ms), whatever the path, so switching never
shifts a stream's timing. Every path ends in the same overlap-add synthesis
(:meth:`Enhancer.skip`), so every switch, at any tick, is a 10 ms Hann cross-fade of the two
paths' outputs, never a jump (including an overloaded tick, when the network's output for the
fade is not computed). ``raw`` and ``enhanced`` are sample-aligned, so a sink can mix them.

Bad input never disturbs other streams: a frame of the wrong length is replaced by silence
and logged; NaN/Inf samples are zeroed (a NaN would otherwise poison that stream's GRU state).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from ..config import add_option
from .noisegain import NoiseGain, power_spectra
from .registry import MANIFEST, ModelEntry, ModelRegistry, roots_from_args
from .stage_options import add_stage_options, check_atten_lim_db, stage_argv  # noqa: F401  (torch-free)
from .streaming import Enhancer
from .telemetry import FRAMES as FRAMES_ROW, Counts, StreamTelemetry, Telemetry
from .vad import GateConfig, OnsetDetector, VadGate, band_levels, decimate_batch, vad_history
from .weights import WeightsError, load_model

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .mos import MosSampler

logger = logging.getLogger(__name__)

FRAME = 960  # 20 ms at 48 kHz, the media clock's frame
FRAME_MS = 20.0
SILENT_DBFS = -80.0  # a frame quieter than this needs no network to measure its noise
MAX_SETTLE_MS = 600.0  # most the network runs past the hangover for its noise gain to settle
NET, FILTER, PASS = "network", "filter", "pass"
SWITCH_WARM_FRAMES = 5  # a live model switch runs the new model this many frames (100 ms) before the fade
_FADE_IN = (0.5 - 0.5 * np.cos(np.pi * (np.arange(FRAME) + 0.5) / FRAME)).astype(np.float32)  # 0 → 1 over 20 ms


@dataclass
class StageOutput:
    raw: np.ndarray  # (960,) float32, input delayed by `latency`
    enhanced: np.ndarray  # (960,) float32, aligned with raw
    speech: bool  # webrtcvad speech with hangover (energy-only gate openings do not count)


@dataclass
class _Switch:
    """A live model switch in progress (worker side): the new model's slot warming up."""

    model: str
    slot: int
    frames: int = 0


class StreamHandle:
    """One publisher's stream in the stage; ``enabled``, ``atten_lim_db`` and ``model`` change live
    (``model`` through :meth:`EnhancerStage.switch`). ``telemetry`` holds its quality estimates."""

    _ids = itertools.count(1)

    def __init__(self, *, enabled: bool, atten_lim_db: float, gate: GateConfig, model: str) -> None:
        self.id = next(self._ids)
        self.enabled = bool(enabled)
        self._atten = 100.0
        self.atten_lim_db = atten_lim_db
        self.closed = False
        self.model = model  # requested model version (event loop thread)
        self.telemetry = StreamTelemetry()
        self._model = model  # the model this stream's slot belongs to (worker thread)
        self._switch: Optional[_Switch] = None
        # worker-side state (touched only inside the worker thread after open())
        self._gate = VadGate(gate)
        self._onset = OnsetDetector(gate)
        self._noise = NoiseGain(Enhancer.window // 2 + 1)
        self._vad_hist = vad_history()  # decimation filter memory (48 kHz samples)
        self._slot: Optional[int] = None
        self._tail = np.zeros(Enhancer.latency, dtype=np.float32)  # raw delay line
        self._path: Optional[str] = None  # path of the last frame
        self._was_noise = False  # the last input frame was noise-only
        self._settle_ms = 0.0  # network time spent past the hangover waiting for the gain to settle
        self._bad_frames = 0

    @property
    def atten_lim_db(self) -> float:
        return self._atten

    @atten_lim_db.setter
    def atten_lim_db(self, value: float) -> None:
        self._atten = check_atten_lim_db(value)

    @property
    def active_model(self) -> str:
        """The model whose output this stream hears now (the old one until a switch has faded)."""
        return self._model

    def __repr__(self) -> str:
        return (f"StreamHandle(id={self.id}, enabled={self.enabled}, atten_lim_db={self._atten}, "
                f"model={self.model})")


Item = Union[tuple["StreamHandle", np.ndarray], tuple["StreamHandle", np.ndarray, Union[str, bool]]]


class EnhancerStage:
    """VAD-gated, batched enhancement of every stream of this process.

    Args:
        weights: the default model: a registry name (``msenh-v2``), a model folder or a
            weights file; None = the shipped default. Loaded and validated here, so a bad file
            fails at server start with WeightsError (RegistryError for an unknown name).
        device: torch device for the network.
        threads: torch intra-op threads (process-wide setting).
        gate: skip the network while the gate is closed (saves compute); the VAD still
            runs for the ``speech`` flag when off.
        gate_config: VAD mode, hangover, onset threshold, and the broadband cut used until a
            stream's noise gain is measured.
        capacity: initial enhancer slots per model (grows as needed).
        registry: Prometheus registry for the ``mediaserver_enhancer_*`` series (None: none).
        models: the model registry that names resolve in (default: the shipped models/).
        worker: the ``worker`` label of every series (room-independent: one per process).
        telemetry: keep per-stream quality telemetry (:mod:`.telemetry`); off only to measure its cost.

    More models are added with :meth:`load` (any thread but the worker's) and streams move
    between them with :meth:`switch`; :attr:`model_version` is the default for new streams.
    """

    latency = Enhancer.latency
    # the window the input waits for before its frame is complete (hop) plus the output delay
    # (``latency``): 960 samples at 48 kHz = 20 ms. A model.json's algorithmic_latency_ms must
    # say the same: the media clock compensates ``latency`` alone, for every model (load()).
    algorithmic_latency_ms = 1000.0 * Enhancer.window / Enhancer.sample_rate

    def __init__(
        self,
        weights: Union[str, Path, None] = None,
        *,
        device: str = "cpu",
        threads: Optional[int] = 1,
        gate: bool = True,
        gate_config: GateConfig = GateConfig(),
        capacity: int = 64,
        registry: Optional["CollectorRegistry"] = None,
        models: Optional[ModelRegistry] = None,
        worker: str = "0",
        telemetry: bool = True,
    ) -> None:
        self.models = models if models is not None else ModelRegistry()
        self._device, self._threads, self._capacity = device, threads, capacity
        self._enhancers: dict[str, Enhancer] = {}
        self.model_version = self.load(weights)
        self.enhancer = self._enhancers[self.model_version]
        self.gate = gate
        self.gate_config = gate_config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enhancer")
        self._closing: deque[StreamHandle] = deque()  # appended on the loop, drained by the worker
        self._open: set[StreamHandle] = set()  # event loop thread
        self.streams = 0  # open handles (event loop thread); the slot is taken on the first frame
        self.ticks = 0
        self.frames_net = 0
        self.frames_bypass = 0
        self.switches = 0
        self.last_step_s = 0.0
        self.telemetry = Telemetry() if telemetry else None
        self._sli: dict[str, np.ndarray] = {}  # model -> Counts fields (worker thread writes)
        self.frame_sinks: list = []  # worker-thread hooks: on_batch(handles, raw, enhanced, speech)
        self.mos: Optional["MosSampler"] = None  # sampled DNSMOS (enhance/mos.py), when enabled
        self.worker = worker
        self._metrics = _StageMetrics(registry, worker) if registry is not None else None
        if self._metrics is not None:
            self._metrics.add_model(self.model_version)

    # ---- models (any thread but the worker) --------------------------------------------------
    def load(self, spec: Union[str, Path, None]) -> str:
        """Load a model (registry name, folder or file) if not loaded yet; return its version.

        Blocking (torch load + a validation frame): call it off the event loop. Raises
        WeightsError / RegistryError with the reason; :class:`LatencyMismatch` (a WeightsError)
        when its model.json declares another algorithmic latency than the stage's."""
        name, path = self.models.resolve(spec)
        if name not in self._enhancers:
            check_latency(name, self.models.entry_for(spec), self.algorithmic_latency_ms)
            model = load_model(path, device=self._device)
            self._enhancers[name] = Enhancer(model, device=self._device, capacity=self._capacity,
                                             num_threads=self._threads)
            if getattr(self, "_metrics", None) is not None:
                self._metrics.add_model(name)
            logger.info("enhancer model %s loaded from %s", name, path)
        return name

    @property
    def loaded_models(self) -> list[str]:
        return sorted(self._enhancers)

    def switch(self, handle: StreamHandle, model: str) -> None:
        """Move a stream to another loaded model, live: the new model starts from a fresh state,
        runs :data:`SWITCH_WARM_FRAMES` frames beside the old one on the same input, then its
        output is cross-faded in over one 20 ms frame. No frame is dropped or delayed."""
        if model not in self._enhancers:
            raise KeyError(f"model {model!r} is not loaded (loaded: {', '.join(self.loaded_models)})")
        if handle.model != model and self._metrics is not None:
            self._metrics.stream_moved(handle.model, model)
        handle.model = model

    def handles(self, model: Optional[str] = None) -> list[StreamHandle]:
        """Open streams (of one requested model when given); event loop thread."""
        return [h for h in self._open if model is None or h.model == model]

    # ---- stream lifecycle (event loop thread) ----------------------------------------------
    def open(self, *, enabled: bool = True, atten_lim_db: float = 100.0,
             model: Optional[str] = None) -> StreamHandle:
        model = model or self.model_version
        if model not in self._enhancers:
            raise KeyError(f"model {model!r} is not loaded")
        handle = StreamHandle(enabled=enabled, atten_lim_db=atten_lim_db, gate=self.gate_config, model=model)
        self._open.add(handle)
        self.streams += 1
        if self._metrics is not None:
            self._metrics.streams.labels(model, self._metrics.worker).inc()
        return handle

    def close(self, handle: StreamHandle) -> None:
        """Release the stream. Only the worker touches slots, so the slot is freed there, before
        the next frame; a closed handle still in a batch already built gets silence, no error."""
        if handle.closed:
            return
        handle.closed = True
        self._open.discard(handle)
        self._closing.append(handle)  # deque.append is atomic: no lock needed
        self.streams -= 1
        if self._metrics is not None:  # at once: no tick may come after the last stream left
            self._metrics.streams.labels(handle.model, self._metrics.worker).dec()

    async def process(self, items: Sequence[Item], *, overloaded: bool = False) -> list[StageOutput]:
        """Enhance one frame per stream. Items are ``(handle, pcm)`` or ``(handle, pcm, kind)``.

        ``kind`` is the inbound frame kind ("normal", "fec", "plc", "cng", "dtx", "silence") or
        a bool ``concealed``; anything but "normal"/False cannot open a closed gate.
        ``overloaded``: the caller is behind real time; this frame skips the network for every
        stream (streams in speech pass the delayed input, the others get their noise filter),
        keeping the delay and cross-fading like any other switch (no click).
        """
        if not items:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: self.process_sync(list(items), overloaded=overloaded))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        if self.mos is not None:
            self.mos.stop()

    def stats(self) -> dict[str, float]:
        total = self.frames_net + self.frames_bypass
        return {
            "ticks": self.ticks,
            "streams": sum(e.active for e in self._enhancers.values()),
            "net_fraction": self.frames_net / total if total else 0.0,
            "last_step_ms": 1000.0 * self.last_step_s,
        }

    # ---- worker thread ----------------------------------------------------------------------
    def process_sync(self, items: Sequence[Item], *, overloaded: bool = False) -> list[StageOutput]:
        """The worker-thread body of :meth:`process` (also usable directly, e.g. offline)."""
        start = time.perf_counter()
        cpu0 = time.thread_time()
        self._release_slots()
        n = len(items)
        if n == 0:
            return []
        handles: list[StreamHandle] = []
        x = np.zeros((n, FRAME), dtype=np.float32)
        for i, item in enumerate(items):
            h = item[0]
            handles.append(h)
            x[i] = self._sanitize(h, item[1])
        if len({id(h) for h in handles}) != n:
            raise ValueError("a stream handle appears twice in one batch")
        live = [i for i, h in enumerate(handles) if not h.closed]
        if len(live) < n:  # closed while this batch was being built: silence for it
            outputs = [StageOutput(np.zeros(FRAME, np.float32), np.zeros(FRAME, np.float32), False)] * n
            for j, out in zip(live, self.process_sync([items[i] for i in live], overloaded=overloaded)):
                outputs[j] = out
            return outputs

        x16, hist = decimate_batch(x, np.stack([h._vad_hist for h in handles]))
        levels = band_levels(x)  # [n, bands] dBFS
        paths: list[str] = []
        kinds: list[Optional[str]] = []
        speech = np.zeros(n, dtype=bool)
        measure: list[int] = []  # network frames that are noise-only: learn the noise gain
        for i, (h, item) in enumerate(zip(handles, items)):
            h._vad_hist = hist[i]
            kind = item[2] if len(item) > 2 else None
            kinds.append(kind if isinstance(kind, str) else ("plc" if kind else None))
            concealed = _is_concealed(kind) if kind is not None else False
            if h._slot is None:
                h._slot = self._enhancers[h._model].allocate()
            if h._switch is None and h.model != h._model and h.model in self._enhancers:
                h._switch = _Switch(h.model, self._enhancers[h.model].allocate())
            rise, quiet = h._onset.update(levels[i], FRAME_MS, hold=h._gate.last_vad)
            is_open = h._gate.update16(x16[i], FRAME_MS, concealed=concealed, onset=rise)
            speech[i] = h._gate.speech
            noise_only = quiet and not h._gate.last_vad
            path = self._path(h, is_open, overloaded, silent=_frame_dbfs(levels[i]) < SILENT_DBFS)
            # the output frame spans the end of the last input frame and the start of this one
            if path == NET and h._path == NET and noise_only and h._was_noise:
                measure.append(i)
            h._was_noise = noise_only
            h._path = path
            paths.append(path)

        tails = np.stack([h._tail for h in handles])
        delayed = np.concatenate([tails, x[:, : FRAME - Enhancer.latency]], axis=1)
        for i, h in enumerate(handles):
            h._tail = x[i, FRAME - Enhancer.latency :].copy()
        enhanced = np.empty_like(x)
        path_of = np.array(paths)
        model_of = [h._model for h in handles]
        n_net_by_model: dict[str, int] = {}
        for model in set(model_of):
            enh = self._enhancers[model]
            mine = np.array([m == model for m in model_of])
            idx = np.flatnonzero(mine & (path_of == NET))
            n_net_by_model[model] = int(idx.size)
            if idx.size:
                lims = np.array([handles[i].atten_lim_db for i in idx], dtype=np.float32)
                enhanced[idx] = enh.process([handles[i]._slot for i in idx], x[idx], lims)
            idx = np.flatnonzero(mine & (path_of == FILTER))
            if idx.size:
                gains = np.stack([self._noise_gain(handles[i]) for i in idx])
                enhanced[idx] = enh.skip([handles[i]._slot for i in idx], x[idx], gains)
            idx = np.flatnonzero(mine & (path_of == PASS))
            if idx.size:
                enhanced[idx] = enh.skip([handles[i]._slot for i in idx], x[idx])
        if measure:
            px, py = power_spectra(delayed[measure]), power_spectra(enhanced[measure])
            for j, i in enumerate(measure):
                handles[i]._noise.update(px[j], py[j], handles[i].atten_lim_db)
        switching = [i for i, h in enumerate(handles) if h._switch is not None]
        if switching:
            self._advance_switches(handles, switching, x, enhanced, path_of)

        n_net = sum(n_net_by_model.values())
        self.ticks += 1
        self.frames_net += n_net
        self.frames_bypass += n - n_net
        if self.telemetry is not None:
            self.telemetry.update([h.telemetry for h in handles], delayed, enhanced, speech, kinds, inputs=x,
                                  modelled=path_of != PASS)
            self._count_sli(model_of)
        for sink in self.frame_sinks:
            try:
                sink.on_batch(handles, delayed, enhanced, speech)
            except Exception:
                logger.exception("stage frame sink %r failed", sink)
        self.last_step_s = time.perf_counter() - start
        if self._metrics is not None:
            self._metrics.observe(self.model_version, self.last_step_s, n_net_by_model, model_of,
                                  handles, self.telemetry)
            self._metrics.cpu.labels(self.model_version, self._metrics.worker).inc(time.thread_time() - cpu0)
        return [StageOutput(raw=delayed[i], enhanced=enhanced[i], speech=bool(speech[i])) for i in range(n)]

    def _count_sli(self, model_of: list[str]) -> None:
        """Add this tick's telemetry flags to the per-model SLI counters (see :meth:`sli`)."""
        last = self.telemetry.last  # type: ignore[union-attr]
        models = np.array(model_of)
        for model in set(model_of):
            mine = models == model
            row = self._sli.get(model)
            if row is None:
                row = self._sli[model] = np.zeros(7)
            row += (np.count_nonzero(mine), np.count_nonzero(mine & last.speech),
                    np.count_nonzero(mine & last.checked), np.count_nonzero(mine & last.distorted),
                    np.count_nonzero(mine & last.events), np.count_nonzero(mine & last.clipped),
                    float(np.sum(np.where(mine & last.speech & last.audible, last.suppression_db, 0.0))))

    def sli(self) -> dict[str, Counts]:
        """Cumulative telemetry counters per model version since start (any thread; the canary's input)."""
        return {m: Counts(*(int(v) for v in row[:6]), float(row[6])) for m, row in list(self._sli.items())}

    def _advance_switches(self, handles: list[StreamHandle], switching: list[int], x: np.ndarray,
                          enhanced: np.ndarray, path_of: np.ndarray) -> None:
        """Run the incoming model of each switching stream on the same input (fresh state);
        after :data:`SWITCH_WARM_FRAMES` frames fade its output in over this frame and retire
        the old slot. The stream's noise gain is re-measured for the new model."""
        for model in {handles[i]._switch.model for i in switching}:  # type: ignore[union-attr]
            enh = self._enhancers[model]
            idx = [i for i in switching if handles[i]._switch.model == model]  # type: ignore[union-attr]
            slots = [handles[i]._switch.slot for i in idx]  # type: ignore[union-attr]
            net = [j for j, i in enumerate(idx) if path_of[i] != PASS]
            new_out = np.empty((len(idx), FRAME), dtype=np.float32)
            if net:
                lims = np.array([handles[idx[j]].atten_lim_db for j in net], dtype=np.float32)
                new_out[net] = enh.process([slots[j] for j in net], x[[idx[j] for j in net]], lims)
            rest = [j for j in range(len(idx)) if j not in net]
            if rest:
                new_out[rest] = enh.skip([slots[j] for j in rest], x[[idx[j] for j in rest]])
            for j, i in enumerate(idx):
                h = handles[i]
                sw = h._switch
                assert sw is not None
                sw.frames += 1
                if sw.frames < SWITCH_WARM_FRAMES:
                    continue
                enhanced[i] = enhanced[i] * (1.0 - _FADE_IN) + new_out[j] * _FADE_IN
                self._enhancers[h._model].free(h._slot)  # type: ignore[arg-type]
                old = h._model
                h._slot, h._model, h._switch = sw.slot, sw.model, None
                h._noise = NoiseGain(Enhancer.window // 2 + 1)
                h._path = None
                h._settle_ms = 0.0
                h.telemetry.reset_model_view()
                self.switches += 1
                logger.info("stream %d switched from model %s to %s", h.id, old, sw.model)

    def _path(self, h: StreamHandle, is_open: bool, overloaded: bool, *, silent: bool) -> str:
        """Which path this stream's frame takes (see the module docstring)."""
        if not h.enabled:
            return PASS
        if overloaded:
            return PASS if is_open else FILTER
        if is_open or not self.gate:
            h._settle_ms = 0.0
            return NET
        measured = h._noise.atten_lim_db == h.atten_lim_db and (
            h._noise.settled or (h._noise.ready and h._settle_ms >= MAX_SETTLE_MS))
        if measured or silent:
            return FILTER
        h._settle_ms += FRAME_MS
        return NET

    def _release_slots(self) -> None:
        while self._closing:
            h = self._closing.popleft()
            if h._slot is not None:
                self._enhancers[h._model].free(h._slot)
                h._slot = None
            if h._switch is not None:
                self._enhancers[h._switch.model].free(h._switch.slot)
                h._switch = None

    def _noise_gain(self, h: StreamHandle) -> np.ndarray:
        """Per-bin gain of the filter path: the network's measured gain on this stream's noise,
        never below the stream's attenuation limit; a broadband cut of ``atten_db`` (at most
        the limit) until something is measured."""
        lim = 10.0 ** (-h.atten_lim_db / 20.0)
        if h._noise.frames == 0:
            return h._noise.gain(10.0 ** (-min(self.gate_config.atten_db, h.atten_lim_db) / 20.0))
        return h._noise.gain(lim)

    @staticmethod
    def _sanitize(h: StreamHandle, pcm: np.ndarray) -> np.ndarray:
        pcm = np.asarray(pcm)
        if pcm.shape != (FRAME,):
            _log_bad(h, "frame of shape %s, expected (%d,); using silence", pcm.shape, FRAME)
            return np.zeros(FRAME, dtype=np.float32)
        pcm = pcm.astype(np.float32, copy=False)
        if not np.isfinite(pcm).all():
            _log_bad(h, "non-finite samples zeroed")
            pcm = np.nan_to_num(pcm, nan=0.0, posinf=0.0, neginf=0.0)
        return pcm


class LatencyMismatch(WeightsError):
    """A model whose model.json declares another algorithmic latency than the stage runs."""


def check_latency(name: str, entry: Optional[ModelEntry], stage_ms: float) -> None:
    """Refuse a model whose declared ``algorithmic_latency_ms`` is not ``stage_ms``.

    Every stream's outputs lag their input by :attr:`EnhancerStage.latency`, whatever its
    model, and the media clock compensates that one delay (``enhance_latency``, a live switch
    between models shifts nothing): a model framed for another delay would play out of step.
    Weights without a manifest (or a manifest without the field) run with this code's
    framing, the only one :class:`Enhancer` has."""
    declared = entry.latency_ms if entry is not None else None
    if declared is not None and abs(declared - stage_ms) > 1e-6:
        raise LatencyMismatch(
            f"model {name}: {entry.folder / MANIFEST} declares algorithmic_latency_ms {declared:g}, but the "  # type: ignore[union-attr]
            f"enhancer stage runs {stage_ms:g} ms ({Enhancer.window}-sample window, outputs "
            f"{Enhancer.latency} samples behind their input) and the media clock compensates that one "
            f"delay for every model: it cannot be loaded")


def _log_bad(h: StreamHandle, msg: str, *args: object) -> None:
    """Log the first bad frame of a stream and then every 500th (10 s), not 50 lines a second."""
    if h._bad_frames % 500 == 0:
        logger.error("stream %d: " + msg + " (bad frames so far: %d)", h.id, *args, h._bad_frames + 1)
    h._bad_frames += 1


class _StageMetrics:
    """``mediaserver_enhancer_*`` series, registered in the server's registry when given.

    Every series carries ``model_version`` and ``worker`` (room-independent; never a
    participant or room label). Counters are summed per model once per tick; the per-stream
    histograms get one sample per stream per second (:data:`OBSERVE_EVERY` frames).
    """

    OBSERVE_EVERY = 50

    def __init__(self, registry: "CollectorRegistry", worker: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.worker = worker
        labels = ["model_version", "worker"]
        db_buckets = (-10, -5, 0, 5, 10, 15, 20, 25, 30, 40, 60)
        self.tick = Histogram("mediaserver_enhancer_tick_seconds",
                              "worker time per 20 ms batch (VAD + network + telemetry); model_version: the default model",
                              labels, registry=registry,
                              buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.04, 0.08))
        self.cpu = Counter("mediaserver_enhancer_cpu_seconds_total",
                           "CPU time of the enhancer worker thread (VAD, network, telemetry, metrics)",
                           labels, registry=registry)
        self.batch = Histogram("mediaserver_enhancer_batch_streams", "streams per 20 ms batch",
                               labels, registry=registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.frames = Counter("mediaserver_enhancer_frames_total",
                              "frames per path: network or gate/disabled bypass", ["path", *labels],
                              registry=registry)
        # moved by EnhancerStage.open/close/switch, not per tick: no tick runs once the last stream left
        self.streams = Gauge("mediaserver_enhancer_streams", "open enhancer streams (opened, not yet closed)",
                             labels, registry=registry)
        self.switches = Counter("mediaserver_enhancer_model_switches_total",
                                "streams moved live onto this model", labels, registry=registry)
        self.speech = Counter("mediaserver_enhancer_speech_frames_total", "frames the VAD called speech",
                              labels, registry=registry)
        self.checked = Counter("mediaserver_enhancer_checked_frames_total",
                               "speech frames checked for over-suppression (speech band over its noise)",
                               labels, registry=registry)
        self.distorted = Counter("mediaserver_enhancer_distorted_frames_total",
                                 "checked frames whose speech band the enhancer cut beyond the noise",
                                 labels, registry=registry)
        self.events = Counter("mediaserver_enhancer_distortion_events_total",
                              "over-suppression events (3 distorted frames in a row)", labels, registry=registry)
        self.clipped = Counter("mediaserver_enhancer_clipped_frames_total", "input frames with clipped samples",
                               labels, registry=registry)
        self.suppression_speech = Counter("mediaserver_enhancer_speech_suppression_db_total",
                                          "sum over speech frames of the suppression applied (dB); "
                                          "divide by speech frames for the mean depth", labels, registry=registry)
        hist = lambda name, doc, buckets: Histogram(name, doc, labels, registry=registry, buckets=buckets)  # noqa: E731
        self.snr_in = hist("mediaserver_enhancer_stream_snr_in_db", "per-stream SNR estimate before enhancement, "
                           "one sample per stream per second", db_buckets)
        self.snr_out = hist("mediaserver_enhancer_stream_snr_out_db", "per-stream SNR estimate after enhancement",
                            db_buckets)
        self.suppression = hist("mediaserver_enhancer_stream_suppression_db",
                                "per-stream suppression applied (input over output power, 1 s average)", db_buckets)
        self.level = hist("mediaserver_enhancer_stream_input_level_dbfs", "per-stream input level",
                          (-90, -70, -60, -50, -40, -30, -20, -10, -3, 0))
        self.noise_in = hist("mediaserver_enhancer_stream_noise_floor_dbfs",
                             "per-stream noise floor before enhancement", (-90, -80, -70, -60, -50, -40, -30, -20, 0))

    def add_model(self, model: str) -> None:
        """Create the model's series at 0 so dashboards and alerts see them before traffic."""
        w = self.worker
        self.streams.labels(model, w)
        self.switches.labels(model, w)
        self.cpu.labels(model, w)
        for path in ("network", "bypass"):
            self.frames.labels(path, model, w)
        for c in (self.speech, self.checked, self.distorted, self.events, self.clipped, self.suppression_speech):
            c.labels(model, w)

    def stream_moved(self, old: str, new: str) -> None:
        self.streams.labels(old, self.worker).dec()
        self.streams.labels(new, self.worker).inc()
        self.switches.labels(new, self.worker).inc()

    def observe(self, default_model: str, seconds: float, net_by_model: dict[str, int], model_of: list[str],
                handles: Sequence[StreamHandle], telemetry: Optional[Telemetry]) -> None:
        w = self.worker
        self.tick.labels(default_model, w).observe(seconds)
        self.batch.labels(default_model, w).observe(len(handles))
        counts: dict[str, int] = {}
        for m in model_of:
            counts[m] = counts.get(m, 0) + 1
        for model, total in counts.items():
            net = net_by_model.get(model, 0)
            self.frames.labels("network", model, w).inc(net)
            self.frames.labels("bypass", model, w).inc(total - net)
        if telemetry is None:
            return
        last = telemetry.last
        models = np.array(model_of)
        for model in counts:
            mine = models == model
            for counter, flags in ((self.speech, last.speech), (self.checked, last.checked),
                                   (self.distorted, last.distorted), (self.events, last.events),
                                   (self.clipped, last.clipped)):
                k = int(np.count_nonzero(flags & mine))
                if k:
                    counter.labels(model, w).inc(k)
            supp = float(np.sum(np.where(mine & last.speech & last.audible, last.suppression_db, 0.0)))
            if supp > 0:  # (a counter only grows: frames the enhancer made louder count as 0)
                self.suppression_speech.labels(model, w).inc(supp)
        for h, model in zip(handles, model_of):
            frames = int(h.telemetry.state[FRAMES_ROW])
            if frames % self.OBSERVE_EVERY != h.id % self.OBSERVE_EVERY:
                continue
            snap = h.telemetry.snapshot()
            if not snap:
                continue
            self.level.labels(model, w).observe(snap["level_dbfs"])
            self.noise_in.labels(model, w).observe(snap["noise_in_dbfs"])
            self.suppression.labels(model, w).observe(snap["suppression_db"])
            if "snr_in_db" in snap:
                self.snr_in.labels(model, w).observe(snap["snr_in_db"])
                self.snr_out.labels(model, w).observe(snap["snr_out_db"])


def _frame_dbfs(levels: np.ndarray) -> float:
    """Frame level (dBFS) from its band levels (see :func:`vad.band_levels`)."""
    return float(10.0 * np.log10(np.sum(10.0 ** (levels / 10.0)) + 1e-12))


def _is_concealed(kind: Union[str, bool]) -> bool:
    if isinstance(kind, str):
        return kind != "normal"
    return bool(kind)


# ---- server wiring ------------------------------------------------------------------------
def stage_from_args(args: argparse.Namespace, registry: Optional["CollectorRegistry"] = None) -> EnhancerStage:
    stage = _stage_from_args(args, registry)
    if getattr(args, "dnsmos_sample_s", 0) > 0:
        from .mos import MosSampler

        stage.mos = MosSampler(args.dnsmos_sample_s, registry=registry, worker=stage.worker)
        stage.frame_sinks.append(stage.mos)
    return stage


def _stage_from_args(args: argparse.Namespace, registry: Optional["CollectorRegistry"]) -> EnhancerStage:
    return EnhancerStage(
        args.model,
        device=args.enhancer_device,
        threads=args.enhancer_threads,
        gate=bool(args.vad_gate),
        gate_config=GateConfig(mode=args.vad_mode, hangover_ms=args.vad_hangover_ms, atten_db=args.vad_atten_db),
        registry=registry,
        models=ModelRegistry(roots_from_args(args)),
        worker=args.worker_id or socket.gethostname(),
    )
