"""What running side by side costs on this machine: CPU per unit of media work, alone vs at once.

``python benchmarks/concurrency.py [--processes N] [--frames F] [--reps R] [--out PATH]``

``serve --workers N`` runs N media worker processes at once where ``--workers 1`` runs one, so
its server CPU per publisher also holds whatever the machine charges for two busy processes
at the same time (shared caches and memory bandwidth; on a virtual machine, host threads
that may be SMT siblings and other guests). This benchmark measures that charge alone, with
none of the server's code paths between processes: one unit of work is what a media worker
does per stream and tick without the network — encode a 20 ms frame with libopus
(``media/opus.OpusEncoder``, 48 kHz, 32 kb/s), a crossfade and an RMS in numpy, and some dict
bookkeeping — repeated ``--frames`` times. Each rep runs it in one process alone, then in
``--processes`` processes started together, and compares CPU seconds (``time.process_time``)
per process. A ratio of 1.0 means side by side is free; 1.2 means each process spends 20 %
more CPU for the same work when the other runs too.

Run it on a quiet machine: another job's load lands on the side-by-side runs and the ratio
then measures that job. The ``load`` column is the 1-minute load average at the end of each
rep, this benchmark's own processes included (about 1 alone, ``--processes`` side by side);
with a small ``--frames`` (under about 2 s of CPU per run) a rep's ratio is noise.
``--processes`` defaults to ``os.cpu_count()``, not ``serve --workers auto``'s usable cores
(affinity and cgroup quota): pass that number on a container or a pinned service.

Prints a table; writes benchmarks/results/concurrency.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediaserver.media.opus import OpusEncoder  # noqa: E402

FRAME = 960   # 20 ms at 48 kHz


def media_work(frames: int, seed: int = 0) -> float:
    """CPU seconds this process spends on ``frames`` units of a worker's per-stream tick."""
    rng = np.random.default_rng(seed)
    speech = (0.1 * rng.standard_normal(FRAME * 50)).astype(np.float32)   # 1 s, looped
    ramp = np.linspace(0.0, 1.0, FRAME, dtype=np.float32)
    encoder = OpusEncoder(bitrate=32000)
    stats: dict[int, float] = {}
    start = time.process_time()
    for i in range(frames):
        at = (i % 50) * FRAME
        frame = speech[at:at + FRAME]
        mixed = frame * ramp + frame[::-1] * (1.0 - ramp)        # a crossfade's arithmetic
        rms = float(np.sqrt(np.mean(mixed * mixed)))
        encoder.encode(mixed)
        stats[i % 64] = stats.get(i % 64, 0.0) * 0.9 + rms       # per-stream bookkeeping
    encoder.close()
    return time.process_time() - start


def _child(frames: int, seed: int, go: "mp.synchronize.Event", out: "mp.Queue[float]") -> None:
    go.wait()
    out.put(media_work(frames, seed))


def side_by_side(n: int, frames: int) -> list[float]:
    """CPU seconds of each of ``n`` processes doing ``media_work(frames)`` at the same time."""
    go, out = mp.Event(), mp.Queue()
    procs = [mp.Process(target=_child, args=(frames, k, go, out)) for k in range(n)]
    for p in procs:
        p.start()
    time.sleep(0.5)   # all started (imports done) before any begins
    go.set()
    cpu = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2,
                    help="processes side by side (default: os.cpu_count(), %(default)s here)")
    ap.add_argument("--frames", type=int, default=20000,
                    help="units of work per process (default %(default)s: about 3 s of CPU here)")
    ap.add_argument("--reps", type=int, default=4,
                    help="alone/side-by-side pairs, interleaved (default %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "concurrency.json"),
                    help="the JSON written (default: this checkout's benchmarks/results/concurrency.json)")
    args = ap.parse_args()

    media_work(200)   # warm: libopus loaded, numpy paths compiled
    reps = []
    print(f"| rep | alone, CPU s | side by side ({args.processes}), CPU s each | ratio | load |")
    print("|---|---|---|---|---|")
    for rep in range(args.reps):
        alone = side_by_side(1, args.frames)[0]
        together = side_by_side(args.processes, args.frames)
        ratio = statistics.mean(together) / alone
        load = os.getloadavg()[0]
        reps.append({"alone_cpu_s": round(alone, 3), "side_by_side_cpu_s": [round(c, 3) for c in together],
                     "ratio": round(ratio, 3), "loadavg_1m": round(load, 2)})
        print(f"| {rep + 1} | {alone:.2f} | {' / '.join(f'{c:.2f}' for c in together)} | "
              f"x{ratio:.2f} | {load:.2f} |")
    median = statistics.median(r["ratio"] for r in reps)
    print(f"median ratio: x{median:.2f} CPU per unit of work side by side vs alone")
    result = {"what": "CPU per unit of media work (libopus encode + numpy + dict, per 20 ms frame), "
                      "one process alone vs --processes at once",
              "cpus": os.cpu_count(), "processes": args.processes, "frames": args.frames,
              "median_ratio": round(median, 3), "reps": reps}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
