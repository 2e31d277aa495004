"""Soak: an hour of churn against a real server, watching for leaks, late ticks and errors.

A real ``mediaserver serve`` (enhancement on, ``--asr local``) on 127.0.0.1. In each of
``--rooms`` rooms two *anchor* participants (aiortc peers in this process, tones) stay for the
whole run; every second each anchor's loud frames from its partner are counted, so any
disturbance of a running call shows as a gap. Around them, churn events arrive at random
(seeded, about one per ``--period`` seconds, at most ``--max-concurrent`` at once):

- ``visit``: a ``mediaserver client`` process sends espeak-ng speech (ASR work) for 6-20 s
  and leaves; it must exit 0 having heard an anchor;
- ``kill``: a ``mediaserver client`` process is SIGKILLed mid-call; the anchors must see it leave;
- ``reconnect``: a peer's socket and ICE vanish without a goodbye, and the same identity joins
  again at once; the new one must hear the anchor;
- ``stuck``: a peer publishes, floods ``stats`` and stops reading; the server must drop it
  while the anchors keep talking;
- ``bad-input``: malformed JSON, an oversized message and an unparsable SDP offer on fresh
  sockets; each must get an ``error`` or a close.

Sampled every ``--sample-s`` seconds: the server's RSS, open file descriptors and threads
(/proc), asyncio tasks and clock counters (/metrics), load average. *Start* is taken after
``--warmup-s`` of churn (models loaded, caches warm), *end* after the churn has stopped and
the rooms are back to their anchors. Every WARNING/ERROR line of the server log is grouped and
reported.

    python benchmarks/soak.py --duration 3600            # the committed run
    python benchmarks/soak.py --duration 120 --warmup-s 30 --out /tmp/soak.json   # a try

Prints a table and writes benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mediaserver.audio import write_audio  # noqa: E402
from mediaserver.patches import pin_host_addresses  # noqa: E402
from mediaserver.patches import tolerate_consent_stalls  # noqa: E402
from conftest import ServerProcess  # noqa: E402
from rtc_peer import RtcPeer, flood  # noqa: E402
from waiting import until  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
QUIET_FRAMES = 20   # an anchor second with fewer loud frames from its partner is a disturbance
KINDS = {"visit": 4, "kill": 2, "reconnect": 2, "stuck": 1, "bad-input": 1}
SENTENCES = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
]


# ------------------------------------------------------------------------------ the server
class SoakServer(ServerProcess):
    """The tests' ``mediaserver serve`` subprocess, plus what the soak samples from /proc."""

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def proc_stats(self) -> dict[str, float]:
        """RSS (MiB), open FDs and threads of the server process, from /proc."""
        pid = self.proc.pid
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))        # type: ignore[union-attr]
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))     # type: ignore[union-attr]
        return {"rss_mib": round(rss_kb / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")),
                "threads": threads}

    def stop(self) -> int:   # type: ignore[override]
        super().stop()
        return int(self.proc.returncode)


METRICS = {
    "tasks": "mediaserver_asyncio_tasks", "participants": "mediaserver_participants",
    "rooms": "mediaserver_rooms", "ws_sockets": "mediaserver_ws_sockets",
    "ticks": "mediaserver_clock_ticks_total", "late_ticks": "mediaserver_clock_late_ticks_total",
    "skipped_ticks": "mediaserver_clock_skipped_ticks_total",
    "bypassed_ticks": "mediaserver_enhance_bypassed_ticks_total",
    "slow_consumer_drops": "mediaserver_ws_slow_consumer_drops_total",
    "signalling_errors": "mediaserver_signalling_errors_total",
    "outbound_dropped": "mediaserver_outbound_dropped_total",
}


async def scrape(session: aiohttp.ClientSession, server: SoakServer) -> dict[str, float]:
    """The METRICS series from /metrics, each summed over its labels."""
    async with session.get(server.http_url + "/metrics") as resp:
        text = await resp.text()
    out = {key: 0.0 for key in METRICS}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        for key, metric in METRICS.items():
            if name == metric:
                out[key] += float(line.rsplit(" ", 1)[1])
    return out


# ------------------------------------------------------------------------------ the anchors
@dataclass
class Anchor:
    """A participant that stays all run; ``per_second`` holds loud frames heard from ``partner``."""

    peer: RtcPeer
    partner: str
    per_second: list[int] = field(default_factory=list)
    _last: int = 0

    def sample(self) -> None:
        now = self.peer.loud_frames(self.partner)
        self.per_second.append(now - self._last)
        self._last = now

    def summary(self) -> dict[str, Any]:
        frames = np.array(self.per_second or [0])
        # the tones are pulsed (0.6 s on, 0.2 s off: the denoiser fades a steady tone as
        # noise), so an undisturbed second holds 30-40 loud frames of 50
        quiet = frames < QUIET_FRAMES
        runs: list[tuple[int, int]] = []     # (length s, start s) of each quiet stretch
        run = 0
        for i, q in enumerate(list(quiet) + [False]):
            if q:
                run += 1
            elif run:
                runs.append((run, i - run))
                run = 0
        runs.sort(reverse=True)
        longest = runs[0][0] if runs else 0
        return {"identity": self.peer.identity, "partner": self.partner,
                "seconds": int(len(frames)), "frames_heard": int(frames.sum()),
                "share_of_50_per_s": round(float(frames.sum()) / (50 * len(frames)), 4),
                "quiet_seconds": int(quiet.sum()), "longest_quiet_run_s": longest,
                "longest_quiet_runs": [{"seconds": n, "from_s": t} for n, t in runs[:5]]}


# ------------------------------------------------------------------------------ churn events
@dataclass
class Outcome:
    kind: str
    at_s: float
    ok: bool
    detail: str = ""


class Churn:
    """Runs one churn event of each kind against the server; every outcome is recorded."""

    def __init__(self, server: SoakServer, session: aiohttp.ClientSession, rooms: list[str],
                 anchors: dict[str, list[Anchor]], speech: Path, rng: random.Random,
                 t0: float) -> None:
        self.server, self.session, self.rooms, self.anchors = server, session, rooms, anchors
        self.speech, self.rng, self.t0 = speech, rng, t0
        self.outcomes: list[Outcome] = []
        self._n = 0

    def _name(self, kind: str) -> str:
        self._n += 1
        return f"{kind}-{self._n}"

    def _record(self, kind: str, ok: bool, detail: str = "") -> None:
        self.outcomes.append(Outcome(kind, round(time.monotonic() - self.t0, 1), ok, detail))
        if not ok:
            print(f"  FAILED {kind} at {self.outcomes[-1].at_s} s: {detail}", flush=True)

    async def run(self, kind: str) -> None:
        try:
            await getattr(self, "_" + kind.replace("-", "_"))()
        except Exception as exc:   # an event that breaks is a finding, not the end of the soak
            self._record(kind, False, f"{type(exc).__name__}: {exc}"[:300])

    async def _client(self, room: str, identity: str, duration: float) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mediaserver", "client", "--url", self.server.http_url,
            "--room", room, "--identity", identity, "--send", str(self.speech),
            "--duration", f"{duration:.1f}", "--ice-host", "127.0.0.1",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def _visit(self) -> None:
        room, name = self.rng.choice(self.rooms), self._name("visit")
        proc = await self._client(room, name, self.rng.uniform(6, 20))
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        if proc.returncode != 0:
            self._record("visit", False, f"exit {proc.returncode}: {err.decode()[-300:]}")
            return
        summary = json.loads(out.decode()[out.decode().index("{"):])
        heard = {who: r["frames_received"] for who, r in summary["remote"].items()}
        anchors = [a.peer.identity for a in self.anchors[room]]
        ok = all(heard.get(a, 0) >= 25 for a in anchors)   # half a second of each
        self._record("visit", ok, "" if ok else f"heard {heard}, errors {summary['errors']}")

    async def _kill(self) -> None:
        room, name = self.rng.choice(self.rooms), self._name("kill")
        proc = await self._client(room, name, 120)
        anchor = self.anchors[room][0].peer
        await until(lambda: _joined(anchor, name), timeout=60, what=f"{name} to join", interval=0.1)
        await asyncio.sleep(self.rng.uniform(3, 12))       # mid-call: the event's own timing
        proc.send_signal(signal.SIGKILL)
        await proc.communicate()
        await until(lambda: name in anchor.left(), timeout=60,
                    what=f"the server to notice {name} died", interval=0.1)
        self._record("kill", True)

    async def _reconnect(self) -> None:
        room, name = self.rng.choice(self.rooms), self._name("reconnect")
        partner = self.anchors[room][0].peer.identity
        first = RtcPeer(self.server.ws_url, room, name, tone_hz=523.0, pulsed=True, looped=True)
        second = RtcPeer(self.server.ws_url, room, name, tone_hz=523.0, pulsed=True, looped=True)
        try:
            await first.connect(self.session)
            await first.join()
            await first.publish()
            await first.hears(partner, frames=25, timeout=60)
            # vanish: no goodbye, no ICE close; the TCP connection just ends
            await first.stop_reading()
            assert first.ws is not None
            transport = first.ws._response.connection.transport  # type: ignore[union-attr]
            if transport is not None:
                transport.abort()
            if first.source is not None:
                first.source.stop()
            await second.connect(self.session)
            joined = await _join_retrying(second)
            await second.publish()
            await second.hears(partner, frames=25, timeout=60)
            self._record("reconnect", True, f"rejoined after {joined} refusal(s)")
        finally:
            for peer in (first, second):
                with contextlib.suppress(Exception):
                    await peer.close()

    async def _stuck(self) -> None:
        room, name = self.rng.choice(self.rooms), self._name("stuck")
        anchor = self.anchors[room][0].peer
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            peer = RtcPeer(self.server.ws_url, room, name, tone_hz=330.0, pulsed=True, looped=True)
            try:
                await peer.connect(s)
                await peer.join()
                await peer.publish()
                await peer.hears(anchor.identity, frames=25, timeout=60)
                await peer.stop_reading()
                flooding = asyncio.create_task(flood(peer, 20000))
                await until(lambda: name in anchor.left(), timeout=120,
                            what=f"the server to drop {name}", interval=0.1)
                flooding.cancel()
                await asyncio.gather(flooding, return_exceptions=True)
                self._record("stuck", True)
            finally:
                with contextlib.suppress(Exception):
                    await peer.close()

    async def _bad_input(self) -> None:
        probes = [
            ("malformed-json", "{not json"),
            ("oversized", json.dumps({"type": "join", "room": "x" * 2_000_000})),
            ("bad-sdp", None),
        ]
        bad: list[str] = []
        for label, text in probes:
            async with self.session.ws_connect(self.server.ws_url, max_msg_size=1 << 22) as ws:
                if text is None:
                    await ws.send_str(json.dumps({"type": "join", "room": self.rng.choice(self.rooms),
                                                  "identity": self._name("badsdp")}))
                    await ws.receive(timeout=30)   # joined
                    text = json.dumps({"type": "offer", "sdp": "v=0\r\nthis is not sdp\r\n"})
                try:
                    await ws.send_str(text)
                    msg = await ws.receive(timeout=30)
                except (ConnectionError, aiohttp.ClientConnectionError):
                    # the server closed the socket while a 2 MB message was still being sent:
                    # the client sees a reset, not the close frame (a refusal all the same)
                    continue
                got_error = (msg.type == aiohttp.WSMsgType.TEXT
                             and json.loads(msg.data).get("type") == "error")
                closed = msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                      aiohttp.WSMsgType.CLOSING)
                if not (got_error or closed):
                    bad.append(f"{label}: {msg.type.name} {str(msg.data)[:100]}")
        self._record("bad-input", not bad, "; ".join(bad))


