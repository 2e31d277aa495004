"""``mediaserver eval`` on a tiny data folder made here (espeak-ng speech, synthetic noise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from mediaserver.enhance.evaluate import build_plan, make_mixture
from mediaserver.enhance.metrics import si_sdr
from test_enhance_common import espeak_speech, random_model, saved

ROOT = Path(__file__).resolve().parents[1]


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    for sub in ("speech/test", "noise/test", "rir/test", "speech/train"):
        (data / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, text in enumerate(["Testing one two three.", "The weather is nice today."]):
        x = espeak_speech(tmp_path, text, lead_s=0.2, tail_s=0.2)[::3]  # 16 kHz
        sf.write(data / "speech/test" / f"s{i}.wav", x, 16000)
    sf.write(data / "speech/train" / "never.wav", np.ones(16000, np.float32), 16000)  # must not be used
    sf.write(data / "noise/test" / "white.wav", 0.1 * rng.standard_normal(16000 * 3).astype(np.float32), 16000)
    rir = np.zeros(4000, np.float32)
    rir[100], rir[900], rir[2500] = 1.0, 0.4, 0.2
    sf.write(data / "rir/test" / "room.wav", rir, 16000)
    return data


def test_mixtures_are_deterministic_at_the_requested_snr(tmp_path: Path) -> None:
    data = _data(tmp_path)
    plan = build_plan(data, 5, 3)
    assert plan == build_plan(data, 5, 3)
    assert [m.snr_db for m in plan if m.set == "main"] == [-5.0, 0.0, 5.0, 10.0, 15.0]
    assert all("never" not in m.speech for m in plan)
    assert plan[3].rir == "room.wav"
    for m in plan:
        noisy, ref = make_mixture(data, m)
        again, _ = make_mixture(data, m)
        np.testing.assert_array_equal(noisy, again)
        if m.rir is None:
            snr = 10 * np.log10(np.sum(ref ** 2) / np.sum((noisy - ref) ** 2))
            assert abs(snr - m.snr_db) < 0.05
    assert si_sdr(ref, ref) > 100


def test_eval_cli_prints_tables_and_writes_json(tmp_path: Path) -> None:
    data = _data(tmp_path)
    model = saved(random_model(), tmp_path)
    out = tmp_path / "eval.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "mediaserver", "eval", "--data", str(data), "--systems", "noisy,ours",
                        "--limit", "2", "--no-dnsmos", "--model", str(model), "--json", str(out)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=280)
    assert r.returncode == 0, r.stderr
    assert "Reference set" in r.stdout and "ours" in r.stdout
    result = json.loads(out.read_text())
    assert set(result["main"]) == {"noisy", "ours"} and not result["partial"]
    assert len(result["rows"]) == 2 * (2 + 2)
    noisy_all = result["reference"]["noisy"]["all"]
    assert noisy_all["n"] == 2 and 1.0 <= noisy_all["pesq_wb"] <= 4.7 and 0 < noisy_all["stoi"] <= 1
    r = subprocess.run([sys.executable, "-m", "mediaserver", "eval", "--data", str(tmp_path / "nothing")],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode != 0 and "nothing" in r.stdout + r.stderr
