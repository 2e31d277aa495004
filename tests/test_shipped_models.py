"""The models shipped in models/: the default and the opt-in msenh-v3 training snapshot.

msenh-v3-s8250 (``models/msenh-v3-s8250``, the band network at step 8,250) ships beside the
default msenh-v2 so operators can try it through ``serve --canary-model`` or a room's model
switch. These tests pin what that promises: the registry lists it with weights matching its
checksum, it is not the default, it streams exactly as it runs offline, it keeps the stage's
10 ms output delay, and a live stream switched to it is enhanced by it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from mediaserver.enhance.model import WINDOW_MS, BandEnhancer, count_parameters, enhance_offline
from mediaserver.enhance.registry import DEFAULT_MODEL, ModelRegistry
from mediaserver.enhance.stage import FRAME, SWITCH_WARM_FRAMES, EnhancerStage
from mediaserver.enhance.streaming import Enhancer
from mediaserver.enhance.weights import load_model
from model_variants import shipped_model_names

SNAPSHOT = "msenh-v3-s8250"
ROOT = Path(__file__).resolve().parent.parent


def _noise(rows: int, samples: int, level: float, seed: int = 0) -> np.ndarray:
    """White noise [rows, samples] float32 at RMS ``level``."""
    return (level * np.random.default_rng(seed).standard_normal((rows, samples))).astype(np.float32)


def test_shipped_registry_lists_the_v3_snapshot_opt_in_with_its_checksum() -> None:
    registry = ModelRegistry()
    assert {"msenh-v2", SNAPSHOT} <= set(registry.names())
    # opt-in: the default (new rooms, no canary, no override) stays msenh-v2
    assert DEFAULT_MODEL == "msenh-v2" and registry.resolve(None)[0] == "msenh-v2"
    entry = registry.get(SNAPSHOT)
    assert entry.folder == ROOT / "models" / SNAPSHOT
    check = registry.verify(SNAPSHOT)
    assert check.ok, check.problems          # the weights' sha256 = model.json's = the card's
    assert registry.verify("msenh-v2").ok
    manifest = json.loads((entry.folder / "model.json").read_text())
    assert manifest["status"] == "snapshot" and manifest["step"] == 8250
    model = load_model(entry.weights)
    assert isinstance(model, BandEnhancer) and count_parameters(model) == 51_968
    card = entry.card.read_text()            # type: ignore[union-attr]
    assert "8,250" in card and "not the default" in card


def test_every_shipped_model_declares_the_stages_algorithmic_latency() -> None:
    """model.json's algorithmic_latency_ms is the framing the model runs with: one 20 ms
    analysis window (the 10 ms hop buffered + the 480-sample output delay at 48 kHz), the
    same as the stage's, so each loads and a live switch between them shifts nothing."""
    assert Enhancer.window == Enhancer.hop + Enhancer.latency == 960 and Enhancer.sample_rate == 48000
    assert EnhancerStage.algorithmic_latency_ms == 1000 * Enhancer.window / Enhancer.sample_rate == WINDOW_MS == 20
    registry = ModelRegistry()
    for name in shipped_model_names():
        manifest = json.loads((ROOT / "models" / name / "model.json").read_text())
        assert manifest["algorithmic_latency_ms"] == 20, name
        assert registry.get(name).latency_ms == EnhancerStage.algorithmic_latency_ms, name
    stage = EnhancerStage(None, gate=False)
    for name in shipped_model_names():
        assert stage.load(name) == name   # the stage's latency check lets each one in


