"""Firefox ESR (headless) joins a busy room: how long until audio flows both ways.

    python benchmarks/firefox_interop.py [--runs 3] [--json benchmarks/results/firefox_interop.json]

Everything stays on 127.0.0.1: coturn on 127.0.0.1 (Firefox gathers no loopback host
candidate; it offers a relay candidate on 127.0.0.1, see tests/firefox_bidi.py), a real
``mediaserver serve --no-enhance``, an aiortc participant (``bot``, 660 Hz tone) already in the
room, and headless Firefox driven over WebDriver BiDi opening the shipped page with
``join=1``. Per run, from the moment the page is asked to load:

- ``joined_s``: the page has its ``joined`` reply; ``connected_s``: its RTCPeerConnection is
  connected (ICE through the relay, DTLS);
- ``firefox_rx_s``: Firefox's inbound RTP from ``bot`` has packets;
- ``bot_hears_s``: the bot decodes a frame of sound from the track mapped to ``firefox``.

Then judged from content (not timed): the bot hears Firefox's 1 kHz tone and Firefox records
the bot's 660 Hz. Issue 16's target: a join into a busy room reaches audio both ways within
3 s on loopback (page load and microphone start included here). Exit 0 when every run heard
both ways.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ServerProcess  # noqa: E402
from firefox_bidi import FAKE_TONE_HZ, Firefox  # noqa: E402
from interop import KeptHeard, decode_file, tone_in_some_window  # noqa: E402
from rtc_peer import RtcPeer, loopback_ice  # noqa: E402
from test_turn import SECRET, Coturn  # noqa: E402

BOT_HZ = 660.0


def person(state: dict, identity: str) -> dict:
    return next((p for p in state.get("participants", []) if p.get("identity") == identity), {})


async def one_run(fx: Firefox, server: ServerProcess, run: int, work: Path) -> dict[str, Any]:
    room, name = f"busy-{run}", f"firefox{run}"
    out: dict[str, Any] = {"run": run}
    async with aiohttp.ClientSession() as session:
        bot = RtcPeer(server.ws_url, room, "bot", tone_hz=BOT_HZ)
        heard = KeptHeard()
        bot.heard[name] = heard
        try:
            await bot.connect(session)
            await bot.join()
            await bot.publish()
            t0 = time.monotonic()
            await fx.call("browsingContext.navigate", context=fx.context,
                          url=f"{server.url}?room={room}&name={name}&join=1&aec=0&ice=127.0.0.1",
                          wait="none")
            marks: dict[str, float] = {}
            deadline = t0 + 60
            while len(marks) < 4 and time.monotonic() < deadline:
                now = time.monotonic() - t0
                try:
                    state = await fx.state()
                except Exception:
                    state = {}
                if state.get("phase") == "joined":
                    marks.setdefault("joined_s", now)
                if state.get("connectionState") == "connected":
                    marks.setdefault("connected_s", now)
                if ((person(state, "bot").get("inbound") or {}).get("packetsReceived") or 0) > 0:
                    marks.setdefault("firefox_rx_s", now)
                if bot.loud_frames(name) > 0:
                    marks.setdefault("bot_hears_s", now)
                await asyncio.sleep(0.02)
            out.update({k: round(v, 2) for k, v in marks.items()})
            await bot.hears(name, frames=50, timeout=30)
            out["bot_hears_firefox_tone"] = tone_in_some_window(heard.last(3.0), FAKE_TONE_HZ) is None
            pcm = decode_file(await fx.record_from("bot", 2.0), work, f"run{run}")
            out["firefox_hears_bot_tone"] = tone_in_some_window(pcm[len(pcm) // 4:], BOT_HZ) is None
        finally:
            await bot.close()
            await fx.navigate("about:blank")
    return out


async def main_async(runs: int, work: Path) -> dict[str, Any]:
    coturn = Coturn(work, SECRET)
    server = ServerProcess(work / "server.log", "--no-enhance", "--turn", coturn.url,
                           "--turn-secret", SECRET)
    try:
        with loopback_ice():
            async with Firefox(work) as fx:
                version = subprocess.run([str(fx.binary), "--version"], capture_output=True,
                                         text=True).stdout.strip()
                results = [await one_run(fx, server, i, work) for i in range(runs)]
    finally:
        server.stop()
        coturn.stop()
    ok = all(r.get("bot_hears_firefox_tone") and r.get("firefox_hears_bot_tone") for r in results)
    both = [max(r["firefox_rx_s"], r["bot_hears_s"]) for r in results
            if "firefox_rx_s" in r and "bot_hears_s" in r]
    return {"ok": ok, "firefox": version, "runs": results,
            "audio_both_ways_s_max": max(both) if both else None,
            "target_s": 3.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "firefox_interop.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="firefox-interop-"))
    result = asyncio.run(main_async(args.runs, work))
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'run':>3} {'joined':>7} {'connected':>9} {'fx rx':>6} {'bot hears':>9} tones")
    for r in result["runs"]:
        print(f"{r['run']:>3} {r.get('joined_s', '-'):>7} {r.get('connected_s', '-'):>9} "
              f"{r.get('firefox_rx_s', '-'):>6} {r.get('bot_hears_s', '-'):>9} "
              f"{r.get('bot_hears_firefox_tone')}/{r.get('firefox_hears_bot_tone')}")
    print(f"audio both ways within {result['audio_both_ways_s_max']} s (target 3 s); "
          f"load {result['load_average']}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
