"""Firefox ESR (headless) joins a room and hears an aiortc client through a real server.

    python benchmarks/firefox_interop.py [--json benchmarks/results/firefox_interop.json]

Not in the test suite (CI installs no Firefox); run by hand after changes to the page, the SDP
or DTLS handling, and commit the JSON. Everything stays on 127.0.0.1:

1. ``mediaserver serve`` on a free port (enhancement as shipped);
2. headless Firefox ESR with a fresh profile: fake microphone (Firefox's own test tone),
   no permission prompt, loopback ICE candidates and plain host addresses (no mDNS), opens
   ``/?room=…&name=firefox&join=1&ice=127.0.0.1``; it is driven over WebDriver BiDi (the
   ``/session`` WebSocket of ``--remote-debugging-port``) to read ``window.mediaserver.state()``;
3. once Firefox is joined and connected, ``mediaserver client`` joins the same room, sends
   espeak-ng speech and records Firefox;
4. judged from content: Firefox receives the client's packets on the track mapped to the
   client's identity, and the client's recording of Firefox carries its tone.

Firefox joins first on purpose: joining a room where someone already is fails today (issue 16,
both sides DTLS server after a re-offer); this script checks the order that works and says so.
Exit status 0 when Firefox and the client hear each other, 1 otherwise.

Status (2026-11-30, Firefox ESR 153.8 on Debian 12): **fails before media**. On a machine with
another interface (here eth0 192.0.2.2), Firefox gathers host candidates only on that interface,
even with ``media.peerconnection.ice.loopback`` true and ``force_interface`` "lo" (checked by
gathering in a bare RTCPeerConnection over BiDi); the page's ``ice=127.0.0.1`` filter then leaves
no candidate, the server logs "have no candidate pairs" and the page says the media connection
failed. Tried next: Firefox, server and client in a network namespace whose only interface is
``lo`` (``ip netns add``; ``ip netns exec NS python benchmarks/firefox_interop.py`` runs it):
Firefox then gathers no candidate at all, so this build does not honour
``media.peerconnection.ice.loopback`` from ``user.js``. Next to try: setting the prefs through
WebDriver BiDi/Marionette before the page loads, a TURN server on 127.0.0.1 (coturn, as
tests/test_turn.py does) with ``relay_only``, or a veth pair between two namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mediaserver.audio import read_audio, resample, write_audio  # noqa: E402

ROOM, FIREFOX_ID, CLIENT_ID = "firefox-interop", "firefox", "aiortc-bot"
PREFS = {
    "media.navigator.streams.fake": True,  # a generated tone as the microphone
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.peerconnection.ice.loopback": True,  # offer 127.0.0.1 candidates
    "media.peerconnection.ice.force_interface": "lo",  # and only those (tests stay on loopback)
    "media.peerconnection.ice.obfuscate_host_addresses": False,  # IPs, not mDNS names
    "remote.active-protocols": 1,  # WebDriver BiDi only
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "network.captive-portal-service.enabled": False,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def speech(path: Path, text: str, seconds: float) -> Path:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    x, rate = read_audio(raw)
    x = resample(x.astype(np.float32), rate, 48000)
    x = 0.5 * x / (np.abs(x).max() + 1e-9)
    unit = np.concatenate([x, np.zeros(14400, np.float32)])
    write_audio(path, np.tile(unit, int(seconds * 48000 / len(unit)) + 1)[: int(seconds * 48000)], 48000)
    return path


class Bidi:
    """The few WebDriver BiDi commands this needs, over one WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("id") == self.next_id:
                if msg.get("type") == "error":
                    raise RuntimeError(f"{method}: {msg.get('error')}: {msg.get('message')}")
                return msg["result"]

    async def state(self, context: str) -> dict:
        r = await self.call("script.evaluate", expression="JSON.stringify(window.mediaserver ? window.mediaserver.state() : null)",
                            target={"context": context}, awaitPromise=False)
        value = r.get("result", {}).get("value")
        return json.loads(value) if value and value != "null" else {}


async def wait_state(bidi: Bidi, context: str, ok, what: str, limit_s: float) -> dict:
    deadline = time.monotonic() + limit_s
    state: dict = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            state = await bidi.state(context)
            if ok(state):
                return state
        await asyncio.sleep(0.5)
    raise TimeoutError(f"Firefox: {what} not reached in {limit_s:.0f} s; last state: {json.dumps(state)[:1500]}")


def person(state: dict, identity: str) -> dict:
    return next((p for p in state.get("participants", []) if p.get("identity") == identity), {})


