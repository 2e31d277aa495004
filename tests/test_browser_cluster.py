"""The shipped page in a cluster (issue 10): it follows a redirect, and survives its node's death.

Two real server processes behind one real redis-server, each with ``--allowed-origins`` set to
an unrelated origin (so the Origin check is on: a page served by one node may open ``/ws`` on
the other only because live cluster nodes are trusted, ``sfu/origin.py``). A ``mediaserver
client`` (the bot) talks in the room first, which places the room on one node (the owner).
Headless Chromium opens the page from the *other* node with ``?join=1``: the join gets a
``redirect`` and the page joins on the owner by itself (``redirects`` and ``url`` in
``window.mediaserver.state()``) and hears the bot. Then the owner gets ``kill -9``: the page
goes round ``joined.nodes``, rejoins on the surviving node (which re-claims the room) and
hears the bot again, who came back there too.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from mediaserver.sfu.tokens import mint
from conftest import ServerProcess, start_client, stop_client
from redis_proc import RedisProcess
from test_browser import BROWSER_ID, CLIENT_ID, Chromium, hears, make_speech, wait_for
from test_cluster import _participants
from waiting import until

pytestmark = pytest.mark.timeout(480)

SECRET = "browser-cluster-secret"
ROOM = "ward-7"


def _node(tmp_path: Path, redis: RedisProcess, name: str) -> ServerProcess:
    return ServerProcess(tmp_path / f"node-{name}.log", "--no-enhance", "--secret", SECRET,
                         "--allowed-origins", "https://elsewhere.example",
                         "--redis-url", redis.url, "--node-id", name)


async def test_page_follows_the_redirect_and_comes_back_after_kill_9(tmp_path: Path) -> None:
    voice = make_speech(tmp_path / "page.wav", "The page talks from the ward.", seconds=30)
    bot_voice = make_speech(tmp_path / "bot.wav", "The headless client keeps on talking.",
                            seconds=200)
    redis = RedisProcess(tmp_path)
    nodes = {name: _node(tmp_path, redis, name) for name in ("a", "b")}
    bot = None
    try:
        urls = ",".join(n.url for n in nodes.values())
        bot = start_client(urls, ROOM, CLIENT_ID, "--send", str(bot_voice), "--duration", "240",
                           "--token", mint(SECRET, room=ROOM, identity=CLIENT_ID),
                           log=tmp_path / "bot.log")
        await until(lambda: sum(_participants(n) for n in nodes.values()) == 1,
                    what="the bot joined a node")
        owner, other = ((nodes["a"], nodes["b"]) if _participants(nodes["a"]) == 1
                        else (nodes["b"], nodes["a"]))
        token = mint(SECRET, room=ROOM, identity=BROWSER_ID)
        page_url = (f"{other.url}?room={ROOM}&name={BROWSER_ID}&token={token}&join=1&aec=0"
                    f"&ice=127.0.0.1")
        async with Chromium(page_url, audio=voice, profile=tmp_path / "profile",
                            log_path=tmp_path / "chromium.log") as page:
            there = await wait_for(page, f"redirected to the room's node and hearing {CLIENT_ID}",
                                   lambda s: s.get("phase") == "joined"
                                   and s.get("connectionState") == "connected"
                                   and hears(s, CLIENT_ID), limit_s=90)
            assert there["redirects"] == 1 and there["url"] == owner.ws_url, there
            assert set(there["nodes"]) == {owner.ws_url, other.ws_url}, there["nodes"]
            assert _participants(owner) == 2 and _participants(other) == 0
            assert there["error"] is None

            owner.proc.send_signal(signal.SIGKILL)
            owner.proc.wait(30)
            back = await wait_for(page, f"rejoined on the surviving node and hearing {CLIENT_ID}",
                                  lambda s: s.get("phase") == "joined" and s.get("reconnects", 0) >= 1
                                  and s.get("connectionState") == "connected"
                                  and hears(s, CLIENT_ID), limit_s=150)
            # (one more redirect is fine: until the dead node's lease lapses (2 s) the survivor
            # still sends the page there)
            assert back["url"] == other.ws_url and back["redirects"] >= 1, back
            assert _participants(other) == 2
            print("page notices:", back["notices"])
        summary = stop_client(bot)
        bot = None
        assert summary["reconnects"] >= 1 and summary["errors"] == [], json.dumps(summary)[:2000]
    finally:
        if bot is not None and bot.poll() is None:
            bot.kill()
        for node in nodes.values():
            node.stop()
        redis.stop()
