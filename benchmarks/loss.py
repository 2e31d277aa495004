"""Loss/jitter benchmark of the receive path: ours (InboundAudio) against aiortc's stock path.

Packet level: speech from ``--data`` (LibriSpeech test split, 16 kHz) is encoded into real
Opus packets (20 ms, in-band FEC on, as Chrome does once ``useinbandfec=1`` is negotiated),
sent through a seeded ``Impairment`` (random or Gilbert–Elliott loss, jitter with
reordering) and received by

* ``ours``:  ``InboundAudio`` pulled by a 20 ms media clock;
* ``aiortc``: aiortc 1.16's ``JitterBuffer(capacity=16, prefetch=4)`` + its PyAV Opus
  decoder, exactly as ``RTCRtpReceiver`` drives them, consumed by the same 20 ms clock
  (one decoded frame per tick, silence when none is queued).

Both run in one process on identical packet and arrival sequences. The impairment stops
after 70 % of the clip so the delay after the last burst can be read.

Measured per scenario: PESQ-WB and STOI against the clean 16 kHz source (each second of
the reference aligned to the output separately, so a changed delay is not counted as
distortion), PLCMOS v2 (non-intrusive), receive-path delay (output lag minus the 20 ms
packetisation and 6.5 ms Opus look-ahead) p50/p95 and its value 2 s and 5 s after the
last lost packet, concealed / FEC-recovered shares, and clicks (sample jumps at frame
boundaries more than 8x the neighbouring slope) per minute.

Usage: python benchmarks/loss.py [--data ../shared/data] [--seconds 40] [--full]
Prints a table; writes benchmarks/results/loss.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import correlate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mediaserver.audio import read_audio, resample  # noqa: E402
from mediaserver.config import UsageError, add_option, check_env, comma_list, comma_values  # noqa: E402
from mediaserver.media.impair import Impairment, ImpairmentConfig  # noqa: E402
from mediaserver.media.inbound import InboundAudio  # noqa: E402
from mediaserver.media.opus import OpusEncoder  # noqa: E402

logger = logging.getLogger(__name__)

FRAME = 960
PHASE_MS = 7.3  # the media clock ticks are not aligned with packet sends
FIXED_MS = 20.0 + 312 / 48.0  # packetisation + Opus look-ahead: not the receive path's doing
IMPAIRED_SHARE = 0.7


@dataclass
class Scenario:
    name: str
    loss: float
    burst: float
    jitter_ms: float


def scenarios(full: bool) -> list[Scenario]:
    out = [Scenario("clean", 0.0, 1.0, 0.0)]
    for p in (2, 5, 10, 20):
        out.append(Scenario(f"loss{p}%", p / 100, 1.0, 0.0))
        out.append(Scenario(f"loss{p}%-burst3", p / 100, 3.0, 0.0))
    jit_loss = [(0, 1.0), (2, 1.0), (5, 1.0), (10, 1.0), (10, 3.0), (20, 3.0)] if full else [
        (0, 1.0), (10, 3.0)]
    for j in (20, 60):
        for p, b in jit_loss:
            tag = f"loss{p}%" + ("-burst3" if b > 1 else "") if p else "noloss"
            out.append(Scenario(f"jitter{j}-{tag}", p / 100, b, float(j)))
    return out


def scenario_name(text: str) -> str:
    """The argparse ``type`` of one ``--only`` entry: a scenario of the full grid (a misspelt
    name is refused, not a run of zero scenarios that exits 0)."""
    names = [s.name for s in scenarios(True)]
    if text not in names:
        raise ValueError(f"no scenario {text!r} (known: {', '.join(names)})")
    return text


def chosen_scenarios(only: str, full: bool) -> list[Scenario]:
    """``--only``'s scenarios in grid order (any of the full grid), else the grid (``full``)."""
    keep = set(comma_values(only or None, scenario_name))
    return [s for s in scenarios(True) if s.name in keep] if keep else scenarios(full)


