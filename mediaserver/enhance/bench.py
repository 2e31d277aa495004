"""``mediaserver bench enhancer|vad``: how many streams one device enhances in real time.

``enhancer``: per batch size N, the time of one hop (10 ms of audio) for the whole batch
through :meth:`Enhancer.process`, p50/p99 wall clock and p50 CPU time of the calling thread
(robust against other load on a shared machine), the streams that fit in real time, and the
per-stream cost against RNNoise measured in the same run, called straight through its C
library (one ``rnnoise_process_frame`` per 480-sample frame on a preallocated buffer).
Then the whole stage tick (20 ms frame, VAD + network, gate off) at the same sizes.
Every system gets the same input: noisy speech with pauses (``--data`` clips, or espeak-ng
speech in pink noise), each stream at its own offset. RNNoise's cost depends on its input,
so white noise would misstate it. A baseline whose package is missing is reported as missing,
with how to install it; ours is measured either way.

``vad``: the VAD gate's compute saving and quality cost on speech with natural pauses: the
same noisy signal through :class:`EnhancerStage` with the gate on and off; fraction of frames
that ran the network, CPU time, PESQ-WB/STOI against the clean speech.

Both print their table; ``--json PATH`` also writes the rows there (and says where, as an
absolute path), as ``eval`` and ``transcribe`` do. Without it nothing is written: a default
under the current folder (``benchmarks/results/...``) overwrote a checkout's committed
results, or made that tree wherever the command ran.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..config import UsageError, add_option, comma_list, comma_values, number_in
from ..devices import torch_device_problem

logger = logging.getLogger(__name__)

STREAMS = number_in(1, kind=int)   # one --streams entry: a batch size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=["enhancer", "vad"], help="what to benchmark")
    add_option(parser, "--device", default="cpu", help="cpu or cuda")
    add_option(parser, "--streams", default="1,8,64,256,1024", type=comma_list(STREAMS),
               help="batch sizes (enhancer; comma list)")
    add_option(parser, "--threads", type=int, default=1, help="torch threads (1 = one core, like RNNoise)")
    add_option(parser, "--seconds", type=float, default=4.0, help="time budget per batch size (enhancer)")
    add_option(parser, "--model", default=None, help="weights (default: shipped model; random init of the "
                                                     "default architecture if none is installed)")
    add_option(parser, "--data", default=None, help="data folder for speech/noise test clips; "
                                                    "espeak-ng speech and synthetic noise without it")
    add_option(parser, "--vad-mode", type=int, default=None, help="webrtcvad mode for the gate (vad; default: stage default)")
    add_option(parser, "--vad-atten-db", type=float, default=None, help="gate bypass attenuation (vad; default: stage default)")
    add_option(parser, "--json", default=None, metavar="PATH",
               help="also write the rows as JSON here (default: none, the table only; the "
                    "project's committed runs are benchmarks/results/enhancer_bench.json, vad_gate.json)")


def _model(path: Optional[str], device: str) -> tuple[Any, str]:
    from .model import EnhancerModel
    from .weights import WeightsError, load_model, resolve_weights_path

    try:
        return load_model(path, device=device), str(resolve_weights_path(path))
    except WeightsError as exc:
        if path is not None:
            raise UsageError(f"--model: {exc}") from None
        logger.warning("%s; timing a randomly initialised default-size model instead", exc)
        return EnhancerModel().eval().to(device), "random-init default architecture"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _time_steps(step: Callable[[], None], budget_s: float, sync: Callable[[], None],
                prepare: Callable[[], None] = lambda: None) -> tuple[list[float], list[float]]:
    """Wall and thread-CPU seconds of ``step`` (after ``prepare``, which is not timed)."""
    for _ in range(5):
        prepare()
        step()
    sync()
    walls: list[float] = []
    cpus: list[float] = []
    end = time.perf_counter() + budget_s
    while (time.perf_counter() < end and len(walls) < 2000) or len(walls) < 20:
        prepare()
        c0, w0 = time.thread_time(), time.perf_counter()
        step()
        sync()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.thread_time() - c0)
    return walls, cpus


class BenchSignal:
    """The benchmark's input: a noisy conversation (speech with pauses) at 48 kHz, cut in hops.

    ``batch(n, hop)`` gives the next ``[n, hop]`` float32 block, stream ``i`` reading the
    signal from its own offset, so a batch holds talkers and pauses in the mix a call has.
    """

    RATE = 48000

    def __init__(self, signal: np.ndarray, source: str) -> None:
        self.signal = np.asarray(signal, np.float32).reshape(-1)
        self.source = source
        self._step = 0

    def batch(self, n: int, hop: int) -> np.ndarray:
        frames = len(self.signal) // hop
        view = self.signal[: frames * hop].reshape(frames, hop)
        offsets = (np.arange(n) * 7919 + self._step) % frames  # 7919: spreads streams over the signal
        self._step += 1
        return view[offsets]


def bench_signal(data: Optional[str], seconds: float = 20.0) -> BenchSignal:
    noisy, _clean, source = _conversation(data, seconds=seconds, snr_db=10.0)
    return BenchSignal(noisy, f"{source}, 10 dB SNR, {len(noisy) / BenchSignal.RATE:.0f} s")


def bench_rnnoise(budget_s: float, signal: BenchSignal) -> dict[str, Any]:
    """RNNoise's C library, one 480-sample frame per step, over ``signal``.

    Raises ``ImportError`` (with how to install it) when pyrnnoise is missing.
    """
    from .peers import RNNoiseStream

    stream = RNNoiseStream()
    try:
        def prepare() -> None:
            stream.buf[:] = signal.batch(1, stream.FRAME)[0] * 32768.0  # RNNoise takes int16-scaled floats

        walls, cpus = _time_steps(stream.process_frame, budget_s, lambda: None, prepare)
    finally:
        stream.close()
    p50, p99 = _percentiles(walls)
    return {"system": "rnnoise-c", "frame_ms": 10.0, "frame_ms_p50": p50, "frame_ms_p99": p99,
            "cpu_ms_p50": _percentiles(cpus)[0], "frames": len(walls), "input": signal.source}


def bench_baseline(budget_s: float, signal: BenchSignal) -> dict[str, Any]:
    """RNNoise's numbers, or ``{"system", "missing": why and how to install}`` without it."""
    try:
        return bench_rnnoise(budget_s, signal)
    except ImportError as exc:
        why = f"RNNoise baseline missing: {exc}"
        logger.warning("%s; measuring ours without it", why)
        return {"system": "rnnoise-c", "missing": why}


