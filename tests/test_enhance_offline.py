"""``mediaserver enhance``: aligned output at the input's rate; bad files named, others processed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from mediaserver.audio import read_audio
from test_enhance_common import constant_mask_model, random_model, saved

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "mediaserver", "enhance", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)


def _tone(rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * np.sin(2 * np.pi * 1700 * t)).astype(np.float32)


def test_output_is_time_aligned_at_the_input_rate(tmp_path: Path) -> None:
    model = saved(constant_mask_model(1.0), tmp_path)  # pass-through: output must equal input
    inputs = []
    for rate in (48000, 16000):
        p = tmp_path / f"tone{rate}.wav"
        sf.write(p, _tone(rate), rate, subtype="FLOAT")
        inputs.append(str(p))
    out = tmp_path / "out"
    r = _cli(*inputs, "--out-dir", str(out), "--model", str(model))
    assert r.returncode == 0, r.stderr
    for rate in (48000, 16000):
        y, y_rate = read_audio(out / f"tone{rate}.wav")
        x = _tone(rate)
        assert y_rate == rate and len(y) == len(x)
        inner = slice(rate // 20, -rate // 20)  # resampler edges aside
        assert np.abs(y[inner] - x[inner]).max() < 2e-3  # 16-bit output; no shift
        shifted = np.abs(y[inner] - np.roll(x, 1)[inner]).max()
        assert shifted > 5e-3  # a one-sample misalignment would be visible


def test_bad_files_are_named_and_the_others_processed(tmp_path: Path) -> None:
    model = saved(random_model(), tmp_path)
    good = tmp_path / "good.wav"
    sf.write(good, _tone(16000, 0.5), 16000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    missing = tmp_path / "missing.wav"
    good2 = tmp_path / "good2.wav"
    sf.write(good2, _tone(44100, 0.3), 44100)
    out = tmp_path / "out"
    r = _cli(str(empty), str(good), str(text), str(missing), str(good2), "--out-dir", str(out),
             "--model", str(model))
    assert r.returncode == 2   # an input error, as a bad flag; the good files still done
    errors = [line for line in r.stderr.splitlines() if line.startswith("mediaserver enhance: error: ")]
    for bad in (empty, text, missing):
        assert sum(str(bad) in line for line in errors) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["good.wav", "good2.wav"]
    assert sf.info(out / "good2.wav").samplerate == 44100
    assert sf.info(out / "good2.wav").frames == sf.info(good2).frames


def test_bad_model_file_is_a_clear_error(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, _tone(16000, 0.2), 16000)
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"\x00garbage")
    r = _cli(str(good), "--out-dir", str(tmp_path / "o"), "--model", str(bad))
    assert r.returncode != 0 and str(bad) in r.stderr and "Traceback" not in r.stderr


# Runs the CLI with pyrnnoise made unimportable (sys.modules[name] = None is how Python marks a
# module as absent: import raises ModuleNotFoundError and importlib.util.find_spec returns None).
_WITHOUT_RNNOISE = ("import sys; sys.modules['pyrnnoise'] = None; from mediaserver.cli import main; "
                    "sys.exit(main(sys.argv[1:]))")


def _bench(tmp_path: Path, *, without_rnnoise: bool) -> tuple[subprocess.CompletedProcess, list[dict]]:
    model = saved(random_model(), tmp_path)
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    entry = ["-c", _WITHOUT_RNNOISE] if without_rnnoise else ["-m", "mediaserver"]
    r = subprocess.run([sys.executable, *entry, "bench", "enhancer", "--streams", "1,4",
                        "--seconds", "0.05", "--model", str(model), "--json", str(out)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    rows = json.loads(out.read_text())
    assert [(row["what"], row["streams"]) for row in rows] == [
        ("enhancer_hop", 1), ("enhancer_hop", 4), ("stage_tick", 1), ("stage_tick", 4)]
    for row in rows:
        assert {"device", "streams", "hop_ms", "step_ms_p50", "step_ms_p99"} <= set(row)
        assert row["device"] == "cpu" and row["hop_ms"] in (10.0, 20.0) and row["step_ms_p50"] > 0
        assert "pink noise" in row["input"] or "noise/test" in row["input"]  # speech with pauses, not white noise
    return r, rows


def _assert_rnnoise_missing(r: subprocess.CompletedProcess, rows: list[dict]) -> None:
    for row in rows:
        assert "rnnoise_cpu_ms_p50" not in row and "x_rnnoise_cpu" not in row
        assert "pyrnnoise is not installed" in row["rnnoise_missing"]
        assert "pip install pyrnnoise" in row["rnnoise_missing"]
    assert "RNNoise baseline missing" in r.stdout and "pip install pyrnnoise" in r.stdout


def test_bench_enhancer_writes_json(tmp_path: Path) -> None:
    """As installed here: with the eval extra RNNoise is measured in the same run; without it
    (CI installs test+asr only) ours still is, and the JSON says how to get the baseline."""
    r, rows = _bench(tmp_path, without_rnnoise=False)
    if importlib.util.find_spec("pyrnnoise") is None:
        _assert_rnnoise_missing(r, rows)
        return
    for row in rows:
        assert "rnnoise_missing" not in row and row["rnnoise_cpu_ms_p50"] > 0
    assert all(row["x_rnnoise_cpu"] > 0 for row in rows if row["what"] == "enhancer_hop")


def test_bench_enhancer_without_rnnoise_measures_ours(tmp_path: Path) -> None:
    r, rows = _bench(tmp_path, without_rnnoise=True)
    _assert_rnnoise_missing(r, rows)


def test_bench_writes_json_only_where_json_says_and_prints_the_path(tmp_path: Path) -> None:
    """``bench`` wrote benchmarks/results/<target>.json under whatever folder it ran from (in
    a checkout: over the committed results). As ``eval`` and ``transcribe``: the table only,
    saying no JSON was written, unless ``--json PATH``, whose absolute path it prints."""
    model = saved(random_model(), tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MEDIASERVER_JSON", None)
    run = lambda *extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "mediaserver", "bench", "enhancer", "--streams", "1", "--seconds", "0.05",
         "--model", str(model), *extra], capture_output=True, text=True, env=env, cwd=elsewhere, timeout=240)
    r = run()
    assert r.returncode == 0, r.stderr
    assert "no JSON written (--json PATH writes the rows)" in r.stdout and "wrote" not in r.stdout
    assert list(elsewhere.iterdir()) == []   # no benchmarks/results/ made here
    r = run("--json", "out/bench.json")
    assert r.returncode == 0, r.stderr
    written = elsewhere / "out" / "bench.json"
    assert f"wrote {written}" in r.stdout.splitlines()
    assert [row["streams"] for row in json.loads(written.read_text())] == [1, 1]   # hop, then stage tick