# ----------------------------------------------------------------------------- input
def load_speech(data: Path, seconds: float) -> np.ndarray:
    """Concatenate test utterances (sorted, deterministic) up to ``seconds``, 16 kHz."""
    folder = data / "speech" / "test"
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise SystemExit(f"no speech WAVs under {folder} (pass --data)")
    parts, total = [], 0
    for f in files:
        x, rate = read_audio(f)
        if rate != 16000:
            x = resample(x, rate, 16000)
        x = x / (np.max(np.abs(x)) + 1e-9) * 0.5
        parts += [x, np.zeros(4000, dtype=np.float32)]
        total += len(x) + 4000
        if total >= seconds * 16000:
            break
    return np.concatenate(parts)[: int(seconds * 16000)].astype(np.float32)


def network(n_packets: int, sc: Scenario, seed: int) -> list[tuple[float, int]]:
    """(arrival_ms, packet index) in arrival order; impairment only in the first 70 %."""
    imp = Impairment(ImpairmentConfig(loss=sc.loss, burst=sc.burst, jitter_ms=sc.jitter_ms, seed=seed))
    cut = int(n_packets * IMPAIRED_SHARE)
    events = []
    for i in range(n_packets):
        send = (i + 1) * 20.0
        delays = imp.decide() if i < cut else [0.0]
        for d in delays:
            events.append((send + d + 0.5, i))  # 0.5 ms loopback transit
    events.sort()
    return events


# ----------------------------------------------------------------------------- paths
def run_ours(packets: list[bytes], events, n_ticks: int) -> tuple[np.ndarray, list[str], dict]:
    ib = InboundAudio()
    out = np.zeros(n_ticks * FRAME, dtype=np.float32)
    kinds = []
    ei = 0
    for k in range(n_ticks):
        now = k * 20.0 + PHASE_MS
        while ei < len(events) and events[ei][0] <= now:
            a, i = events[ei]
            ib.push(packets[i], seq=(1000 + i) & 0xFFFF, timestamp=(12345 + i * FRAME) & 0xFFFFFFFF,
                    ssrc=42, arrival_ms=a)
            ei += 1
        f = ib.pull(now_ms=now)
        out[k * FRAME : (k + 1) * FRAME] = f.pcm
        kinds.append(f.kind)
    return out, kinds, ib.stats()


def run_aiortc(packets: list[bytes], events, n_ticks: int) -> tuple[np.ndarray, list[str], dict]:
    from aiortc.codecs.opus import OpusDecoder as AvOpusDecoder
    from aiortc.jitterbuffer import JitterBuffer as AiortcJitterBuffer
    from aiortc.rtp import RtpPacket

    jb = AiortcJitterBuffer(capacity=16, prefetch=4)  # rtcrtpreceiver.py:295
    dec = AvOpusDecoder()
    queue: list[np.ndarray] = []
    out = np.zeros(n_ticks * FRAME, dtype=np.float32)
    kinds = []
    ei = 0
    decoded = 0
    for k in range(n_ticks):
        now = k * 20.0 + PHASE_MS
        while ei < len(events) and events[ei][0] <= now:
            _, i = events[ei]
            pkt = RtpPacket(payload_type=111, sequence_number=(1000 + i) & 0xFFFF,
                            timestamp=(12345 + i * FRAME) & 0xFFFFFFFF, ssrc=42, payload=packets[i])
            pkt._data = pkt.payload  # what depayload() does for Opus
            _, frame = jb.add(pkt)
            if frame is not None:
                for af in dec.decode(frame):
                    pcm = af.to_ndarray().reshape(-1, 2).astype(np.float32).mean(axis=1) / 32768.0
                    queue.append(pcm)
                    decoded += 1
            ei += 1
        if queue:
            pcm = queue.pop(0)
            out[k * FRAME : k * FRAME + len(pcm)] = pcm[:FRAME]
            kinds.append("normal")
        else:
            kinds.append("silence")
    return out, kinds, {"frames_decoded": float(decoded), "queue_left": float(len(queue))}


