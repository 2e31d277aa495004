"""``mediaserver eval --extra``: the out-of-domain set (unseen languages, noises and rooms)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from mediaserver.enhance.evaluate import OOD_GAP_SECONDS, OOD_MIN_SECONDS, build_plan, make_mixture
from test_enhance_common import espeak_speech, random_model, saved

ROOT = Path(__file__).resolve().parents[1]


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    """data/ with in-domain test splits and data/extra noise+rir tests; extra/ with short test lines."""
    data, extra = tmp_path / "data", tmp_path / "extra"
    rng = np.random.default_rng(1)
    for sub in ("speech/test", "noise/test", "rir/test", "extra/noise/test", "extra/rir/test"):
        (data / sub).mkdir(parents=True)
    (extra / "speech" / "test").mkdir(parents=True)
    sf.write(data / "speech/test/in.wav", 0.1 * rng.standard_normal(32000).astype(np.float32), 16000)
    sf.write(data / "noise/test/white.wav", 0.1 * rng.standard_normal(48000).astype(np.float32), 16000)
    sf.write(data / "extra/noise/test/cafe.wav", 0.05 * rng.standard_normal(48000).astype(np.float32), 16000)
    rir = np.zeros(2000, np.float32)
    rir[50], rir[700] = 1.0, 0.3
    sf.write(data / "extra/rir/test/street.wav", rir, 16000)
    for i, word in enumerate(["one", "two", "three", "four", "five"]):
        x = espeak_speech(tmp_path, word, lead_s=0.05, tail_s=0.05)[::3]  # ≈0.5 s at 16 kHz
        sf.write(extra / "speech/test" / f"nn_{i}.wav", x, 16000)
    return data, extra


def test_ood_set_uses_only_extra_test_material_joined_to_4_s(tmp_path: Path) -> None:
    data, extra = _folders(tmp_path)
    plan = build_plan(data, 0, 0, extra=extra, n_ood=6)
    assert plan == build_plan(data, 0, 0, extra=extra, n_ood=6)
    assert [m.set for m in plan] == ["ood"] * 6
    assert [m.snr_db for m in plan][:5] == [-5.0, 0.0, 5.0, 10.0, 15.0]
    assert all(m.noise == "cafe.wav" for m in plan)  # never the in-domain test noise
    assert [m.rir for m in plan] == [None, None, "street.wav"] * 2
    for m in plan:
        assert all(part.startswith("nn_") for part in m.speech.split("+"))
        noisy, ref = make_mixture(data, m, extra=extra)
        assert len(ref) / 16000 >= OOD_MIN_SECONDS - OOD_GAP_SECONDS - 0.6  # lines joined up to ≥ 4 s
        if m.rir is None:
            snr = 10 * np.log10(np.sum(ref ** 2) / np.sum((noisy - ref) ** 2))
            assert abs(snr - m.snr_db) < 0.05
    assert build_plan(data, 0, 0) == []  # no --extra: no ood set


def test_eval_cli_scores_the_ood_set(tmp_path: Path) -> None:
    data, extra = _folders(tmp_path)
    model = saved(random_model(), tmp_path)
    out = tmp_path / "eval.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "mediaserver", "eval", "--data", str(data), "--extra", str(extra),
                        "--systems", "noisy,ours", "--main-count", "0", "--reference-count", "0", "--ood-count", "3",
                        "--no-dnsmos", "--model", str(model), "--json", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Out-of-domain set (3 mixtures" in r.stdout
    result = json.loads(out.read_text())
    assert result["ood"]["noisy"]["all"]["n"] == 3 and result["ood"]["ours"]["all"]["n"] == 3
    assert {r["set"] for r in result["rows"]} == {"ood"}
