"""The enhancer on 8 kHz narrowband input (a G.711 publisher), offline through the server's stage.

Noisy speech (an espeak-ng sentence and ``--test-files`` clips of the shared LibriSpeech test
split, mixed with the first noise of the shared test split at each ``--snr-db``) goes two
ways into ``mediaserver enhance`` (the very EnhancerStage the server runs, VAD gate included):
wideband as sent, and through the server's G.711 path (``G711Encoder`` -> PCMU ->
``G711Decoder``, 48 -> 8 -> 48 kHz). Scored against the clean speech: PESQ-WB, PESQ-NB, STOI
(raw and enhanced), the energy above 4 kHz (hiss the model would add where the publisher
has no band) and the enhanced/raw level ratio (speech suppression shows as a lower ratio and
STOI). ``benchmarks/transport.py --narrowband pcmu`` measures the same through a real server.

    python benchmarks/narrowband.py --data ../shared/data [--test-files 2] [--snr-db 5,15]

Prints a table; writes benchmarks/results/narrowband.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from mediaserver.audio import read_audio, write_audio  # noqa: E402
from mediaserver.media import g711  # noqa: E402
from transport import band_energy_db, espeak_clip, noisy, score, test_clips  # noqa: E402

RATE = 48000


def through_g711(x: np.ndarray, codec: str = "pcmu") -> np.ndarray:
    """The server's G.711 publisher path: 48 kHz -> G.711 at 8 kHz -> 48 kHz."""
    enc, dec = g711.G711Encoder(codec), g711.G711Decoder()
    x = np.concatenate([x, np.zeros((-len(x)) % 960, np.float32)])
    return np.concatenate([dec.decode(codec, enc.encode(x[i:i + 960]))
                           for i in range(0, len(x), 960)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the shared data folder")
    ap.add_argument("--test-files", type=int, default=2)
    ap.add_argument("--snr-db", default="5,15")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "narrowband.json"))
    args = ap.parse_args()
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="narrowband-"))
    data = Path(args.data)
    clips = {"espeak": espeak_clip(tmp), **test_clips(data, args.test_files)}
    snrs = [float(s) for s in args.snr_db.split(",")]
    inputs = {}
    for name, x in clips.items():
        for snr in snrs:
            mix = noisy(x, data, snr)
            for band, y in (("wideband", mix), ("g711", through_g711(mix)[: len(mix)])):
                path = tmp / "in" / f"{name}_{snr:g}_{band}.wav"
                write_audio(path, y, RATE)
                inputs[(name, snr, band)] = path
    subprocess.run([sys.executable, "-m", "mediaserver", "enhance", *map(str, inputs.values()),
                    "--out-dir", str(tmp / "out")], check=True, cwd=ROOT, capture_output=True)
    rows = []
    for (name, snr, band), path in inputs.items():
        x = clips[name]
        raw, _ = read_audio(path)
        enh, _ = read_audio(tmp / "out" / path.name)
        sr, se = score(x, raw), score(x, enh)
        rows.append({"clip": name, "snr_db": snr, "input": band,
                     "raw": {k: sr[k] for k in ("pesq_wb", "pesq_nb", "stoi")},
                     "enhanced": {k: se[k] for k in ("pesq_wb", "pesq_nb", "stoi")},
                     "above_4khz_db": {"raw": band_energy_db(raw, 4000, 24000),
                                       "enhanced": band_energy_db(enh, 4000, 24000)},
                     "level_ratio": round(float(np.sqrt(np.mean(enh ** 2) / np.mean(raw ** 2))), 3)})
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "host": {"cpus": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "rows": rows}, indent=2))
    print("\n| clip | SNR | input | PESQ-WB raw -> enh | PESQ-NB raw -> enh | STOI raw -> enh "
          "| >4 kHz raw / enh dB | level ratio |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, b = r["raw"], r["enhanced"]
        print(f"| {r['clip']} | {r['snr_db']:g} | {r['input']} | {a['pesq_wb']} -> {b['pesq_wb']} | "
              f"{a['pesq_nb']} -> {b['pesq_nb']} | {a['stoi']} -> {b['stoi']} | "
              f"{r['above_4khz_db']['raw']} / {r['above_4khz_db']['enhanced']} | {r['level_ratio']} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
