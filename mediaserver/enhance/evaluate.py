"""``mediaserver eval --data ../shared/data``: our enhancer against its peers on test mixtures.

Two deterministic sets, built from the *test* splits only (speech, noise, rir/test):

* main: speech × noise at −5, 0, 5, 10, 15 dB SNR (cycled), every 4th mixture reverberant;
  PESQ-WB, STOI, SI-SDR and DNSMOS SIG/BAK/OVRL per system and SNR.
* reference: 120 mixtures at 0/5/10 dB, no reverb, PESQ-WB and STOI: the comparison set of
  the issue (noisy 1.33, RNNoise 1.50, DTLN 1.79, GTCRN 1.84, DFN3 1.89 PESQ-WB).
* ood (with ``--extra DIR``, the folder ``build_speech.py`` wrote): out of domain for every
  model here. Speech in two languages no training file uses (``DIR/speech/test``: Belarusian,
  Nynorsk; 2–4 lines joined with 0.3 s pauses to ≥ 4 s), the extra test noises (café, stadium
  crowd: ``data/extra/noise/test``) and the measured test rooms (``data/extra/rir/test``) on
  every third mixture, at −5…15 dB; scored like main, DNSMOS included.

Reverberant mixtures are scored against the direct path + first 50 ms of the room response
(what the model is trained to keep). "ours" runs the server's streaming Enhancer at 48 kHz
(16 kHz mixture upsampled, enhanced, downsampled, delay removed). Peers whose package does
not import are skipped with a note. Everything is seeded: the same data gives the same table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from scipy.signal import fftconvolve

from ..audio import read_audio, resample
from ..config import UsageError, add_option, comma_list, comma_values
from .metrics import RATE, intrusive, load_dnsmos
from .peers import PEERS, load_peer

logger = logging.getLogger(__name__)

SNRS_MAIN = (-5.0, 0.0, 5.0, 10.0, 15.0)
SNRS_REF = (0.0, 5.0, 10.0)
ALL_SYSTEMS = ("noisy", "ours", *PEERS)
MAX_SECONDS = 8.0
LEVEL_DBFS = -26.0


OOD_MIN_SECONDS = 4.0
OOD_GAP_SECONDS = 0.3


@dataclass(frozen=True)
class Mixture:
    set: str
    index: int
    speech: str  # file name, or several joined by "+" (ood)
    noise: str
    snr_db: float
    rir: Optional[str]


@dataclass(frozen=True)
class Sources:
    """Where one set's speech, noise and rooms come from (test splits only)."""

    speech: Path
    noise: Path
    rir: Path


def set_sources(data: Path, extra: Optional[Path]) -> dict[str, Sources]:
    test = Sources(data / "speech" / "test", data / "noise" / "test", data / "rir" / "test")
    sources = {"main": test, "reference": test}
    if extra is not None:
        sources["ood"] = Sources(extra / "speech" / "test", data / "extra" / "noise" / "test",
                                 data / "extra" / "rir" / "test")
    return sources


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.wav"))


def build_plan(data: Path, n_main: int, n_ref: int, seed: int = 2026,
               extra: Optional[Path] = None, n_ood: int = 0) -> list[Mixture]:
    sources = set_sources(data, extra)
    plan = []
    sets = [("main", n_main, SNRS_MAIN, 4, 0), ("reference", n_ref, SNRS_REF, 0, 1)]
    if extra is not None and n_ood:
        sets.append(("ood", n_ood, SNRS_MAIN, 3, 2))
    for name, count, snrs, reverb_every, offset in sets:
        src = sources[name]
        speech, noise, rirs = _names(src.speech), _names(src.noise), _names(src.rir)
        if not speech or not noise:
            raise FileNotFoundError(f"{src.speech} and {src.noise} must hold .wav files (set {name})")
        rng = np.random.default_rng(seed + offset)
        order = rng.permutation(len(speech))
        for i in range(count):
            if name == "ood":  # short lines: join consecutive ones (of this shuffle) up to ≥ 4 s
                picked, total, k = [], 0.0, i * 4
                while total < OOD_MIN_SECONDS and len(picked) < 6:
                    f = speech[order[k % len(speech)]]
                    picked.append(f)
                    total += len(_load(src.speech / f)) / RATE + OOD_GAP_SECONDS  # _load caches
                    k += 1
                utterance = "+".join(picked)
            else:
                utterance = speech[order[i % len(speech)]]
            plan.append(Mixture(
                set=name, index=i, speech=utterance,
                noise=noise[int(rng.integers(len(noise)))], snr_db=snrs[i % len(snrs)],
                rir=rirs[int(rng.integers(len(rirs)))] if rirs and reverb_every and i % reverb_every == reverb_every - 1 else None))
    return plan


