"""Per-stream quality telemetry (enhance/telemetry.py) through the real stage and msenh-v2.

Known-SNR mixtures of espeak speech and noise check the estimates; an enhancer that removes
speech (msenh-v2 with its output layer scaled down) must raise distortion events, ours not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

from mediaserver.audio import read_audio
from mediaserver.enhance.stage import FRAME, EnhancerStage
from conftest import espeak_speech
from model_variants import scaled_model

TEXT = ("The quick brown fox jumps over the lazy dog. "
        "Please call Stella and ask her to bring these things with her from the store.")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Two utterances between 1 s pauses, 48 kHz, speech peaks at -6 dBFS."""
    speech, _ = read_audio(espeak_speech(tmp_path_factory.mktemp("tel") / "s.wav", TEXT))
    gap = np.zeros(48000, np.float32)
    x = np.concatenate([gap, speech, gap, speech, gap]).astype(np.float32)
    return x[: len(x) // FRAME * FRAME]


def active_speech_power(clean: np.ndarray) -> float:
    """Mean power of the 20 ms frames within 40 dB of the loudest (the SNR's reference)."""
    p = (clean.reshape(-1, FRAME) ** 2).mean(axis=1)
    return float(p[p > p.max() * 1e-4].mean())


def mixture(clean: np.ndarray, snr_db: float, colour: str, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(clean)).astype(np.float32)
    if colour == "low":  # more energy low down, like fans and traffic
        noise = np.convolve(noise, np.ones(8) / 8, mode="same").astype(np.float32)
    noise *= np.sqrt(active_speech_power(clean) / 10 ** (snr_db / 10) / np.mean(noise ** 2))
    return clean + noise


def run(stage: EnhancerStage, x: np.ndarray, kinds=None):
    h = stage.open()
    for i, f in enumerate(x.reshape(-1, FRAME)):
        stage.process_sync([(h, f, kinds[i] if kinds else "normal")])
    return h


@pytest.fixture(scope="module")
def ours() -> EnhancerStage:
    stage = EnhancerStage(None)
    yield stage
    stage.shutdown()


@pytest.mark.parametrize("snr_db,colour", [(0, "white"), (10, "white"), (20, "white"), (5, "low")])
def test_snr_estimate_within_3_db_of_the_known_snr(ours, clean, snr_db, colour) -> None:
    h = run(ours, mixture(clean, snr_db, colour))
    snap = h.telemetry.snapshot()
    assert abs(snap["snr_in_db"] - snr_db) <= 3.0, snap
    noise_dbfs = 10 * np.log10(active_speech_power(clean) / 10 ** (snr_db / 10))
    assert abs(snap["noise_in_dbfs"] - noise_dbfs) <= 3.0, snap
    # the enhancer removes noise: the floor after is far lower, the SNR after far higher
    assert snap["noise_out_dbfs"] < snap["noise_in_dbfs"] - 10.0, snap
    assert snap["snr_out_db"] > snap["snr_in_db"] + 10.0, snap
    assert snap["suppression_db"] > 10.0 and snap["speech_pct"] > 40.0, snap
    assert snap["distortion_events"] == 0, snap  # ours keeps the speech


@pytest.mark.parametrize("snr_db", [5, 20])
def test_over_suppression_fires_on_an_enhancer_that_removes_speech(clean, tmp_path, snr_db) -> None:
    stage = EnhancerStage(scaled_model(tmp_path, "cuts-speech", 0.02))
    h = run(stage, mixture(clean, snr_db, "white"))
    counts = h.telemetry.counts()
    assert h.telemetry.snapshot()["distortion_events"] >= 2
    assert counts.distorted_frames > 0.5 * counts.checked_frames > 0
    stage.shutdown()


def test_ours_distorts_almost_no_checked_frame(ours, clean) -> None:
    counts = run(ours, mixture(clean, 10, "low", seed=3)).telemetry.counts()
    assert counts.checked_frames > 100
    assert counts.distortion_events == 0 and counts.distorted_frames <= 0.03 * counts.checked_frames


@pytest.mark.parametrize("quiet_frames", [10, 150], ids=["quiet-start", "noise-jumps-at-3s"])
@pytest.mark.parametrize("quiet_db", [-20.0, -40.0])
def test_floor_follows_a_noise_rise_under_a_vad_that_never_closes(ours, clean, quiet_frames, quiet_db) -> None:
    """Loud noise at 0 dB SNR, where the VAD calls every frame speech, after a quiet stretch
    (a call opening quietly: codec fade-in, mic gain ramp; or a siren starting mid-call): the
    floor must still climb to the noise, and the climb must raise no distortion event (a
    real call of the SFU test raised 24 false events with a floor stuck at its quiet start)."""
    x = mixture(clean, 0, "low", seed=5)
    noise = x - clean
    x[: quiet_frames * FRAME] = clean[: quiet_frames * FRAME] + 10 ** (quiet_db / 20) * noise[: quiet_frames * FRAME]
    h = run(ours, x)
    snap = h.telemetry.snapshot()
    noise_dbfs = 10 * np.log10(active_speech_power(clean))  # 0 dB: noise as loud as speech
    assert snap["speech_pct"] > 80.0, snap  # the VAD stayed on: the floor learnt only in speech
    assert abs(snap["noise_in_dbfs"] - noise_dbfs) <= 3.0, snap
    assert snap["distortion_events"] == 0, snap


def test_concealment_fec_dtx_shares_and_clipping(ours, clean) -> None:
    x = mixture(clean, 20, "white")[: 300 * FRAME].copy()
    x[: 100 * FRAME] = np.clip(4.0 * x[: 100 * FRAME], -1.0, 1.0)  # loud speaker, clipped
    kinds = ["normal"] * 200 + ["plc", "fec", "dtx", "normal"] * 25
    h = run(ours, x, kinds)
    snap = h.telemetry.snapshot()
    assert snap["clipped_frames"] > 5
    # the last 100 frames: a quarter each (2 s exponential window: within a few points)
    for key in ("concealed_pct", "fec_pct", "dtx_pct"):
        assert 15.0 < snap[key] < 35.0, snap


def test_prometheus_gets_counters_by_model_and_worker_only(clean, tmp_path) -> None:
    registry = CollectorRegistry()
    stage = EnhancerStage(None, registry=registry, worker="w1")
    bad = stage.load(scaled_model(tmp_path, "cuts-speech", 0.02))
    x = mixture(clean, 10, "white")
    a, b = stage.open(), stage.open(model=bad)
    for f in x.reshape(-1, FRAME):
        stage.process_sync([(a, f), (b, f)])
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name.startswith("mediaserver_enhancer_"):
                # room-independent labels only: never a participant, room or stream label
                assert set(s.labels) <= {"model_version", "worker", "path", "le"}, s
                assert s.labels.get("worker") == "w1"
                samples[(s.name, s.labels.get("model_version"), s.labels.get("path"), s.labels.get("le"))] = s.value
    for model in ("msenh-v2", "cuts-speech"):
        assert samples[("mediaserver_enhancer_speech_frames_total", model, None, None)] > 100
        assert samples[("mediaserver_enhancer_stream_snr_in_db_count", model, None, None)] >= 5
    assert samples[("mediaserver_enhancer_distortion_events_total", "cuts-speech", None, None)] >= 2
    assert samples[("mediaserver_enhancer_distortion_events_total", "msenh-v2", None, None)] == 0
    assert samples[("mediaserver_enhancer_distorted_frames_total", "cuts-speech", None, None)] > 100
    stage.shutdown()
