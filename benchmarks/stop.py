"""How long an idle ``mediaserver serve`` takes to stop: SIGTERM to exit, and where the time goes.

No call: the stop has nothing to drain, so every second of it is overhead a deploy (rolling
restart, ``docker stop``) and a developer's Ctrl-C wait for. Two moments:

- ``idle``: SIGTERM 0.5 s after the server printed ``mediaserver listening:``; reported: signal to
  ``drained`` in the log, and ``drained`` to the process's exit (the *tail*: interpreter
  shutdown once ``serve`` returned);
- ``startup``: SIGTERM ``--startup-delays`` seconds after the process started (imports, flag
  checks, the model load); reported: signal to exit.

Each case runs ``--repeat`` times per ``--servers`` entry: ``no-enhance`` and ``enhance``
(torch loaded) by default; ``workers`` (``--workers 2``: a front, two media workers and the
shared inference process), ``workers-canary`` (the same with ``--canary-model``: a second
model loaded) and ``workers-redis`` (``--redis-url`` to a ``redis-server`` this script starts)
run the idle case only. ``--root`` runs another checkout's code (``git archive <commit> | tar
-x -C DIR``) for a before/after pair on the same machine and load.

    flock /tmp/bench.lock python benchmarks/stop.py --label after
    flock /tmp/bench.lock python benchmarks/stop.py --root /tmp/before --label before
    flock /tmp/bench.lock python benchmarks/stop.py --servers workers,workers-canary,workers-redis --label after

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
        if after_listening is not None and not armed and "mediaserver listening:" in line:
            armed.append(threading.Timer(after_listening, send))   # (a front's: once its workers listen)
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


def canary_root(folder: Path) -> Path:
    """A registry folder with one candidate model, ``bench-canary`` (msenh-v2's weights under
    another name: the stop only needs a second model loaded)."""
    import shutil

    sys.path.insert(0, str(ROOT))
    from mediaserver.enhance.registry import write_entry

    model = folder / "bench-canary"
    model.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "models/msenh-v2/enhancer.pt", model / "enhancer.pt")
    entry = write_entry(model, "bench-canary", card="MODEL_CARD.md")
    (model / "MODEL_CARD.md").write_text(f"# bench-canary\n\nmsenh-v2's weights.\nsha256 `{entry.sha256}`\n")
    return folder


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    """A throwaway ``redis-server`` on a free loopback port: (process, URL)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not listen")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT), help="checkout whose code runs (default: this one)")
    parser.add_argument("--label", default="this", help="name of this run's rows (before, after)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--startup-delays", default="0.5,1.0,1.5",
                        help="seconds after the process start for the startup case")
    parser.add_argument("--servers", default="no-enhance,enhance",
                        help="comma list of: no-enhance, enhance, workers, workers-canary, workers-redis")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/stop.json"))
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="stop-bench-"))
    redis: Optional[subprocess.Popen] = None
    servers: list[tuple[str, list[str]]] = []
    for name in args.servers.split(","):
        if name == "no-enhance":   # one process (the default is one media worker per core)
            servers.append((name, ["--no-enhance", "--workers", "1"]))
        elif name == "enhance":
            servers.append((name, ["--workers", "1"]))
        elif name == "workers":
            servers.append((name, ["--workers", "2"]))
        elif name == "workers-canary":
            servers.append((name, ["--workers", "2", "--model-root", str(canary_root(scratch / "models")),
                                   "--canary-model", "bench-canary"]))
        elif name == "workers-redis":
            if redis is None:
                redis, url = start_redis(scratch)
            servers.append((name, ["--workers", "2", "--redis-url", url, "--node-id", "bench"]))
        else:
            parser.error(f"--servers: unknown {name!r}")
    try:
        rows = run_cases(args, root, servers)
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()
    if args.json:
        path = Path(args.json)
        old = json.loads(path.read_text()) if path.is_file() else {"rows": []}
        done = {(r["label"], r["server"]) for r in rows}
        kept = [r for r in old.get("rows", []) if (r.get("label"), r.get("server")) not in done]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": kept + rows}, indent=1) + "\n")
    return 0


def run_cases(args: argparse.Namespace, root: Path, servers: list[tuple[str, list[str]]]) -> list[dict]:
    """Every case of every server, ``args.repeat`` times: the result rows (also printed)."""
    rows = []
    for name, extra in servers:
        cases = [("idle", {"after_listening": 0.5, "after_start": None})]
        if not name.startswith("workers"):
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
    return rows


if __name__ == "__main__":
    sys.exit(main())