def bench_enhancer(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from .streaming import Enhancer

    torch.set_num_threads(max(1, args.threads))
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device")
    model, weights = _model(args.model, device)
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)
    signal = bench_signal(args.data)
    rn = bench_baseline(min(args.seconds, 3.0), signal)
    rows = []
    for n in comma_values(args.streams, STREAMS):
        enh = Enhancer(model, device=device, capacity=n)
        slots = [enh.allocate() for _ in range(n)]
        audio = signal.batch(n, enh.hop)

        def prepare() -> None:
            nonlocal audio
            audio = signal.batch(n, enh.hop)

        walls, cpus = _time_steps(lambda: enh.process(slots, audio), args.seconds, sync, prepare)
        p50, p99 = _percentiles(walls)
        cpu50 = _percentiles(cpus)[0]
        hop_ms = 1000.0 * enh.hop / enh.sample_rate
        row = {
            "what": "enhancer_hop", "device": device, "streams": n, "hop_ms": hop_ms, "step_ms_p50": p50, "step_ms_p99": p99,
            "cpu_ms_p50": cpu50, "steps": len(walls), "threads": args.threads,
            "per_stream_ms_p50": p50 / n, "per_stream_cpu_ms": cpu50 / n,
            "realtime": p99 < hop_ms,
            "rt_streams_est": int(n * hop_ms / p50),  # at this batch size, wall clock as measured
            "rt_streams_per_core": int(n * hop_ms / cpu50),  # CPU time: what one free core sustains
        }
        if "cpu_ms_p50" in rn:
            row["x_rnnoise_cpu"] = (cpu50 / n) / rn["cpu_ms_p50"]
        rows.append(row)
        logger.info("N=%d p50 %.3f ms p99 %.3f ms", n, p50, p99)
    rows += _bench_stage(model, args, [r["streams"] for r in rows], signal)
    return {"rows": rows, "rnnoise": rn, "weights": weights, "input": signal.source,
            "model": dict(model.config),
            "macs_per_second": _macs(model), "host": platform.node(), "cpu": platform.processor(),
            "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _bench_stage(model: Any, args: argparse.Namespace, sizes: list[int],
                 signal: BenchSignal) -> list[dict[str, Any]]:
    """Whole media-clock tick (20 ms frame: VAD for every stream + network for all, gate off =
    worst case, every stream talking) through EnhancerStage.process_sync."""
    import tempfile

    from .stage import FRAME, EnhancerStage
    from .weights import save_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "enhancer.pt"
        save_model(model.cpu() if args.device == "cpu" else model, path)
        for n in sizes:
            stage = EnhancerStage(path, device=args.device, threads=args.threads, gate=False, capacity=n)
            handles = [stage.open() for _ in range(n)]
            items: list[tuple[Any, np.ndarray]] = []

            def prepare() -> None:
                frames = signal.batch(n, FRAME)
                items[:] = [(h, frames[i]) for i, h in enumerate(handles)]

            walls, cpus = _time_steps(lambda: stage.process_sync(items), args.seconds / 2, lambda: None, prepare)
            stage.shutdown()
            p50, p99 = _percentiles(walls)
            cpu50 = _percentiles(cpus)[0]
            rows.append({"what": "stage_tick", "device": args.device, "streams": n, "hop_ms": 20.0,
                         "step_ms_p50": p50, "step_ms_p99": p99, "cpu_ms_p50": cpu50, "steps": len(walls),
                         "threads": args.threads, "per_stream_cpu_ms": cpu50 / n, "realtime": p99 < 20.0,
                         "rt_streams_est": int(n * 20.0 / p50), "rt_streams_per_core": int(n * 20.0 / cpu50)})
            logger.info("stage N=%d tick p50 %.3f ms", n, p50)
    return rows


