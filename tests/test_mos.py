"""Sampled DNSMOS (enhance/mos.py): off by default, one 9 s window per stream, raw and enhanced,
scored on its own thread with the real DNSMOS models of speechmos, exported by model version."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mediaserver.enhance.stage import FRAME, EnhancerStage, add_stage_options, stage_from_args
from requires import require
from test_telemetry import clean, mixture  # noqa: F401  (module fixture)


def test_dnsmos_sampling_is_off_by_default() -> None:
    parser = argparse.ArgumentParser()
    add_stage_options(parser)
    args = parser.parse_args([])
    assert args.dnsmos_sample_s == 0
    stage = stage_from_args(args)
    assert stage.mos is None and stage.frame_sinks == []
    stage.shutdown()


def test_one_window_per_stream_scored_raw_and_enhanced_by_model(clean) -> None:  # noqa: F811
    try:
        import speechmos  # noqa: F401
    except ImportError:
        require(False, "speechmos missing (pip install mediaserver[mos])")
    from mediaserver.enhance.mos import MosSampler

    registry = CollectorRegistry()
    stage = EnhancerStage(None, registry=registry, worker="w2")
    stage.mos = MosSampler(9.0, registry=registry, worker="w2")
    stage.frame_sinks.append(stage.mos)
    x = mixture(clean, 5, "white")
    x = np.concatenate([x, x])[: 19 * 48000]  # 19 s: each stream fills at least one window
    a, b = stage.open(), stage.open()
    for f in x.reshape(-1, FRAME):
        stage.process_sync([(a, f), (b, 0.5 * f)])
    assert stage.mos.wait_idle(300)
    stage.shutdown()
    assert stage.mos.scored >= 2 and stage.mos.dropped == 0
    total, n = stage.mos.mos_by_model()["msenh-v2"]
    assert n >= 2 and 1.0 < total / n < 5.0
    scores = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name == "mediaserver_enhancer_dnsmos_sum":
                scores[(s.labels["signal"], s.labels["score"])] = s.value
                assert s.labels["model_version"] == "msenh-v2" and s.labels["worker"] == "w2"
            if s.name == "mediaserver_enhancer_dnsmos_cpu_seconds_total":
                print(f"DNSMOS CPU per window (raw + enhanced): {s.value / stage.mos.scored:.2f} s")
    # noise at 5 dB: the enhancer's background score must be far better than the raw one
    assert scores[("enhanced", "bak")] > scores[("raw", "bak")] + 0.5 * stage.mos.scored, scores


def test_a_short_period_is_refused() -> None:
    from mediaserver.enhance.mos import MosSampler

    with pytest.raises(ValueError):
        MosSampler(5.0, scorer=lambda x: {})
