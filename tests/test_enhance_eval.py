"""``mediaserver eval`` on a tiny data folder made here (espeak-ng speech, synthetic noise)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mediaserver.enhance.evaluate import _Worker, build_plan, make_mixture
from mediaserver.enhance.metrics import si_sdr
from mediaserver.enhance.model import N_BINS
from mediaserver.enhance.streaming import Enhancer
from test_enhance_common import constant_mask_model, espeak_speech, saved

# A pass-through enhancer must score what the noisy mixture scores: the eval's "ours" differs
# from "noisy" only by the enhancer's delay, which it must remove. Measured: the 16->48->16 kHz
# resampling alone lifts SI-SDR by 0.27 dB (it trims white noise near 8 kHz); one 16 kHz sample
# of misalignment costs 1.0 dB, an unremoved 10 ms delay 0.07 STOI.
SAME = {"pesq_wb": 0.05, "stoi": 0.005, "si_sdr": 0.6}

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


def _rows_by_mixture(rows: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    out: dict[tuple[str, int], dict[str, dict]] = {}
    for row in rows:
        out.setdefault((row["set"], row["index"]), {})[row["system"]] = row
    return out


def _assert_same_scores(by_mixture: dict[tuple[str, int], dict[str, dict]]) -> None:
    for key, systems in by_mixture.items():
        for metric, tol in SAME.items():
            ours, noisy = systems["ours"][metric], systems["noisy"][metric]
            assert abs(ours - noisy) <= tol, (key, metric, ours, noisy)


def _low_pass_model(cut_hz: float) -> torch.nn.Module:
    """Mask 1 below ``cut_hz`` and 0 above: speech loses every band STOI weighs above it."""
    model = constant_mask_model(1.0)
    cut_bin = int(cut_hz / (Enhancer.sample_rate / 2) * (N_BINS - 1))
    with torch.no_grad():
        model.decoder.bias[cut_bin:N_BINS] = math.atanh(0.0)
    return model


def test_eval_scores_our_enhancer_on_each_mixture_with_its_delay_removed(tmp_path: Path) -> None:
    """In process: a pass-through model scores as "noisy" on every mixture (the delay is
    removed), a 1 kHz low-pass model scores far below it (the model really runs)."""
    data = _data(tmp_path)
    plan = [m for m in build_plan(data, 2, 1) if m.set == "main"]
    assert len(plan) == 2
    passthrough = _Worker(data, ["noisy", "ours"], str(saved(constant_mask_model(1.0), tmp_path)), False)
    _assert_same_scores(_rows_by_mixture([row for m in plan for row in passthrough.run(m)]))
    low = _Worker(data, ["noisy", "ours"], str(saved(_low_pass_model(1000.0), tmp_path, "low.pt")), False)
    for key, systems in _rows_by_mixture([row for m in plan for row in low.run(m)]).items():
        ours, noisy = systems["ours"], systems["noisy"]
        assert ours["stoi"] <= noisy["stoi"] - 0.1, (key, ours["stoi"], noisy["stoi"])


def test_eval_cli_prints_tables_and_writes_json(tmp_path: Path) -> None:
    data = _data(tmp_path)
    model = saved(constant_mask_model(1.0), tmp_path)  # pass-through: "ours" must score as "noisy"
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
    by_mixture = _rows_by_mixture(result["rows"])
    assert len(by_mixture) == 4 and all(set(s) == {"noisy", "ours"} for s in by_mixture.values())
    _assert_same_scores(by_mixture)   # the CLI's worker processes score "ours" on the same mixtures
    r = subprocess.run([sys.executable, "-m", "mediaserver", "eval", "--data", str(tmp_path / "nothing")],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode != 0 and "nothing" in r.stdout + r.stderr


def test_eval_json_records_the_weights_and_the_reused_rows(tmp_path: Path) -> None:
    """The JSON names what "ours" ran (model name, weights file, its sha256) and which rows
    were merged from an earlier run (--reuse), with that run's weights: a table can then be
    traced to the checkpoint behind each row."""
    data = _data(tmp_path)
    model = saved(constant_mask_model(1.0), tmp_path, "passthrough.pt")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    common = ["--data", str(data), "--limit", "2", "--no-dnsmos"]
    r = subprocess.run([sys.executable, "-m", "mediaserver", "eval", *common, "--systems", "noisy,ours",
                        "--model", str(model), "--json", str(first)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=280)
    assert r.returncode == 0, r.stderr
    run1 = json.loads(first.read_text())
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert run1["weights"] == {"name": "passthrough", "file": str(model), "sha256": digest}
    assert run1["reused"] == {"rows": 0, "systems": [], "files": []}
    assert not any("reused_from" in row for row in run1["rows"])
    assert digest in r.stdout
    # ours re-scored with a shipped model by name, the noisy rows taken from the first run
    shipped = json.loads((ROOT / "models" / "msenh-v3-s8250" / "model.json").read_text())
    r = subprocess.run([sys.executable, "-m", "mediaserver", "eval", *common, "--systems", "ours",
                        "--model", "msenh-v3-s8250", "--reuse", str(first), "--json", str(second)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=280)
    assert r.returncode == 0, r.stderr
    run2 = json.loads(second.read_text())
    assert run2["weights"]["name"] == "msenh-v3-s8250" and run2["weights"]["sha256"] == shipped["sha256"]
    noisy_rows = [row for row in run2["rows"] if row["system"] == "noisy"]
    ours_rows = [row for row in run2["rows"] if row["system"] == "ours"]
    assert len(noisy_rows) == len(ours_rows) == 4
    assert all(row["reused_from"] == str(first) for row in noisy_rows)
    assert not any("reused_from" in row for row in ours_rows)
    assert run2["reused"] == {"rows": 4, "systems": ["noisy"],
                              "files": [{"path": str(first), "weights": run1["weights"], "rows": 4}]}
    assert "reused: 4 rows of noisy" in r.stdout