# ----------------------------------------------------------------------------- metrics
def window_lags(y48: np.ndarray, x48: np.ndarray, win: int = 24000, max_lag: int = 48000):
    """(output time s, lag samples) per 0.5 s window where the speech match is clear."""
    res = []
    for a in range(max_lag, len(y48) - win, win):
        w = y48[a : a + win]
        if np.sqrt(np.mean(w * w)) < 0.01:
            continue
        seg = x48[max(0, a - max_lag) : a + win]
        xc = correlate(seg, w, mode="valid", method="fft")
        j = int(np.argmax(xc))
        ref = seg[j : j + win]
        c = float(np.dot(ref, w) / (np.linalg.norm(ref) * np.linalg.norm(w) + 1e-9))
        if c > 0.75:
            lag = a - (max(0, a - max_lag) + j)
            res.append((a / 48000.0, lag))
    return res


def aligned(y16: np.ndarray, x16: np.ndarray, chunk: int = 16000, max_lag: int = 16000) -> np.ndarray:
    """Output re-cut so each reference second lines up with where the output played it."""
    out = np.zeros_like(x16)
    last = 0
    for c in range(0, len(x16) - chunk + 1, chunk):
        ref = x16[c : c + chunk]
        seg = y16[c : c + chunk + max_lag]
        if len(seg) < chunk:
            break
        if np.sqrt(np.mean(ref * ref)) > 0.005:
            xc = correlate(seg, ref, mode="valid", method="fft")
            last = int(np.argmax(xc))
        out[c : c + chunk] = y16[c + last : c + last + chunk] if c + last + chunk <= len(y16) else 0
    return out


