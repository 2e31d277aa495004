"""SFU benchmark: N publishers in rooms of k on 127.0.0.1, three forwarders in one run.

Forwarders: ``mediaserver serve`` with enhancement (default), with ``--no-enhance``, and
a plain aiortc baseline (``MediaRelay`` of the decoded RemoteStreamTrack, one Opus
encode per subscriber), all behind the same signalling protocol.

One load-generator process (this one; or ``--generators`` shards) hosts every participant:
each sends a speech clip as pre-encoded Opus in real time and receives the k-1 others below aiortc's
jitter buffer (raw RTP, decoded offline). It measures, per forwarder:
- server CPU (% of one core, from /proc: with ``--workers N`` the front and its worker
  processes together) per publisher over the measured window;
- server-added delay p50/p95: each received 1 s window is matched to the sent audio
  by content cross-correlation, which gives every received packet its mouth-to-ear delay
  (see ``stream_delays``); the server-added delay is that minus the mouth-to-ear delay of a
  direct aiortc-to-aiortc link's p50, measured the same way in the same run (packetisation,
  the publisher's Opus look-ahead, both aiortc stacks). The delay samples come from publishers
  whose send phases are spread evenly over the 20 ms frame (``--sample-streams``), so the
  median is not a draw of a few phases against the server's clock;
- late frames (arriving > 60 ms after the stream's median delay) and missing frames
  (RTP timestamp gaps), plus the server's own late clock ticks from /metrics;
- the load generator's own CPU (it shares the machine): whichever of the two single-loop
  processes is nearer a whole core saturates first (the server's share per worker).

``--workers 1,2`` runs each case with ``serve --workers 1`` and ``--workers 2``.

A big machine (issue 14's device run, ``scripts/gpu_workers.sh``):
- ``--generators G``: the rooms are split over G load-generator processes (room r on shard
  r % G, ``run_shard``), started by this one, which drives the server and the window and merges
  the shards' frame counts, delays and jitter-buffer stats into the same row; the generator's
  CPU is the sum of the shards' (``generator_cpu_pct_by_shard``; ``saturates_first`` compares
  the busiest shard). Every shard draws the same offsets and phases as one process would.
- ``--server-cores 0-7 --generator-cores 8-15``: CPU affinity (children inherit);
  ``--serve-arg=FLAG`` (repeatable) or ``--enhancer-device cuda``: extra ``serve`` flags; all
  recorded in the JSON.
- ``--find-max``: per forwarder and ``--workers`` value, the publisher steps (``--publishers``
  or ``--steps W:N1,N2``) ascend until a case is not ``sustained`` (< 1 % late or missing
  frames, server-added p95 <= 60 ms; a first step that fails is halved down to one room);
  ``find_max`` in the JSON holds the largest sustained N (``first_not_sustained`` null: the
  steps ran out, a lower bound), the ratio to the first ``--workers`` value, and the
  enhancer's batch and step time at that N. ``--budget-s`` starts no case past a time budget.

    python benchmarks/sfu.py --publishers 8,20,40 --room-size 4 --seconds 20
    [--data ../shared/data]  (optional: a folder of speech WAVs; default espeak-ng)

Prints a table and writes benchmarks/results/sfu.json.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack  # noqa: E402

from mediaserver.audio import read_audio, resample  # noqa: E402
from mediaserver.media.opus import OpusEncoder  # noqa: E402
from mediaserver.patches import pin_host_addresses  # noqa: E402
from mediaserver.media.opus import OpusDecoder  # noqa: E402
from mediaserver.patches import tap_receiver, tolerate_consent_stalls  # noqa: E402
from mediaserver.media.opus import enable_opus_fec  # noqa: E402

RATE = 48000
FRAME = 960
TIME_BASE = fractions.Fraction(1, RATE)
RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------- test audio
def speech_clip(data: Optional[str], seconds: float, tmp: Path) -> np.ndarray:
    """About ``seconds`` of varied speech at 48 kHz (espeak-ng, or WAVs from --data)."""
    parts: list[np.ndarray] = []
    if data:
        for wav in sorted(Path(data).rglob("*.wav"))[:200]:
            audio, rate = read_audio(wav)
            parts.append(resample(audio, rate, RATE))
            if sum(map(len, parts)) > seconds * RATE:
                break
    if not parts:
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            raise SystemExit("espeak-ng is needed (apt-get install -y espeak-ng) or pass --data")
        sentences = [
            "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
            "It is easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
            "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
            "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
            "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
        ]
        i = 0
        while sum(map(len, parts)) < seconds * RATE:
            raw = tmp / f"s{i}.wav"
            subprocess.run([espeak, "-s", "160", "-w", str(raw), sentences[i % len(sentences)]],
                           check=True, capture_output=True)
            audio, rate = read_audio(raw)
            parts.append(resample(audio, rate, RATE))
            parts.append(np.zeros(int(0.15 * RATE), np.float32))
            i += 1
    clip = np.concatenate(parts)[: int(seconds * RATE)]
    return (0.5 * clip / (np.max(np.abs(clip)) + 1e-9)).astype(np.float32)


# ---------------------------------------------------------------- participant
class TimedSource(MediaStreamTrack):
    """Microphone stand-in replaying Opus packets encoded once for the whole run.

    Encoding 20 ms per publisher in real time would make the load generator, not the
    server, the bottleneck; every publisher replays the same packets from its own offset.
    Remembers when each frame was handed to aiortc (loop time) for the delay analysis.
    """

    kind = "audio"

    def __init__(self, samples: np.ndarray, packets: list[bytes], offset: int,
                 phase_s: Optional[float] = None) -> None:
        super().__init__()
        self._samples = np.roll(samples, -offset * FRAME)   # what frame i carries
        self._packets = packets[offset:] + packets[:offset]
        self._phase = phase_s
        self._index = 0
        self.start: Optional[float] = None
        self.sent_at: list[float] = []

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self.start is None:
            now = loop.time()
            # frames leave at times congruent to the phase modulo 20 ms (the loop's clock is
            # the monotonic clock the server's media clock also runs on)
            self.start = now if self._phase is None else now + (self._phase - now) % (FRAME / RATE)
        delay = self.start + self._index * FRAME / RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self._packets[self._index % len(self._packets)])
        packet.pts = self._index * FRAME
        packet.time_base = TIME_BASE
        self._index += 1
        self.sent_at.append(loop.time())
        return packet


def encode_clip(clip: np.ndarray) -> list[bytes]:
    encoder = OpusEncoder(bitrate=32000)
    return [encoder.encode(clip[i:i + FRAME]) for i in range(0, len(clip) - FRAME + 1, FRAME)]


@dataclass
class Received:
    """Raw packets of one (listener, speaker) stream, kept for offline decoding."""

    arrivals: list[float] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    ssrc: Optional[int] = None


class Peer:
    """One participant: WebSocket signalling + RTCPeerConnection, answers server offers."""

    def __init__(self, url: str, room: str, identity: str, source: TimedSource,
                 keep_payloads: bool) -> None:
        self.url, self.room, self.identity = url, room, identity
        self.source = source
        self.keep = keep_payloads
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mids: dict[str, str] = {}
        self.tapped: set[int] = set()
        self.streams: dict[str, Received] = {}
        self.errors: list[str] = []
        self._task: Optional[asyncio.Task] = None
        self._ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self.server_stats: dict = {}    # the server's view of this publisher's inbound stream
        self.stats_seen = asyncio.Event()

    async def ask_stats(self, timeout: float = 10.0) -> dict:
        """The server's receive statistics of this publisher (jitter buffer level, target,
        time-scaling, concealment): the ``stats`` signalling reply; {} when none came."""
        if self._ws is None or self._ws.closed:
            return {}
        self.stats_seen.clear()
        await self._ws.send_json({"type": "stats"})
        try:
            await asyncio.wait_for(self.stats_seen.wait(), timeout)
        except asyncio.TimeoutError:
            return {}
        return self.server_stats

    async def start(self, session: aiohttp.ClientSession) -> None:
        self._ws = ws = await session.ws_connect(self.url, max_msg_size=1 << 20)
        await ws.send_json({"type": "join", "room": self.room, "identity": self.identity})
        while (await ws.receive_json(timeout=60)).get("type") != "joined":
            pass
        self.pc.addTransceiver(self.source, direction="sendrecv")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await ws.send_json({"type": "offer", "sdp": enable_opus_fec(self.pc.localDescription.sdp)})
        while True:
            msg = await ws.receive_json(timeout=60)
            if msg.get("type") == "answer":
                break
        await self.pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for m in self._ws:
                if m.type != aiohttp.WSMsgType.TEXT:
                    break
                msg = json.loads(m.data)
                if msg.get("type") == "offer":
                    await self.pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
                    self.mids = dict(msg.get("tracks") or {})
                    self._tap()
                    await self.pc.setLocalDescription(await self.pc.createAnswer())
                    await self._ws.send_json({"type": "answer",
                                              "sdp": enable_opus_fec(self.pc.localDescription.sdp)})
                elif msg.get("type") == "stats":
                    self.server_stats = (msg.get("participants") or {}).get(self.identity, {})
                    self.stats_seen.set()
                elif msg.get("type") == "error":
                    self.errors.append(msg.get("message", ""))
        except Exception as exc:
            self.errors.append(repr(exc))

    def _tap(self) -> None:
        loop = asyncio.get_running_loop()
        for t in self.pc.getTransceivers():
            if id(t.receiver) in self.tapped:
                continue
            self.tapped.add(id(t.receiver))

            def on_packet(packet: Any, arrival_ms: float, _t: Any = t) -> None:
                who = self.mids.get(_t.mid or "")
                if who is None:
                    return
                rec = self.streams.setdefault(who, Received())
                rec.arrivals.append(arrival_ms / 1000.0)
                rec.timestamps.append(packet.timestamp)
                if self.keep:
                    rec.payloads.append(packet.payload)

            tap_receiver(t.receiver, on_packet, lambda: loop.time() * 1000.0)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self.source.stop()
        if self._ws is not None:
            await self._ws.close()
        await self.pc.close()


# ---------------------------------------------------------------- analysis
def unwrap(ts: list[int]) -> np.ndarray:
    out = np.array(ts, dtype=np.int64)
    d = np.diff(out)
    d = (d + (1 << 31)) % (1 << 32) - (1 << 31)
    return np.concatenate([[0], np.cumsum(d)])


def stream_quality(rec: Received, t_from: float, t_to: float) -> tuple[int, int, int]:
    """(frames expected, frames missing, frames late) within the measured window."""
    if len(rec.arrivals) < 10:
        return 0, 0, 0
    arr = np.array(rec.arrivals)
    ts = unwrap(rec.timestamps)
    sel = (arr >= t_from) & (arr <= t_to)
    if sel.sum() < 10:
        return 0, 0, 0
    a, t = arr[sel], ts[sel]
    expected = int((t.max() - t.min()) // FRAME) + 1
    missing = max(0, expected - len(np.unique(t)))
    lateness = a - t / RATE
    late = int(np.sum(lateness - np.median(lateness) > 0.060))
    return expected, missing, late


def stream_delays(rec: Received, sent: np.ndarray, sent_at: np.ndarray, t_from: float,
                  t_to: float) -> list[float]:
    """Mouth-to-ear delay (s) of every received packet, from content matching of 1 s windows.

    ``sent``: the publisher's audio, frame i = ``sent[i*960:(i+1)*960]``, captured during the
    20 ms before ``sent_at[i]`` (when its packet was handed to aiortc). A received packet
    with arrival time ``a`` whose first sample is source sample ``r = i*960 + phi`` plays
    its sample ``p`` at ``a + p/48000``; that sample was captured at
    ``sent_at[(r+p)//960] - 20 ms + ((r+p) % 960)/48000``. With frames sent 20 ms apart
    the difference is the same for every ``p``: ``a - sent_at[i] + 20 ms - phi/48000``.
    A direct link with no server gives 20 ms (packetisation) + the encoder's look-ahead.
    """
    if len(rec.payloads) < 100:
        return []
    ts = unwrap(rec.timestamps)
    arr = np.array(rec.arrivals)
    dec = OpusDecoder()
    n = int(ts.max()) + FRAME
    buf = np.zeros(n, np.float32)
    for p, t in zip(rec.payloads, ts):
        try:
            pcm = dec.decode(p)
        except Exception:
            continue
        buf[t:t + len(pcm)] = pcm[: n - t]
    sent_frames = len(sent_at)
    src = np.resize(sent, sent_frames * FRAME)   # the sources loop their clip
    delays: dict[int, float] = {}   # packet index -> delay (windows overlap by half: once each)
    win = RATE
    for w in range(0, n - win, win // 2):
        seg = buf[w:w + win]
        in_win = (ts >= w) & (ts < w + win)
        if np.sqrt(np.mean(seg ** 2)) < 0.01 or in_win.sum() < 10:
            continue
        # only source audio sent up to 8 s before these packets arrived can be in them
        a_lo, a_hi = arr[in_win].min(), arr[in_win].max()
        i0 = int(np.searchsorted(sent_at, a_lo - 8.0))
        i1 = int(np.searchsorted(sent_at, a_hi))
        lo, region = i0 * FRAME, src[i0 * FRAME:(i1 + 1) * FRAME]
        if len(region) < win:
            continue
        size = len(region) + win
        corr = np.fft.irfft(np.fft.rfft(region, size) * np.conj(np.fft.rfft(seg, size)),
                            size)[: len(region) - win + 1]
        k = int(np.argmax(corr))
        norm = np.linalg.norm(seg) * np.linalg.norm(region[k:k + win]) + 1e-9
        if corr[k] / norm < 0.6:
            continue
        offset = lo + k - w   # source index = buffer index + offset
        for j in np.flatnonzero(in_win):
            r, a = int(ts[j] + offset), arr[j]
            if j not in delays and t_from <= a <= t_to and 0 <= r < sent_frames * FRAME:
                i, phi = divmod(r, FRAME)
                delays[int(j)] = a - sent_at[i] + (FRAME - phi) / RATE
    return list(delays.values())


def histogram_stats(m0: dict[str, float], m1: dict[str, float], name: str) -> dict:
    """Mean and p50/p95 (ms) of histogram ``name`` over the window m0 -> m1 of
    ``Server.metrics()``; percentiles interpolated linearly inside a bucket, as Prometheus'
    ``histogram_quantile`` does. Empty dict when nothing was observed."""
    count = m1.get(f"{name}_count", 0.0) - m0.get(f"{name}_count", 0.0)
    if count <= 0:
        return {}
    total = m1.get(f"{name}_sum", 0.0) - m0.get(f"{name}_sum", 0.0)
    edges = sorted((float(k.split("@", 1)[1]), m1[k] - m0.get(k, 0.0))
                   for k in m1 if k.startswith(f"{name}_bucket@") and not k.endswith("+Inf"))

    def quantile(q: float) -> Optional[float]:
        rank, lo, below = q * count, 0.0, 0.0
        for edge, cum in edges:
            if cum >= rank:
                inside = cum - below
                return 1000.0 * (lo + (edge - lo) * ((rank - below) / inside if inside else 1.0))
            lo, below = edge, cum
        return None   # beyond the last finite bucket

    p50, p95 = quantile(0.5), quantile(0.95)
    return {"mean_ms": round(1000.0 * total / count, 1),
            "p50_ms": None if p50 is None else round(p50, 1),
            "p95_ms": None if p95 is None else round(p95, 1), "count": int(count)}


# ---------------------------------------------------------------- servers
class Server:
    def __init__(self, kind: str, log: Path, model: Optional[str] = None, workers: int = 1,
                 serve_args: Any = (), cores: Optional[set[int]] = None) -> None:
        if kind == "relay":
            cmd = [sys.executable, str(Path(__file__).resolve()), "--relay-server"]
        else:
            # every publisher connects from 127.0.0.1: lift the per-address and total caps
            cmd = [sys.executable, "-m", "mediaserver", "serve", "--max-sockets", "10000",
                   "--max-sockets-per-ip", "10000", "--max-rooms", "10000"]
            if kind == "no-enhance":
                cmd.append("--no-enhance")
            elif model:
                cmd += ["--model", model]
            cmd += ["--workers", str(workers)]   # (1 named: the default is one per core)
            cmd += list(serve_args)   # --serve-arg: e.g. --enhancer-device cuda
        cmd += ["--host", "127.0.0.1", "--port", "0", "--ice-host", "127.0.0.1"]
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log,
                                     preexec_fn=_pin(cores))   # --server-cores: children inherit
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{kind} server did not start; see {log}")
            m = re.search(rb"http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                break

    def cpu_seconds(self) -> float:
        """CPU seconds of the server: its process and its children (``--workers``' processes;
        a child's time counts while it runs, and a reaped one's in the parent's cutime)."""
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds of the server's processes by role: ``front`` (the process started, the
        whole server with one worker), ``worker`` (all media workers), ``enhancer`` (the shared
        inference process). Read from /proc/PID/stat (utime + stime, plus cutime + cstime of
        the front for reaped children)."""
        out: dict[str, float] = {}
        tck = os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid, ppid = int(stat.parent.name), int(fields[1])
                if pid != self.proc.pid and ppid != self.proc.pid:
                    continue
                cmd = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue   # a process that just ended
            role = ("front" if pid == self.proc.pid else
                    "enhancer" if b"mediaserver.enhance.shared" in cmd else "worker")
            ticks = int(fields[11]) + int(fields[12])
            if pid == self.proc.pid:
                ticks += int(fields[13]) + int(fields[14])
            out[role] = out.get(role, 0.0) + ticks / tck
        return out

    def metrics(self) -> dict[str, float]:
        import urllib.request

        out: dict[str, float] = {}
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("mediaserver_") and " " in line:
                        k, v = line.rsplit(" ", 1)
                        name = k.split("{", 1)[0]   # summed over labels (the workers' too)
                        le = re.search(r'le="([^"]+)"', k)
                        if name.endswith("_bucket") and le:   # histogram buckets stay apart
                            name += f"@{le.group(1)}"
                        out[name] = out.get(name, 0.0) + float(v)
        except Exception:
            pass
        return out

    def enhancer_sample(self) -> Optional[tuple[float, float]]:
        """(streams in the last enhancer call, its step ms) from /healthz: the shared inference
        process's (as a worker saw it) with --workers, else the process's own stage."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
                h = json.loads(r.read())
        except Exception:
            return None
        shared = h.get("shared_enhancer")
        if shared:
            views = [v for v in shared.get("last") or [] if v.get("last_batch")]   # one per worker
            if views:
                v = max(views, key=lambda v: v["last_batch"])
                return float(v["last_batch"]), float(v["last_step_ms"])
            return None
        own = h.get("enhancer")
        if own and own.get("streams"):
            return float(own["streams"]), float(own["last_step_ms"])
        return None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def run_relay_server(args: argparse.Namespace) -> None:
    """Baseline: aiortc's own path. Decode (RemoteStreamTrack) -> MediaRelay -> re-encode."""
    from aiohttp import web
    from aiortc.contrib.media import MediaRelay

    pin_host_addresses([args.ice_host])
    tolerate_consent_stalls()
    relay = MediaRelay()
    rooms: dict[str, dict[str, Any]] = {}

    class RelayPeer:
        def __init__(self, ws: web.WebSocketResponse, room: str, identity: str) -> None:
            self.ws, self.room, self.identity = ws, room, identity
            self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            self.track: Any = None
            self.subscribed: set[str] = set()
            self.lock = asyncio.Lock()
            self.answer: Optional[asyncio.Future] = None

        async def subscribe(self, other: "RelayPeer") -> None:
            if other.identity in self.subscribed or other.track is None:
                return
            self.subscribed.add(other.identity)
            t = self.pc.addTransceiver(relay.subscribe(other.track), direction="sendonly")
            async with self.lock:
                await self.pc.setLocalDescription(await self.pc.createOffer())
                mids = {tr.mid: name for tr, name in self._names.items()} if hasattr(self, "_names") else {}
                self._names = getattr(self, "_names", {})
                self._names[t] = other.identity
                mids = {tr.mid: name for tr, name in self._names.items()}
                self.answer = asyncio.get_running_loop().create_future()
                await self.ws.send_json({"type": "offer", "sdp": self.pc.localDescription.sdp,
                                         "tracks": mids})
                answer = await asyncio.wait_for(self.answer, 30)
                await self.pc.setRemoteDescription(answer)

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        me: Optional[RelayPeer] = None
        async for m in ws:
            msg = json.loads(m.data)
            if msg["type"] == "join":
                me = RelayPeer(ws, msg["room"], msg["identity"])
                rooms.setdefault(me.room, {})[me.identity] = me
                await ws.send_json({"type": "joined", "room": me.room, "identity": me.identity,
                                    "participants": [], "iceServers": []})
            elif msg["type"] == "offer" and me is not None:
                got = asyncio.get_running_loop().create_future()

                @me.pc.on("track")
                def on_track(track: Any, _me: RelayPeer = me) -> None:
                    _me.track = track
                    got.set_result(None)

                await me.pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
                await me.pc.setLocalDescription(await me.pc.createAnswer())
                await ws.send_json({"type": "answer", "sdp": me.pc.localDescription.sdp})
                await got
                for other in list(rooms[me.room].values()):
                    if other is not me and other.track is not None:
                        asyncio.ensure_future(other.subscribe(me))
                        asyncio.ensure_future(me.subscribe(other))
            elif msg["type"] == "answer" and me is not None and me.answer is not None:
                me.answer.set_result(RTCSessionDescription(msg["sdp"], "answer"))
        if me is not None:
            rooms.get(me.room, {}).pop(me.identity, None)
            await me.pc.close()
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/ws", ws_handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"relay listening: http://127.0.0.1:{port}/", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# ---------------------------------------------------------------- direct link
async def direct_link(clip: np.ndarray, packets: list[bytes], seconds: float,
                      warmup: float) -> dict:
    """Mouth-to-ear delay of one aiortc peer sending straight to another, measured like the
    server's streams: the zero of the server-added delay (packetisation, the publisher's
    Opus look-ahead and both aiortc stacks, which every path through a server also has)."""
    loop = asyncio.get_running_loop()
    source = TimedSource(clip, packets, 0)
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    rec = Received()
    try:
        sender.addTransceiver(source, direction="sendonly")
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)

        def on_packet(packet: Any, arrival_ms: float) -> None:
            rec.arrivals.append(arrival_ms / 1000.0)
            rec.timestamps.append(packet.timestamp)
            rec.payloads.append(packet.payload)

        tap_receiver(receiver.getTransceivers()[0].receiver, on_packet,
                     lambda: loop.time() * 1000.0)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        await asyncio.sleep(warmup + seconds)
        t1 = loop.time()
        d = np.array(stream_delays(rec, source._samples, np.array(source.sent_at),
                                   t1 - seconds, t1)) * 1000.0
    finally:
        source.stop()
        await sender.close()
        await receiver.close()
    if not len(d):
        raise RuntimeError("the direct link's delay could not be measured")
    return {"mouth_to_ear_p50_ms": round(float(np.percentile(d, 50)), 1),
            "mouth_to_ear_p95_ms": round(float(np.percentile(d, 95)), 1),
            "delay_samples": len(d)}