def _macs(model: Any) -> int:
    from .model import macs_per_second

    return macs_per_second(model)


def print_enhancer(result: dict[str, Any]) -> None:
    rn = result["rnnoise"]
    print(f"weights: {result['weights']}  model {result['model']}  {result['macs_per_second'] / 1e6:.0f} MMAC/s")
    print(f"input: {result['input']}")
    if "missing" in rn:
        print(f"{rn['missing']} (no 'x RNNoise' column)")
    else:
        print(f"RNNoise (C, same run): {rn['frame_ms_p50']:.3f} ms wall / {rn['cpu_ms_p50']:.3f} ms CPU per 10 ms frame")
    head = (f"{'what':<12} {'device':<6} {'streams':>7} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms':>8} {'ms/stream':>10} "
            f"{'RT?':>4} {'RT(wall)':>8} {'RT(core)':>8} {'x RNNoise':>9}")
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        x_rn = f"{r['x_rnnoise_cpu']:>9.2f}" if "x_rnnoise_cpu" in r else f"{'':>9}"
        print(f"{r['what']:<12} {r['device']:<6} {r['streams']:>7} {r['step_ms_p50']:>8.3f} {r['step_ms_p99']:>8.3f} "
              f"{r['cpu_ms_p50']:>8.3f} {r['per_stream_cpu_ms']:>10.4f} {'yes' if r['realtime'] else 'no':>4} "
              f"{r['rt_streams_est']:>8} {r['rt_streams_per_core']:>8} {x_rn}")


