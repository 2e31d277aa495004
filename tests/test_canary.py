"""Canary with automatic rollback, live room switch and the model endpoints, through a real server.

The candidate is made in the test's temp folder (a second registry root): msenh-v2 with its
output layer scaled by 0.02, so it removes speech with the noise. With ``--canary-share 1``
every room starts on it; during a real call the server must notice the over-suppression,
roll the canary back and move the call to the stable model without the audio stopping.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mediaserver.audio import read_audio, write_audio
from mediaserver.enhance.canary import Canary, CanaryThresholds, ModelRouter, room_fraction
from mediaserver.enhance.telemetry import Counts

from conftest import (METRICS_TOKEN, ServerProcess, client_summary, espeak_speech, server_metric,
                      start_client, stop_client, wait_participants)
from model_variants import scaled_model, shipped_model_names
from waiting import poll

pytestmark = pytest.mark.timeout(600)


def get_json(server: ServerProcess, path: str, token: str = METRICS_TOKEN) -> dict:
    request = urllib.request.Request(server.url + path.lstrip("/"), headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def post_json(server: ServerProcess, path: str, body: dict | None, token: str | None = None,
              method: str = "POST") -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(server.url + path.lstrip("/"),
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def noisy_speech(folder: Path, seconds: float) -> Path:
    clean = espeak_speech(folder / "clean.wav", "Please call Stella. Ask her to bring these things with her "
                          "from the store: six spoons of fresh snow peas.", seconds=seconds)
    speech, rate = read_audio(clean)
    noise = np.random.default_rng(1).standard_normal(len(speech)).astype(np.float32)
    noisy = speech + 0.3 * np.sqrt(np.mean(speech ** 2)) * noise  # about 10 dB SNR
    path = folder / "noisy.wav"
    write_audio(path, (noisy / max(1.0, np.abs(noisy).max() / 0.9)).astype(np.float32), rate)
    return path


def test_an_over_suppressing_canary_is_rolled_back_during_a_call(tmp_path: Path) -> None:
    root = tmp_path / "candidates"
    scaled_model(root, "cuts-speech", 0.02)
    server = ServerProcess(tmp_path / "server.log", "--secret", "s3cret", "--model-root", str(root),
                           "--canary-model", "cuts-speech", "--canary-share", "1.0",
                           "--canary-window-s", "20", "--canary-min-speech-s", "2")
    try:
        assert get_json(server, "models")["canary"]["state"] == "active"
        wav = noisy_speech(tmp_path, 16.0)
        from mediaserver.sfu.tokens import mint

        tok = lambda who: mint("s3cret", room="canary", identity=who)  # noqa: E731
        b = start_client(server.url, "canary", "B", "--token", tok("B"), "--duration", "60",
                         "--record-dir", str(tmp_path / "rec"), log=tmp_path / "B.log")
        wait_participants(server, 1)
        a = start_client(server.url, "canary", "A", "--token", tok("A"), "--send", str(wav),
                         log=tmp_path / "A.log")
        wait_participants(server, 2)
        # A's stream starts on the candidate (share 1.0), then the server rolls it back by itself
        poll(lambda: get_json(server, "models")["streams"].get("cuts-speech", 0) >= 1 or
             server_metric(server, "mediaserver_canary_rollbacks_total") >= 1, timeout=60,
             what="A on the canary", interval=0.25)
        try:
            poll(lambda: server_metric(server, "mediaserver_canary_rollbacks_total",
                                       model_version="cuts-speech", reason="over_suppression") >= 1,
                 timeout=120, what="automatic rollback", interval=0.25)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {get_json(server, 'models')}") from None
        state = get_json(server, "models")
        assert state["canary"]["state"] == "rolled-back", state
        assert state["canary"]["reason"].startswith("over-suppression"), state
        assert state["canary"]["window"]["candidate"]["distorted_share"] > 0.05, state
        assert set(state["streams"]) == {"msenh-v2"}, state   # every stream moved back
        sent = client_summary(a)["sent_frames"]
        summary = stop_client(b)
        # the call went on: B got A's audio all along, no stretch without packets
        heard = summary["remote"]["A"]
        assert heard["frames_received"] >= 0.9 * sent, (heard, sent)
        assert heard["longest_gap_ms"] < 500, heard
        # after the rollback the speech is back at its level (the candidate left ~-60 dBFS)
        recording, _ = read_audio(heard["file"])
        second_half = recording[len(recording) // 2:]
        seconds = second_half[: len(second_half) // 48000 * 48000].reshape(-1, 48000)
        loudest = 10 * np.log10(np.max(np.mean(seconds ** 2, axis=1)) + 1e-12)
        assert loudest > -35.0, loudest
        assert server_metric(server, "mediaserver_enhancer_model_switches_total", model_version="msenh-v2") >= 1
        assert server_metric(server, "mediaserver_canary_active", model_version="cuts-speech") == 0
        # new rooms now get the stable model: a room override is the only way onto the candidate
        assert "rolled back to msenh-v2" in server.tail(200000)
    finally:
        server.stop()


def test_admin_endpoints_switch_a_room_live_and_need_the_secret(tmp_path: Path) -> None:
    root = tmp_path / "candidates"
    scaled_model(root, "quieter", 0.5)
    server = ServerProcess(tmp_path / "server.log", "--secret", "s3cret", "--model-root", str(root))
    try:
        health = get_json(server, "healthz")
        assert health["model_version"] == "msenh-v2"
        assert post_json(server, "admin/rooms/r1/model", {"model": "quieter"})[0] == 401
        assert post_json(server, "admin/rooms/r1/model", {"model": "quieter"}, METRICS_TOKEN)[0] == 401
        code, body = post_json(server, "admin/rooms/r1/model", {"model": "nope"}, "s3cret")
        assert code == 400 and "unknown model" in body
        # r1 has no participant: 404, nothing loaded, no override (it was 200 {"streams": 0} and
        # the override stayed), unless the operator presets the model of its next call
        code, body = post_json(server, "admin/rooms/r1/model", {"model": "quieter"}, "s3cret")
        assert code == 404 and body.startswith("room 'r1' is not live"), (code, body)
        models = get_json(server, "models")
        assert models["overrides"] == {} and models["loaded"] == ["msenh-v2"], models
        code, body = post_json(server, "admin/rooms/r1/model", {"model": "quieter", "preset": True}, "s3cret")
        assert code == 200 and json.loads(body) == {"room": "r1", "model": "quieter", "streams": 0}, body
        models = get_json(server, "models")
        assert models["overrides"] == {"r1": "quieter"} and "quieter" in models["loaded"]
        # an override (a preset here) is taken back with DELETE: the room gets the default again
        assert post_json(server, "admin/rooms/r1/model", None, METRICS_TOKEN, method="DELETE")[0] == 401
        code, body = post_json(server, "admin/rooms/r1/model", None, "s3cret", method="DELETE")
        assert code == 200 and json.loads(body) == {"room": "r1", "model": "msenh-v2", "streams": 0}, body
        assert get_json(server, "models")["overrides"] == {}
        code, body = post_json(server, "admin/rooms/r1/model", None, "s3cret", method="DELETE")
        assert (code, body) == (404, "room 'r1' has no model override")
        assert post_json(server, "admin/rooms/r1/model", {"model": "quieter", "preset": True}, "s3cret")[0] == 200
        assert {r["name"] for r in models["registry"]} == {*shipped_model_names(), "quieter"}
        with pytest.raises(urllib.error.HTTPError):
            get_json(server, "models", token="wrong")
        # the loaded model's series exist from now on, by model_version
        assert server_metric(server, "mediaserver_enhancer_streams", model_version="quieter") == 0
        assert post_json(server, "admin/canary/rollback", {}, "s3cret")[0] == 409  # no canary here
    finally:
        server.stop()


# ---- the canary's decision table (sans-I/O) ----------------------------------------------------
def counts(speech_s: float, checked_share: float, distorted_share: float, depth_db: float) -> Counts:
    speech = int(speech_s * 50)
    checked = int(speech * checked_share)
    return Counts(frames=speech * 2, speech_frames=speech, checked_frames=checked,
                  distorted_frames=int(checked * distorted_share), suppression_db_speech=depth_db * speech)


def test_canary_rules() -> None:
    c = Canary("stable", "cand", 0.5, CanaryThresholds(window_s=10, min_speech_s=2))
    zero = {"stable": Counts(), "cand": Counts()}
    assert c.observe(now=0.0, sli=zero) is None
    # too little canary speech yet: no verdict even if everything is distorted
    assert c.observe(now=1.0, sli={"stable": Counts(), "cand": counts(1, 0.8, 1.0, 40)}) is None
    # as distorted as the stable model: fine
    assert c.observe(now=2.0, sli={"stable": counts(10, 0.8, 0.06, 20), "cand": counts(5, 0.8, 0.06, 20)}) is None
    # depth within the margin
    assert c.observe(now=3.0, sli={"stable": counts(10, 0.8, 0.06, 20), "cand": counts(6, 0.8, 0.06, 29)}) is None
    reason = c.observe(now=4.0, sli={"stable": counts(10, 0.8, 0.06, 20), "cand": counts(7, 0.8, 0.06, 35)})
    assert reason and reason.startswith("suppression depth") and c.state == "rolled-back"
    assert not c.assigns("any-room") and c.observe(now=5.0, sli=zero) is None
    d = Canary("stable", "cand", 0.5, CanaryThresholds(window_s=10, min_speech_s=2))
    assert d.observe(now=0.0, sli=zero) is None
    assert d.observe(now=1.0, sli={"cand": counts(3, 0.8, 0.5, 40)}).startswith("over-suppression")
    # only the window counts: old distortion outside the window is forgotten
    e = Canary("stable", "cand", 0.5, CanaryThresholds(window_s=10, min_speech_s=2))
    bad = {"cand": counts(3, 0.8, 0.04, 10)}
    assert e.observe(now=0.0, sli=zero) is None and e.observe(now=5.0, sli=bad) is None
    assert e.observe(now=30.0, sli=bad) is None and e.observe(now=45.0, sli=bad) is None
    # DNSMOS: sums and counts per model
    f = Canary("stable", "cand", 0.5, CanaryThresholds(window_s=10, min_speech_s=2))
    ok = {"stable": counts(5, 0.8, 0.0, 20), "cand": counts(5, 0.8, 0.0, 20)}
    assert f.observe(now=0.0, sli=zero, mos={}) is None
    assert f.observe(now=1.0, sli=ok, mos={"stable": (3.0 * 4, 4), "cand": (2.9 * 4, 4)}) is None
    assert f.observe(now=2.0, sli=ok, mos={"stable": (3.0 * 8, 8), "cand": (2.9 * 4 + 2.0 * 4, 8)}).startswith("DNSMOS")


def test_room_assignment_is_stable_and_near_the_share() -> None:
    rooms = [f"room-{i}" for i in range(2000)]
    router = ModelRouter("stable", Canary("stable", "cand", 0.1))
    picks = [router.model_for(r) for r in rooms]
    assert picks == [router.model_for(r) for r in rooms]   # same room, same model, every time
    assert 0.07 < picks.count("cand") / len(rooms) < 0.13
    assert all((room_fraction(r) < 0.1) == (p == "cand") for r, p in zip(rooms, picks))
    router.overrides["room-1"] = "other"
    assert router.model_for("room-1") == "other"
