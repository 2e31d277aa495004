"""Transport benchmark: what the server costs clean speech on a clean loopback link.

Clean speech (an espeak-ng sentence, plus ``--test-files`` clips of the shared LibriSpeech test
split when ``--data`` is given) is sent by one ``mediaserver client`` and recorded by another
through a real ``mediaserver serve`` on 127.0.0.1, no loss, enhancement off (``--no-enhance``)
and on. Next to it, the same file through one and two offline Opus encode/decode passes at
the same bitrate: ffmpeg libopus (``-application voip``, its default complexity 10) and the
project's own encoder (media/opus.py) with the settings the client and the server use.

Per case: PESQ-WB, PESQ-NB and STOI of the recording against the sent file, aligned by ONE
lag for the whole file (a playout that jumps mid-file is counted as the damage it is), the
number of playout jumps seen in the recording (each second's best lag against the first
one, a change of more than 1 ms), and, where the client reports it, the server's own count
of time-scaling operations on the sender's stream (``accelerate`` / ``expand``).

``--baseline-tree DIR`` also runs everything from another checkout (e.g. a ``git worktree``
of the commit before a fix), so before and after come from the same run on the same machine.

    python benchmarks/transport.py [--data ../shared/data] [--test-files 2]
        [--baseline-tree /tmp/base] [--out benchmarks/results/transport.json]

Prints a table and writes the JSON (with the load average at start and end).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from scipy.signal import correlate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediaserver.audio import read_audio, resample, write_audio  # noqa: E402

RATE = 48000
LEAD_S = 2.0    # silence sent before the speech: the listener's subscription is negotiated by then
SENTENCE = ("The quick brown fox jumps over the lazy dog. Please call Stella and ask her to "
            "bring these things with her from the store: six spoons of fresh snow peas, five "
            "thick slabs of blue cheese, and maybe a snack for her brother Bob.")


# ---- inputs -----------------------------------------------------------------------------------
def espeak_clip(tmp: Path) -> np.ndarray:
    raw = tmp / "espeak.raw.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(raw), SENTENCE], check=True,
                   capture_output=True)
    audio, rate = read_audio(raw)
    audio = resample(audio, rate, RATE)
    return (0.5 * audio / (np.max(np.abs(audio)) + 1e-9)).astype(np.float32)


def test_clips(data: Path, count: int) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted((data / "speech" / "test").glob("*.wav"))[:count]:
        audio, rate = read_audio(path)
        audio = resample(audio, rate, RATE)
        out[path.stem] = (0.5 * audio / (np.max(np.abs(audio)) + 1e-9)).astype(np.float32)
    return out


# ---- scoring ----------------------------------------------------------------------------------
def score(ref48: np.ndarray, out48: np.ndarray) -> dict[str, Any]:
    """PESQ-WB/NB and STOI with one global lag, and the playout jumps per second."""
    from pesq import pesq
    from pystoi import stoi

    x16 = resample(ref48, RATE, 16000)
    y16 = resample(out48, RATE, 16000)
    y16 = np.concatenate([y16, np.zeros(len(x16), np.float32)])  # any lag the recording allows
    xc = correlate(y16, x16, mode="valid", method="fft")
    lag = int(np.argmax(xc))
    deg = y16[lag: lag + len(x16)]
    x8, d8 = resample(x16, 16000, 8000), resample(deg, 16000, 8000)
    # each loud second's own best lag (within +-40 ms of the global one)
    lags = []
    for c in range(0, len(x16) - 16000 + 1, 16000):
        ref = x16[c: c + 16000]
        if np.sqrt(np.mean(ref ** 2)) < 0.02:
            continue
        lo = max(0, lag + c - 640)
        seg = y16[lo: lag + c + 16000 + 640]
        k = int(np.argmax(correlate(seg, ref, mode="valid", method="fft")))
        lags.append((lo + k - c) / 16.0)   # ms
    jumps = int(np.sum(np.abs(np.diff(lags)) > 1.0)) if len(lags) > 1 else 0
    return {"pesq_wb": round(float(pesq(16000, x16, deg, "wb")), 3),
            "pesq_nb": round(float(pesq(8000, x8, d8, "nb")), 3),
            "stoi": round(float(stoi(x16, deg, 16000, extended=False)), 3),
            "lag_ms": round(lag / 16.0, 1), "playout_jumps": jumps,
            "lag_spread_ms": round(float(np.ptp(lags)), 2) if lags else 0.0}


# ---- offline references -----------------------------------------------------------------------
def ffmpeg_passes(x: np.ndarray, passes: int, bitrate: int, tmp: Path) -> np.ndarray:
    src = tmp / "ff_in.wav"
    write_audio(src, x, RATE)
    for k in range(passes):
        enc, dec = tmp / f"ff{k}.opus", tmp / f"ff{k}.wav"
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(src), "-c:a", "libopus",
                        "-b:a", str(bitrate), "-application", "voip", str(enc)], check=True)
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(enc), "-ar", str(RATE),
                        "-ac", "1", str(dec)], check=True)
        src = dec
    y, _ = read_audio(src)
    return y


def own_passes(x: np.ndarray, passes: int, tree: Path, settings: dict) -> np.ndarray:
    """Encode/decode with ``tree``'s own media/opus.py (a subprocess: its code, not ours)."""
    with tempfile.TemporaryDirectory() as d:
        np.save(Path(d) / "x.npy", x)
        code = ("import sys, json, numpy as np\n"
                f"sys.path.insert(0, {str(tree)!r})\n"
                "from mediaserver.media.opus import OpusEncoder, OpusDecoder\n"
                f"x = np.load({str(Path(d) / 'x.npy')!r})\n"
                f"kw = json.loads({json.dumps(json.dumps(settings))})\n"
                f"for _ in range({passes}):\n"
                "    e, dec = OpusEncoder(**kw), OpusDecoder()\n"
                "    x = np.concatenate([x, np.zeros(960 * 2, np.float32)])\n"
                "    x = np.concatenate([dec.decode(e.encode(x[i:i + 960])).copy()"
                " for i in range(0, len(x) - 959, 960)])\n"
                f"np.save({str(Path(d) / 'y.npy')!r}, x)\n")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=tree)
        return np.load(Path(d) / "y.npy")