# ---- VAD gate -------------------------------------------------------------------------------
def _conversation(data: Optional[str], seconds: float = 60.0, snr_db: float = 10.0) -> tuple[np.ndarray, np.ndarray, str]:
    """(noisy, clean) at 48 kHz: utterances separated by 0.5–6 s pauses (turn taking), one noise clip."""
    from ..audio import read_audio, resample

    rng = np.random.default_rng(7)
    rate = 48000
    parts: list[np.ndarray] = []
    if data:
        files = sorted((Path(data) / "speech" / "test").glob("*.wav"))
        noises = sorted((Path(data) / "noise" / "test").glob("*.wav"))
        source = f"{data} (speech/test, noise/test)"
        pick = [files[int(i)] for i in rng.permutation(len(files))]
        total = 0.0
        for f in pick:
            x, r = read_audio(f)
            x = resample(x[: int(6 * r)], r, rate)
            parts += [np.zeros(int(rng.uniform(0.5, 6.0) * rate), np.float32), x]
            total += len(parts[-1]) / rate + len(parts[-2]) / rate
            if total >= seconds:
                break
        clean = np.concatenate(parts)
        noise_file = noises[int(np.random.default_rng(int(snr_db)).integers(len(noises)))]
        source += f", noise {noise_file.name}"
        n, r = read_audio(noise_file)
        n = resample(n, r, rate)
    else:
        import shutil
        import subprocess
        import tempfile

        if shutil.which("espeak-ng") is None:
            raise UsageError("--data: this benchmark needs --data or espeak-ng (apt-get install espeak-ng)")
        source = "espeak-ng + pink noise"
        sentences = ["The meeting starts at nine.", "Can everyone hear me now?", "Let us look at the numbers.",
                     "I think that is fine.", "Please send me the report tomorrow.", "Thanks, see you later."]
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(int(seconds // 4)):
                wav = Path(tmp) / "s.wav"
                subprocess.run(["espeak-ng", "-w", str(wav), sentences[i % len(sentences)]], check=True)
                x, r = read_audio(wav)
                parts += [np.zeros(int(rng.uniform(0.3, 3.0) * rate), np.float32), resample(x, r, rate)]
        clean = np.concatenate(parts)
        white = np.fft.rfft(rng.standard_normal(len(clean)))
        n = np.fft.irfft(white / np.sqrt(np.arange(1, len(white) + 1)), n=len(clean)).astype(np.float32)
    if len(n) < len(clean):
        n = np.tile(n, len(clean) // len(n) + 1)
    n = n[: len(clean)]
    speech_power = np.mean(clean[np.abs(clean) > 1e-4] ** 2)
    n = n * math.sqrt(speech_power / (np.mean(n ** 2) * 10 ** (snr_db / 10)))
    gain = 0.1 / math.sqrt(float(np.mean((clean + n) ** 2)))
    clean, noisy = clean * gain, (clean + n) * gain
    pad = -len(clean) % 960
    return (np.pad(noisy, (0, pad)).astype(np.float32), np.pad(clean, (0, pad)).astype(np.float32), source)


def _active_fraction(clean: np.ndarray) -> float:
    """Fraction of 20 ms frames of the clean speech within 40 dB of its loudest frame."""
    e = np.mean(clean.reshape(-1, 960) ** 2, axis=1)
    return float(np.mean(e > e.max() * 1e-4))


def bench_vad(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ..audio import resample
    from .metrics import pesq_wb, stoi
    from .stage import EnhancerStage
    from .vad import GateConfig
    from .weights import resolve_weights_path, save_model

    defaults = GateConfig()
    gate_config = GateConfig(mode=defaults.mode if args.vad_mode is None else args.vad_mode,
                             atten_db=defaults.atten_db if args.vad_atten_db is None else args.vad_atten_db)

    torch.set_num_threads(max(1, args.threads))
    model, weights = _model(args.model, args.device)
    tmp = None
    if weights.startswith("random"):
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        path = Path(tmp.name) / "enhancer.pt"
        save_model(model, path)
    else:
        path = resolve_weights_path(args.model)
    results: dict[str, Any] = {"weights": weights, "gate": vars(gate_config), "conditions": []}
    for snr in (10.0, 20.0, 30.0):
        noisy, clean, source = _conversation(args.data, snr_db=snr)
        ref16 = resample(clean, 48000, 16000)
        cond: dict[str, Any] = {"snr_db": snr, "seconds": len(noisy) / 48000, "source": source,
                                "speech_fraction": _active_fraction(clean)}
        cond["noisy"] = {"pesq_wb": pesq_wb(ref16, resample(noisy, 48000, 16000)),
                         "stoi": stoi(ref16, resample(noisy, 48000, 16000))}
        for gate in (False, True):
            stage = EnhancerStage(path, device=args.device, threads=args.threads, gate=gate,
                                  gate_config=gate_config)
            h = stage.open()
            out = np.empty_like(noisy)
            c0 = time.thread_time()
            for i in range(0, len(noisy), 960):
                out[i:i + 960] = stage.process_sync([(h, noisy[i:i + 960])])[0].enhanced
            cpu = time.thread_time() - c0
            y = np.concatenate([out[stage.latency:], np.zeros(stage.latency, np.float32)])
            y16 = resample(y, 48000, 16000)
            cond["gate" if gate else "always"] = {
                "net_fraction": stage.frames_net / max(1, stage.ticks), "cpu_s": cpu,
                "cpu_ms_per_frame": 1000.0 * cpu / stage.ticks,
                "pesq_wb": pesq_wb(ref16, y16), "stoi": stoi(ref16, y16)}
            stage.shutdown()
        a, g = cond["always"], cond["gate"]
        cond["compute_saving"] = 1.0 - g["net_fraction"] / max(a["net_fraction"], 1e-9)
        cond["cpu_saving"] = 1.0 - g["cpu_s"] / a["cpu_s"]
        cond["pesq_cost"] = a["pesq_wb"] - g["pesq_wb"]
        results["conditions"].append(cond)
    if tmp is not None:
        tmp.cleanup()
    return results


def print_vad(result: dict[str, Any]) -> None:
    print(f"weights: {result['weights']}  gate: {result['gate']}")
    head = f"{'SNR':>4} {'speech%':>7} {'net% gate':>9} {'CPU saved':>9} {'PESQ noisy':>10} {'PESQ always':>11} {'PESQ gate':>9} {'STOI always':>11} {'STOI gate':>9}"
    print(head)
    print("-" * len(head))
    for c in result["conditions"]:
        print(f"{c['snr_db']:>4.0f} {100 * c['speech_fraction']:>7.1f} {100 * c['gate']['net_fraction']:>9.1f} "
              f"{100 * c['cpu_saving']:>8.1f}% {c['noisy']['pesq_wb']:>10.3f} {c['always']['pesq_wb']:>11.3f} "
              f"{c['gate']['pesq_wb']:>9.3f} {c['always']['stoi']:>11.3f} {c['gate']['stoi']:>9.3f}")


def main(args: argparse.Namespace) -> int:
    problem = torch_device_problem(args.device)   # before anything loads: one line, not a traceback
    if problem:
        raise UsageError(f"--device {args.device}: {problem}")
    if args.target == "enhancer":
        result = bench_enhancer(args)
        print_enhancer(result)
        rn = result["rnnoise"]
        baseline = ({"rnnoise_missing": rn["missing"]} if "missing" in rn else
                    {"rnnoise_frame_ms_p50": rn["frame_ms_p50"], "rnnoise_cpu_ms_p50": rn["cpu_ms_p50"]})
        payload: Any = [dict(r, **baseline, weights=result["weights"], input=result["input"])
                        for r in result["rows"]]
    else:
        result = bench_vad(args)
        print_vad(result)
        payload = result
    if not args.json:
        print("no JSON written (--json PATH writes the rows)")
        return 0
    path = Path(args.json).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {path}")
    return 0
