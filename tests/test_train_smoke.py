"""A few training steps on generated audio: the training script runs end to end and its
output loads in the server's loader. (Real training is not run in CI.)"""

from pathlib import Path

import numpy as np
import torch

from mediaserver.audio import write_audio
from mediaserver.enhance import train
from mediaserver.enhance.weights import load_model


def _voiced(rng: np.random.Generator, seconds: float, rate: int = 16000) -> np.ndarray:
    """Speech-like test signal: a gliding harmonic voice with syllable-rate amplitude modulation."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0, None)
    return (0.1 * voice * envelope).astype(np.float32)


def make_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(12):
        write_audio(root / "speech" / "train" / f"spk{i}.wav", _voiced(rng, 2.0), 16000)
    for i in range(2):
        write_audio(root / "noise" / "train" / f"noise{i}.wav", 0.05 * rng.standard_normal(24000), 16000)
    decay = np.exp(-np.arange(4000) / 600.0) * rng.standard_normal(4000)
    decay[0] = 1.0
    write_audio(root / "rir" / "train" / "rir0.wav", 0.5 * decay, 16000)
    return root


def test_training_smoke_run_writes_loadable_weights(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "model"
    argv = [
        "--data", str(data), "--out", str(out), "--ckpt-dir", str(tmp_path / "ckpt"),
        "--steps", "4", "--batch", "2", "--seconds", "1", "--arch", "gru", "--hidden", "16", "--layers", "1",
        "--valid-every", "2", "--valid-count", "2", "--log-every", "1",
    ]
    assert train.main(argv) == 0
    model = load_model(out)
    assert model.hidden == 16
    # rerunning the same command resumes from the checkpoint: --steps more steps
    assert train.main(argv) == 0
    state = torch.load(tmp_path / "ckpt" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 8
    # fine-tuning starts from shipped weights, keeping their architecture
    tuned = tmp_path / "tuned"
    argv_ft = argv[:]
    argv_ft[argv_ft.index("--out") + 1] = str(tuned)
    argv_ft[argv_ft.index("--ckpt-dir") + 1] = str(tmp_path / "ckpt2")
    assert train.main(argv_ft + ["--init", str(out)]) == 0
    assert load_model(tuned).hidden == 16


def test_band_network_trains_resumes_and_packs(tmp_path: Path) -> None:
    """The v3 (band) network: a few steps from the data folder, then from a pack of it; the
    checkpoint resumes with its step count and hours seen; the export loads in the server's loader."""
    data = make_dataset(tmp_path / "data")
    pack = tmp_path / "pack"
    assert train.main(["--data", str(data), "--out", str(tmp_path / "x"), "--write-pack", str(pack), "--pack-mb", "1"]) == 0
    assert (pack / "train" / "speech.flac").is_file() and (pack / "valid" / "noise.json").is_file()
    for i, source in enumerate((["--data", str(data)], ["--pack", str(pack)])):
        out, ckpt = tmp_path / f"band{i}", tmp_path / f"ck{i}"
        argv = source + [
            "--out", str(out), "--ckpt-dir", str(ckpt), "--steps", "2", "--batch", "2", "--seconds", "1",
            "--channels", "8", "--time-hidden", "8", "--blocks", "1", "--valid-every", "2", "--valid-count", "2",
        ]
        assert train.main(argv) == 0
        assert train.main(argv) == 0  # resumes and runs two more steps
        state = torch.load(ckpt / "checkpoint.pt", weights_only=False)
        assert state["step"] == 4
        assert abs(state["hours"] - 4 * 2 * 1.0 / 3600) < 1e-9
        model = load_model(out)
        assert model.config == {"arch": "band", "channels": 8, "time_hidden": 8, "blocks": 1}
