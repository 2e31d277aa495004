"""Per-stream cost of the quality telemetry next to the enhancer's, in one run.

``python benchmarks/telemetry.py [--streams 1 8 32] [--seconds 6]`` runs the real stage
(msenh-v2, VAD gate on) over noisy speech for N streams, once with telemetry and once without,
plus the telemetry update alone on the same frames, and reports worker-thread CPU per stream
per 20 ms frame (µs). Writes benchmarks/results/telemetry.json. Also measures the sampled
DNSMOS cost per 9 s window (raw + enhanced) when speechmos is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediaserver.enhance.stage import FRAME, EnhancerStage  # noqa: E402
from mediaserver.enhance.telemetry import StreamTelemetry, Telemetry  # noqa: E402


def noisy_speech(seconds: float, seed: int) -> np.ndarray:
    """Voiced bursts (harmonics of 120-220 Hz, 300 ms on / 200 ms off) in white noise at ~10 dB."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 48000)) / 48000
    f0 = 120 + 100 * rng.random()
    voice = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 20)) * 0.05
    gate = (np.floor(t / 0.5) % 1 == 0) & ((t % 0.5) < 0.3)
    return (voice * gate + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def stage_cpu(n: int, seconds: float, telemetry: bool) -> float:
    stage = EnhancerStage(None, telemetry=telemetry)
    handles = [stage.open() for _ in range(n)]
    audio = [noisy_speech(seconds, i) for i in range(n)]
    frames = len(audio[0]) // FRAME
    cpu = 0.0
    for k in range(frames):
        items = [(h, a[k * FRAME:(k + 1) * FRAME], "normal") for h, a in zip(handles, audio)]
        t0 = time.thread_time()
        stage.process_sync(items)
        cpu += time.thread_time() - t0
    stage.shutdown()
    return 1e6 * cpu / (frames * n)


def telemetry_alone(n: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((n, FRAME)).astype(np.float32) * 0.1
    enh = raw * 0.5
    speech = rng.random(n) > 0.5
    streams = [StreamTelemetry() for _ in range(n)]
    tel = Telemetry()
    frames = int(seconds * 50)
    t0 = time.thread_time()
    for _ in range(frames):
        tel.update(streams, raw, enh, speech, ["normal"] * n)
    return 1e6 * (time.thread_time() - t0) / (frames * n)


def dnsmos_window_cpu() -> float | None:
    try:
        from mediaserver.enhance.metrics import Dnsmos
        from scipy.signal import resample_poly
    except ImportError:
        return None
    scorer = Dnsmos()
    x = noisy_speech(9.02, 0)
    scorer(resample_poly(x, 1, 3).astype(np.float32))  # warm-up
    t0 = time.thread_time()
    for _ in range(2):  # raw and enhanced
        scorer(resample_poly(x, 1, 3).astype(np.float32))
    return time.thread_time() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "telemetry.json"))
    args = parser.parse_args()
    load = os.getloadavg()
    rows = []
    print(f"{'streams':>7} {'stage+telemetry':>16} {'stage only':>11} {'telemetry (diff)':>17} {'telemetry alone':>16}  µs CPU per stream per 20 ms frame")
    for n in args.streams:
        on = stage_cpu(n, args.seconds, True)
        off = stage_cpu(n, args.seconds, False)
        alone = telemetry_alone(n, args.seconds)
        rows.append({"streams": n, "stage_with_telemetry_us": round(on, 1), "stage_without_telemetry_us": round(off, 1),
                     "telemetry_difference_us": round(on - off, 1), "telemetry_alone_us": round(alone, 1)})
        print(f"{n:>7} {on:>16.1f} {off:>11.1f} {on - off:>17.1f} {alone:>16.1f}")
    mos = dnsmos_window_cpu()
    if mos is not None:
        print(f"DNSMOS: {mos:.2f} s CPU per sampled window (raw + enhanced, 9.02 s each); "
              f"at --dnsmos-sample-s 60: {100 * mos / 60:.1f} % of a core per stream")
    result = {"what": "telemetry and DNSMOS CPU cost (worker-thread CPU time, thread_time)",
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "loadavg_at_start": [round(v, 2) for v in load], "loadavg_at_end": [round(v, 2) for v in os.getloadavg()],
              "seconds_per_run": args.seconds, "rows": rows, "dnsmos_cpu_s_per_window": mos,
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average {load[0]:.2f} -> {os.getloadavg()[0]:.2f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
