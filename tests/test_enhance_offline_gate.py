"""``mediaserver enhance --vad-gate 0|1``: the file goes through the server's own stage, gate included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from mediaserver.audio import read_audio
from mediaserver.enhance.offline import enhance_signal_stage
from mediaserver.enhance.stage import EnhancerStage
from test_enhance_gate import WORDS, _scene
from test_enhance_offline import _cli


def test_vad_gate_option_runs_the_server_stage(tmp_path: Path) -> None:
    noisy, _ = _scene("white", -45.0, WORDS)
    noisy = noisy[: 48000 * 4]
    src = tmp_path / "in.wav"
    sf.write(src, noisy, 48000, subtype="FLOAT")
    outs = {}
    for gate in (1, 0):
        out = tmp_path / f"gate{gate}"
        r = _cli(str(src), "--out-dir", str(out), "--vad-gate", str(gate))
        assert r.returncode == 0, r.stderr
        y, rate = read_audio(out / "in.wav")
        assert rate == 48000 and len(y) == len(noisy)
        stage = EnhancerStage(None, gate=bool(gate))
        expected = enhance_signal_stage(stage, noisy, 48000)
        stage.shutdown()
        np.testing.assert_allclose(y, expected, atol=1e-4)  # 16-bit WAV output
        outs[gate] = y
    # the gate changes what is heard (pauses filtered, not enhanced), so the two must differ
    assert np.abs(outs[1] - outs[0]).max() > 1e-3
    bad = _cli(str(src), "--out-dir", str(tmp_path / "x"), "--vad-gate", "2")
    assert bad.returncode == 2 and "--vad-gate" in bad.stderr
