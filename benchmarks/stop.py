"""How long an idle ``mediaserver serve`` takes to stop: SIGTERM to exit, and where the time goes.

No call: the stop has nothing to drain, so every second of it is overhead a deploy (rolling
restart, ``docker stop``) and a developer's Ctrl-C wait for. Two moments:

- ``idle``: SIGTERM 0.5 s after the server printed ``listening``; reported: signal to
  ``drained`` in the log, and ``drained`` to the process's exit (the *tail*: interpreter
  shutdown once ``serve`` returned);
- ``startup``: SIGTERM ``--startup-delays`` seconds after the process started (imports, flag
  checks, the model load); reported: signal to exit.

Each case runs ``--repeat`` times with ``--no-enhance`` and with the enhancer (torch loaded).
``--root`` runs another checkout's code (``git archive <commit> | tar -x -C DIR``) for a
before/after pair on the same machine and load.

    flock /tmp/bench.lock python benchmarks/stop.py --label after
    flock /tmp/bench.lock python benchmarks/stop.py --root /tmp/before --label before

Prints a table (median, max, seconds) and merges its rows into benchmarks/results/stop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent


def one_stop(root: Path, extra: list[str], *, after_listening: Optional[float],
             after_start: Optional[float], timeout_s: float = 120.0) -> dict:
    """Start ``serve``, send SIGTERM at the given moment, return the timings (seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_")}
    env["PYTHONPATH"] = str(root)
    env["PYTHONUNBUFFERED"] = "1"
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "mediaserver", "serve", "--host", "127.0.0.1",
                             "--port", "0", "--ice-host", "127.0.0.1", *extra], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[tuple[float, str]] = []
    sent: list[float] = []
    armed: list[threading.Timer] = []

    def send() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            sent.append(time.monotonic())

    if after_start is not None:
        threading.Timer(after_start, send).start()
    killer = threading.Timer(timeout_s, proc.kill)
    killer.start()
    for line in proc.stdout:
        lines.append((time.monotonic(), line.rstrip()))
        if after_listening is not None and not armed and "listening" in line:
            armed.append(threading.Timer(after_listening, send))   # once (two lines say it)
            armed[0].start()
    rc = proc.wait()
    ended = time.monotonic()
    killer.cancel()
    if not sent:
        raise RuntimeError(f"no signal was sent (exit {rc}): {lines[-5:]}")
    t = sent[0]
    drained = next((at for at, text in lines if at >= t and ("drained in" in text or "not starting" in text
                                                              or "during start-up" in text)), None)
    return {"rc": rc, "signal_to_exit_s": round(ended - t, 3),
            "signal_to_drained_s": None if drained is None else round(drained - t, 3),
            "tail_s": None if drained is None else round(ended - drained, 3),
            "listened": any("mediaserver listening:" in text for _, text in lines),
            "last_line": next((text for at, text in reversed(lines) if at >= t), "")[-120:],
            "process_s": round(ended - started, 3)}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT), help="checkout whose code runs (default: this one)")
    parser.add_argument("--label", default="this", help="name of this run's rows (before, after)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--startup-delays", default="0.5,1.0,1.5",
                        help="seconds after the process start for the startup case")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/stop.json"))
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    rows = []
    for name, extra in (("no-enhance", ["--no-enhance"]), ("enhance", [])):
        cases = [("idle", {"after_listening": 0.5, "after_start": None})]
        cases += [(f"startup@{d}s", {"after_listening": None, "after_start": float(d)})
                  for d in args.startup_delays.split(",")]
        for case, when in cases:
            runs = [one_stop(root, extra, **when) for _ in range(args.repeat)]
            total = [r["signal_to_exit_s"] for r in runs]
            tails = [r["tail_s"] for r in runs if r["tail_s"] is not None]
            row = {"label": args.label, "server": name, "case": case, "runs": runs,
                   "exit_codes": sorted({r["rc"] for r in runs}),
                   "signal_to_exit_median_s": round(statistics.median(total), 3),
                   "signal_to_exit_max_s": max(total),
                   "tail_median_s": round(statistics.median(tails), 3) if tails else None,
                   "load_1m": round(os.getloadavg()[0], 2)}
            rows.append(row)
            print(f"{args.label:8} {name:10} {case:13} signal->exit median {row['signal_to_exit_median_s']:.2f} s "
                  f"max {row['signal_to_exit_max_s']:.2f} s, tail after the last log line "
                  f"{row['tail_median_s']} s, exit {row['exit_codes']}, load {row['load_1m']}", flush=True)
    if args.json:
        path = Path(args.json)
        old = json.loads(path.read_text()) if path.is_file() else {"rows": []}
        kept = [r for r in old.get("rows", []) if r.get("label") != args.label]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": kept + rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