def default_encoder_settings(tree: Path) -> dict:
    """The encoder settings ``tree``'s client and server use by default (its own code says)."""
    code = ("import sys, json, inspect\n"
            f"sys.path.insert(0, {str(tree)!r})\n"
            "from mediaserver.media.opus import OpusEncoder\n"
            "sig = inspect.signature(OpusEncoder.__init__)\n"
            "print(json.dumps({k: p.default for k, p in sig.parameters.items()"
            " if k in ('bitrate', 'complexity', 'fec', 'packet_loss_perc')}))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=tree, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- through the server -----------------------------------------------------------------------
class Server:
    def __init__(self, tree: Path, log: Path, *extra: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mediaserver", "serve", "--host", "127.0.0.1", "--port", "0",
             "--ice-host", "127.0.0.1", "--workers", "1", *extra],   # one process (default: per core)
            cwd=tree, env=env, stdout=subprocess.PIPE,
            stderr=self.log)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited early, see {log}")
            m = re.search(rb"http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.url = f"http://127.0.0.1:{int(m.group(1))}/"
                return
        raise RuntimeError("server did not start")

    def participants(self) -> int:
        import urllib.request

        with urllib.request.urlopen(self.url + "healthz", timeout=5) as resp:
            return int(json.loads(resp.read())["participants"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def client(tree: Path, url: str, room: str, identity: str, *extra: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.Popen(
        [sys.executable, "-m", "mediaserver", "client", "--url", url, "--room", room,
         "--identity", identity, "--ice-host", "127.0.0.1", *extra],
        cwd=tree, env=env, stdout=subprocess.PIPE, stderr=open(log, "wb"))


def summary(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=180)
    text = out.decode()
    return json.loads(text[text.find("{"):])


def through_server(tree: Path, server: Server, name: str, x: np.ndarray, tmp: Path,
                   codec: str = "opus") -> dict:
    """A sends ``x`` (after LEAD_S of silence) with ``codec``, B (Opus) records; returns the
    recording and stats."""
    sent = np.concatenate([np.zeros(int(LEAD_S * RATE), np.float32), x])
    wav = tmp / f"{name}.send.wav"
    write_audio(wav, sent, RATE)
    room = f"t{int(time.time() * 1000) % 10**8}"
    seconds = len(sent) / RATE
    b = client(tree, server.url, room, "B", "--duration", "600", "--record-dir",
               str(tmp / name), log=tmp / f"{name}.B.log")
    deadline = time.monotonic() + 60
    while server.participants() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    a = client(tree, server.url, room, "A", "--send", str(wav), "--duration", f"{seconds + 3:.1f}",
               *(["--codec", codec] if codec != "opus" else []), log=tmp / f"{name}.A.log")
    sa = summary(a)
    time.sleep(1.0)   # A stopped sending 1 s of silence before leaving: the tail has arrived
    b.send_signal(signal.SIGTERM)   # B leaves and prints its summary
    sb = summary(b)
    if "A" not in sb.get("remote", {}):
        raise RuntimeError(f"B recorded nothing from A (see {tmp / (name + '.B.log')})")
    rec, _ = read_audio(sb["remote"]["A"]["file"])
    view = sa.get("server_view") or {}
    return {"recording": rec, "concealed": sb["remote"]["A"]["concealed"],
            "server_accelerate": view.get("accelerate"), "server_expand": view.get("expand"),
            "server_jb_delay_ms": view.get("current_delay_ms"),
            "server_jb_target_ms": view.get("target_delay_ms")}


def band_energy_db(x: np.ndarray, lo_hz: float, hi_hz: float) -> float:
    """Energy of ``x`` (48 kHz) between the two frequencies, dB relative to its total."""
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / RATE)
    band = spec[(f >= lo_hz) & (f < hi_hz)].sum()
    return round(float(10 * np.log10(band / (spec.sum() + 1e-20) + 1e-20)), 1)


def noisy(x: np.ndarray, data: Optional[Path], snr_db: float, seed: int = 7) -> np.ndarray:
    """``x`` plus a noise of the shared test split (or pink-ish noise) at ``snr_db``."""
    rng = np.random.default_rng(seed)
    files = sorted((data / "noise" / "test").glob("*.wav")) if data else []
    if files:
        n, rate = read_audio(files[0])
        n = resample(n, rate, RATE)
        n = np.tile(n, len(x) // len(n) + 1)[: len(x)]
    else:
        from scipy.signal import lfilter

        n = lfilter([1.0], [1.0, -0.95], rng.standard_normal(len(x))).astype(np.float32)
    gain = np.sqrt(np.mean(x ** 2) / (np.mean(n ** 2) + 1e-12) / 10 ** (snr_db / 10))
    return (x + gain * n).astype(np.float32)


def narrowband_rows(tree: Path, data: Optional[Path], clips: dict[str, np.ndarray], tmp: Path,
                    snr_db: float, codec: str, add: Any) -> None:
    """A G.711 publisher sends noisy speech; enhancement off and on, judged against the clean
    speech (PESQ-NB against its 4 kHz band; PESQ-WB and STOI; energy above 4 kHz)."""
    for mode in ("off", "on"):
        server = Server(tree, tmp / f"nb-{mode}.server.log",
                        *(["--no-enhance"] if mode == "off" else []))
        try:
            for name, x in clips.items():
                try:
                    got = through_server(tree, server, f"nb-{mode}-{name}", noisy(x, data, snr_db),
                                         tmp, codec=codec)
                except Exception as exc:
                    add({"clip": name, "path": f"{codec} publisher, noisy, enhancement {mode}",
                         "failed": repr(exc)[:300]})
                    continue
                rec = got.pop("recording")
                add({"clip": name, "path": f"{codec} publisher, noisy {snr_db:g} dB, enhancement {mode}",
                     **got, **score(x, rec),
                     "above_4khz_db": band_energy_db(rec, 4000.0, 24000.0),
                     "clean_above_4khz_db": band_energy_db(x, 4000.0, 24000.0)})
        finally:
            server.stop()


# ---- main -------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="the shared data folder (speech/test/*.wav)")
    ap.add_argument("--test-files", type=int, default=2, help="LibriSpeech test clips (with --data)")
    ap.add_argument("--baseline-tree", default=None, help="another checkout run the same way")
    ap.add_argument("--bitrate", type=int, default=32000, help="offline references' bitrate")
    ap.add_argument("--modes", default="off,on", help="enhancement modes through the server")
    ap.add_argument("--narrowband", default=None, metavar="CODEC",
                    help="also: a pcmu/pcma publisher sending noisy speech, enhancement off/on "
                         "(the enhancer on 8 kHz narrowband input)")
    ap.add_argument("--snr-db", type=float, default=5.0, help="noise level for --narrowband")
    ap.add_argument("--skip-clean", action="store_true", help="only the --narrowband cases")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness for this process and the servers and clients it starts "
                         "(negative needs root): a shared host's other jobs otherwise set the numbers")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transport.json"))
    args = ap.parse_args()
    if args.nice:
        os.nice(args.nice)   # inherited by the servers and clients
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is needed", file=sys.stderr)
            return 2
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="transport-"))
    clips = {"espeak": espeak_clip(tmp)}
    if args.data:
        clips.update(test_clips(Path(args.data), args.test_files))
    trees = [("current", ROOT)]
    if args.baseline_tree:
        trees.insert(0, ("baseline", Path(args.baseline_tree).resolve()))
    rows: list[dict] = []

    def add(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    for name, x in ({} if args.skip_clean else clips).items():
        for passes in (1, 2):
            add({"clip": name, "path": f"ffmpeg libopus {passes} pass", **score(
                x, ffmpeg_passes(x, passes, args.bitrate, tmp))})
        for label, tree in trees:
            settings = default_encoder_settings(tree)
            add({"clip": name, "path": f"{label} own encoder 2 passes", "settings": settings,
                 **score(x, own_passes(x, 2, tree, settings))})
    for label, tree in ([] if args.skip_clean else trees):
        for mode in args.modes.split(","):
            server = Server(tree, tmp / f"{label}-{mode}.server.log",
                            *(["--no-enhance"] if mode == "off" else []))
            try:
                for name, x in clips.items():
                    try:
                        got = through_server(tree, server, f"{label}-{mode}-{name}", x, tmp)
                    except Exception as exc:   # a failed case is a result too
                        add({"clip": name, "path": f"{label} server, enhancement {mode}",
                             "failed": repr(exc)[:300]})
                        continue
                    rec = got.pop("recording")
                    add({"clip": name, "path": f"{label} server, enhancement {mode}", **got,
                         **score(x, rec)})
            finally:
                server.stop()
    if args.narrowband:
        narrowband_rows(ROOT, Path(args.data) if args.data else None, clips, tmp, args.snr_db,
                        args.narrowband, add)
    out = {"host": {"cpus": os.cpu_count(), "loadavg_start": load_start,
                    "loadavg_end": os.getloadavg(), "nice": args.nice},
           "trees": {label: str(tree) for label, tree in trees}, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("\n| clip | path | PESQ-WB | PESQ-NB | STOI | playout jumps | server time-scaling |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['clip']} | {r['path']} | failed: {r['failed'][:80]} |")
            continue
        ts = (f"{r['server_accelerate']:.0f} acc / {r['server_expand']:.0f} exp"
              if r.get("server_accelerate") is not None else "–")
        hf = f" (above 4 kHz {r['above_4khz_db']} dB)" if "above_4khz_db" in r else ""
        print(f"| {r['clip']} | {r['path']}{hf} | {r['pesq_wb']} | {r['pesq_nb']} | {r['stoi']} | "
              f"{r['playout_jumps']} | {ts} |")
    print(f"load average start {load_start}, end {os.getloadavg()}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