def _joined(peer: RtcPeer, identity: str) -> bool:
    return any(e.get("type") == "participant-joined" and e.get("identity") == identity
               for e in peer.events)


async def _join_retrying(peer: RtcPeer, attempts: int = 100) -> int:
    """Join; while the server still holds the vanished session of this identity it refuses
    the name ("already in the room"): count those refusals and retry, as a reconnecting
    client does. Returns the number of refusals."""
    reply: dict = {}
    for refusals in range(attempts):
        await peer.send({"type": "join", "room": peer.room, "identity": peer.identity})
        while True:
            reply = await peer.receive()
            if reply.get("type") in ("joined", "error"):
                break
        if reply.get("type") == "joined":
            return refusals
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{peer.identity} refused {attempts} times: {reply}")


# ------------------------------------------------------------------------------ the run
async def soak(args: argparse.Namespace, server: SoakServer, speech: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    rooms = [f"soak-{i}" for i in range(args.rooms)]
    samples: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        anchors: dict[str, list[Anchor]] = {}
        for i, room in enumerate(rooms):
            a = RtcPeer(server.ws_url, room, f"anchor-{i}a", tone_hz=440.0 + 40 * i, pulsed=True, looped=True)
            b = RtcPeer(server.ws_url, room, f"anchor-{i}b", tone_hz=620.0 + 40 * i, pulsed=True, looped=True)
            anchors[room] = [Anchor(a, b.identity), Anchor(b, a.identity)]
            try:
                for peer in (a, b):
                    await peer.connect(session)
                    await peer.join()
                    await peer.publish()
                await a.hears(b.identity, frames=25)
                await b.hears(a.identity, frames=25)
            except BaseException:   # close every peer, or the loop hangs on their tasks
                for pair in anchors.values():
                    for anchor in pair:
                        with contextlib.suppress(Exception):
                            await anchor.peer.close()
                raise
        t0 = time.monotonic()
        churn = Churn(server, session, rooms, anchors, speech, rng, t0)
        running: set[asyncio.Task] = set()

        async def sample(phase: str) -> dict[str, Any]:
            row = {"t_s": round(time.monotonic() - t0, 1), "phase": phase,
                   "load_1m": os.getloadavg()[0], **server.proc_stats(),
                   **await scrape(session, server), "churn_running": len(running)}
            samples.append(row)
            return row

        async def watch_anchors(stop: asyncio.Event) -> None:
            while not stop.is_set():
                await asyncio.sleep(1.0)
                for pair in anchors.values():
                    for anchor in pair:
                        anchor.sample()

        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(watch_anchors(stop_watch))
        kinds, weights = list(KINDS), list(KINDS.values())
        start_row: Optional[dict[str, Any]] = None
        next_sample = 0.0
        end_at = t0 + args.duration
        stuck_running = False
        while time.monotonic() < end_at:
            now = time.monotonic() - t0
            if now >= next_sample:
                row = await sample("churn")
                next_sample = now + args.sample_s
                if start_row is None and now >= args.warmup_s:
                    start_row = row
                print(f"  t={row['t_s']:7.1f}s rss={row['rss_mib']} MiB fds={row['fds']} "
                      f"tasks={row['tasks']:.0f} participants={row['participants']:.0f} "
                      f"late={row['late_ticks']:.0f}/{row['ticks']:.0f} load={row['load_1m']:.1f} "
                      f"events={len(churn.outcomes)} failed="
                      f"{sum(not o.ok for o in churn.outcomes)}", flush=True)
            if len(running) < args.max_concurrent:
                kind = rng.choices(kinds, weights)[0]
                if kind == "stuck" and stuck_running:
                    kind = "visit"
                task = asyncio.create_task(churn.run(kind))
                running.add(task)
                if kind == "stuck":
                    stuck_running = True
                    task.add_done_callback(lambda _t: _clear_stuck())
                task.add_done_callback(running.discard)

                def _clear_stuck() -> None:
                    nonlocal stuck_running
                    stuck_running = False
            await asyncio.sleep(rng.expovariate(1.0 / args.period))
        print("  churn over; waiting for the running events and for the rooms to settle",
              flush=True)
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        expected = 2 * len(rooms)
        settle_deadline = time.monotonic() + 120
        while time.monotonic() < settle_deadline:
            if (await scrape(session, server))["participants"] == expected:
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(args.settle_s)
        end_row = await sample("end")
        stop_watch.set()
        await watcher
        for pair in anchors.values():
            for anchor in pair:
                await anchor.peer.close()
    return {"samples": samples, "start": start_row or samples[0], "end": end_row,
            "anchors": [a.summary() for pair in anchors.values() for a in pair],
            "outcomes": [o.__dict__ for o in churn.outcomes]}


def log_findings(log: Path) -> dict[str, Any]:
    """WARNING/ERROR lines of the server log grouped by message (numbers masked)."""
    groups: dict[str, int] = {}
    tracebacks = 0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("Traceback"):
            tracebacks += 1
        m = re.search(r"\b(WARNING|ERROR|CRITICAL)\b\s*(.*)", line)
        if m:
            key = m.group(1) + " " + re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "#", m.group(2))[:160]
            groups[key] = groups.get(key, 0) + 1
    return {"tracebacks": tracebacks,
            "lines": dict(sorted(groups.items(), key=lambda kv: -kv[1]))}


