"""The media clock's enhancement step: VAD gate + batched Enhancer, off the event loop.

Every 20 ms the media clock hands over one 960-sample frame per publishing stream. All of
them are processed together in ONE worker thread (``ThreadPoolExecutor(max_workers=1)``):
one VAD decision per stream, then one batched network call for the streams whose gate is
open, then a cheap bypass for the rest. torch releases the GIL inside its kernels, so the
event loop keeps running while the network computes.

Timing contract: both outputs, ``raw`` and ``enhanced``, are the input delayed by
:attr:`EnhancerStage.latency` = 480 samples (10 ms), whatever the stream's state: the
network path has that delay, and the bypass path (gate closed or enhancement disabled) is
delayed identically. So switching a stream between network, gate bypass and disabled never
shifts its timing; every switch is a raised-cosine cross-fade (20 ms out, 10 ms in), no click.
``raw`` and ``enhanced`` are sample-aligned, so a sink can mix them (dry/wet).

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
from .streaming import Enhancer
from .vad import GateConfig, VadGate, decimate_batch, vad_history
from .weights import load_model

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)

FRAME = 960  # 20 ms at 48 kHz, the media clock's frame
FRAME_MS = 20.0
_RAMP = (0.5 - 0.5 * np.cos(np.pi * (np.arange(FRAME) + 0.5) / FRAME)).astype(np.float32)
# Fade-in of the network path: done within the first 480 samples. An onset the VAD sees in
# this frame reaches the (480-sample delayed) output at sample >= 480, i.e. after the fade.
_RAMP_IN = np.ones(FRAME, dtype=np.float32)
_RAMP_IN[: FRAME // 2] = 0.5 - 0.5 * np.cos(np.pi * (np.arange(FRAME // 2) + 0.5) / (FRAME // 2))


@dataclass
class StageOutput:
    raw: np.ndarray  # (960,) float32, input delayed by `latency`
    enhanced: np.ndarray  # (960,) float32, aligned with raw
    speech: bool  # gate open (VAD decision with hangover)


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
        self._vad_hist = vad_history()  # decimation filter memory (48 kHz samples)
        self._slot: Optional[int] = None
        self._tail = np.zeros(Enhancer.latency, dtype=np.float32)  # bypass delay line
        self._w_net = 0.0  # weight of the network output at the end of the last frame
        self._g_bypass = 1.0  # bypass gain at the end of the last frame
        self._bad_frames = 0
        self._noise_gain: Optional[float] = None  # network's own noise gain, measured in hangover

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
        gate: skip the network while the VAD says no speech (saves compute); the VAD still
            runs for the ``speech`` flag when off.
        gate_config: VAD mode, hangover and bypass attenuation.
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
        self.ticks = 0
        self.frames_net = 0
        self.frames_bypass = 0
        self.last_step_s = 0.0
        self._metrics = _StageMetrics(registry) if registry is not None else None

    # ---- stream lifecycle (event loop thread) ----------------------------------------------
    def open(self, *, enabled: bool = True, atten_lim_db: float = 100.0) -> StreamHandle:
        return StreamHandle(enabled=enabled, atten_lim_db=atten_lim_db, gate=self.gate_config)

    def close(self, handle: StreamHandle) -> None:
        """Release the stream. Only the worker touches slots, so the slot is freed there, before
        the next frame; a closed handle still in a batch already built gets silence, no error."""
        if handle.closed:
            return
        handle.closed = True
        self._closing.append(handle)  # deque.append is atomic: no lock needed

    async def process(self, items: Sequence[Item], *, overloaded: bool = False) -> list[StageOutput]:
        """Enhance one frame per stream. Items are ``(handle, pcm)`` or ``(handle, pcm, kind)``.

        ``kind`` is the inbound frame kind ("normal", "fec", "plc", "cng", "silence") or a
        bool ``concealed``; anything but "normal"/False cannot open a closed gate.
        ``overloaded``: the caller is behind real time; this frame skips the network for every
        stream but keeps the delay and cross-fades like any other switch (no click).
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
        net_mask = np.zeros(n, dtype=bool)
        speech = np.zeros(n, dtype=bool)
        targets: list[float] = []  # network weight each stream fades to during this frame
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
        for i, (h, item) in enumerate(zip(handles, items)):
            h._vad_hist = hist[i]
            concealed = _is_concealed(item[2]) if len(item) > 2 else False
            if h._slot is None:
                h._slot = self.enhancer.allocate()
            is_open = h._gate.update16(x16[i], FRAME_MS, concealed=concealed)
            speech[i] = is_open
            want_net = h.enabled and (is_open or not self.gate) and not overloaded
            # keep the network running through the fade-out frame after it is switched off
            # (overloaded: no network at all; the fade-out then starts from the delayed input)
            net_mask[i] = (want_net or h._w_net > 0.0) and not overloaded
            targets.append(1.0 if want_net else 0.0)

        slots = [h._slot for h in handles]
        tails = np.stack([h._tail for h in handles]) if n else np.zeros((0, Enhancer.latency), np.float32)
        delayed = np.concatenate([tails, x[:, : FRAME - Enhancer.latency]], axis=1)
        enhanced = delayed.copy() if overloaded else np.zeros_like(x)
        net_idx = np.flatnonzero(net_mask)
        skip_idx = np.flatnonzero(~net_mask)
        if net_idx.size:
            lims = np.array([handles[i].atten_lim_db for i in net_idx], dtype=np.float32)
            enhanced[net_idx] = self.enhancer.process([slots[i] for i in net_idx], x[net_idx], lims)
        if skip_idx.size:
            self.enhancer.skip([slots[i] for i in skip_idx], x[skip_idx])

        # per-stream ramps, applied in one vectorised mix
        e_raw = np.einsum("ij,ij->i", delayed, delayed)
        e_enh = np.einsum("ij,ij->i", enhanced, enhanced)
        w0 = np.empty(n, np.float32)
        w1 = np.empty(n, np.float32)
        b0 = np.empty(n, np.float32)
        b1 = np.empty(n, np.float32)
        for i, h in enumerate(handles):
            w_new = targets[i]
            if net_mask[i] and w_new == 1.0 and h._w_net == 1.0 and not h._gate.last_vad:
                self._measure_noise_gain(h, float(e_enh[i]), float(e_raw[i]))
            g_new = self._bypass_gain(h)
            w0[i], w1[i] = h._w_net, w_new
            b0[i], b1[i] = (1.0 - h._w_net) * h._g_bypass, (1.0 - w_new) * g_new
            h._w_net, h._g_bypass = w_new, g_new
            h._tail = x[i, FRAME - Enhancer.latency :].copy()
        ramp = np.where((w1 > w0)[:, None], _RAMP_IN[None, :], _RAMP[None, :])
        w = w0[:, None] + (w1 - w0)[:, None] * ramp
        b = b0[:, None] + (b1 - b0)[:, None] * ramp
        out = enhanced * w + delayed * b

        self.ticks += 1
        self.frames_net += int(net_idx.size)
        self.frames_bypass += int(skip_idx.size)
        self.last_step_s = time.perf_counter() - start
        if self._metrics is not None:
            self._metrics.observe(self.last_step_s, int(net_idx.size), int(skip_idx.size), self.enhancer.active)
        return [StageOutput(raw=delayed[i], enhanced=out[i], speech=bool(speech[i])) for i in range(n)]

    def _release_slots(self) -> None:
        while self._closing:
            h = self._closing.popleft()
            if h._slot is not None:
                self.enhancer.free(h._slot)
                h._slot = None

    def _bypass_gain(self, h: StreamHandle) -> float:
        """Gain of the delayed raw signal while the network is not in the path."""
        if not h.enabled:
            return 1.0
        if not self.gate:
            return 1.0
        floor = 10.0 ** (-min(self.gate_config.atten_db, h.atten_lim_db) / 20.0)
        measured = floor if h._noise_gain is None else h._noise_gain
        return float(max(floor, min(1.0, measured)))

    @staticmethod
    def _measure_noise_gain(h: StreamHandle, e_enh: float, e_raw: float) -> None:
        """Track how much the network attenuates non-speech (hangover frames), so the bypass
        matches the background level the listener just heard: no noise pumping at the switch."""
        if e_raw < 1e-8:
            return
        gain = min(1.0, math.sqrt(e_enh / e_raw))
        h._noise_gain = gain if h._noise_gain is None else 0.7 * h._noise_gain + 0.3 * gain

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
        self.streams = Gauge("mediaserver_enhancer_streams", "streams holding an enhancer slot", registry=registry)

    def observe(self, seconds: float, net: int, bypass: int, streams: int) -> None:
        self.tick.observe(seconds)
        self.frames.labels("network").inc(net)
        self.frames.labels("bypass").inc(bypass)
        self.streams.set(streams)


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
    add_option(parser, "--vad-atten-db", type=float, default=20.0, help="most the bypass is attenuated while the gate is closed (dB)")


def stage_from_args(args: argparse.Namespace, registry: Optional["CollectorRegistry"] = None) -> EnhancerStage:
    return EnhancerStage(
        args.model,
        device=args.enhancer_device,
        threads=args.enhancer_threads,
        gate=bool(args.vad_gate),
        gate_config=GateConfig(mode=args.vad_mode, hangover_ms=args.vad_hangover_ms, atten_db=args.vad_atten_db),
        registry=registry,
    )
