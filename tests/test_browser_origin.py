"""The shipped page in Chromium: a link's ``?ws=`` never sends the microphone to a server
its operator did not allow, and a server refuses pages from other origins.

Servers (all ``mediaserver serve`` on 127.0.0.1):

- ``page``: serves the page; its operator allows ``?ws=`` to ``victim`` and ``partner``;
- ``victim``: default settings, so it refuses pages from other origins;
- ``partner``: ``--allowed-origins *``, its operator welcomes pages from anywhere;
- ``stranger``: ``--allowed-origins *`` too, but not listed by the page's operator.

A script injected before the page's own counts ``getUserMedia`` calls, so "the microphone
was never opened" is observed, not inferred.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from test_browser import Chromium, Server, make_speech, wait_for

COUNT_MIC = """(() => {
  window.__micRequests = 0;
  window.__csp = [];
  document.addEventListener("securitypolicyviolation",
                            (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  const md = navigator.mediaDevices;
  const original = md.getUserMedia.bind(md);
  md.getUserMedia = (c) => { window.__micRequests += 1; return original(c); };
})();"""


async def ws_requests(server: Server) -> int:
    """How many /ws upgrades reached ``server`` (its access log)."""
    return server.tail().count('"GET /ws')


async def participants(server: Server) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/healthz") as resp:
            return (await resp.json())["participants"]


async def test_page_and_server_keep_the_microphone_home(tmp_path: Path) -> None:
    voice = make_speech(tmp_path / "voice.wav", "Only to the servers I chose.", seconds=6)
    async with Server(tmp_path / "victim.log", "--no-enhance") as victim, \
            Server(tmp_path / "partner.log", "--no-enhance", "--allowed-origins", "*") as partner, \
            Server(tmp_path / "stranger.log", "--no-enhance", "--allowed-origins", "*") as stranger:
        victim_ws, partner_ws = (f"ws://127.0.0.1:{s.port}/ws" for s in (victim, partner))
        stranger_ws = f"ws://127.0.0.1:{stranger.port}/ws"
        async with Server(tmp_path / "page.log", "--no-enhance", "--page-signalling",
                          f"{victim_ws},{partner_ws}") as page_server:
            base = f"{page_server.url}/?room=origin&name=chromium&join=1&aec=0&ice=127.0.0.1"
            async with Chromium(f"{page_server.url}/", audio=voice, profile=tmp_path / "profile",
                                log_path=tmp_path / "chromium.log") as page:
                await page.call("Page.addScriptToEvaluateOnNewDocument", source=COUNT_MIC)

                # 1. A link naming a server the operator did not list: refused in the page,
                #    before the microphone opens; the stranger never hears from it.
                await page.navigate(f"{base}&ws={stranger_ws}")
                refused = await wait_for(page, "a foreign ?ws= refused",
                                         lambda s: s.get("phase") == "idle" and bool(s.get("error")))
                assert "talks only to its own server" in refused["error"], refused["error"]
                assert await page.evaluate("window.__micRequests") == 0
                # the page's CSP stops a script that tries anyway
                blocked = await page.evaluate(f"""new Promise((resolve) => {{
                    try {{
                        const ws = new WebSocket({json.dumps(stranger_ws)});
                        ws.onopen = () => resolve("open");
                        ws.onerror = () => resolve("error");
                    }} catch (err) {{ resolve("blocked: " + err.name); }}
                }})""")
                assert blocked != "open", blocked
                for _ in range(100):   # the violation report is dispatched asynchronously
                    if await page.evaluate("window.__csp.length"):
                        break
                    await asyncio.sleep(0.05)
                assert [v.split()[0] for v in await page.evaluate("window.__csp")] == ["connect-src"]
                assert await ws_requests(stranger) == 0

                # 2. A listed server that does not accept this page's origin refuses it.
                await page.navigate(f"{base}&ws={victim_ws}")
                await wait_for(page, "the victim server refusing the page",
                               lambda s: s.get("phase") == "idle" and bool(s.get("error")))
                assert f"refused /ws from a page at 'http://127.0.0.1:{page_server.port}'" in victim.tail()
                assert await participants(victim) == 0

                # 3. Both operators agree: the page joins the partner server and connects.
                await page.navigate(f"{base}&ws={partner_ws}")
                joined = await wait_for(page, "joined on the partner server",
                                        lambda s: s.get("phase") == "joined"
                                        and s.get("connectionState") == "connected")
                assert joined["error"] is None
                await asyncio.sleep(1.0)   # meters and stats panels run; nothing may be blocked
                assert await page.evaluate("window.__csp") == []
                assert await page.evaluate("window.__micRequests") == 1
                assert await participants(partner) == 1
                await page.evaluate("window.mediaserver.app.leave()")
                for _ in range(200):
                    if await participants(partner) == 0:
                        break
                    await asyncio.sleep(0.1)
        assert await ws_requests(stranger) == 0