def clicks(y: np.ndarray) -> int:
    d = np.abs(np.diff(y))
    n = 0
    for b in range(FRAME, len(y) - FRAME, FRAME // 8):  # every 2.5 ms: boundaries and time-scaling
        for pos in (b,):
            jump = d[pos - 1]
            local = 0.5 * (d[pos - 121 : pos - 1].mean() + d[pos : pos + 120].mean()) + 1e-6
            if jump > 0.02 and jump > 8 * local:
                n += 1
    return n


def quality(y48: np.ndarray, x16: np.ndarray, plcmos_model) -> dict:
    from pesq import pesq
    from pystoi import stoi

    y16 = resample(y48, 48000, 16000)[: len(x16) + 16000]
    deg = aligned(y16, x16)
    res = {
        "pesq_wb": float(pesq(16000, x16, deg, "wb")),
        "stoi": float(stoi(x16, deg, 16000, extended=False)),
    }
    if plcmos_model is not None:
        scores = [plcmos_model(deg[i : i + 160000])["plcmos"] for i in range(0, len(deg) - 80000, 160000)]
        res["plcmos"] = float(np.mean(scores))
    return res


def evaluate(name: str, y48, kinds, stats, x16, x48, last_loss_s, plcmos_model, t_end_s, n_speech) -> dict:
    lags = window_lags(y48, x48)
    delays = np.array([lag / 48.0 + PHASE_MS - FIXED_MS for _, lag in lags]) if lags else np.array([np.nan])

    def delay_at(t: float) -> float:
        cands = [lag / 48.0 + PHASE_MS - FIXED_MS for s, lag in lags if s >= t][:3]
        return float(np.median(cands)) if cands else float("nan")

    kinds = kinds[: n_speech]  # the trailing ticks after the clip are not part of the call
    n = len(kinds)
    res = {
        "path": name,
        "delay_p50_ms": float(np.nanpercentile(delays, 50)),
        "delay_p95_ms": float(np.nanpercentile(delays, 95)),
        "delay_2s_after_ms": delay_at(last_loss_s + 2.0) if last_loss_s else float("nan"),
        "delay_5s_after_ms": delay_at(last_loss_s + 5.0) if last_loss_s else float("nan"),
        "delay_end_ms": delay_at(t_end_s - 4.0),
        "concealed_share": sum(k in ("plc", "cng") for k in kinds) / n,
        "fec_share": kinds.count("fec") / n,
        "silence_share": kinds.count("silence") / n,
        "clicks_per_min": clicks(y48) / (len(y48) / 48000 / 60),
    }
    res.update(quality(y48, x16, plcmos_model))
    res["stats"] = stats
    return res


# ----------------------------------------------------------------------------- server mode
# Ours: the real server (``mediaserver serve --no-enhance`` subprocess) between two real
# headless clients. Stock: the same clients' parts around an in-process aiortc relay
# (RemoteStreamTrack -> RTCRtpSender, i.e. aiortc's JitterBuffer + PyAV decode + re-encode).
# The publisher leg is impaired with the same seeded policy in both.

E2E_FIXED_MS = 20.0 + 2 * 312 / 48.0  # packetisation + two Opus look-aheads (publisher, relay)


def _recorder_class():
    from mediaserver import client as client_mod

    class TimedRecorder(client_mod.StreamRecorder):
        """StreamRecorder that also keeps (position, lateness) per packet for delay windows."""

        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            self.timed: list[tuple[int, float]] = []

        def add(self, payload: bytes, ssrc: int, timestamp: int, arrival: float, codec: str = "opus") -> None:
            n = len(self.lateness_ms)
            super().add(payload, ssrc, timestamp, arrival, codec)
            if len(self.lateness_ms) > n:
                late = self.lateness_ms[-1]
                pos = int(round((arrival - late / 1000.0 - self._t0) * 48000))
                self.timed.append((pos, late))

    return TimedRecorder


def _e2e_delays(rec_audio, timed, x48, offset: int):
    """Per 0.5 s window: (time s, end-to-end delay ms) = position lag + packet lateness."""
    x_tl = np.zeros(len(rec_audio), dtype=np.float32)
    if offset < len(x_tl):
        n = min(len(x48), len(x_tl) - offset)
        x_tl[offset : offset + n] = x48[:n]
    pos = np.array([p for p, _ in timed]) if timed else np.zeros(1)
    late = np.array([l for _, l in timed]) if timed else np.zeros(1)
    # lateness = arrival - the time its position implies; delay = position lag + lateness
    out = []
    for t, lag in window_lags(rec_audio, x_tl):
        a = int(t * 48000)
        sel = (pos >= a) & (pos < a + 24000)
        extra = float(np.median(late[sel])) if sel.any() else 0.0
        out.append((t - offset / 48000, lag / 48.0 + extra))
    return out


async def _negotiate(a, b) -> None:
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)


