"""Batching across worker processes in the shared inference process, in one short run.

``python benchmarks/shared_enhancer.py [--workers 2] [--streams 4] [--seconds 10] [--window-ms 5 2]
[-- stage flags, e.g. --enhancer-device cuda]`` starts ``python -m mediaserver.enhance.shared``
and W worker processes, each a SharedStage with S streams of noisy voiced bursts, ticking every
20 ms on the same grid of ``time.monotonic`` (as media clocks started on a common grid would;
``--phase-ms`` shifts worker w by w times that, as unaligned clocks would be).
Per window it reports the inference call's batch size, step time and the time a batch waited
for the other workers (``wait_ms``), each worker's round trip and deadline misses, plus the
machine's load average. Writes benchmarks/results/shared_enhancer.json (``--out``).

CPU cost of crossing processes (issue 14's "per-publisher CPU with --workers 2 within 10 % of
--workers 1"): ``cpu_ms_per_tick`` is the CPU time (user + system, from /proc) that the inference
process and the workers spend per 20 ms tick, and the ``in_process`` row runs the same streams
through one :class:`~mediaserver.enhance.stage.EnhancerStage` in one process, paced the same way,
as ``serve --workers 1`` does (its executor thread included). CPU time, unlike wall time, is
little moved by the machine's other load; the ratio of the two is the cost of the process hop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediaserver.enhance.shared_client import SharedStage, SharedStageError  # noqa: E402
from mediaserver.enhance.shared_process import InferenceProcess  # noqa: E402

FRAME = 960
PERIOD_S = 0.020
WARM_UP_TICKS = 50   # the first second of every run is not measured


def noisy_bursts(seconds: float, seed: int) -> np.ndarray:
    """Voiced bursts (harmonics of 120-220 Hz, 300 ms on / 200 ms off) in white noise at ~10 dB."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 48000)
    t = np.arange(n) / 48000
    f0 = rng.uniform(120, 220)
    voice = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12)) * 0.1
    voice *= ((t % 0.5) < 0.3)
    return (voice + 0.03 * rng.standard_normal(n)).astype(np.float32)


class Pacer:
    """Ticks on the 20 ms grid of the loop clock (shifted by ``phase_s``), as media clocks do:
    ``async for k in pacer.ticks()``. Counts the ticks that started late and the process's CPU
    time from the end of the warm-up to the last tick."""

    def __init__(self, seconds: float, phase_s: float = 0.0) -> None:
        self.count = int(seconds / PERIOD_S)
        self.phase_s = phase_s
        self.late = 0
        self.cpu_s = 0.0

    async def ticks(self) -> AsyncIterator[int]:
        loop = asyncio.get_running_loop()
        next_t = math.ceil(loop.time() / PERIOD_S) * PERIOD_S + PERIOD_S + self.phase_s
        cpu0 = 0.0
        for k in range(self.count):
            if k == WARM_UP_TICKS:
                cpu0 = time.process_time()
            delay = next_t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.late += 1
            yield k
            next_t += PERIOD_S
        self.cpu_s = time.process_time() - cpu0

    @property
    def cpu_ms_per_tick(self) -> float:
        return round(1000.0 * self.cpu_s / (self.count - WARM_UP_TICKS), 3)


async def run_worker(path: str, streams: int, seconds: float, seed: int, phase_s: float) -> dict:
    stage = await SharedStage.connect(path, deadline_ms=40.0)
    handles = [stage.open() for _ in range(streams)]
    audio = [noisy_bursts(seconds + 1.0, seed * 100 + i) for i in range(streams)]
    pacer = Pacer(seconds, phase_s)
    rows = []
    async for k in pacer.ticks():
        items = [(h, a[k * FRAME : (k + 1) * FRAME], "normal") for h, a in zip(handles, audio)]
        try:
            await stage.process(items)
            s = stage.stats()
            rows.append([s["last_batch"], s["last_step_ms"], s["last_wait_ms"], s["last_roundtrip_ms"]])
        except SharedStageError:
            pass
    misses = stage.deadline_misses
    await stage.aclose()
    return {"rows": rows[WARM_UP_TICKS:], "misses": misses, "late_ticks": pacer.late, "ticks": pacer.count,
            "cpu_ms_per_tick": pacer.cpu_ms_per_tick}