def test_models_list_shows_the_default_and_the_opt_in_snapshot() -> None:
    """``mediaserver models list`` says which model runs without --model (msenh-v2) and that
    msenh-v3-s8250 is an opt-in snapshot (its model.json status), in text and in JSON."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "mediaserver", "models", "list", *a],  # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True)
    text = run()
    assert text.returncode == 0, text.stderr
    lines = {ln.split()[0]: ln for ln in text.stdout.splitlines()[1:]}
    assert set(lines) == set(shipped_model_names())
    assert lines["msenh-v2"].split()[1] == "default"
    assert lines[SNAPSHOT].split()[1:3] == ["opt-in", "snapshot"]
    assert "20 ms" in lines[SNAPSHOT] and "default" not in lines[SNAPSHOT]
    rows = {r["name"]: r for r in json.loads(run("--json").stdout)}
    assert rows["msenh-v2"]["default"] is True and rows["msenh-v2"]["role"] == "default"
    assert rows[SNAPSHOT]["default"] is False and rows[SNAPSHOT]["role"] == "opt-in snapshot"
    assert [n for n, r in rows.items() if r["default"]] == [DEFAULT_MODEL]


def test_the_v3_snapshot_streams_as_it_runs_offline_with_the_stages_delay() -> None:
    model = load_model(ModelRegistry().get(SNAPSHOT).weights)
    enh = Enhancer(model, capacity=2)
    slots = [enh.allocate(), enh.allocate()]
    x = _noise(2, 48000, 0.05, seed=3)
    lim = np.array([100.0, 12.0], dtype=np.float32)
    y = np.concatenate([enh.process(slots, x[:, i:i + 480], lim) for i in range(0, x.shape[1], 480)], axis=1)
    with torch.no_grad():
        ref = enhance_offline(model, torch.from_numpy(x), 48000, torch.from_numpy(lim)).numpy()
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 1e-4
    # the stage's timing contract holds for it: one 480-sample (10 ms) output delay, as v2
    assert EnhancerStage.latency == Enhancer.latency == 480


def test_a_stream_switched_to_the_v3_snapshot_is_enhanced_by_it() -> None:
    """Default msenh-v2 → live switch to the snapshot: after the warm-up and the fade the stream
    hears exactly the snapshot's output (a fresh v3 slot fed from the switch on), which differs
    from v2's and removes most of a stationary noise."""
    stage = EnhancerStage(None, gate=False)
    assert stage.model_version == "msenh-v2"
    assert stage.load(SNAPSHOT) == SNAPSHOT
    h = stage.open()
    frames, switch_at = 60, 10
    x = _noise(1, frames * FRAME, 0.03, seed=5)[0]   # white noise at about -30 dBFS
    outs = []
    for i in range(frames):
        if i == switch_at:
            stage.switch(h, SNAPSHOT)
        outs.append(stage.process_sync([(h, x[i * FRAME:(i + 1) * FRAME])])[0].enhanced)
    out = np.concatenate(outs)
    assert len(out) == len(x) and h.active_model == SNAPSHOT
    assert stage._enhancers[SNAPSHOT].active == 1 and stage._enhancers["msenh-v2"].active == 0
    # reference: the snapshot alone, fresh state, fed the same input from the switch frame on
    registry = ModelRegistry()
    assert isinstance(stage._enhancers[SNAPSHOT].model, BandEnhancer)
    ref_enh = Enhancer(load_model(registry.get(SNAPSHOT).weights))
    slot = ref_enh.allocate()
    tail = x[switch_at * FRAME:]
    ref = np.concatenate([ref_enh.process([slot], tail[None, k:k + FRAME])[0] for k in range(0, len(tail), FRAME)])
    after = (switch_at + SWITCH_WARM_FRAMES) * FRAME           # first frame fully on the snapshot
    np.testing.assert_allclose(out[after:], ref[after - switch_at * FRAME:], atol=1e-5)
    # and it is not v2 still playing: v2 alone gives another output on the same frames
    v2 = Enhancer(load_model(registry.get("msenh-v2").weights))
    s2 = v2.allocate()
    y2 = np.concatenate([v2.process([s2], x[None, k:k + FRAME])[0] for k in range(0, len(x), FRAME)])
    assert np.abs(y2[after:] - out[after:]).max() > 1e-3
    # enhanced: the stationary noise comes out well below the delayed input
    delayed = np.concatenate([np.zeros(EnhancerStage.latency, np.float32), x[:-EnhancerStage.latency]])
    late = slice(len(x) - 25 * FRAME, len(x))
    drop_db = 10 * np.log10(np.mean(delayed[late] ** 2) / (np.mean(out[late] ** 2) + 1e-20))
    assert drop_db > 20.0, drop_db
    stage.close(h)