async def run(work: Path, firefox: str) -> dict[str, Any]:
    result: dict[str, Any] = {"firefox": subprocess.run([firefox, "--version"], capture_output=True, text=True).stdout.strip()}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mediaserver", "serve", "--host", "127.0.0.1", "--port", str(port),
                               "--ice-host", "127.0.0.1"], cwd=ROOT, stdout=open(work / "server.log", "wb"), stderr=subprocess.STDOUT)
    profile = work / "profile"
    profile.mkdir()
    (profile / "user.js").write_text("".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in PREFS.items()))
    bidi_port = free_port()
    url = f"http://127.0.0.1:{port}/?room={ROOM}&name={FIREFOX_ID}&join=1&aec=0&ice=127.0.0.1"
    fx = None
    client = None
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(120):  # the server is up when its page answers
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.5)
            fx = subprocess.Popen([firefox, "--headless", "--no-remote", "--profile", str(profile),
                                   "--remote-debugging-port", str(bidi_port), url],
                                  stdout=open(work / "firefox.log", "wb"), stderr=subprocess.STDOUT,
                                  env=dict(os.environ, MOZ_HEADLESS="1"))
            ws = None
            for _ in range(120):
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    ws = await http.ws_connect(f"ws://127.0.0.1:{bidi_port}/session")
                    break
                await asyncio.sleep(0.5)
            if ws is None:
                raise RuntimeError("Firefox's WebDriver BiDi endpoint never answered")
            bidi = Bidi(ws)
            await bidi.call("session.new", capabilities={})
            tree = await bidi.call("browsingContext.getTree")
            context = tree["contexts"][0]["context"]
            t0 = time.monotonic()
            joined = await wait_state(bidi, context, lambda s: s.get("phase") == "joined" and s.get("connectionState") == "connected",
                                      "joined and media connected", 90)
            result["firefox_connected_s"] = round(time.monotonic() - t0, 1)
            result["firefox_mic_rms"] = joined.get("micRms")
            voice = speech(work / "client.wav", "The headless client is talking to Firefox now.", 12)
            client = subprocess.Popen([sys.executable, "-m", "mediaserver", "client", "--ice-host", "127.0.0.1",
                                       "--url", f"ws://127.0.0.1:{port}/ws", "--room", ROOM, "--identity", CLIENT_ID,
                                       "--send", str(voice), "--record-dir", str(work / "rec")],
                                      cwd=ROOT, stdout=open(work / "client.log", "wb"), stderr=subprocess.STDOUT)
            heard = await wait_state(
                bidi, context,
                lambda s: bool(person(s, CLIENT_ID).get("hasTrack")) and (person(s, CLIENT_ID).get("inbound") or {}).get("packetsReceived", 0) > 100,
                f"receiving {CLIENT_ID}", 90)
            bot = person(heard, CLIENT_ID)
            result["firefox_packets_from_client"] = (bot.get("inbound") or {}).get("packetsReceived")
            result["firefox_peak_rms_of_client"] = bot.get("peakRms")
            await asyncio.get_running_loop().run_in_executor(None, client.wait, 120)
            result["client_exit"] = client.returncode
    finally:
        for proc in (client, fx, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is None:
                    proc.kill()
    recordings = sorted((work / "rec").glob(f"*{FIREFOX_ID}*.wav"))
    if recordings:
        audio, rate = read_audio(recordings[0])
        seconds = [float(np.sqrt(np.mean(audio[i:i + rate] ** 2))) for i in range(0, len(audio) - rate + 1, rate)]
        result["client_heard_firefox_rms_per_s"] = [round(v, 4) for v in seconds]
        result["client_heard_firefox"] = sum(v > 0.003 for v in seconds) >= len(seconds) // 2 > 0
    else:
        result["client_heard_firefox"] = False
    result["firefox_heard_client"] = (result.get("firefox_packets_from_client") or 0) > 100
    result["ok"] = bool(result["firefox_heard_client"] and result["client_heard_firefox"] and result.get("client_exit") == 0)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "firefox_interop.json"))
    parser.add_argument("--firefox", default=shutil.which("firefox-esr") or shutil.which("firefox"))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, recordings)")
    args = parser.parse_args()
    if not args.firefox:
        print("error: Firefox is not installed (apt-get install -y firefox-esr)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="firefox-interop-"))
    try:
        result = asyncio.run(run(work, args.firefox))
    except Exception as exc:  # report what happened, with the logs' tails
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        for name in ("server.log", "firefox.log", "client.log"):
            p = work / name
            if p.exists():
                result[f"{name}_tail"] = p.read_text(errors="replace")[-1500:]
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["load_average"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    for k, v in result.items():
        if not k.endswith("_tail"):
            print(f"{k:32} {v}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder: {work}")
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
