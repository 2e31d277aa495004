"""What listeners cost the server: one talker and L listeners in one room, server CPU.

``python benchmarks/listeners.py [--listeners 0,6] [--seconds 15] [--enhance | --no-enhance]
[--out PATH]`` starts ``mediaserver serve --workers 1`` on 127.0.0.1 per case, joins one
talker (a pulsed tone, so the enhancer does not fade it) and L listeners (audio offered
``recvonly``, ``tests/rtc_peer.RtcPeer(listen_only=True)``: a dispatch console that only
monitors, a recorder), waits until the first and the last listener hear the talker, then reads
the server process's CPU time (user + system, /proc) over ``--seconds``. A listener has no
stream on the media clock and no slot at the others (sfu/room.py), so its cost is what its
own subscription costs: the talker's packets sent to it, no pull, enhancement or encode.
Prints a table; writes benchmarks/results/listeners.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from rtc_peer import RtcPeer, loopback_ice  # noqa: E402
from transport import Server  # noqa: E402  (serve --workers 1 on 127.0.0.1, a free port)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_case(ws_url: str, pid: int, listeners: int, seconds: float) -> dict:
    async with aiohttp.ClientSession() as session:
        talker = RtcPeer(ws_url, "ward", "talker", tone_hz=440.0, pulsed=True)
        quiet = [RtcPeer(ws_url, "ward", f"listener{i}", listen_only=True) for i in range(listeners)]
        peers = [talker, *quiet]
        try:
            for peer in peers:
                await peer.connect(session)
                await peer.join()
                await peer.publish()
            for peer in quiet[:1] + quiet[-1:]:
                await peer.hears("talker", timeout=60.0)
            cpu0, t0 = _cpu_s(pid), time.monotonic()
            await asyncio.sleep(seconds)
            cpu1, t1 = _cpu_s(pid), time.monotonic()
            heard = [peer.loud_frames("talker") for peer in quiet]
        finally:
            for peer in reversed(peers):
                await peer.close()
    return {"listeners": listeners, "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / (t1 - t0), 1),
            "loud_frames_heard_min": min(heard, default=0), "loadavg": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", default="0,6", help="comma list of listener counts")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per case")
    parser.add_argument("--no-enhance", action="store_true", help="serve --no-enhance")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/listeners.json"))
    args = parser.parse_args()
    counts = [int(x) for x in args.listeners.split(",")]
    rows = []
    with loopback_ice(), tempfile.TemporaryDirectory() as tmp:
        for listeners in counts:
            server = Server(ROOT, Path(tmp) / f"server{listeners}.log", *(["--no-enhance"] if args.no_enhance else []))
            try:
                ws_url = server.url.replace("http://", "ws://") + "ws"
                rows.append(asyncio.run(one_case(ws_url, server.proc.pid, listeners, args.seconds)))
            finally:
                server.stop()
    result = {"enhance": not args.no_enhance, "seconds": args.seconds, "cpus": os.cpu_count(), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| listeners | server CPU % of a core | loud frames heard (min) | load |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['listeners']} | {row['server_cpu_pct']} | {row['loud_frames_heard_min']} | {row['loadavg']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
