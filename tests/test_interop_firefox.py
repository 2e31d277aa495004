"""Conformance: headless Firefox ESR with the shipped page, through a real server (issue 16).

Firefox (WebDriver BiDi, ``tests/firefox_bidi.py``) joins an empty room and a busy room, with
and without enhancement; an aiortc participant (``RtcPeer``) is the other side. Judged from
content: the aiortc side decodes Firefox's fake-microphone tone (1 kHz; pulsed like syllables
when the enhancer is on, which fades a steady tone as noise) from the track the server maps to
``firefox``, and Firefox records (MediaRecorder) the aiortc side's tone from the
track mapped to it. Then a third participant joins (Firefox hears its tone: a renegotiation)
and leaves (Firefox still hears the second one).

Loopback only: Firefox offers a relay candidate on 127.0.0.1 from a coturn on 127.0.0.1 (it
gathers no loopback host candidate, see ``tests/firefox_bidi.py``); the server's candidate is
its 127.0.0.1 host candidate.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from firefox_bidi import FAKE_TONE_HZ, Firefox, firefox_path
from interop import KeptHeard, decode_file, tone_in_some_window, wait_for_tone
from requires import require, require_program
from rtc_peer import RtcPeer, loopback_ice

require(firefox_path() is not None, "Firefox ESR is not installed (apt-get install -y firefox-esr)")
require_program("turnserver", "apt-get install -y coturn")
require_program("ffmpeg", "apt-get install -y ffmpeg")

from test_turn import SECRET, Coturn  # noqa: E402  (after the checks: it needs coturn)

TIMEOUT = 60.0
BOT_HZ, THIRD_HZ = 660.0, 440.0


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    server = Coturn(tmp_path, SECRET)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _ice() -> Iterator[None]:
    with loopback_ice():
        yield


def person(state: dict, identity: str) -> dict:
    return next((p for p in state.get("participants", []) if p.get("identity") == identity), {})


async def firefox_hears(fx: Firefox, identity: str, hz: float, workdir: Path) -> None:
    """Firefox's received track for ``identity`` carries ``hz`` (2 s recorded in the page)."""
    await fx.wait_state(lambda s: bool(person(s, identity).get("hasTrack")),
                        f"a track mapped to {identity}", TIMEOUT)
    problem = "never recorded"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:   # the first seconds of a new subscription may be silent
        pcm = decode_file(await fx.record_from(identity, 2.0), workdir, f"fx-{identity}")
        problem = tone_in_some_window(pcm[len(pcm) // 4:], hz)
        if problem is None:
            return
    raise AssertionError(f"Firefox does not hear {identity}'s {hz:.0f} Hz tone: {problem}")


async def peer_hears_firefox(peer: RtcPeer, heard: KeptHeard) -> None:
    await peer.hears("firefox", frames=50, timeout=TIMEOUT)
    await wait_for_tone(heard, FAKE_TONE_HZ, f"{peer.identity} does not hear Firefox's tone",
                        TIMEOUT)


@pytest.mark.parametrize("enhance", [False, True], ids=["no-enhance", "enhance"])
@pytest.mark.parametrize("firefox_joins", ["empty-room", "busy-room"])
async def test_firefox_joins_talks_hears_and_renegotiates(
        tmp_path: Path, start_server, coturn: Coturn, enhance: bool, firefox_joins: str) -> None:
    server = start_server(*([] if enhance else ["--no-enhance"]), "--turn", coturn.url,
                          "--turn-secret", SECRET)
    room = f"fx-{firefox_joins}"
    import aiohttp

    async with aiohttp.ClientSession() as session, Firefox(tmp_path, pulsed_mic=enhance) as fx:
        bot = RtcPeer(server.ws_url, room, "bot", tone_hz=BOT_HZ, pulsed=enhance)
        third = RtcPeer(server.ws_url, room, "third", tone_hz=THIRD_HZ, pulsed=enhance)
        bot_heard, third_heard = KeptHeard(), KeptHeard()
        bot.heard["firefox"], third.heard["firefox"] = bot_heard, third_heard
        page = f"{server.url}?room={room}&name=firefox&join=1&aec=0&ice=127.0.0.1"
        try:
            if firefox_joins == "busy-room":
                await bot.connect(session)
                await bot.join()
                await bot.publish()
            await fx.navigate(page)
            await fx.wait_state(lambda s: s.get("phase") == "joined"
                                and s.get("connectionState") == "connected",
                                "joined with its media connected", TIMEOUT)
            if firefox_joins == "empty-room":
                await bot.connect(session)
                await bot.join()
                await bot.publish()
            await peer_hears_firefox(bot, bot_heard)
            await firefox_hears(fx, "bot", BOT_HZ, tmp_path)
            # renegotiation: a third participant joins, is heard both ways, and leaves
            await third.connect(session)
            await third.join()
            await third.publish()
            await peer_hears_firefox(third, third_heard)
            await firefox_hears(fx, "third", THIRD_HZ, tmp_path)
            await third.close()
            await fx.wait_state(lambda s: not person(s, "third"), "third gone", TIMEOUT)
            await firefox_hears(fx, "bot", BOT_HZ, tmp_path)
            await peer_hears_firefox(bot, bot_heard)
            state = await fx.state()
            assert not state.get("error"), state.get("error")
            assert not bot.errors, bot.errors
        except BaseException:
            print("server log:\n", server.tail())
            print("firefox log:\n", fx.log())
            raise
        finally:
            await third.close()
            await bot.close()
