"""Headless Firefox ESR driven over its built-in WebDriver BiDi (no geckodriver).

Used by ``tests/test_interop_firefox.py`` and ``benchmarks/firefox_interop.py``. Firefox is
started with a fresh profile whose ``user.js`` holds :data:`PREFS` and ``--remote-debugging-port``;
the BiDi endpoint is ``ws://127.0.0.1:PORT/session``.

Loopback only. Firefox ESR 153 gathers host candidates only on the machine's other interfaces
(``media.peerconnection.ice.loopback`` and ``force_interface=lo`` do not change that; in a
loopback-only network namespace it gathers nothing), so it is given a TURN server on 127.0.0.1
(coturn, as ``tests/test_turn.py`` runs it) and ``relay_only``: with ``ice.loopback`` it then
allocates from 127.0.0.1 and offers one relay candidate on 127.0.0.1; the server's host
candidate is 127.0.0.1 too. Its microphone is Firefox's fake device: a sine tone of
``media.navigator.audio.fake_frequency`` Hz, granted without a prompt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

import aiohttp

FAKE_TONE_HZ = 1000

PREFS: dict[str, Any] = {
    "media.navigator.streams.fake": True,            # fake devices: a tone as the microphone
    "media.navigator.audio.fake_frequency": FAKE_TONE_HZ,
    "media.navigator.permission.disabled": True,     # getUserMedia granted without a prompt
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.peerconnection.ice.loopback": True,       # may use 127.0.0.1 (here: for TURN)
    "media.peerconnection.ice.relay_only": True,     # only the relay candidate on 127.0.0.1
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "remote.active-protocols": 1,                    # WebDriver BiDi only
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "network.captive-portal-service.enabled": False,
    "browser.startup.homepage_override.mstone": "ignore",
}


def firefox_path() -> Optional[str]:
    return shutil.which("firefox-esr") or shutil.which("firefox")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Runs before any page script: getUserMedia's audio track (the fake tone) is switched on for
# 0.6 s and off for 0.2 s through track.enabled (a disabled track sends silence). Web Audio
# cannot do it here: a headless Firefox keeps every AudioContext suspended without a gesture.
PULSE_MIC_JS = """() => {
  const md = navigator.mediaDevices;
  const original = md.getUserMedia.bind(md);
  md.getUserMedia = async (constraints) => {
    const stream = await original(constraints);
    for (const track of stream.getAudioTracks()) {
      const flip = () => { if (track.readyState === "ended") return;
                           track.enabled = !track.enabled;
                           setTimeout(flip, track.enabled ? 600 : 200); };
      setTimeout(flip, 600);
    }
    return stream;
  };
}"""


class BidiError(RuntimeError):
    """A BiDi command failed, or a script threw."""


class Firefox:
    """One headless Firefox with one tab; ``async with Firefox(...) as fx``."""

    def __init__(self, workdir: Path, *, binary: Optional[str] = None,
                 prefs: Optional[dict[str, Any]] = None, pulsed_mic: bool = False) -> None:
        """``pulsed_mic``: the page's getUserMedia audio is the fake tone gated 0.6 s on,
        0.2 s off (:data:`PULSE_MIC_JS`), like syllables: the denoiser fades a
        steady tone as stationary noise, so a test through the enhancer uses it."""
        self.workdir = workdir
        self.pulsed_mic = pulsed_mic
        self.binary = binary or firefox_path()
        if self.binary is None:
            raise FileNotFoundError("Firefox is not installed (apt-get install -y firefox-esr)")
        self.prefs = {**PREFS, **(prefs or {})}
        self.proc: Optional[subprocess.Popen] = None
        self._http: Optional[aiohttp.ClientSession] = None
        self._ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self._next_id = 0
        self.context = ""
        self.log_path = workdir / "firefox.log"

    async def __aenter__(self) -> "Firefox":
        profile = self.workdir / "firefox-profile"
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "user.js").write_text(
            "".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in self.prefs.items()))
        port = free_port()
        self.proc = subprocess.Popen(
            [str(self.binary), "--headless", "--no-remote", "--profile", str(profile),
             "--remote-debugging-port", str(port), "about:blank"],
            stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
            env=dict(os.environ, MOZ_HEADLESS="1"))
        self._http = aiohttp.ClientSession()
        deadline = time.monotonic() + 90
        while self._ws is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                await self.__aexit__(None, None, None)
                raise RuntimeError(f"Firefox's BiDi endpoint never answered:\n{self.log()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                self._ws = await self._http.ws_connect(f"ws://127.0.0.1:{port}/session",
                                                       max_msg_size=64 << 20)
                break
            await asyncio.sleep(0.2)
        await self.call("session.new", capabilities={})
        tree = await self.call("browsingContext.getTree")
        self.context = tree["contexts"][0]["context"]
        if self.pulsed_mic:
            await self.call("script.addPreloadScript", functionDeclaration=PULSE_MIC_JS)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call("session.end"), 5)
            await self._ws.close()
            self._ws = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    async def call(self, method: str, **params: Any) -> dict:
        assert self._ws is not None
        self._next_id += 1
        ident = self._next_id
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            msg = await self._ws.receive_json(timeout=120)
            if msg.get("id") == ident:
                if msg.get("type") == "error":
                    raise BidiError(f"{method}: {msg.get('error')}: {msg.get('message')}")
                return msg["result"]

    async def navigate(self, url: str) -> None:
        await self.call("browsingContext.navigate", context=self.context, url=url, wait="complete")

    async def evaluate(self, expression: str, *, await_promise: bool = True) -> Any:
        """Evaluate ``expression`` in the tab; returns its JSON-serialisable value (the script
        should return ``JSON.stringify(...)`` for objects)."""
        r = await self.call("script.evaluate", expression=expression,
                            target={"context": self.context}, awaitPromise=await_promise)
        if r.get("type") == "exception":
            raise BidiError(r["exceptionDetails"].get("text", "script error"))
        return r["result"].get("value")

    async def state(self) -> dict:
        """The shipped page's ``window.mediaserver.state()``."""
        text = await self.evaluate(
            "JSON.stringify(window.mediaserver ? window.mediaserver.state() : null)",
            await_promise=False)
        return json.loads(text) if text and text != "null" else {}

    async def wait_state(self, ok: Callable[[dict], bool], what: str,
                         timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        state: dict = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(BidiError):
                state = await self.state()
                if ok(state):
                    return state
            await asyncio.sleep(0.2)
        raise AssertionError(f"Firefox: {what} not reached in {timeout:g} s; "
                             f"state: {json.dumps(state)[:1500]}")

    async def record_from(self, identity: str, seconds: float) -> bytes:
        """Record what the page receives from ``identity`` (MediaRecorder, Ogg/Opus bytes)."""
        script = """
        (async () => {
          const r = window.mediaserver.app.call.receivers.get(%s);
          if (!r) throw new Error("no receiver for that identity");
          const rec = new MediaRecorder(new MediaStream([r.track]), {mimeType: "audio/ogg"});
          const chunks = [];
          rec.ondataavailable = (e) => chunks.push(e.data);
          const done = new Promise((ok) => { rec.onstop = ok; });
          rec.start();
          await new Promise((ok) => setTimeout(ok, %d));
          rec.stop();
          await done;
          const buf = new Uint8Array(await new Blob(chunks).arrayBuffer());
          let s = ""; for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode(...buf.subarray(i, i + 0x8000));
          return btoa(s);
        })()""" % (json.dumps(identity), int(seconds * 1000))
        return base64.b64decode(await self.evaluate(script))