async def stock_relay_run(samples: np.ndarray, impairment: Impairment, seconds: float):
    """Publisher -> aiortc relay (stock receive path) -> subscriber, all on 127.0.0.1."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from mediaserver.client import FileSource
    from mediaserver.patches import impair_peer_connection
    from mediaserver.patches import tap_receiver

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # no ICE servers: aiortc's default would contact a public STUN server
    pub, relay_in, relay_out, sub = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(4))
    rec = _recorder_class()("pub", t0)
    try:
        src = FileSource(samples)
        pub.addTransceiver(src, direction="sendonly")
        out_tr = relay_out.addTransceiver("audio", direction="sendonly")

        @relay_in.on("track")
        def on_track(track) -> None:
            out_tr.sender.replaceTrack(track)

        await _negotiate(relay_out, sub)
        for tr in sub.getTransceivers():
            tap_receiver(tr.receiver, lambda p, arr: rec.add(p.payload, p.ssrc, p.timestamp, arr / 1000.0),
                         lambda: loop.time() * 1000.0)
        await _negotiate(pub, relay_in)
        impair_peer_connection(pub, impairment)
        await asyncio.sleep(seconds + 2.0)
        end = loop.time()
    finally:
        for pc in (pub, relay_in, relay_out, sub):
            await pc.close()
    return rec, rec.audio(end), int(round((src.start - t0) * 48000)), {
        "frames_received": rec.frames, "frames_missing": rec.concealed()}


async def server_path_run(samples: np.ndarray, impairment: Impairment, seconds: float, url: str,
                          room: str):
    """Publisher -> the real server -> subscriber, both headless clients of this project."""
    from mediaserver import client as client_mod

    class BenchClient(client_mod.HeadlessClient):
        def _impair(self) -> None:  # the benchmark's own seeded policy (stops after 70 %)
            if samples is not None and self.samples is not None:
                from mediaserver.patches import impair_peer_connection

                impair_peer_connection(self.pc, impairment)

    def ns(identity: str, duration: float) -> argparse.Namespace:
        """The client's settings as ``mediaserver client`` parses them (every default it has,
        today's and tomorrow's: a hand-built Namespace fell behind the client's flags)."""
        from mediaserver.cli import build_parser

        return build_parser("client").parse_args(
            ["client", "--url", url, "--room", room, "--identity", identity,
             "--duration", f"{duration}", "--ice-host", "127.0.0.1"])

    original = client_mod.StreamRecorder
    client_mod.StreamRecorder = _recorder_class()
    try:
        sub = BenchClient(ns("sub", seconds + 6.0), None)
        pub = BenchClient(ns("pub", seconds + 4.0), samples)
        sub_task = asyncio.create_task(sub.run())
        await asyncio.sleep(1.5)
        await pub.run()
        summary = await sub_task
    finally:
        client_mod.StreamRecorder = original
    rec = sub.recorders.get("pub")
    if rec is None:
        raise RuntimeError(f"subscriber got no audio from the server: {summary}")
    offset = int(round((pub.source.start - sub.t0) * 48000))
    # The publisher asks for stats just before it leaves: its receive path and the clock.
    stats = dict((pub.server_stats or {}).get("participants", {}).get("pub", {}))
    stats["clock"] = (pub.server_stats or {}).get("clock", {})
    return rec, rec.audio(sub.t0 + seconds + 5.0), offset, stats


def start_server(port: int, bitrate: int) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediaserver", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--ice-host", "127.0.0.1", "--no-enhance", "--opus-bitrate", str(bitrate),
         "--workers", "1"],   # one process, as in the earlier results (the default is one per core)
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=open(f"/tmp/loss-bench-server-{port}.log", "w"))
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except Exception:
            if proc.poll() is not None:
                raise SystemExit(f"server exited ({proc.returncode}), see /tmp/loss-bench-server-{port}.log")
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not come up")


