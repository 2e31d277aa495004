"""The browser client across a server restart, and its autoplay gate (issue 15 §4, §5).

Headless Chromium (tests/test_browser.py's harness) on the shipped page with ``?join=1``,
and a ``mediaserver client`` in the same room. The server gets SIGTERM mid-call: the page
says the server is restarting and that it reconnects (its banner; ``notices`` in
``window.mediaserver.state()``), a new server starts on the same port, and the page rejoins
by itself as the same person, with the server's reconnect ticket (the server has
``--secret``; the page's join token was single-use), and hears the bot again. The bot
rejoins too.

Autoplay: with the browser's own rule (sound only after a user gesture) a ``join=1`` link
starts with the audio context suspended; the page shows the big "click anywhere" bar, and a
click on some other part of the page (not the bar) turns the sound on and the bar off.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mediaserver.sfu.tokens import mint
from test_browser import (BROWSER_ID, CLIENT_ID, ROOT, Chromium, Server, hears, make_speech,
                          person, wait_for)

pytestmark = pytest.mark.timeout(400)

SECRET = "browser-reconnect-secret"


async def test_page_rejoins_after_a_server_restart_and_hears_again(tmp_path: Path) -> None:
    room = "browser-restart"
    voice = make_speech(tmp_path / "page.wav", "Hello from the browser, still here after the restart.",
                        seconds=30)
    bot_voice = make_speech(tmp_path / "bot.wav", "The headless client keeps on talking to the page.",
                            seconds=200)
    token = mint(SECRET, room=room, identity=BROWSER_ID)
    first = await Server(tmp_path / "server0.log", "--no-enhance", "--secret", SECRET).__aenter__()
    second = None
    bot_log = open(tmp_path / "bot.log", "wb")
    bot = None
    try:
        page_url = (f"{first.url}/?room={room}&name={BROWSER_ID}&token={token}&join=1&aec=0"
                    f"&ice=127.0.0.1")
        async with Chromium(page_url, audio=voice, profile=tmp_path / "profile",
                            log_path=tmp_path / "chromium.log") as page:
            await wait_for(page, "joined and connected", lambda s: s.get("phase") == "joined"
                           and s.get("connectionState") == "connected")
            bot = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mediaserver", "client", "--ice-host", "127.0.0.1",
                "--url", f"ws://127.0.0.1:{first.port}/ws", "--room", room, "--identity", CLIENT_ID,
                "--token", mint(SECRET, room=room, identity=CLIENT_ID), "--send", str(bot_voice),
                "--duration", "240", cwd=ROOT, stdout=subprocess.PIPE, stderr=bot_log)
            await wait_for(page, f"hearing {CLIENT_ID}", lambda s: hears(s, CLIENT_ID), limit_s=90)

            first.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(first.proc.wait(), 30) == 0
            told = await wait_for(page, "the page saying the server restarts",
                                  lambda s: s.get("phase") == "reconnecting"
                                  and any("restarting" in n for n in s.get("notices", [])))
            banner = await page.evaluate("document.getElementById('banner').textContent")
            assert "The server is restarting" in banner and "reconnecting" in banner, banner
            assert told["reconnecting"]["reason"] == "The server is restarting"

            second = await Server(tmp_path / "server1.log", "--no-enhance", "--secret", SECRET,
                                  "--port", str(first.port)).__aenter__()
            back = await wait_for(page, f"rejoined and hearing {CLIENT_ID} again",
                                  lambda s: s.get("phase") == "joined" and s.get("reconnects", 0) >= 1
                                  and s.get("connectionState") == "connected" and hears(s, CLIENT_ID),
                                  limit_s=150)
            assert back["identity"] == BROWSER_ID and back["error"] is None
            assert person(back, BROWSER_ID).get("self") is True
            assert any(n.startswith("Reconnected") for n in back["notices"]), back["notices"]
            print("page notices:", back["notices"])
    finally:
        if bot is not None and bot.returncode is None:
            bot.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(bot.communicate(), 60)
        bot_log.close()
        for server in (first, second):
            if server is not None:
                await server.stop()
    summary = json.loads(out.decode()[out.decode().find("{"):])
    assert summary["reconnects"] >= 1 and summary["errors"] == [], summary["errors"]
    print(f"bot: reconnects {summary['reconnects']}, longest gap {summary['longest_gap_ms']} ms")


async def test_join_link_makes_the_one_needed_click_obvious(tmp_path: Path) -> None:
    room = "autoplay"
    voice = make_speech(tmp_path / "page.wav", "Testing the autoplay rule.", seconds=10)
    async with Server(tmp_path / "server.log", "--no-enhance") as server:
        page_url = f"{server.url}/?room={room}&name={BROWSER_ID}&join=1&aec=0&ice=127.0.0.1"
        async with Chromium(page_url, audio=voice, profile=tmp_path / "profile",
                            log_path=tmp_path / "chromium.log", autoplay=False) as page:
            held = await wait_for(page, "joined with the sound held back",
                                  lambda s: s.get("phase") == "joined" and s.get("audioGate") is True)
            assert held["audioContext"] == "suspended"
            box = await page.evaluate("""(() => { const r = document.getElementById('enable-audio')
                .getBoundingClientRect(); return [r.x, r.y, r.width, r.height, innerWidth]; })()""")
            x, y, width, height, viewport = box
            assert width >= 0.8 * viewport and height >= 40, box   # a full-width bar, not a small button
            assert y < 200, box   # at the top, where a person looks first
            # one click anywhere (here: on the participant list, not the bar)
            target = await page.evaluate("""(() => { const r = document.getElementById('participants')
                .getBoundingClientRect(); return [r.x + 5, r.y + 5]; })()""")
            for kind in ("mousePressed", "mouseReleased"):
                await page.call("Input.dispatchMouseEvent", type=kind, x=target[0], y=target[1],
                                button="left", clickCount=1)
            on = await wait_for(page, "sound on after the click",
                                lambda s: s.get("audioContext") == "running" and s.get("audioGate") is False)
            assert on["phase"] == "joined"


async def test_newcomer_page_shows_who_is_already_speaking(tmp_path: Path) -> None:
    """The bot talks without a pause (a steady tone: its speaking state never flips, so no
    ``speaking`` event comes after the page joins); the page's card for it lights up from
    ``joined`` alone."""
    from mediaserver.audio import write_audio
    from test_reconnect import tone

    room = "already-speaking"
    voice = make_speech(tmp_path / "page.wav", "Hello.", seconds=10)
    write_audio(tmp_path / "bot.wav", tone(300.0, 120.0), 48000)
    async with Server(tmp_path / "server.log", "--no-enhance") as server:
        bot_log = open(tmp_path / "bot.log", "wb")
        bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mediaserver", "--log-level", "DEBUG", "client",
            "--ice-host", "127.0.0.1",
            "--url", f"ws://127.0.0.1:{server.port}/ws", "--room", room, "--identity", CLIENT_ID,
            "--send", str(tmp_path / "bot.wav"), "--duration", "120",
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=bot_log)
        try:
            # the bot's own log shows the server saw it speaking before the page exists
            for _ in range(1200):
                if b'"speaking": true' in (tmp_path / "bot.log").read_bytes() or \
                        b"'speaking': True" in (tmp_path / "bot.log").read_bytes():
                    break
                await asyncio.sleep(0.1)
            page_url = f"{server.url}/?room={room}&name={BROWSER_ID}&join=1&aec=0&ice=127.0.0.1"
            async with Chromium(page_url, audio=voice, profile=tmp_path / "profile",
                                log_path=tmp_path / "chromium.log") as page:
                state = await wait_for(page, f"{CLIENT_ID}'s card present",
                                       lambda s: s.get("phase") == "joined" and bool(person(s, CLIENT_ID)))
                assert person(state, CLIENT_ID)["speaking"] is True, person(state, CLIENT_ID)
        finally:
            if bot.returncode is None:
                bot.terminate()
            await bot.wait()
            bot_log.close()