# ---------------------------------------------------------------- one run
def make_peers(url: str, n_pub: int, room_size: int, clip: np.ndarray, packets: list[bytes],
               sample_streams: int, shard: int = 0, shards: int = 1) -> list[Peer]:
    """The case's participants, in join order: publisher i in room ``i // room_size``, with a
    send offset and phase drawn from a generator seeded by ``n_pub`` (the first
    ``sample_streams`` publishers' phases spread evenly over the 20 ms frame). With
    ``shards`` > 1 only the rooms ``r`` with ``r % shards == shard``: every shard draws the
    whole sequence, so a publisher's offset and phase do not depend on the sharding."""
    rng = np.random.default_rng(n_pub)
    spread = rng.random()   # the sampled publishers' phases: evenly spaced, random origin
    sampled = min(sample_streams, n_pub)
    peers: list[Peer] = []
    for i in range(n_pub):
        part = (i + spread) / sampled if i < sampled else rng.random()
        offset = int(rng.integers(0, 100))
        if (i // room_size) % shards != shard:
            continue
        source = TimedSource(clip, packets, offset, phase_s=(part % 1.0) * FRAME / RATE)
        peers.append(Peer(url, f"bench{i // room_size}", f"p{i}", source,
                          keep_payloads=i < sample_streams))
    return peers


def analyse_peers(peers: list[Peer], t0: float, t1: float) -> dict:
    """Frames expected/missing/late over every received stream in [t0, t1] (loop time, the
    monotonic clock, the same in every process), and the mouth-to-ear delays (s) of the
    streams whose listener kept payloads (publisher and listener are in one room, so in one
    shard)."""
    expected = missing = late = 0
    delays: list[float] = []
    by_name = {p.identity: p for p in peers}
    for p in peers:
        for who, rec in p.streams.items():
            e, m, lt = stream_quality(rec, t0, t1)
            expected, missing, late = expected + e, missing + m, late + lt
            if p.keep and who in by_name:
                src = by_name[who].source
                delays += stream_delays(rec, src._samples, np.array(src.sent_at), t0, t1)
    return {"expected": expected, "missing": missing, "late": late, "delays": delays,
            "subscriber_streams": sum(len(p.streams) for p in peers),
            "errors": sorted({e for p in peers for e in p.errors})[:5]}


def case_row(kind: str, workers: int, n_pub: int, room_size: int, server: "Server",
             cpu0: dict, cpu1: dict, t0: float, t1: float, m0: dict, m1: dict,
             generator: float, samples: list[tuple[float, float]], got: dict,
             direct_ms: float, inbound: list[dict]) -> dict:
    """One case's JSON row (``got``: ``analyse_peers``' result, merged over shards)."""
    delays = got["delays"]
    expected, missing, late = got["expected"], got["missing"], got["late"]
    m2e = np.array(delays) * 1000.0 if delays else np.array([np.nan])
    d = m2e - direct_ms
    ticks = m1.get("mediaserver_clock_ticks_total", 0) - m0.get("mediaserver_clock_ticks_total", 0)
    late_ticks = (m1.get("mediaserver_clock_late_ticks_total", 0)
                  - m0.get("mediaserver_clock_late_ticks_total", 0))
    skipped = (m1.get("mediaserver_clock_skipped_ticks_total", 0)
               - m0.get("mediaserver_clock_skipped_ticks_total", 0))
    by_role = {k: round(100.0 * (cpu1[k] - cpu0.get(k, 0.0)) / (t1 - t0), 1) for k in cpu1}
    cpu = sum(by_role.values())
    return {
        "forwarder": kind, "workers": workers, "publishers": n_pub, "room_size": room_size,
        "subscriber_streams": got["subscriber_streams"],
        "server_cpu_pct": round(cpu, 1), "cpu_pct_per_publisher": round(cpu / n_pub, 2),
        "server_cpu_pct_by_process": by_role,
        "generator_cpu_pct": round(generator, 1),
        # one event loop each: the side nearer a whole core is the one that runs out first
        # (the server's busiest process: its CPU over its worker processes)
        "saturates_first": "server" if cpu / workers >= generator else "generator",
        "delay_p50_ms": round(float(np.nanpercentile(d, 50)), 1),
        "delay_p95_ms": round(float(np.nanpercentile(d, 95)), 1),
        "mouth_to_ear_p50_ms": round(float(np.nanpercentile(m2e, 50)), 1),
        "mouth_to_ear_p95_ms": round(float(np.nanpercentile(m2e, 95)), 1),
        "delay_samples": len(delays),
        "frames_expected": expected, "frames_missing": missing, "frames_late": late,
        "late_or_missing_pct": round(100.0 * (missing + late) / max(1, expected), 2),
        "server_late_tick_pct": round(100.0 * late_ticks / ticks, 2) if ticks else None,
        "server_skipped_ticks": int(skipped) if ticks else None,
        "enhancer_batch_p50": (float(np.median([b for b, _ in samples])) if samples else None),
        "enhancer_step_ms_p50": (round(float(np.median([t for _, t in samples])), 2)
                                 if samples else None),
        "enhancer_step_ms_p95": (round(float(np.percentile([t for _, t in samples], 95)), 2)
                                 if samples else None),
        # where the server's time goes (server-side, over the measured window): the jitter
        # buffer's hold of each packet (arrival to the tick deadline that plays it), how
        # late ticks ran, a tick's own work, and the enhancer's wait past the deadline
        "stages": {
            "jitter_wait": histogram_stats(m0, m1, "mediaserver_jitter_wait_seconds"),
            "jitter_target": histogram_stats(m0, m1, "mediaserver_jitter_target_seconds"),
            "tick_lag": histogram_stats(m0, m1, "mediaserver_clock_lag_seconds"),
            "tick_work": histogram_stats(m0, m1, "mediaserver_clock_tick_seconds"),
            "enhance": histogram_stats(m0, m1, "mediaserver_clock_enhance_seconds"),
        },
        # the sampled publishers' jitter buffers at the end (server side): smoothed level,
        # target, time-scaling and concealment since the call started
        "jitter_buffers": [{k: st.get(k) for k in (
            "current_delay_ms", "target_delay_ms", "accelerate", "expand", "trimmed_ms", "concealed_frames",
            "packets_late", "resets")} for st in inbound],
        "errors": got["errors"],
    }


async def sample_window(server: "Server", kind: str, seconds: float) -> list[tuple[float, float]]:
    """Waits out the measured window, scraping the enhancer's batch and step time twice a second."""
    loop = asyncio.get_running_loop()
    samples: list[tuple[float, float]] = []
    end = loop.time() + seconds
    while loop.time() < end:
        await asyncio.sleep(min(0.5, max(0.0, end - loop.time())))
        if kind == "enhance":
            sample = await asyncio.to_thread(server.enhancer_sample)
            if sample is not None:
                samples.append(sample)
    return samples


@dataclass
class CaseOptions:
    """What every case of a run shares besides N, the forwarder and the worker count."""

    room_size: int
    seconds: float
    warmup: float
    sample_streams: int
    tmp: Path
    direct_ms: float
    model: Optional[str] = None
    serve_args: list[str] = field(default_factory=list)
    server_cores: Optional[set[int]] = None
    generators: int = 1
    generator_cores: Optional[set[int]] = None
    clip_file: Optional[Path] = None   # clip and packets for the shards (np.savez)


async def run_case(kind: str, n_pub: int, room_size: int, seconds: float, warmup: float,
                   clip: np.ndarray, packets: list[bytes], sample_streams: int, tmp: Path,
                   direct_ms: float, model: Optional[str] = None, workers: int = 1,
                   opts: Optional[CaseOptions] = None) -> dict:
    """One case with every participant in this process (``--generators 1``)."""
    server = Server(kind, tmp / f"server-{kind}-{n_pub}.log", model, workers,
                    opts.serve_args if opts else (), opts.server_cores if opts else None)
    peers: list[Peer] = []
    try:
        url = f"ws://127.0.0.1:{server.port}/ws"
        sampled = min(sample_streams, n_pub)
        async with aiohttp.ClientSession() as session:
            peers = make_peers(url, n_pub, room_size, clip, packets, sample_streams)
            # join one room at a time so rooms fill like real calls
            for p in peers:
                await p.start(session)
            loop = asyncio.get_running_loop()
            await asyncio.sleep(warmup)
            m0 = server.metrics()   # before the window: a scrape's own CPU is not the calls'
            cpu0, t0 = server.cpu_by_process(), loop.time()
            gen0 = time.process_time()   # this process: the load generator, all its threads
            samples = await sample_window(server, kind, seconds)
            cpu1, t1 = server.cpu_by_process(), loop.time()
            m1 = server.metrics()
            gen1 = time.process_time()
            inbound = [await p.ask_stats() for p in peers[:sampled]]
        # analysis (offline: the call is over)
        got = analyse_peers(peers, t0, t1)
        return case_row(kind, workers, n_pub, room_size, server, cpu0, cpu1, t0, t1, m0, m1,
                        100.0 * (gen1 - gen0) / (t1 - t0), samples, got, direct_ms, inbound)
    finally:
        for p in peers:
            try:
                await p.stop()
            except Exception:
                pass
        server.stop()


# ---------------------------------------------------------------- sharded load generator
async def run_shard() -> None:
    """``--shard``: one generator process hosting whole rooms of a case.

    Line protocol on stdin/stdout with the main process: it reads one JSON spec (url, n_pub,
    room_size, sample_streams, shard, shards, clip_file), joins its rooms one at a time and
    prints ``READY``; on ``START`` it notes its CPU time and prints ``STARTED``; on
    ``STOP t0 t1`` (the window, loop time) it notes its CPU time again, asks the server for
    its sampled publishers' receive statistics, analyses its streams over [t0, t1] and
    prints ``RESULT <json>`` (``analyse_peers``' fields, ``cpu_s``: its CPU seconds between
    START and STOP, ``inbound``), then leaves the call."""
    loop = asyncio.get_running_loop()

    async def line() -> str:
        text = await loop.run_in_executor(None, sys.stdin.readline)
        if not text:
            raise SystemExit("the main process went away")
        return text.strip()

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    spec = json.loads(await line())
    data = np.load(spec["clip_file"], allow_pickle=False)
    clip = data["clip"]
    packets = [bytes(b) for b in np.split(data["packet_bytes"], data["packet_ends"][:-1])]
    peers = make_peers(spec["url"], spec["n_pub"], spec["room_size"], clip, packets,
                       spec["sample_streams"], spec["shard"], spec["shards"])
    try:
        async with aiohttp.ClientSession() as session:
            for p in peers:
                await p.start(session)
            say(f"READY {len(peers)}")
            assert await line() == "START"
            gen0 = time.process_time()
            say("STARTED")
            words = (await line()).split()
            gen1 = time.process_time()
            t0, t1 = float(words[1]), float(words[2])
            sampled = [p for p in peers if p.keep]
            inbound = [await p.ask_stats() for p in sampled]
        got = analyse_peers(peers, t0, t1)
        got.update(cpu_s=gen1 - gen0, inbound=inbound)
        say("RESULT " + json.dumps(got))
    finally:
        for p in peers:
            try:
                await p.stop()
            except Exception:
                pass


def _pin(cores: Optional[set[int]]) -> Any:
    """A ``preexec_fn`` pinning the child (and all it starts) to ``cores``; None: no pinning."""
    if not cores:
        return None
    return lambda: os.sched_setaffinity(0, cores)


async def run_case_sharded(kind: str, n_pub: int, workers: int, clip: np.ndarray,
                           packets: list[bytes], opts: CaseOptions) -> dict:
    """One case with the rooms split over ``opts.generators`` shard processes (room r on shard
    r % G), the server and the measured window driven from here. Generator CPU is the sum of
    the shards' over the window (this process only waits)."""
    assert opts.clip_file is not None
    server = Server(kind, opts.tmp / f"server-{kind}-{n_pub}.log", opts.model, workers,
                    opts.serve_args, opts.server_cores)
    shards: list[asyncio.subprocess.Process] = []
    logs = []
    try:
        url = f"ws://127.0.0.1:{server.port}/ws"
        for s in range(opts.generators):
            log = open(opts.tmp / f"shard{s}-{kind}-{n_pub}.log", "wb")
            logs.append(log)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "--shard", cwd=ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                preexec_fn=_pin(opts.generator_cores), limit=1 << 26)
            shards.append(proc)
            spec = {"url": url, "n_pub": n_pub, "room_size": opts.room_size,
                    "sample_streams": opts.sample_streams, "shard": s,
                    "shards": opts.generators, "clip_file": str(opts.clip_file)}
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(spec) + "\n").encode())

        async def tell(text: str) -> None:
            for proc in shards:
                assert proc.stdin is not None
                proc.stdin.write((text + "\n").encode())
                await proc.stdin.drain()

        async def expect(word: str) -> list[str]:
            out = []
            for i, proc in enumerate(shards):
                assert proc.stdout is not None
                text = (await proc.stdout.readline()).decode().strip()
                if not text.startswith(word):
                    raise RuntimeError(f"shard {i} said {text[:200]!r}, not {word} "
                                       f"(see {opts.tmp}/shard{i}-{kind}-{n_pub}.log)")
                out.append(text[len(word):].strip())
            return out

        loop = asyncio.get_running_loop()
        joined = loop.time()
        # the shards join their rooms one at a time, side by side: a server that stops
        # answering joins fails the case instead of the whole search's budget
        await asyncio.wait_for(expect("READY"), 60.0 + 0.5 * n_pub)
        setup_s = loop.time() - joined
        await asyncio.sleep(opts.warmup)
        m0 = server.metrics()
        cpu0, t0 = server.cpu_by_process(), loop.time()
        await tell("START")
        await expect("STARTED")
        samples = await sample_window(server, kind, opts.seconds)
        cpu1, t1 = server.cpu_by_process(), loop.time()
        m1 = server.metrics()
        await tell(f"STOP {t0!r} {t1!r}")
        parts = [json.loads(text) for text in await expect("RESULT")]
        got = {"expected": sum(p["expected"] for p in parts),
               "missing": sum(p["missing"] for p in parts),
               "late": sum(p["late"] for p in parts),
               "delays": [d for p in parts for d in p["delays"]],
               "subscriber_streams": sum(p["subscriber_streams"] for p in parts),
               "errors": sorted({e for p in parts for e in p["errors"]})[:5]}
        gen = [100.0 * p["cpu_s"] / (t1 - t0) for p in parts]
        row = case_row(kind, workers, n_pub, opts.room_size, server, cpu0, cpu1, t0, t1, m0, m1,
                       sum(gen), samples, got, opts.direct_ms,
                       [st for p in parts for st in p["inbound"]])
        row["generators"] = opts.generators
        row["join_s"] = round(setup_s, 1)   # every shard's participants joined, side by side
        row["generator_cpu_pct_by_shard"] = [round(g, 1) for g in gen]
        # a shard's own loop is the generator's unit of saturation, not the sum of them
        row["saturates_first"] = ("server" if row["server_cpu_pct"] / workers >= max(gen)
                                  else "generator")
        return row
    finally:
        for proc in shards:   # a shard still waiting for a line reads EOF and leaves
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.gather(*(proc.wait() for proc in shards)), 30)
        except asyncio.TimeoutError:
            for proc in shards:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        for log in logs:
            log.close()
        server.stop()


