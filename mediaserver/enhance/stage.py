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
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from ..config import add_option
from .noisegain import NoiseGain, power_spectra
from .streaming import Enhancer
from .vad import GateConfig, OnsetDetector, VadGate, band_levels, decimate_batch, vad_history
from .weights import load_model

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)

FRAME = 960  # 20 ms at 48 kHz, the media clock's frame
FRAME_MS = 20.0
SILENT_DBFS = -80.0  # a frame quieter than this needs no network to measure its noise
MAX_SETTLE_MS = 600.0  # most the network runs past the hangover for its noise gain to settle
NET, FILTER, PASS = "network", "filter", "pass"


@dataclass
class StageOutput:
    raw: np.ndarray  # (960,) float32, input delayed by `latency`
    enhanced: np.ndarray  # (960,) float32, aligned with raw
    speech: bool  # webrtcvad speech with hangover (energy-only gate openings do not count)


class StreamHandle:
    """One publisher's stream in the stage; ``enabled`` and ``atten_lim_db`` change live."""

    _ids = itertools.count(1)

    def __init__(self, *, enabled: bool, atten_lim_db: float, gate: GateConfig) -> None:
        self.id = next(self._ids)
        self.enabled = bool(enabled)
        self._atten = 100.0
        self.atten_lim_db = atten_lim_db
        self.closed = False
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
        value = float(value)
        if not math.isfinite(value) or value < 0.0:
            raise ValueError(f"atten_lim_db must be a finite number >= 0, got {value}")
        self._atten = min(value, 100.0)

    def __repr__(self) -> str:
        return f"StreamHandle(id={self.id}, enabled={self.enabled}, atten_lim_db={self._atten})"


Item = Union[tuple["StreamHandle", np.ndarray], tuple["StreamHandle", np.ndarray, Union[str, bool]]]


class EnhancerStage:
    """VAD-gated, batched enhancement of every stream of this process.

    Args:
        weights: enhancer checkpoint (file or model folder); None = the shipped default model.
            Loaded and validated here, so a bad file fails at server start with WeightsError.
        device: torch device for the network.
        threads: torch intra-op threads (process-wide setting).
        gate: skip the network while the gate is closed (saves compute); the VAD still
            runs for the ``speech`` flag when off.
        gate_config: VAD mode, hangover, onset threshold, and the broadband cut used until a
            stream's noise gain is measured.
        capacity: initial enhancer slots (grows as needed).
    """

    latency = Enhancer.latency

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
    ) -> None:
        model = load_model(weights, device=device)
        self.enhancer = Enhancer(model, device=device, capacity=capacity, num_threads=threads)
        self.gate = gate
        self.gate_config = gate_config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enhancer")
        self._closing: deque[StreamHandle] = deque()  # appended on the loop, drained by the worker
        self.streams = 0  # open handles (event loop thread); the slot is taken on the first frame
        self.ticks = 0
        self.frames_net = 0
        self.frames_bypass = 0
        self.last_step_s = 0.0
        self._metrics = _StageMetrics(registry) if registry is not None else None

    # ---- stream lifecycle (event loop thread) ----------------------------------------------
    def open(self, *, enabled: bool = True, atten_lim_db: float = 100.0) -> StreamHandle:
        handle = StreamHandle(enabled=enabled, atten_lim_db=atten_lim_db, gate=self.gate_config)
        self.streams += 1
        if self._metrics is not None:
            self._metrics.streams.set(self.streams)
        return handle

    def close(self, handle: StreamHandle) -> None:
        """Release the stream. Only the worker touches slots, so the slot is freed there, before
        the next frame; a closed handle still in a batch already built gets silence, no error."""
        if handle.closed:
            return
        handle.closed = True
        self._closing.append(handle)  # deque.append is atomic: no lock needed
        self.streams -= 1
        if self._metrics is not None:  # at once: no tick may come after the last stream left
            self._metrics.streams.set(self.streams)

    async def process(self, items: Sequence[Item], *, overloaded: bool = False) -> list[StageOutput]:
        """Enhance one frame per stream. Items are ``(handle, pcm)`` or ``(handle, pcm, kind)``.

        ``kind`` is the inbound frame kind ("normal", "fec", "plc", "cng", "silence") or a
        bool ``concealed``; anything but "normal"/False cannot open a closed gate.
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

    def stats(self) -> dict[str, float]:
        total = self.frames_net + self.frames_bypass
        return {
            "ticks": self.ticks,
            "streams": self.enhancer.active,
            "net_fraction": self.frames_net / total if total else 0.0,
            "last_step_ms": 1000.0 * self.last_step_s,
        }

    # ---- worker thread ----------------------------------------------------------------------
    def process_sync(self, items: Sequence[Item], *, overloaded: bool = False) -> list[StageOutput]:
        """The worker-thread body of :meth:`process` (also usable directly, e.g. offline)."""
        start = time.perf_counter()
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
        speech = np.zeros(n, dtype=bool)
        measure: list[int] = []  # network frames that are noise-only: learn the noise gain
        for i, (h, item) in enumerate(zip(handles, items)):
            h._vad_hist = hist[i]
            concealed = _is_concealed(item[2]) if len(item) > 2 else False
            if h._slot is None:
                h._slot = self.enhancer.allocate()
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

        slots = [h._slot for h in handles]
        tails = np.stack([h._tail for h in handles])
        delayed = np.concatenate([tails, x[:, : FRAME - Enhancer.latency]], axis=1)
        for i, h in enumerate(handles):
            h._tail = x[i, FRAME - Enhancer.latency :].copy()
        enhanced = np.empty_like(x)
        by_path = {p: np.flatnonzero(np.array(paths) == p) for p in (NET, FILTER, PASS)}
        idx = by_path[NET]
        if idx.size:
            lims = np.array([handles[i].atten_lim_db for i in idx], dtype=np.float32)
            enhanced[idx] = self.enhancer.process([slots[i] for i in idx], x[idx], lims)
        idx = by_path[FILTER]
        if idx.size:
            gains = np.stack([self._noise_gain(handles[i]) for i in idx])
            enhanced[idx] = self.enhancer.skip([slots[i] for i in idx], x[idx], gains)
        idx = by_path[PASS]
        if idx.size:
            enhanced[idx] = self.enhancer.skip([slots[i] for i in idx], x[idx])
        if measure:
            px, py = power_spectra(delayed[measure]), power_spectra(enhanced[measure])
            for j, i in enumerate(measure):
                handles[i]._noise.update(px[j], py[j], handles[i].atten_lim_db)

        n_net = int(by_path[NET].size)
        self.ticks += 1
        self.frames_net += n_net
        self.frames_bypass += n - n_net
        self.last_step_s = time.perf_counter() - start
        if self._metrics is not None:
            self._metrics.observe(self.last_step_s, n_net, n - n_net)
        return [StageOutput(raw=delayed[i], enhanced=enhanced[i], speech=bool(speech[i])) for i in range(n)]

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
                self.enhancer.free(h._slot)
                h._slot = None

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


def _log_bad(h: StreamHandle, msg: str, *args: object) -> None:
    """Log the first bad frame of a stream and then every 500th (10 s), not 50 lines a second."""
    if h._bad_frames % 500 == 0:
        logger.error("stream %d: " + msg + " (bad frames so far: %d)", h.id, *args, h._bad_frames + 1)
    h._bad_frames += 1


class _StageMetrics:
    """``mediaserver_enhancer_*`` series, registered in the server's registry when given."""

    def __init__(self, registry: "CollectorRegistry") -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.tick = Histogram("mediaserver_enhancer_tick_seconds", "worker time per 20 ms batch (VAD + network)",
                              registry=registry, buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.04, 0.08))
        self.frames = Counter("mediaserver_enhancer_frames_total", "frames per path: network or gate/disabled bypass",
                              ["path"], registry=registry)
        # set by EnhancerStage.open/close, not per tick: no tick runs once the last stream left
        self.streams = Gauge("mediaserver_enhancer_streams", "open enhancer streams (opened, not yet closed)",
                             registry=registry)

    def observe(self, seconds: float, net: int, bypass: int) -> None:
        self.tick.observe(seconds)
        self.frames.labels("network").inc(net)
        self.frames.labels("bypass").inc(bypass)


