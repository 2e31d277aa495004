"""The band-structured network (arch ``band``, msenh-v3): causal, streams stay apart,
checkpoints round-trip, budgets hold (streaming = offline: test_enhance_streaming.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mediaserver.enhance.model import BandEnhancer, count_parameters, macs_per_second, stft
from mediaserver.enhance.streaming import Enhancer
from mediaserver.enhance.weights import WeightsError, load_model, save_model
from test_enhance_common import band_model
from test_enhance_streaming import _noise, _stream


def test_band_network_is_causal_frame_by_frame() -> None:
    """Changing frame k never changes the masks of frames before k (no look-ahead anywhere)."""
    model = band_model(channels=8, time_hidden=8)
    x = torch.from_numpy(_noise(1, 16000))
    spec = stft(x, 16000)
    with torch.no_grad():
        a, _ = model(spec)
        spec2 = spec.clone()
        spec2[:, 50:] *= 3.0
        b, _ = model(spec2)
    assert torch.equal(a[:, :50], b[:, :50])
    assert not torch.allclose(a[:, 50:], b[:, 50:])


def test_band_slots_do_not_leak() -> None:
    model = band_model(channels=8, time_hidden=8)
    xa = _noise(1, 24000, seed=1)
    enh = Enhancer(model, capacity=4)
    a, b = enh.allocate(), enh.allocate()
    quiet = _stream(enh, [a, b], np.concatenate([xa, _noise(1, 24000, seed=2)]), 960)
    enh2 = Enhancer(model, capacity=4)
    a2, b2 = enh2.allocate(), enh2.allocate()
    loud = _stream(enh2, [a2, b2], np.concatenate([xa, 10 * _noise(1, 24000, seed=3)]), 960)
    np.testing.assert_array_equal(quiet[0], loud[0])


def test_band_checkpoint_round_trip_and_bad_config(tmp_path: Path) -> None:
    model = band_model(channels=8, time_hidden=8, blocks=1)
    save_model(model, tmp_path / "enhancer.pt", {"step": 1})
    loaded = load_model(tmp_path)
    assert loaded.config == {"arch": "band", "channels": 8, "time_hidden": 8, "blocks": 1}
    spec = stft(torch.from_numpy(_noise(1, 8000)), 16000)
    with torch.no_grad():
        assert torch.equal(loaded(spec)[0], model(spec)[0])
    payload = torch.load(tmp_path / "enhancer.pt", weights_only=True)
    payload["config"]["arch"] = "transformer"
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="does not match the enhancer architecture"):
        load_model(tmp_path / "bad.pt")
    payload["config"] = {"arch": "band", "channels": 16, "time_hidden": 8, "blocks": 1}  # wrong shapes
    torch.save(payload, tmp_path / "bad2.pt")
    with pytest.raises(WeightsError):
        load_model(tmp_path / "bad2.pt")


def test_default_band_network_fits_the_budgets() -> None:
    """Issue 9: ≤ 1 M parameters, ≤ 300 M MAC/s, state small enough to batch thousands of streams."""
    model = BandEnhancer()
    assert count_parameters(model) <= 1_000_000
    assert macs_per_second(model) <= 300_000_000
    assert model.state_size == 2 * 21 * 48
    assert Enhancer.latency == 480  # 10 ms output delay + the 10 ms hop being buffered = 20 ms
