"""Four real ``mediaserver client`` processes through a real server, with churn.

Each client sends its own tone; each recording must hold exactly the tone of the
identity it is named after, nobody hears itself, and a participant who joins after
another left gets the freed transceiver slot and is heard by everyone.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from mediaserver.audio import read_audio, write_audio

from conftest import ServerProcess, start_client, stop_client, wait_metric_grows, wait_participants

pytestmark = pytest.mark.timeout(240)

TONES = {"alice": 330.0, "bob": 550.0, "carol": 770.0, "dave": 990.0, "erin": 1210.0}


def tone(path: Path, freq: float, seconds: float) -> Path:
    t = np.arange(int(seconds * 48000)) / 48000
    write_audio(path, 0.25 * np.sin(2 * np.pi * freq * t).astype(np.float32), 48000)
    return path


def dominant_hz(path: Path) -> float:
    audio, rate = read_audio(path)
    spec = np.abs(np.fft.rfft(audio))
    return float(np.argmax(spec[20:]) + 20) * rate / len(audio)


def test_four_participants_hear_the_others_with_join_and_leave(
        sfu_server: ServerProcess, tmp_path: Path) -> None:
    url, room = sfu_server.url, "four"
    files = {n: tone(tmp_path / f"{n}.wav", f, 90.0) for n, f in TONES.items()}
    rec = {n: tmp_path / f"rec-{n}" for n in TONES}

    def start(name: str, duration: float) -> object:
        return start_client(url, room, name, "--send", str(files[name]), "--record-dir",
                            str(rec[name]), "--duration", str(duration),
                            log=tmp_path / f"{name}.log")

    procs = {n: start(n, 300) for n in ("alice", "bob")}
    procs["carol"] = start("carol", 300)
    # media flows, judged by what the server forwards (3 publishers x 2 subscribers, 1 s)
    wait_metric_grows(sfu_server, "mediaserver_packets_out_total", 3 * 2 * 50)
    procs["dave"] = start("dave", 300)
    wait_participants(sfu_server, 4)
    wait_metric_grows(sfu_server, "mediaserver_packets_out_total", 4 * 3 * 100)   # 2 s full mesh
    summaries = {"carol": stop_client(procs["carol"])}      # carol leaves mid-call
    wait_participants(sfu_server, 3)
    procs["erin"] = start("erin", 300)                       # takes carol's freed slot
    wait_participants(sfu_server, 4)
    wait_metric_grows(sfu_server, "mediaserver_packets_out_total", 4 * 3 * 100)
    for name, proc in procs.items():
        if name != "carol":
            summaries[name] = stop_client(proc)

    for name, s in summaries.items():
        assert name not in s["remote"], f"{name} heard itself"
        for other, r in s["remote"].items():
            assert r["frames_received"] > 25, (name, other, r)
            heard = dominant_hz(Path(r["file"]))
            assert abs(heard - TONES[other]) < 15, f"{name}'s recording of {other}: {heard} Hz"
    assert set(summaries["alice"]["remote"]) == {"bob", "carol", "dave", "erin"}
    assert set(summaries["bob"]["remote"]) == {"alice", "carol", "dave", "erin"}
    assert {"alice", "bob", "dave"} <= set(summaries["erin"]["remote"])
    assert "carol" not in summaries["erin"]["remote"]
    assert {"alice", "bob"} <= set(summaries["carol"]["remote"])
    assert {"alice", "bob", "erin"} <= set(summaries["dave"]["remote"])
    left = [e["identity"] for e in summaries["alice"]["events"] if e["type"] == "participant-left"]
    assert "carol" in left
    # alice kept receiving bob through all the churn
    assert summaries["alice"]["remote"]["bob"]["frames_received"] > 300
    assert sfu_server.alive()


def test_mute_is_announced_to_the_others(sfu_server: ServerProcess) -> None:
    """A participant's mute reaches everyone else in the room as a ``muted`` event, once."""
    async def scenario() -> list[dict]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(sfu_server.ws_url) as a, \
                    session.ws_connect(sfu_server.ws_url) as b:
                for ws, name in ((a, "muter"), (b, "listener")):
                    await ws.send_str(json.dumps({"type": "join", "room": "mute", "identity": name}))
                    assert json.loads((await ws.receive(timeout=20)).data)["type"] == "joined"
                for muted in (True, True, False):  # the repeat changes nothing: no event
                    await a.send_str(json.dumps({"type": "mute", "muted": muted}))
                events = []
                while len(events) < 2:
                    msg = json.loads((await b.receive(timeout=20)).data)
                    if msg["type"] == "muted":
                        events.append(msg)
                return events

    events = asyncio.run(scenario())
    assert events == [{"type": "muted", "identity": "muter", "muted": True},
                      {"type": "muted", "identity": "muter", "muted": False}]