async def run_in_process(streams: int, seconds: float, stage_args: list[str]) -> dict:
    """The baseline: ``streams`` streams through one in-process EnhancerStage, ticked as above."""
    from mediaserver.enhance.stage import add_stage_options, stage_from_args

    parser = argparse.ArgumentParser()
    add_stage_options(parser)
    stage = stage_from_args(parser.parse_args(stage_args))
    handles = [stage.open(enabled=True) for _ in range(streams)]
    audio = [noisy_bursts(seconds + 1.0, i) for i in range(streams)]
    pacer = Pacer(seconds)
    steps: list[float] = []
    async for k in pacer.ticks():
        start = time.perf_counter()
        await stage.process([(h, a[k * FRAME : (k + 1) * FRAME], "normal") for h, a in zip(handles, audio)])
        steps.append(1000.0 * (time.perf_counter() - start))
    stage.shutdown()
    measured = steps[WARM_UP_TICKS:]
    return {"streams": streams, "step_ms": {"p50": _pct(measured, 50), "p95": _pct(measured, 95)},
            "cpu_ms_per_tick": pacer.cpu_ms_per_tick}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def one_window(args: argparse.Namespace, window_ms: float, stage_args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "inference.sock")
        inference = InferenceProcess(sock, ["--enhancer-threads", str(args.threads), *stage_args],
                                     slots=max(64, args.workers * args.streams), window_ms=window_ms,
                                     stderr=subprocess.DEVNULL)
        inference.start()
        try:
            cpu0 = _cpu_s(inference.pid)
            procs = [subprocess.Popen([sys.executable, __file__, "--role", "worker", "--socket", sock,
                                       "--streams", str(args.streams), "--seconds", str(args.seconds),
                                       "--seed", str(w), "--phase-ms", str(w * args.phase_ms)], stdout=subprocess.PIPE) for w in range(args.workers)]
            results = [json.loads(p.communicate()[0]) for p in procs]
            # the inference process's CPU over the workers' whole run (their warm-up second too)
            inference_cpu_ms = 1000.0 * (_cpu_s(inference.pid) - cpu0) / max(r["ticks"] for r in results)
        finally:
            inference.stop()
    rows = [r for res in results for r in res["rows"]]
    batch, step, wait, rtt = (list(col) for col in zip(*rows)) if rows else ([], [], [], [])
    return {
        "window_ms": window_ms,
        "batch_streams": {"p50": _pct(batch, 50), "min": min(batch, default=0), "max": max(batch, default=0),
                          "full_batch_fraction": round(sum(b == args.workers * args.streams for b in batch) / max(1, len(batch)), 3)},
        "step_ms": {"p50": _pct(step, 50), "p95": _pct(step, 95)},
        "wait_ms": {"p50": _pct(wait, 50), "p95": _pct(wait, 95), "max": _pct(wait, 100)},
        "roundtrip_ms": {"p50": _pct(rtt, 50), "p95": _pct(rtt, 95), "max": _pct(rtt, 100)},
        "deadline_misses": sum(r["misses"] for r in results),
        "late_ticks": sum(r["late_ticks"] for r in results),
        "ticks": sum(r["ticks"] for r in results),
        "cpu_ms_per_tick": {"inference": round(inference_cpu_ms, 3),
                            "workers": round(sum(r["cpu_ms_per_tick"] for r in results), 3),
                            "total": round(inference_cpu_ms + sum(r["cpu_ms_per_tick"] for r in results), 3)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", default="parent", choices=["parent", "worker"])
    parser.add_argument("--socket", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--streams", type=int, default=4, help="streams per worker")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--phase-ms", type=float, default=0.0,
                        help="worker w ticks w * this late on the grid (0: clocks in phase)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the inference process")
    parser.add_argument("--window-ms", type=float, nargs="+", default=[5.0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/shared_enhancer.json"))
    args, stage_args = parser.parse_known_args()
    stage_args = [a for a in stage_args if a != "--"]
    if args.role == "worker":
        print(json.dumps(asyncio.run(run_worker(args.socket, args.streams, args.seconds, args.seed,
                                                    args.phase_ms / 1000.0))))
        return
    load_before = os.getloadavg()
    in_process = asyncio.run(run_in_process(args.workers * args.streams, args.seconds,
                                            ["--enhancer-threads", str(args.threads), *stage_args]))
    runs = [one_window(args, w, stage_args) for w in args.window_ms]
    result = {"workers": args.workers, "phase_ms": args.phase_ms, "streams_per_worker": args.streams, "seconds": args.seconds,
              "stage_args": stage_args, "threads": args.threads, "cpus": os.cpu_count(),
              "machine": platform.node(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "in_process": in_process, "runs": runs}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"\n| case | streams | CPU ms per 20 ms tick | vs in-process |\n|---|---|---|---|")
    base = in_process["cpu_ms_per_tick"]
    print(f"| one process (EnhancerStage) | {in_process['streams']} | {base:.2f} | 1.00 |")
    for run in runs:
        cpu = run["cpu_ms_per_tick"]
        print(f"| shared, window {run['window_ms']:g} ms: inference {cpu['inference']:.2f} + workers "
              f"{cpu['workers']:.2f} | {args.workers * args.streams} | {cpu['total']:.2f} | {cpu['total'] / base:.2f} |")


if __name__ == "__main__":
    main()
