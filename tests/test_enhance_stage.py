"""EnhancerStage: VAD gate timing, bypass, live attenuation limit, isolation of bad input."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from mediaserver.enhance.stage import FRAME, EnhancerStage
from mediaserver.enhance.vad import GateConfig, VadGate
from mediaserver.enhance.weights import WeightsError
from test_enhance_common import constant_mask_model, espeak_speech, random_model, saved

LAT = EnhancerStage.latency


def _frames(x: np.ndarray) -> list[np.ndarray]:
    x = np.concatenate([x, np.zeros(-len(x) % FRAME, np.float32)])
    return [x[i : i + FRAME] for i in range(0, len(x), FRAME)]


def _run(stage: EnhancerStage, handle, x: np.ndarray, kind: str = "normal"):
    outs = [stage.process_sync([(handle, f, kind)])[0] for f in _frames(x)]
    enhanced = np.concatenate([o.enhanced for o in outs])
    raw = np.concatenate([o.raw for o in outs])
    return enhanced, raw, np.array([o.speech for o in outs])


def _tone(seconds: float, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * 48000)) / 48000
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _onset(x: np.ndarray) -> int:
    return int(np.flatnonzero(np.abs(x) > 0.01 * np.abs(x).max())[0])


@pytest.mark.parametrize("lead_s", [0.6, 0.59])  # onset late / early in its 20 ms frame
def test_gate_opens_before_the_first_word(tmp_path, lead_s: float) -> None:
    speech = espeak_speech(tmp_path, lead_s=lead_s)
    stage = EnhancerStage(saved(constant_mask_model(1.0), tmp_path), gate_config=GateConfig(atten_db=12.0))
    h = stage.open()
    enhanced, raw, flags = _run(stage, h, speech)
    onset_out = _onset(speech) + LAT  # where the first word appears in the output
    first_open = int(np.flatnonzero(flags)[0]) * FRAME  # output frame where the fade-in starts
    assert first_open <= onset_out
    # the first 100 ms of the word come out at full level (pass-through model: equal to raw)
    seg = slice(onset_out, onset_out + 4800)
    assert np.dot(enhanced[seg], enhanced[seg]) >= 0.99 * np.dot(raw[seg], raw[seg])
    np.testing.assert_array_equal(raw[LAT:], np.concatenate([speech, np.zeros(-len(speech) % FRAME)])[: len(raw) - LAT])
    # the gate closed again in the trailing silence, and skipped the network in silence
    assert not flags[-1] and not flags[0]
    assert 0 < stage.frames_net < stage.ticks
    stage.shutdown()


def test_concealed_frames_do_not_open_the_gate(tmp_path) -> None:
    speech = espeak_speech(tmp_path, lead_s=0.0, tail_s=0.0)
    gate = VadGate(GateConfig())
    frames = _frames(speech)
    assert not any(gate.update(f, concealed=True) for f in frames[:40])
    assert any(gate.update(f) for f in frames[40:])
    # once open, a concealed speech frame keeps it open; it never opens a closed one. Without
    # hangover, so only this frame's decision counts.
    ref = VadGate(GateConfig(hangover_ms=0))
    opened = [ref.update(f) for f in frames]
    k = next(i for i in range(1, len(frames)) if opened[i] and opened[i - 1])
    kept, shut = VadGate(GateConfig(hangover_ms=0)), VadGate(GateConfig(hangover_ms=0))
    for f in frames[:k]:
        kept.update(f)
        shut.update(f, concealed=True)
    assert kept.is_open and not shut.is_open
    assert kept.update(frames[k], concealed=True)
    assert not shut.update(frames[k], concealed=True)


def test_bypass_when_disabled_is_the_delayed_input(tmp_path) -> None:
    stage = EnhancerStage(saved(random_model(), tmp_path), gate=False)
    h = stage.open(enabled=False)
    x = (0.1 * np.random.default_rng(0).standard_normal(9600)).astype(np.float32)
    enhanced, raw, _ = _run(stage, h, x)
    np.testing.assert_allclose(enhanced, raw, atol=1e-6)  # overlap-add of sqrt-Hann² halves: float rounding
    np.testing.assert_array_equal(raw[LAT:], x[:-LAT])
    stage.shutdown()


def test_attenuation_limit_changes_live(tmp_path) -> None:
    # mask of -58 dB everywhere: the output level is set by the attenuation limit alone
    stage = EnhancerStage(saved(constant_mask_model(1.2e-3), tmp_path), gate=False)
    h = stage.open(atten_lim_db=6.0)
    x = _tone(0.4)
    y1, raw1, _ = _run(stage, h, x)
    np.testing.assert_allclose(y1[4800:], 10 ** (-6 / 20) * raw1[4800:], atol=2e-4)
    h.atten_lim_db = 20.0
    y2, raw2, _ = _run(stage, h, x)
    np.testing.assert_allclose(y2[2 * FRAME :], 0.1 * raw2[2 * FRAME :], atol=2e-4)
    with pytest.raises(ValueError):
        h.atten_lim_db = float("nan")
    with pytest.raises(ValueError):
        h.atten_lim_db = -3
    stage.shutdown()


# Tones whose period does not divide 20 ms (170, 210, 330, 437 Hz): frame edges fall anywhere on
# the wave, so a jump at a path switch shows up (a 200 Hz tone puts every edge on a zero
# crossing and hides it).
CLICK_TONES_HZ = (170.0, 210.0, 330.0, 437.0)


def _max_step(freq: float, amp: float = 0.3) -> float:
    """Largest sample-to-sample change of the tone itself, plus what a 10 ms Hann cross-fade
    between two gains of it may add (amp·pi/960 ≈ 0.001); a click jumps by 0.01–0.15."""
    return amp * 2 * np.pi * freq / 48000 + amp * np.pi / 960 + 2e-4


@pytest.mark.parametrize("freq", CLICK_TONES_HZ)
def test_switching_enhancement_does_not_click(tmp_path, freq: float) -> None:
    stage = EnhancerStage(saved(constant_mask_model(1.2e-3), tmp_path), gate=False)
    h = stage.open(atten_lim_db=12.0)
    x = _tone(1.0, freq=freq)
    out = []
    for i, f in enumerate(_frames(x)):
        if i % 7 == 3:
            h.enabled = not h.enabled
        out.append(stage.process_sync([(h, f)])[0].enhanced)
    y = np.concatenate(out)
    assert np.abs(np.diff(y)).max() < _max_step(freq)
    stage.shutdown()


def test_bad_frame_leaves_other_streams_untouched(tmp_path) -> None:
    path = saved(random_model(), tmp_path)
    x = (0.1 * np.random.default_rng(1).standard_normal(9600)).astype(np.float32)

    def run(with_bad: bool) -> np.ndarray:
        stage = EnhancerStage(path, gate=False)
        good, bad = stage.open(), stage.open()
        out = []
        for f in _frames(x):
            items = [(good, f)]
            if with_bad:
                items.append((bad, np.full(FRAME, np.nan, np.float32)))
                items.append((stage.open(), np.zeros(17, np.float32)))
            out.append(stage.process_sync(items)[0].enhanced)
        stage.shutdown()
        return np.concatenate(out)

    np.testing.assert_allclose(run(False), run(True), atol=1e-5)  # batch size only rounds


async def test_process_runs_in_one_worker_thread(tmp_path) -> None:
    stage = EnhancerStage(saved(random_model(), tmp_path))
    handles = [stage.open() for _ in range(3)]
    seen: list[str] = []
    original = stage.process_sync

    def spy(items, **kwargs):
        seen.append(threading.current_thread().name)
        return original(items, **kwargs)

    stage.process_sync = spy  # type: ignore[method-assign]
    frame = np.zeros(FRAME, np.float32)
    outs = await asyncio.gather(*(stage.process([(h, frame) for h in handles]) for _ in range(4)))
    assert all(len(o) == 3 and o[0].enhanced.shape == (FRAME,) for o in outs)
    assert len(set(seen)) == 1 and seen[0] != threading.current_thread().name
    stage.close(handles[0])
    await stage.process([(h, frame) for h in handles[1:]])
    assert stage.enhancer.active == 2
    stage.shutdown()


def test_bad_weights_fail_at_construction(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pt"):
        EnhancerStage(bad)


def test_closed_handle_in_a_batch_gets_silence(tmp_path) -> None:
    stage = EnhancerStage(saved(random_model(), tmp_path), gate=False)
    a, b = stage.open(), stage.open()
    frame = (0.1 * np.random.default_rng(2).standard_normal(FRAME)).astype(np.float32)
    stage.process_sync([(a, frame), (b, frame)])
    assert stage.enhancer.active == 2
    stage.close(b)  # the media clock may still hand over a batch built before the close
    out = stage.process_sync([(a, frame), (b, frame)])
    assert not out[1].enhanced.any() and out[0].enhanced.any()
    assert stage.enhancer.active == 1
    with pytest.raises(ValueError, match="twice"):
        stage.process_sync([(a, frame), (a, frame)])
    stage.shutdown()


def test_stage_exports_metrics(tmp_path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    stage = EnhancerStage(saved(random_model(), tmp_path), registry=registry, worker="w0")
    labels = f'model_version="{stage.model_version}",worker="w0"'
    h = stage.open()
    for f in _frames(_tone(0.2)):
        stage.process_sync([(h, f)])
    text = generate_latest(registry).decode()
    assert f"mediaserver_enhancer_tick_seconds_count{{{labels}}} 10.0" in text
    assert f"mediaserver_enhancer_streams{{{labels}}} 1.0" in text
    assert f'mediaserver_enhancer_frames_total{{model_version="{stage.model_version}",path="network",worker="w0"}}' in text
    stage.close(h)  # the last stream left: no tick follows, the gauge is 0 at once
    assert f"mediaserver_enhancer_streams{{{labels}}} 0.0" in generate_latest(registry).decode()
    stage.shutdown()


@pytest.mark.parametrize("freq", CLICK_TONES_HZ)
def test_overloaded_frames_keep_delay_and_do_not_click(tmp_path, freq: float) -> None:
    """A tick the server is too late to enhance skips the network, cross-faded, same delay."""
    stage = EnhancerStage(saved(constant_mask_model(0.5), tmp_path), gate=False)
    h = stage.open()
    x = _tone(1.0, freq=freq)
    out, raw = [], []
    for i, f in enumerate(_frames(x)):
        o = stage.process_sync([(h, f)], overloaded=i in (10, 11, 30))[0]
        out.append(o.enhanced)
        raw.append(o.raw)
    y, r = np.concatenate(out), np.concatenate(raw)
    assert np.abs(np.diff(y)).max() < _max_step(freq)  # the old fade from the delayed input jumped 0.08–0.14
    # mid-overload the output is the delayed input under one fixed gain: unity (pass) or the
    # network's own measured gain on this steady tone (0.5), never anything else
    frame11 = slice(11 * FRAME, 12 * FRAME)
    c = float(np.dot(y[frame11], r[frame11]) / np.dot(r[frame11], r[frame11]))
    assert 0.45 < c <= 1.0
    np.testing.assert_allclose(y[frame11], c * r[frame11], atol=2e-3)
    np.testing.assert_allclose(r[LAT:], x[: len(r) - LAT], atol=1e-6)
    assert stage.frames_net == len(out) - 3
    stage.shutdown()
