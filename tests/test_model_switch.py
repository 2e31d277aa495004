"""Live model switch in the stage and the model registry (enhance/registry.py, `mediaserver models`).

Two constant-mask models make the switch exactly predictable: model A passes the input
(mask 1), model B halves it (mask 0.5). A stream switched from A to B must produce every
frame, and its output must follow ``delayed · (1 − 0.5 · fade)`` where fade rises 0 → 1 over
one 20 ms frame after B's warm-up: a dropped frame, a jump, or a cold (unwarmed) B all break it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mediaserver.audio import write_audio
from mediaserver.enhance.registry import ModelRegistry, RegistryError, write_entry
from mediaserver.enhance.stage import FRAME, SWITCH_WARM_FRAMES, EnhancerStage, LatencyMismatch
from mediaserver.enhance.weights import WeightsError, save_model
from model_variants import shipped_model_names
from test_enhance_common import constant_mask_model

ROOT = Path(__file__).resolve().parent.parent
LAT = EnhancerStage.latency


def registered(root: Path, name: str, mask: float) -> Path:
    folder = root / name
    save_model(constant_mask_model(mask), folder / "enhancer.pt")
    entry = write_entry(folder, name, card="MODEL_CARD.md")
    (folder / "MODEL_CARD.md").write_text(f"# {name}\n\nconstant mask {mask}; sha256 `{entry.sha256}`\n")
    return folder


@pytest.fixture
def two_models(tmp_path: Path) -> ModelRegistry:
    registered(tmp_path, "pass-a", 1.0)
    registered(tmp_path, "half-b", 0.5)
    return ModelRegistry([tmp_path])


def tone(n: int) -> np.ndarray:
    t = np.arange(n) / 48000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1900 * t)).astype(np.float32)


@pytest.mark.parametrize("switch_at", [7, 20])
def test_live_switch_is_warmed_cross_faded_and_drops_no_frame(two_models, switch_at) -> None:
    stage = EnhancerStage("pass-a", models=two_models, gate=False)
    stage.load("half-b")
    h = stage.open()
    x = tone(60 * FRAME)
    outs = []
    for i in range(60):
        if i == switch_at:
            stage.switch(h, "half-b")
            assert h.active_model == "pass-a"  # the old model plays until the fade
        outs.append(stage.process_sync([(h, x[i * FRAME:(i + 1) * FRAME])])[0].enhanced)
    assert all(o.shape == (FRAME,) for o in outs) and len(outs) == 60
    out = np.concatenate(outs)
    delayed = np.concatenate([np.zeros(LAT, np.float32), x[:-LAT]])
    fade_frame = switch_at + SWITCH_WARM_FRAMES - 1
    gain = np.ones(len(x), np.float32)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(FRAME) + 0.5) / FRAME)
    gain[fade_frame * FRAME:(fade_frame + 1) * FRAME] = 1.0 - 0.5 * ramp
    gain[(fade_frame + 1) * FRAME:] = 0.5
    start = 2 * FRAME  # after the first frame's overlap-add start-up
    err = np.abs(out[start:] - delayed[start:] * gain[start:])
    assert err.max() < 2e-3, (int(np.argmax(err)) + start, float(err.max()))
    assert h.active_model == "half-b"
    assert stage._enhancers["pass-a"].active == 0 and stage._enhancers["half-b"].active == 1
    stage.close(h)
    stage.process_sync([(stage.open(), x[:FRAME])])  # frees the closed stream's slot
    assert stage._enhancers["half-b"].active == 0 and stage._enhancers["pass-a"].active == 1


def test_switch_to_an_unloaded_model_is_refused(two_models) -> None:
    stage = EnhancerStage("pass-a", models=two_models, gate=False)
    h = stage.open()
    with pytest.raises(KeyError):
        stage.switch(h, "half-b")
    assert h.model == "pass-a"


def test_registry_resolves_names_and_verifies_sha256(two_models, tmp_path) -> None:
    assert {"msenh-v2", "pass-a", "half-b"} <= set(two_models.names())
    name, path = two_models.resolve("half-b")
    assert name == "half-b" and path == tmp_path / "half-b" / "enhancer.pt"
    assert two_models.resolve(None)[0] == "msenh-v2"
    assert two_models.verify("msenh-v2").ok and two_models.verify("half-b").ok
    with pytest.raises(RegistryError):
        two_models.resolve("no-such-model")
    # weights changed after registration: verify names the mismatch
    save_model(constant_mask_model(0.7), tmp_path / "half-b" / "enhancer.pt")
    result = two_models.verify("half-b")
    assert not result.ok and any("sha256 mismatch" in p for p in result.problems)


def test_models_command_lists_shows_and_verifies(tmp_path) -> None:
    registered(tmp_path, "pass-a", 1.0)
    run = lambda *a: subprocess.run([sys.executable, "-m", "mediaserver", "models", *a,  # noqa: E731
                                     "--model-root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    listed = run("list", "--json")
    assert listed.returncode == 0, listed.stderr
    names = [row["name"] for row in json.loads(listed.stdout)]
    assert names == shipped_model_names() + ["pass-a"]  # shipped (the default among them), then the extra root
    shown = run("show", "msenh-v2")
    assert shown.returncode == 0 and "f8e5f55f21f95d18" in shown.stdout and "model card" in shown.stdout
    assert run("verify").returncode == 0
    (tmp_path / "pass-a" / "enhancer.pt").write_bytes(b"tampered")
    bad = run("verify", "pass-a")
    assert bad.returncode == 1 and "sha256 mismatch" in bad.stdout


def _declare_latency(folder: Path, value: object) -> None:
    manifest = json.loads((folder / "model.json").read_text())
    manifest["algorithmic_latency_ms"] = value
    (folder / "model.json").write_text(json.dumps(manifest))


def test_a_model_declaring_another_algorithmic_latency_is_refused_by_the_stage(tmp_path: Path) -> None:
    """model.json's algorithmic_latency_ms is checked against the stage's (20 ms: the media
    clock compensates one 480-sample output delay for every model): another value is refused
    when the model would load, by name, folder or weights file, with the reason; the stage
    keeps running its other models. write_entry declares this code's framing."""
    registered(tmp_path, "same-20", 1.0)
    slow = registered(tmp_path, "slow-40", 1.0)
    assert json.loads((slow / "model.json").read_text())["algorithmic_latency_ms"] == 20
    _declare_latency(slow, 40)
    models = ModelRegistry([tmp_path])
    assert models.get("slow-40").latency_ms == 40.0 and models.get("same-20").latency_ms == 20.0
    stage = EnhancerStage(None, models=models, gate=False)
    assert EnhancerStage.algorithmic_latency_ms == 20.0
    assert stage.load("same-20") == "same-20"
    for spec in ("slow-40", slow, slow / "enhancer.pt"):
        with pytest.raises(LatencyMismatch) as refused:
            stage.load(spec)
        text = str(refused.value)
        assert "slow-40" in text and "algorithmic_latency_ms 40" in text and "20 ms" in text, text
        assert isinstance(refused.value, WeightsError)   # serve, enhance, the admin: one line each
    assert stage.loaded_models == ["msenh-v2", "same-20"]
    with pytest.raises(LatencyMismatch):
        EnhancerStage("slow-40", models=models)
    # the command line: one line naming the flag, exit 2 (as for any --model that cannot load)
    wav = tmp_path / "in.wav"
    write_audio(wav, tone(48000), 48000)
    run = subprocess.run([sys.executable, "-m", "mediaserver", "enhance", str(wav), "--out-dir",
                          str(tmp_path / "out"), "--model", str(slow)], cwd=ROOT, capture_output=True, text=True)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "--model" in lines[0], run.stderr
    assert "algorithmic_latency_ms 40" in lines[0] and not (tmp_path / "out" / "in.wav").exists()


@pytest.mark.parametrize("value", ["20 ms", 0, -20, True, None])
def test_the_registry_validates_the_declared_latency(tmp_path: Path, value: object) -> None:
    folder = registered(tmp_path, "odd", 1.0)
    if value is None:   # not declared: weights with no framing claim run with this code's
        manifest = json.loads((folder / "model.json").read_text())
        del manifest["algorithmic_latency_ms"]
        (folder / "model.json").write_text(json.dumps(manifest))
        models = ModelRegistry([tmp_path])
        assert models.get("odd").latency_ms is None and not models.errors
        assert EnhancerStage("odd", models=models).model_version == "odd"
        return
    _declare_latency(folder, value)
    models = ModelRegistry([tmp_path])
    assert "odd" not in models
    assert any("algorithmic_latency_ms" in e and "model.json" in e for e in models.errors), models.errors
