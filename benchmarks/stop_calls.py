"""What each client of ``serve --workers 2`` sees when the server stops during calls.

Two rooms on the two media workers, one ``mediaserver client --no-reconnect`` in each (a
tone as its microphone); ~4 s into the calls the front gets SIGTERM. Each client must be told
(``server-shutdown``) before its media closes: its connection is lost for
``server-shutdown``, not ``media-failed`` (it saw its peer connection close first). Options
that change the timing:

- ``--busy N``: N busy-loop processes run during the whole case (CPU starvation, as on a
  loaded host; the load average is recorded with each run);
- ``--sigstop``: worker 1 is SIGSTOPped at the signal and never resumed (the front kills it
  after its drain time: a worker that is stopped while the other tells its clients).

``--root`` runs another checkout's code (``git archive <commit> | tar -x -C DIR``), for a
before/after pair on the same machine and load:

    flock /tmp/bench.lock python benchmarks/stop_calls.py --runs 8 --busy 3 --label after
    flock /tmp/bench.lock python benchmarks/stop_calls.py --root /tmp/before --runs 8 --busy 3 --label before

Prints one line per run and a table (clients told / clients that lost the call for each
reason), and merges its rows into benchmarks/results/stop_calls.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000


def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _healthz(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
        return json.loads(resp.read())


def _wait(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {what}")


def one_stop(root: Path, work: Path, *, sigstop: bool, extra: list[str]) -> dict[str, Any]:
    """One case: start the front, two clients, SIGTERM; what each client reported."""
    import numpy as np

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_")}
    env["PYTHONPATH"] = str(root)
    env["PYTHONUNBUFFERED"] = "1"
    work.mkdir(parents=True, exist_ok=True)
    t = np.arange(RATE * 60) / RATE
    tone = (0.25 * np.sin(2 * np.pi * 330.0 * t)).astype(np.float32)
    sys.path.insert(0, str(root))
    from mediaserver.audio import write_audio   # (the checkout's own)

    wav = work / "tone.wav"
    write_audio(wav, tone, RATE)
    log = open(work / "front.log", "wb")
    front = subprocess.Popen([sys.executable, "-m", "mediaserver", "serve", "--host", "127.0.0.1",
                              "--port", "0", "--ice-host", "127.0.0.1", "--workers", "2", *extra],
                             cwd=root, env=env, stdout=subprocess.PIPE, stderr=log)
    assert front.stdout is not None
    port = 0
    while not port:
        line = front.stdout.readline()
        if not line:
            raise RuntimeError(f"server exited early: {(work / 'front.log').read_text()[-2000:]}")
        if b"mediaserver listening" in line:
            port = int(line.split(b"127.0.0.1:")[1].split(b"/")[0])
    clients: dict[str, subprocess.Popen] = {}
    try:
        for n, room in enumerate(("ra", "rb"), 1):
            clients[room] = subprocess.Popen(
                [sys.executable, "-m", "mediaserver", "client", "--url", f"http://127.0.0.1:{port}/",
                 "--room", room, "--identity", "x", "--ice-host", "127.0.0.1", "--send", str(wav),
                 "--duration", "60", "--no-reconnect"], cwd=root, env=env, stdout=subprocess.PIPE,
                stderr=open(work / f"client-{room}.log", "wb"))
            _wait(lambda n=n: _healthz(port)["participants"] == n, 120, f"{n} participants")
        h = _healthz(port)
        rooms = [w["room_names"] for w in h["workers"]]
        time.sleep(4.0)   # (a benchmark: the calls carry audio for a while before the stop)
        load = os.getloadavg()[0]
        if sigstop:
            os.kill(h["workers"][1]["pid"], signal.SIGSTOP)
        front.send_signal(signal.SIGTERM)
        rc = front.wait(60)
        seen = {}
        for room, client in clients.items():
            out = client.communicate(timeout=90)[0].decode()
            summary = json.loads(out[out.find("{"):])
            seen[room] = {"told": any(e["type"] == "server-shutdown" for e in summary["events"]),
                          "lost_for": [d["reason"] for d in summary.get("disconnects", [])]}
        return {"rc": rc, "load1": round(load, 2), "rooms": rooms, "clients": seen}
    finally:
        for client in clients.values():
            if client.poll() is None:
                client.kill()
        if front.poll() is None:
            front.kill()
            front.wait()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs")
    ap.add_argument("--label", default="after")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes during the runs")
    ap.add_argument("--sigstop", action="store_true", help="SIGSTOP worker 1 at the signal")
    ap.add_argument("--no-enhance", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("/tmp/stop_calls"))
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/stop_calls.json")
    args = ap.parse_args()
    extra = ["--no-enhance"] if args.no_enhance else []
    busy = _busy(args.busy)
    runs = []
    try:
        for i in range(args.runs):
            run = one_stop(args.root.resolve(), args.work / f"{args.label}-{i}",
                           sigstop=args.sigstop, extra=extra)
            print(json.dumps(run), flush=True)
            runs.append(run)
    finally:
        for p in busy:
            p.kill()
    clients = [c for r in runs for c in r["clients"].values()]
    row = {"label": args.label, "root": str(args.root), "busy": args.busy, "sigstop": args.sigstop,
           "enhance": not args.no_enhance, "runs": len(runs), "clients": len(clients),
           "told": sum(c["told"] for c in clients),
           "lost_for_server_shutdown": sum(c["lost_for"] == ["server-shutdown"] for c in clients),
           "lost_for_media_failed": sum("media-failed" in c["lost_for"] for c in clients),
           "load1": [r["load1"] for r in runs], "rc": [r["rc"] for r in runs]}
    print("| label | busy | sigstop | runs | clients | told | lost for server-shutdown | lost for media-failed | load1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {row['label']} | {row['busy']} | {row['sigstop']} | {row['runs']} | {row['clients']} | "
          f"{row['told']} | {row['lost_for_server_shutdown']} | {row['lost_for_media_failed']} | "
          f"{min(row['load1']):.1f}-{max(row['load1']):.1f} |")
    rows = json.loads(args.json.read_text()).get("rows", []) if args.json.is_file() else []
    key = (row["label"], row["busy"], row["sigstop"], row["enhance"])
    rows = [r for r in rows if (r["label"], r["busy"], r["sigstop"], r["enhance"]) != key] + [row]
    args.json.write_text(json.dumps({
        "what": "serve --workers 2, one --no-reconnect client in each of two rooms (one per worker), "
                "SIGTERM to the front ~4 s into the calls: clients told server-shutdown, and why "
                "each lost its connection (benchmarks/stop_calls.py)",
        "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
