"""The raw-vs-enhanced debug view in real headless Chromium (screenshot: tests/output/debug_view.png).

An aiortc client speaks in a room; the page /debug?room=…&identity=… polls the server and
must draw both spectrograms (raw and enhanced, visibly different: the enhancer removed the
noise) next to the stream's model and quality telemetry.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
import pytest

from conftest import start_client, stop_client
from test_browser import OUTPUT, Chromium, Server, make_speech

pytestmark = pytest.mark.timeout(400)

CANVAS_STATS = """(() => ['dbg-raw', 'dbg-enhanced'].map((id) => {
  const c = document.getElementById(id); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sum2 = 0, n = 0;
  for (let i = c.width * 4 - 4 * 60; i < d.length; i += 4 * 7) { const v = d[i] + d[i + 1]; sum += v; sum2 += v * v; n++; }
  return JSON.stringify({mean: sum / n, var: sum2 / n - (sum / n) ** 2});
}))()"""


async def test_debug_page_shows_raw_and_enhanced_spectrograms(tmp_path) -> None:
    voice = make_speech(tmp_path / "voice.wav", "Please call Stella and ask her to bring these things.", seconds=30)
    # the talker's microphone is noisy: raw and enhanced must look different
    from mediaserver.audio import read_audio, write_audio

    x, rate = read_audio(voice)
    noisy = x + 0.05 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    write_audio(tmp_path / "noisy.wav", np.clip(noisy, -1, 1), rate)
    async with Server(tmp_path / "server.log") as server:
        talker = start_client(server.url + "/", "dbg", "A", "--send", str(tmp_path / "noisy.wav"),
                              log=tmp_path / "A.log")
        try:
            for _ in range(600):  # A's stream exists once it published
                rooms = json.loads(await asyncio.to_thread(
                    lambda: urllib.request.urlopen(server.url + "/debug/rooms", timeout=10).read()))
                if any(p["identity"] == "A" for p in rooms["rooms"].get("dbg", [])):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("A never published")
            async with Chromium(f"{server.url}/debug?room=dbg&identity=A", audio=voice, profile=tmp_path / "profile",
                                log_path=tmp_path / "chromium.log") as page:
                state: dict = {}
                for _ in range(480):
                    state = await page.evaluate("window.debugView ? window.debugView.state() : {}")
                    if state.get("columns", 0) >= 60:
                        break
                    await asyncio.sleep(0.25)
                await page.screenshot(OUTPUT / "debug_view.png")
                assert state.get("columns", 0) >= 60, (state, page.console[-10:])
                assert state["drawn"]["raw"] == state["drawn"]["enhanced"] == state["columns"]
                assert state["model"] == "msenh-v2" and state["error"] is None
                raw, enhanced = (json.loads(s) for s in await page.evaluate(CANVAS_STATS))
                # both drawn (not a blank canvas) and different: the noise is gone in one of them
                assert raw["var"] > 100 and enhanced["var"] > 100, (raw, enhanced)
                assert raw["mean"] > enhanced["mean"] + 5, (raw, enhanced, server.tail()[-1500:])
                quality = await page.evaluate("document.getElementById('dbg-quality').textContent")
                assert "snr_in_db" in quality and "suppression_db" in quality
        finally:
            stop_client(talker)