def make_mixture(data: Path, m: Mixture, seed: int = 2026, extra: Optional[Path] = None) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, reference) at 16 kHz, deterministic for a given mixture."""
    src = set_sources(data, extra)[m.set]
    rng = np.random.default_rng([seed, m.index, {"main": 0, "reference": 1}.get(m.set, 2)])
    gap = np.zeros(int(OOD_GAP_SECONDS * RATE), np.float32)
    parts = [_load(src.speech / f) for f in m.speech.split("+")]
    s = np.concatenate([x for p in parts for x in (p, gap)][:-1])[: int(MAX_SECONDS * RATE)]
    ref = s
    if m.rir:
        rir = _load(src.rir / m.rir)
        peak = int(np.argmax(np.abs(rir)))
        norm = np.abs(rir[peak]) + 1e-8
        early = rir.copy()
        early[peak + int(0.05 * RATE):] = 0
        s = fftconvolve(s, rir / norm)[peak: peak + len(ref)].astype(np.float32)
        ref = fftconvolve(ref, early / norm)[peak: peak + len(ref)].astype(np.float32)
    n = _load(src.noise / m.noise)
    if len(n) < len(s):
        n = np.tile(n, int(math.ceil(len(s) / len(n))) + 1)
    start = int(rng.integers(0, len(n) - len(s) + 1))
    n = n[start: start + len(s)]
    p_s = float(np.mean(s ** 2)) + 1e-10
    p_n = float(np.mean(n ** 2)) + 1e-10
    noisy = s + n * math.sqrt(p_s / (p_n * 10 ** (m.snr_db / 10)))
    gain = 10 ** (LEVEL_DBFS / 20) / (math.sqrt(float(np.mean(noisy ** 2))) + 1e-9)
    gain = min(gain, 0.99 / (float(np.abs(noisy).max()) + 1e-9))
    return (noisy * gain).astype(np.float32), (ref * gain).astype(np.float32)


_cache: dict[str, np.ndarray] = {}


def _load(path: Path) -> np.ndarray:
    key = str(path)
    if key not in _cache:
        x, rate = read_audio(path)
        _cache[key] = resample(x, rate, RATE)
    return _cache[key]


class _Worker:
    """Holds the loaded systems for one process (peers and models load once)."""

    def __init__(self, data: Path, systems: list[str], model: Optional[str], dnsmos: bool,
                 extra: Optional[Path] = None) -> None:
        import torch

        torch.set_num_threads(1)
        self.data = data
        self.extra = extra
        self.systems: dict[str, Any] = {}
        self.notes: list[str] = []
        for name in systems:
            if name == "noisy":
                self.systems[name] = None
            elif name == "ours":
                from .streaming import Enhancer
                from .weights import load_model

                self.systems[name] = Enhancer(load_model(model), capacity=1)
            else:
                peer, why = load_peer(name)
                if peer is None:
                    self.notes.append(why)
                else:
                    self.systems[name] = peer
        self.dnsmos = None
        if dnsmos:
            self.dnsmos, why = load_dnsmos()
            if why:
                self.notes.append(why)

    def run(self, m: Mixture) -> list[dict[str, Any]]:
        from .offline import enhance_signal

        noisy, ref = make_mixture(self.data, m, extra=self.extra)
        rows = []
        for name, system in self.systems.items():
            t0 = time.perf_counter()
            if name == "noisy":
                est = noisy
            elif name == "ours":
                est = enhance_signal(system, noisy, RATE)
            else:
                est = system.enhance(noisy)
            elapsed = time.perf_counter() - t0
            row: dict[str, Any] = {"set": m.set, "index": m.index, "system": name, "snr_db": m.snr_db,
                                   "reverb": m.rir is not None, "speech": m.speech, "noise": m.noise,
                                   "rtf": elapsed / (len(noisy) / RATE)}
            row.update(intrusive(ref, est))
            if m.set in ("main", "ood") and self.dnsmos is not None:
                row.update(self.dnsmos(est))
            rows.append(row)
        return rows


_worker: Optional[_Worker] = None


def _init(*args: Any) -> None:
    global _worker
    _worker = _Worker(*args)


def _run_one(m: Mixture) -> list[dict[str, Any]]:
    assert _worker is not None
    return _worker.run(m)


METRICS_MAIN = ("pesq_wb", "stoi", "si_sdr", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
METRICS_REF = ("pesq_wb", "stoi", "si_sdr")


def summarize(rows: list[dict[str, Any]], set_name: str, metrics: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    systems = list(dict.fromkeys(r["system"] for r in rows if r["set"] == set_name))
    for system in systems:
        mine = [r for r in rows if r["set"] == set_name and r["system"] == system]
        groups: dict[str, list[dict[str, Any]]] = {"all": mine}
        for snr in sorted({r["snr_db"] for r in mine}):
            groups[f"{snr:g}"] = [r for r in mine if r["snr_db"] == snr]
        out[system] = {
            key: {"n": len(g), **{k: _mean([r.get(k, math.nan) for r in g]) for k in (*metrics, "rtf")}}
            for key, g in groups.items()
        }
    return out


def weights_record(spec: Optional[str]) -> dict[str, Any]:
    """What "ours" ran: ``{"name", "file", "sha256"}`` of the ``--model`` weights (a registry
    name, a model folder or a file; None: the shipped default). ``name`` is the registry's
    (model.json) name, else the folder or file stem, as the server's ``model_version``."""
    from .registry import ModelRegistry, RegistryError
    from .weights import resolve_weights_path, sha256_of

    path = resolve_weights_path(spec)
    try:
        name = ModelRegistry().resolve(spec)[0]
    except RegistryError:
        name = path.parent.name if path.name == "enhancer.pt" else path.stem
    return {"name": name, "file": str(path), "sha256": sha256_of(path)}