def _frame_dbfs(levels: np.ndarray) -> float:
    """Frame level (dBFS) from its band levels (see :func:`vad.band_levels`)."""
    return float(10.0 * np.log10(np.sum(10.0 ** (levels / 10.0)) + 1e-12))


def _is_concealed(kind: Union[str, bool]) -> bool:
    if isinstance(kind, str):
        return kind != "normal"
    return bool(kind)


# ---- server wiring ------------------------------------------------------------------------
def add_stage_options(parser: argparse.ArgumentParser) -> None:
    """Flags for the server (``mediaserver serve``) that configure the stage."""
    add_option(parser, "--model", default=None, help="enhancer weights file or model folder (default: shipped model)")
    add_option(parser, "--enhancer-device", default="cpu", help="torch device for the enhancer (cpu, cuda)")
    add_option(parser, "--enhancer-threads", type=int, default=1, help="torch threads for the enhancer")
    add_option(parser, "--vad-gate", type=int, default=1, help="1: skip the network while no speech; 0: always run it")
    add_option(parser, "--vad-mode", type=int, default=2, help="webrtcvad aggressiveness 0..3")
    add_option(parser, "--vad-hangover-ms", type=int, default=300, help="keep enhancing this long after speech")
    add_option(parser, "--vad-atten-db", type=float, default=20.0, help="broadband cut (dB) of a closed gate until the network has measured the stream's noise")


def stage_from_args(args: argparse.Namespace, registry: Optional["CollectorRegistry"] = None) -> EnhancerStage:
    return EnhancerStage(
        args.model,
        device=args.enhancer_device,
        threads=args.enhancer_threads,
        gate=bool(args.vad_gate),
        gate_config=GateConfig(mode=args.vad_mode, hangover_ms=args.vad_hangover_ms, atten_db=args.vad_atten_db),
        registry=registry,
    )
