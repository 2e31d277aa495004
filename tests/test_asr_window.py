"""Issue 11: partial-caption Whisper decodes encode the audio plus a tail of padding, not a
30 s window (finals keep 30 s: with the short window they lost words in benchmarks/asr.py).

faster-whisper pads every segment to 30 s, so a partial caption of 2 s of speech cost a
full-window encode (about 1.3 s on one core here, the bound on caption latency).
``patches.whisper_tail_windows`` pads to the segment's length plus a tail, per thread; the
accuracy and speed of that choice are measured by benchmarks/asr.py, not asserted here.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from test_asr_pipeline import espeak48
from test_asr_streaming import needs_whisper

SAID = "Please send the ambulance to the corner of Maple Street."


def test_the_window_is_the_segment_plus_the_tail_only_inside_the_block() -> None:
    needs_whisper()
    import faster_whisper.transcribe as transcribe

    from mediaserver.patches import whisper_tail_windows, whisper_window

    whisper_tail_windows()
    whisper_tail_windows()   # idempotent: not wrapped twice
    features = np.ones((80, 250), np.float32)
    other: list[tuple[int, ...]] = []

    def elsewhere() -> None:   # another recogniser thread, outside any window block
        other.append(transcribe.pad_or_trim(features).shape)

    assert transcribe.pad_or_trim(features).shape == (80, 3000)
    with whisper_window(800):
        padded = transcribe.pad_or_trim(features)
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        with whisper_window(None):
            assert transcribe.pad_or_trim(features).shape == (80, 3000)
        assert transcribe.pad_or_trim(np.ones((80, 2900), np.float32)).shape == (80, 3000)
    assert padded.shape == (80, 1050) and np.all(padded[:, 250:] == 0)
    assert other == [(80, 3000)]
    assert transcribe.pad_or_trim(features).shape == (80, 3000)


@pytest.mark.parametrize("tail_s,frames", [(8.0, lambda n: n + 800), (0.0, lambda n: 3000)])
def test_a_partial_decode_encodes_the_speech_plus_its_tail_and_hears_it(tmp_path: Path, tail_s,
                                                                        frames) -> None:
    needs_whisper()
    from mediaserver.asr.local import WhisperRecogniser
    from mediaserver.audio import resample

    speech = resample(espeak48(SAID, tmp_path), 48000, 16000).astype(np.float32)
    recogniser = WhisperRecogniser(window_tail_s=tail_s)
    encoded: list[int] = []
    encode = recogniser._model.encode

    def spy(features):  # noqa: ANN001, ANN202 - faster-whisper's own signature
        encoded.append(features.shape[-1])
        return encode(features)

    recogniser._model.encode = spy
    partial = [w.text.lower().strip(".,") for w in recogniser.recognise(speech, fallback=False)]
    final = [w.text.lower().strip(".,") for w in recogniser.recognise(speech, fallback=True)]
    content = len(speech) // 160   # mel frames of the speech (10 ms each)
    assert len(encoded) == 2 and abs(encoded[0] - frames(content)) <= 2, (encoded, content)
    assert encoded[1] == 3000   # a final: Whisper's whole window
    for words in (partial, final):
        assert {"ambulance", "corner", "maple", "street"} <= set(words), words


def test_a_tail_that_makes_whisper_repeat_itself_is_refused() -> None:
    from mediaserver.asr.local import check_window_tail

    for ok in (0.0, 3.0, 8.0, 30.0):
        check_window_tail(ok)
    for bad in (1.0, 2.9, -1.0, 31.0):
        with pytest.raises(ValueError, match="3..30"):
            check_window_tail(bad)


def test_serve_refuses_such_a_tail_before_it_starts() -> None:
    import argparse

    from mediaserver.asr.options import add_asr_options, validate_asr_args

    parser = argparse.ArgumentParser()
    add_asr_options(parser)
    assert validate_asr_args(parser.parse_args(["--asr", "local"])) is None
    assert validate_asr_args(parser.parse_args(["--asr", "local", "--asr-window-tail", "0"])) is None
    error = validate_asr_args(parser.parse_args(["--asr", "local", "--asr-window-tail", "1.5"]))
    assert error is not None and "--asr-window-tail" in error and "3..30" in error