def _read_reused(paths: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of earlier runs' JSON (comma list), each tagged ``reused_from`` (the file it
    is read from now), and one ``{"path", "weights"}`` per file (its run's weights, None for a
    run that did not record them)."""
    rows: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    for p in comma_values(paths):
        run = json.loads(Path(p).read_text())
        files.append({"path": p, "weights": run.get("weights")})
        rows.extend({**r, "reused_from": p} for r in run["rows"])
    return rows, files


def reuse_summary(rows: list[dict[str, Any]], files: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"rows", "systems", "files": [{"path", "weights", "rows"}]}``: which rows of the
    result come from earlier runs (``--reuse``) rather than this one; empty without it."""
    reused = [r for r in rows if "reused_from" in r]
    return {"rows": len(reused), "systems": sorted({r["system"] for r in reused}),
            "files": [{**f, "rows": sum(1 for r in reused if r["reused_from"] == f["path"])} for f in files]}


def _merge(rows: list[dict[str, Any]], old: list[dict[str, Any]], plan: list[Mixture],
           systems: list[str]) -> list[dict[str, Any]]:
    """Add an earlier run's rows for other systems, only for mixtures of this exact plan."""
    keys = {(m.set, m.index, m.speech, m.noise, m.snr_db) for m in plan}
    seen = set()
    extra = []
    for r in old:
        key = (r["set"], r["index"], r["speech"], r["noise"], r["snr_db"])
        if r["system"] not in systems and key in keys and (r["system"], key) not in seen:
            seen.add((r["system"], key))
            extra.append(r)
    order = {s: i for i, s in enumerate(ALL_SYSTEMS)}
    return sorted(rows + extra, key=lambda r: (r["set"], order.get(r["system"], 99), r["index"]))