def slope_per_hour(samples: list[dict[str, Any]], key: str, t_from: float) -> float:
    pts = [(s["t_s"], s[key]) for s in samples if s["t_s"] >= t_from and s["phase"] == "churn"]
    if len(pts) < 3:
        return float("nan")
    t, v = np.array(pts).T
    return round(float(np.polyfit(t / 3600.0, v, 1)[0]), 2)


def make_speech(tmp: Path) -> Path:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("espeak-ng is needed: apt-get install -y espeak-ng")
    raw = tmp / "speech_raw.wav"
    subprocess.run([espeak, "-s", "150", "-w", str(raw), " ".join(SENTENCES)], check=True)
    from mediaserver.audio import read_audio, resample

    audio, rate = read_audio(raw)
    out = tmp / "speech.wav"
    write_audio(out, resample(audio, rate, 48000), 48000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds of churn")
    ap.add_argument("--rooms", type=int, default=2)
    ap.add_argument("--period", type=float, default=8.0, help="mean seconds between events")
    ap.add_argument("--max-concurrent", type=int, default=3, help="churn events at once")
    ap.add_argument("--warmup-s", type=float, default=180.0, help="start sample after this")
    ap.add_argument("--settle-s", type=float, default=15.0)
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--server-args", default="--asr local",
                    help="extra `mediaserver serve` flags (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = ap.parse_args()

    pin_host_addresses(["127.0.0.1"])
    tolerate_consent_stalls()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp_name:
        tmp = Path(tmp_name)
        speech = make_speech(tmp)
        log = tmp / "server.log"
        server = SoakServer(log, *args.server_args.split())
        started = time.time()
        try:
            run = asyncio.run(soak(args, server, speech))
        finally:
            rc = server.stop()
        findings = log_findings(log)
        shutil.copy(log, Path(tempfile.gettempdir()) / "soak-server.log")
    start, end = run["start"], run["end"]
    outcomes = run["outcomes"]
    by_kind: dict[str, dict[str, int]] = {}
    for o in outcomes:
        k = by_kind.setdefault(o["kind"], {"ok": 0, "failed": 0})
        k["ok" if o["ok"] else "failed"] += 1
    ticks = end["ticks"] - start["ticks"]
    report = {
        "benchmark": "soak", "started_unix": round(started), "args": vars(args) | {"out": str(args.out)},
        "machine": {"cores": os.cpu_count(), "nice": os.nice(0), "load_1m_mean": round(float(np.mean(
            [s["load_1m"] for s in run["samples"]])), 2)},
        "server_exit_code": rc,
        "resources": {key: {"start": start[key], "end": end[key], "delta": round(end[key] - start[key], 2),
                            "slope_per_hour": slope_per_hour(run["samples"], key, start["t_s"])}
                      for key in ("rss_mib", "fds", "threads", "tasks", "participants", "ws_sockets")},
        "clock": {"ticks": ticks, "late_ticks": end["late_ticks"] - start["late_ticks"],
                  "late_share": round((end["late_ticks"] - start["late_ticks"]) / max(ticks, 1), 5),
                  "skipped_ticks": end["skipped_ticks"] - start["skipped_ticks"],
                  "enhance_bypassed_ticks": end["bypassed_ticks"] - start["bypassed_ticks"]},
        "events": by_kind, "failed_events": [o for o in outcomes if not o["ok"]],
        "anchors": run["anchors"], "server_log": findings, "samples": run["samples"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nsoak {args.duration:.0f} s, {len(outcomes)} events, load {report['machine']['load_1m_mean']}")
    print(f"{'resource':<14}{'start':>10}{'end':>10}{'delta':>10}{'per hour':>10}")
    for key, r in report["resources"].items():
        print(f"{key:<14}{r['start']:>10}{r['end']:>10}{r['delta']:>10}{r['slope_per_hour']:>10}")
    print(f"clock: {report['clock']}")
    print(f"events: {by_kind}")
    for o in report["failed_events"]:
        print(f"  FAILED {o['kind']} at {o['at_s']} s: {o['detail']}")
    for a in run["anchors"]:
        print(f"anchor {a['identity']}: {a['share_of_50_per_s']:.3f} of frames, "
              f"{a['quiet_seconds']} quiet seconds, longest {a['longest_quiet_run_s']} s")
    print(f"server log: {findings['tracebacks']} tracebacks; {sum(findings['lines'].values())} "
          f"warning/error lines")
    for line, n in list(findings["lines"].items())[:20]:
        print(f"  {n:5d}  {line}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
