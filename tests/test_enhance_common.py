"""Shared helpers for the enhancer tests: tiny models with known behaviour, test speech."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from mediaserver.audio import read_audio, resample
from mediaserver.enhance.model import N_BINS, EnhancerModel
from mediaserver.enhance.weights import save_model
from requires import require_program


def random_model(seed: int = 0, hidden: int = 24) -> EnhancerModel:
    torch.manual_seed(seed)
    return EnhancerModel(hidden=hidden, layers=2).eval()


def band_model(seed: int = 0, **kw: int) -> "BandEnhancer":
    """A random msenh-v3 network (arch ``band``) with random batch-norm statistics, so every
    layer shapes the output."""
    from mediaserver.enhance.model import BandEnhancer

    torch.manual_seed(seed)
    model = BandEnhancer(**kw)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def constant_mask_model(mask: float) -> EnhancerModel:
    """A model whose mask is the real constant ``mask`` (0 < mask < 1.2) for every bin.

    mask = 1 makes the enhancer an exact pass-through (delayed), so timing is testable.
    """
    model = random_model(hidden=8)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
        model.decoder.bias[:N_BINS] = math.atanh(mask / 1.2)
    return model


def saved(model: EnhancerModel, tmp_path: Path, name: str = "enhancer.pt") -> Path:
    path = tmp_path / name
    save_model(model, path)
    return path


def espeak_speech(tmp_path: Path, text: str = "Hello there, this is a test of the voice gate.",
                  lead_s: float = 0.6, tail_s: float = 0.8) -> np.ndarray:
    """espeak-ng speech at 48 kHz with digital silence before and after."""
    require_program("espeak-ng", "apt-get install -y espeak-ng")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    x, rate = read_audio(wav)
    x = resample(x, rate, 48000)
    x = 0.5 * x / (np.abs(x).max() + 1e-9)
    return np.concatenate([np.zeros(int(lead_s * 48000)), x, np.zeros(int(tail_s * 48000))]).astype(np.float32)


def test_constant_mask_model_is_pass_through() -> None:
    from mediaserver.enhance.model import enhance_offline

    x = torch.randn(1, 9600)
    y = enhance_offline(constant_mask_model(1.0), x, 48000)
    assert torch.allclose(y[0, 480:], x[0, :-480], atol=1e-4)