def main_server(args: argparse.Namespace) -> int:
    from mediaserver.patches import pin_host_addresses

    pin_host_addresses(["127.0.0.1"])
    x16 = load_speech(Path(args.data), args.seconds)
    x48 = resample(x16, 16000, 48000)
    n_packets = len(x48) // FRAME
    plcmos_model = None
    if not args.no_plcmos:
        from speechmos.plcmos import PLCMOS

        plcmos_model = PLCMOS()
    chosen = [s for s in scenarios(False) if s.name in (
        "clean", "loss5%", "loss10%", "loss10%-burst3", "loss20%-burst3", "jitter60-noloss",
        "jitter20-loss10%-burst3")]
    if args.only:
        chosen = chosen_scenarios(args.only, True)
    proc = start_server(args.port, args.server_bitrate)
    results = []
    print(f"{'scenario':26s} {'path':7s} {'PESQ':>5s} {'STOI':>5s} {'PLCMOS':>6s} {'d50':>6s} {'d95':>6s}"
          f" {'d+2s':>6s} {'d+5s':>6s} {'miss%':>6s}")
    try:
        for k, sc in enumerate(chosen):
            row: dict = {"scenario": sc.__dict__, "packets": n_packets}
            for name in ("ours", "aiortc"):
                imp = Impairment(ImpairmentConfig(loss=sc.loss, burst=sc.burst, jitter_ms=sc.jitter_ms,
                                                  seed=args.seed,
                                                  active_packets=int(n_packets * IMPAIRED_SHARE)))
                if name == "ours":
                    rec, audio, offset, stats = asyncio.run(server_path_run(
                        x48, imp, args.seconds, f"http://127.0.0.1:{args.port}/", f"bench{k}"))
                else:
                    rec, audio, offset, stats = asyncio.run(stock_relay_run(x48, imp, args.seconds))
                delays = _e2e_delays(audio, rec.timed, x48, offset)
                d = np.array([v for _, v in delays]) - E2E_FIXED_MS if delays else np.array([np.nan])
                last_s = n_packets * IMPAIRED_SHARE * 0.02

                def delay_at(t: float) -> float:
                    c = [v - E2E_FIXED_MS for s_, v in delays if s_ >= t][:3]
                    return float(np.median(c)) if c else float("nan")

                y48 = audio[max(0, offset):]
                res = {
                    "path": name,
                    "delay_p50_ms": float(np.nanpercentile(d, 50)),
                    "delay_p95_ms": float(np.nanpercentile(d, 95)),
                    "delay_2s_after_ms": delay_at(last_s + 2.0) if sc.loss or sc.jitter_ms else float("nan"),
                    "delay_5s_after_ms": delay_at(last_s + 5.0) if sc.loss or sc.jitter_ms else float("nan"),
                    "missing_share": rec.concealed() / max(1, n_packets),
                    "dropped_by_impairment": imp.dropped,
                    "clicks_per_min": clicks(y48[: len(x48)]) / (args.seconds / 60),
                    "server_stats": stats,
                }
                res.update(quality(y48, x16, plcmos_model))
                row[name] = res
                print(f"{sc.name:26s} {name:7s} {res['pesq_wb']:5.2f} {res['stoi']:5.3f} "
                      f"{res.get('plcmos', float('nan')):6.2f} {res['delay_p50_ms']:6.1f} "
                      f"{res['delay_p95_ms']:6.1f} {res['delay_2s_after_ms']:6.1f} "
                      f"{res['delay_5s_after_ms']:6.1f} {100 * res['missing_share']:6.1f}", flush=True)
            results.append(row)
    finally:
        proc.terminate()
        proc.wait(10)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": "loss",
        "mode": "server: publisher client -> mediaserver serve --no-enhance -> subscriber client, vs "
                "publisher -> in-process aiortc relay (stock JitterBuffer+PyAV decode+re-encode) -> subscriber",
        "speech_seconds": args.seconds, "seed": args.seed, "impaired_share": IMPAIRED_SHARE,
        "server_opus_bitrate": args.server_bitrate,
        "delay_note": "receive-path delay = end-to-end delay - 20 ms packetisation - 2 x 6.5 ms Opus look-ahead",
        "missing_note": "missing = 20 ms frames absent at the subscriber (the server conceals instead)",
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=float))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_option(parser, "--data", default="/work/shared/data", help="data folder with speech/test")
    add_option(parser, "--seconds", type=float, default=40.0, help="speech per scenario")
    add_option(parser, "--seed", type=int, default=1, help="impairment seed")
    add_option(parser, "--full", action="store_true", help="full jitter x loss grid")
    add_option(parser, "--no-plcmos", action="store_true", help="skip PLCMOS (slow)")
    add_option(parser, "--only", type=comma_list(scenario_name), default="",
               help="comma-separated scenario names (any of the --full grid)")
    add_option(parser, "--mode", choices=("packet", "server"), default="packet",
               help="packet: InboundAudio vs aiortc JB at packet level; server: through the real server")
    add_option(parser, "--port", type=int, default=18931, help="server port (server mode)")
    add_option(parser, "--server-bitrate", type=int, default=96000,
               help="server Opus bitrate (server mode; aiortc's relay encoder uses 96 kb/s)")
    add_option(parser, "--out", default=None, help="JSON (default results/loss.json or loss_server.json)")
    args = parser.parse_args(argv)
    try:
        check_env(parser, args)   # a MEDIASERVER_* text that is no value for its flag (else ignored)
    except UsageError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING)
    if args.out is None:
        args.out = str(Path(__file__).parent / "results" / ("loss.json" if args.mode == "packet"
                                                            else "loss_server.json"))
    if args.mode == "server":
        return main_server(args)

    x16 = load_speech(Path(args.data), args.seconds)
    x48 = resample(x16, 16000, 48000)
    enc = OpusEncoder(bitrate=32000, fec=True, packet_loss_perc=10)
    n_packets = len(x48) // FRAME
    packets = [enc.encode(x48[i * FRAME : (i + 1) * FRAME]) for i in range(n_packets)]
    n_ticks = n_packets + 40  # room for the buffers' delay
    plcmos_model = None
    if not args.no_plcmos:
        from speechmos.plcmos import PLCMOS

        plcmos_model = PLCMOS()

    chosen = chosen_scenarios(args.only, args.full)
    results = []
    header = (f"{'scenario':26s} {'path':7s} {'PESQ':>5s} {'STOI':>5s} {'PLCMOS':>6s} {'d50':>6s} {'d95':>6s}"
              f" {'d+2s':>6s} {'d+5s':>6s} {'conc%':>6s} {'fec%':>5s} {'sil%':>5s} {'clk/m':>6s}")
    print(header)
    for sc in chosen:
        events = network(n_packets, sc, args.seed)
        arrived = {i for _, i in events}
        lost = [i for i in range(n_packets) if i not in arrived]
        late = [i for a, i in events if a - (i + 1) * 20.0 > 40.0]
        last = max(lost + late) if (lost or late) else None
        last_loss_s = (last + 1) * 0.02 if last is not None else None
        row = {"scenario": sc.__dict__, "packets": n_packets, "lost": len(lost)}
        for name, fn in (("ours", run_ours), ("aiortc", run_aiortc)):
            t0 = time.perf_counter()
            y48, kinds, stats = fn(packets, events, n_ticks)
            cpu = time.perf_counter() - t0
            res = evaluate(name, y48, kinds, stats, x16, x48, last_loss_s, plcmos_model, n_ticks * 0.02,
                           n_packets)
            res["receive_cpu_us_per_frame"] = cpu / n_ticks * 1e6
            row[name] = res
            print(f"{sc.name:26s} {name:7s} {res['pesq_wb']:5.2f} {res['stoi']:5.3f} "
                  f"{res.get('plcmos', float('nan')):6.2f} {res['delay_p50_ms']:6.1f} {res['delay_p95_ms']:6.1f} "
                  f"{res['delay_2s_after_ms']:6.1f} {res['delay_5s_after_ms']:6.1f} "
                  f"{100 * res['concealed_share']:6.1f} {100 * res['fec_share']:5.1f} "
                  f"{100 * res['silence_share']:5.1f} {res['clicks_per_min']:6.1f}", flush=True)
        results.append(row)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": "loss",
        "mode": "packet-level (InboundAudio vs aiortc JitterBuffer+PyAV decoder, same packets)",
        "speech_seconds": args.seconds,
        "seed": args.seed,
        "impaired_share": IMPAIRED_SHARE,
        "opus": {"bitrate": 32000, "fec": True, "packet_loss_perc": 10},
        "delay_note": "receive-path delay = output lag - 20 ms packetisation - 6.5 ms Opus look-ahead",
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=float))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