def _mean(values: list[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def format_table(summary: dict[str, Any], metrics: tuple[str, ...], title: str) -> str:
    lines = [title]
    header = f"{'system':<8} {'SNR':>5} {'n':>4} " + " ".join(f"{m:>11}" for m in metrics)
    lines.append(header)
    lines.append("-" * len(header))
    for system, groups in summary.items():
        for key, g in groups.items():
            vals = " ".join(f"{g[m]:>11.3f}" if not math.isnan(g[m]) else f"{'-':>11}" for m in metrics)
            lines.append(f"{system:<8} {key:>5} {g['n']:>4} {vals}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--data", required=True, help="data folder with speech/, noise/, rir/ (test splits are used)")
    add_option(parser, "--json", default=None, help="write the per-mixture rows and summaries here")
    add_option(parser, "--systems", default=",".join(ALL_SYSTEMS), type=comma_list(),
               help=f"comma-separated subset of {','.join(ALL_SYSTEMS)}")
    add_option(parser, "--limit", type=int, default=None, help="at most N mixtures per set (quick runs)")
    add_option(parser, "--main-count", type=int, default=25, help="mixtures in the main set (5 per SNR)")
    add_option(parser, "--reference-count", type=int, default=120, help="mixtures in the reference set")
    add_option(parser, "--extra", default=None, help="folder build_speech.py wrote: adds the out-of-domain set "
                                                     "(its speech/test, data/extra noise and rir test splits)")
    add_option(parser, "--ood-count", type=int, default=60, help="mixtures in the out-of-domain set (with --extra)")
    add_option(parser, "--model", default=None, help="enhancer weights (default: shipped model)")
    add_option(parser, "--jobs", type=int, default=1, help="worker processes (the machine has 2 cores)")
    add_option(parser, "--no-dnsmos", action="store_true", help="skip DNSMOS (faster)")
    add_option(parser, "--reuse", default=None, type=comma_list(),
               help="JSON of earlier runs (comma list): their rows for systems not run now are merged in "
                    "(same data and set sizes, e.g. peers scored once, ours re-scored per checkpoint)")


def main(args: argparse.Namespace) -> int:
    data = Path(args.data)
    systems = comma_values(args.systems)
    unknown = [s for s in systems if s not in ALL_SYSTEMS]
    if unknown:
        raise UsageError(f"--systems: unknown system(s) {unknown}; choose from {list(ALL_SYSTEMS)}")
    n_main, n_ref = args.main_count, args.reference_count
    extra = Path(args.extra) if args.extra else None
    n_ood = args.ood_count if extra is not None else 0
    if args.limit is not None:
        n_main, n_ref, n_ood = min(n_main, args.limit), min(n_ref, args.limit), min(n_ood, args.limit)
    try:
        plan = build_plan(data, n_main, n_ref, extra=extra, n_ood=n_ood)
    except FileNotFoundError as exc:
        raise UsageError(f"--data / --extra: {exc}") from None
    if "ours" in systems:
        from .weights import WeightsError, load_model

        try:
            load_model(args.model)
        except WeightsError as exc:
            raise UsageError(f"--model: {exc}") from None
    # read now: --json may name the same file, and partial writes overwrite it during the run
    reused, reused_files = _read_reused(args.reuse) if args.reuse else ([], [])
    weights = weights_record(args.model) if "ours" in systems else None
    record: dict[str, Any] = {"weights": weights}
    init_args = (data, systems, args.model, not args.no_dnsmos, extra)
    probe = _Worker(*init_args)  # also tells which peers are available, once
    notes = list(probe.notes)
    for note in notes:
        print(f"note: {note}")
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    if args.jobs <= 1:
        global _worker
        _worker = probe
        for i, m in enumerate(plan):
            rows.extend(_run_one(m))
            if (i + 1) % 10 == 0:
                logger.info("%d/%d mixtures (%.0f s)", i + 1, len(plan), time.time() - t0)
                _write(args.json, data, systems, notes, rows, t0, partial=True, **record)
    else:
        del probe
        with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=init_args) as pool:
            for i, r in enumerate(pool.map(_run_one, plan, chunksize=2)):
                rows.extend(r)
                if (i + 1) % 10 == 0:
                    logger.info("%d/%d mixtures (%.0f s)", i + 1, len(plan), time.time() - t0)
                    _write(args.json, data, systems, notes, rows, t0, partial=True, **record)
    if args.reuse:
        rows = _merge(rows, reused, plan, systems)
    record["reused"] = reuse_summary(rows, reused_files)
    if weights is not None:
        print(f"ours: {weights['name']} ({weights['file']}, sha256 {weights['sha256']})")
    if args.reuse:
        print(f"reused: {record['reused']['rows']} rows of {', '.join(record['reused']['systems']) or 'no system'} "
              f"from {args.reuse}")
    main_summary = summarize(rows, "main", METRICS_MAIN)
    ref_summary = summarize(rows, "reference", METRICS_REF)
    print(format_table(main_summary, METRICS_MAIN, f"\nMain set ({n_main} mixtures, SNR -5..15 dB, 1/4 reverberant)"))
    print(format_table(ref_summary, METRICS_REF, f"\nReference set ({n_ref} mixtures at 0/5/10 dB)"))
    if n_ood:
        print(format_table(summarize(rows, "ood", METRICS_MAIN), METRICS_MAIN,
                           f"\nOut-of-domain set ({n_ood} mixtures: unseen languages, noises and rooms, -5..15 dB, 1/3 reverberant)"))
    if args.json:
        _write(args.json, data, systems, notes, rows, t0, partial=False, **record)
        print(f"wrote {args.json}")
    return 0


def _write(json_path: Optional[str], data: Path, systems: list[str], notes: list[str],
           rows: list[dict[str, Any]], t0: float, partial: bool, *,
           weights: Optional[dict[str, Any]] = None, reused: Optional[dict[str, Any]] = None) -> None:
    """Write rows and summaries; also every 10 mixtures (partial=True) so a long run leaves
    something behind if it is stopped. ``weights``: what "ours" ran (:func:`weights_record`,
    None when "ours" is not run); ``reused``: :func:`reuse_summary` (known once the run ends:
    None in a partial file, whose rows are all this run's)."""
    if not json_path:
        return
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "data": str(data), "systems": systems, "notes": notes, "partial": partial,
        "weights": weights, "reused": reused,
        "main": summarize(rows, "main", METRICS_MAIN), "reference": summarize(rows, "reference", METRICS_REF),
        "ood": summarize(rows, "ood", METRICS_MAIN),
        "rows": rows, "seconds": time.time() - t0,
    }, indent=1, default=float))
