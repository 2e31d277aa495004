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

from mediaserver.enhance.registry import ModelRegistry, RegistryError, write_entry
from mediaserver.enhance.stage import FRAME, SWITCH_WARM_FRAMES, EnhancerStage
from mediaserver.enhance.weights import save_model
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
    assert names == ["msenh-v2", "msenh-v3-s8250", "pass-a"]  # shipped, then the extra root
    shown = run("show", "msenh-v2")
    assert shown.returncode == 0 and "f8e5f55f21f95d18" in shown.stdout and "model card" in shown.stdout
    assert run("verify").returncode == 0
    (tmp_path / "pass-a" / "enhancer.pt").write_bytes(b"tampered")
    bad = run("verify", "pass-a")
    assert bad.returncode == 1 and "sha256 mismatch" in bad.stdout