def parse_cores(text: Optional[str]) -> Optional[set[int]]:
    """taskset-style list: ``0-7``, ``8,10-15``; None/empty: no pinning."""
    if not text:
        return None
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def sustained(row: dict) -> bool:
    """Issue 14's rule: < 1 % late or missing frames and server-added delay p95 <= 60 ms."""
    return ("failed" not in row and row.get("late_or_missing_pct", 100.0) < 1.0
            and row.get("delay_samples", 0) > 0 and row.get("delay_p95_ms", 1e9) <= 60.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--publishers", default="8,20,40", help="comma list of N")
    ap.add_argument("--room-size", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window per case")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--forwarders", default="enhance,no-enhance,relay")
    ap.add_argument("--sample-streams", type=int, default=8,
                    help="publishers whose listeners keep payloads for delay analysis (their "
                         "send phases are spread evenly over the 20 ms frame)")
    ap.add_argument("--workers", default="1",
                    help="comma list of serve --workers values, each a case")
    ap.add_argument("--model", default=None,
                    help="enhancer weights for the enhance forwarder (default: the shipped model)")
    ap.add_argument("--data", default=None, help="folder of speech WAVs (default espeak-ng)")
    ap.add_argument("--out", default=str(RESULTS / "sfu.json"))
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness for this process and the servers it starts (negative needs "
                         "root): a shared host's other jobs otherwise set the numbers")
    ap.add_argument("--generators", type=int, default=1,
                    help="load-generator processes (shards), each hosting whole rooms; 1: "
                         "every participant in this process")
    ap.add_argument("--server-cores", default=None,
                    help="pin the server and its children to these cores (taskset-style, 0-7)")
    ap.add_argument("--generator-cores", default=None,
                    help="pin this process and the generator shards to these cores (8-15)")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra flag for mediaserver serve, repeatable "
                         "(--serve-arg=--enhancer-device --serve-arg=cuda)")
    ap.add_argument("--enhancer-device", default=None,
                    help="shorthand for --serve-arg=--enhancer-device --serve-arg=DEVICE")
    ap.add_argument("--find-max", action="store_true",
                    help="per forwarder and --workers value, step up --publishers (ascending) "
                         "until a case is not sustained (< 1 %% late or missing, server-added "
                         "p95 <= 60 ms); report the largest sustained N and the ratio to "
                         "--workers' first value")
    ap.add_argument("--steps", action="append", default=[],
                    help="with --find-max: W:N1,N2,... the publisher steps for --workers W "
                         "(repeatable; default --publishers)")
    ap.add_argument("--budget-s", type=float, default=0.0,
                    help="with --find-max: start no case once this many seconds have passed "
                         "since the start, or when the last case's duration would overrun it")
    ap.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--relay-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ice-host", default="127.0.0.1", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.relay_server:
        run_relay_server(args)
        return 0
    pin_host_addresses(["127.0.0.1"])
    tolerate_consent_stalls()
    if args.shard:
        asyncio.run(run_shard())
        return 0
    began = time.monotonic()
    if args.enhancer_device:
        args.serve_arg += ["--enhancer-device", args.enhancer_device]
    server_cores, generator_cores = parse_cores(args.server_cores), parse_cores(args.generator_cores)
    if generator_cores:
        os.sched_setaffinity(0, generator_cores)   # this process and the shards it starts
    if args.nice:
        os.nice(args.nice)   # inherited by the server processes
    tmp = RESULTS / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    clip = speech_clip(args.data, args.warmup + args.seconds + 60, tmp)
    clip = clip[: len(clip) // FRAME * FRAME]
    packets = encode_clip(clip)
    clip_file = None
    if args.generators > 1:   # the shards replay exactly these packets
        clip_file = tmp / f"clip-{os.getpid()}.npz"
        np.savez(clip_file, clip=clip,
                 packet_bytes=np.frombuffer(b"".join(packets), np.uint8),
                 packet_ends=np.cumsum([len(b) for b in packets]))
    direct = asyncio.run(direct_link(clip, packets, min(args.seconds, 10.0), args.warmup))
    print(f"direct aiortc link: mouth-to-ear p50 {direct['mouth_to_ear_p50_ms']} ms, "
          f"p95 {direct['mouth_to_ear_p95_ms']} ms (the zero of the server-added delay)",
          flush=True)
    opts = CaseOptions(args.room_size, args.seconds, args.warmup, args.sample_streams, tmp,
                       direct["mouth_to_ear_p50_ms"], args.model, list(args.serve_arg),
                       server_cores, args.generators, generator_cores, clip_file)
    rows: list[dict] = []
    publishers = [int(x) for x in args.publishers.split(",")]
    worker_list = [int(x) for x in args.workers.split(",")]
    steps = {int(w): [int(x) for x in ns.split(",")]
             for w, _, ns in (s.partition(":") for s in args.steps)}

    def one(n: int, kind: str, workers: int) -> dict:
        print(f"running {kind} with {n} publishers in rooms of {args.room_size}, "
              f"{workers} worker(s), {args.generators} generator(s) ...", flush=True)
        t = time.monotonic()
        try:
            if args.generators > 1:
                row = asyncio.run(run_case_sharded(kind, n, workers, clip, packets, opts))
            else:
                row = asyncio.run(run_case(kind, n, args.room_size, args.seconds, args.warmup,
                                           clip, packets, args.sample_streams, tmp,
                                           direct["mouth_to_ear_p50_ms"], args.model, workers,
                                           opts))
        except Exception as exc:   # a case that cannot even set up is a result too
            row = {"forwarder": kind, "workers": workers, "publishers": n,
                   "room_size": args.room_size, "failed": repr(exc)[:300]}
        row["case_wall_s"] = round(time.monotonic() - t, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_results(args, rows, direct, None)
        return row

    search: Optional[dict] = None
    try:
        if args.find_max:
            search = {"rule": "late_or_missing_pct < 1 and delay_p95_ms <= 60",
                      "by_forwarder": {}}
            for kind in args.forwarders.split(","):
                found: dict[str, Any] = {}
                for w in (worker_list if kind != "relay" else [1]):
                    best, first_fail, last_wall = None, None, 0.0
                    for n in sorted(steps.get(w, publishers)):
                        spent = time.monotonic() - began
                        if args.budget_s and spent + last_wall > args.budget_s:
                            found[str(w)] = {"stopped": f"budget: {spent:.0f} s spent"}
                            break
                        row = one(n, kind, w)
                        row["sustained"] = sustained(row)
                        last_wall = row["case_wall_s"]
                        if not row["sustained"]:
                            first_fail = n
                            break
                        best = n
                    if best is None and first_fail is not None:
                        # the first step already failed: halve (whole rooms) down to one room,
                        # so the search still brackets the maximum from below
                        n = first_fail
                        while n > args.room_size and not (
                                args.budget_s and time.monotonic() - began + last_wall
                                > args.budget_s):
                            n = max(args.room_size, n // 2 // args.room_size * args.room_size)
                            row = one(n, kind, w)
                            row["sustained"] = sustained(row)
                            last_wall = row["case_wall_s"]
                            if row["sustained"]:
                                best = n
                                break
                            first_fail = n
                    found[str(w)] = {**found.get(str(w), {}), "max_sustained": best,
                                     "first_not_sustained": first_fail}
                    write_results(args, rows, direct, search)
                base = found.get(str(worker_list[0]), {}).get("max_sustained")
                for w, f in found.items():
                    f["ratio_to_first"] = (round(f["max_sustained"] / base, 2)
                                           if base and f.get("max_sustained") else None)
                    f["enhancer"] = next(({k: r.get(k) for k in (
                        "enhancer_batch_p50", "enhancer_step_ms_p50", "enhancer_step_ms_p95")}
                        for r in rows if r["forwarder"] == kind and str(r["workers"]) == w
                        and r["publishers"] == f.get("max_sustained")), None)
                search["by_forwarder"][kind] = found
        else:
            for n, kind, workers in [(n, kind, w) for n in publishers
                                     for kind in args.forwarders.split(",")
                                     for w in (worker_list if kind != "relay" else [1])]:
                one(n, kind, workers)
    finally:
        if clip_file is not None:
            clip_file.unlink(missing_ok=True)
    write_results(args, rows, direct, search)
    header = ("forwarder", "workers", "N", "cpu %", "cpu %/pub", "generator cpu %", "server-added p50",
              "server-added p95", "mouth-to-ear p50",
              "late+missing %", "late ticks %", "enhancer batch", "step ms p50/p95")
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        if "failed" in r:
            print(f"| {r['forwarder']} | {r.get('workers', 1)} | {r['publishers']} | failed: {r['failed'][:60]} |")
            continue
        print(f"| {r['forwarder']} | {r.get('workers', 1)} | {r['publishers']} | {r['server_cpu_pct']} | "
              f"{r['cpu_pct_per_publisher']} | {r['generator_cpu_pct']} | {r['delay_p50_ms']} ms | {r['delay_p95_ms']} ms | "
              f"{r['mouth_to_ear_p50_ms']} ms | "
              f"{r['late_or_missing_pct']} | {r['server_late_tick_pct']} | "
              f"{r.get('enhancer_batch_p50') or '-'} | "
              f"{r.get('enhancer_step_ms_p50') or '-'}/{r.get('enhancer_step_ms_p95') or '-'} |")
    if search:
        print(json.dumps(search, indent=1))
    print(f"wrote {args.out}")
    return 0


def write_results(args: argparse.Namespace, rows: list[dict], direct: dict,
                  search: Optional[dict] = None) -> None:
    """Rewritten after every case, so a later crash keeps what was measured."""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "host": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "room_size": args.room_size, "seconds": args.seconds, "nice": args.nice,
        "model": args.model or "default", "sample_streams": args.sample_streams,
        "delay": "server-added = mouth-to-ear through the server - the direct link's p50",
        "direct_link": direct, "rows": rows}
    if args.generators > 1 or args.server_cores or args.generator_cores or args.serve_arg:
        doc.update(generators=args.generators, server_cores=args.server_cores,
                   generator_cores=args.generator_cores, serve_args=args.serve_arg,
                   warmup=args.warmup)
    if search is not None:
        doc["find_max"] = search
    Path(args.out).write_text(json.dumps(doc, indent=2))

if __name__ == "__main__":
    sys.exit(main())
