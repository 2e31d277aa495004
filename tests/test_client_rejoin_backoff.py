"""``mediaserver client`` backs off when its call is lost right after each join (the client's
wiring of ``mediaserver/reconnect.py``'s healthy-call rule; the rule alone:
tests/test_reconnect_policy.py).

The fresh user's case, through real processes on 127.0.0.1: a real server behind
tests/test_browser_rejoin_backoff.py's relay, which cuts the client's signalling socket 50 ms
after each ``answer`` (its call was up). The gaps between the client's joins must grow as the schedule says
(0.5 s growing x1.5 to 5 s, each +-30 %); a reset at every join kept them near 0.5 s.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from test_browser import ROOT, Server
from test_browser_rejoin_backoff import JOINS, CuttingRelay

pytestmark = pytest.mark.timeout(300)


async def test_a_client_whose_call_is_lost_right_after_each_join_rejoins_less_and_less_often(tmp_path: Path) -> None:
    relay = CuttingRelay(after="answer")   # a first join that never got its answer is no call
    await relay.start()
    client = None
    try:
        async with Server(tmp_path / "server.log", "--no-enhance") as server:
            relay.upstream = f"ws://127.0.0.1:{server.port}/ws"
            with open(tmp_path / "client.log", "wb") as log:
                client = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "mediaserver", "client", "--ice-host", "127.0.0.1",
                    "--url", f"ws://127.0.0.1:{relay.port}/ws", "--room", "flaky", "--identity", "bot",
                    "--duration", "60", cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=log)
                for _ in range(int(60 / 0.25)):
                    if len(relay.joins) >= JOINS or client.returncode is not None:
                        break
                    await asyncio.sleep(0.25)
    finally:
        if client is not None and client.returncode is None:
            client.kill()
            await client.wait()
        await relay.stop()
    assert len(relay.joins) >= JOINS, (relay.joins, (tmp_path / "client.log").read_text()[-2000:])
    gaps = [b - a for a, b in zip(relay.joins, relay.joins[1:])][: JOINS - 1]
    assert gaps[3] >= 0.7 * 1.69 and gaps[4] >= 0.7 * 2.53, gaps
    assert sum(gaps) >= 0.7 * (0.5 + 0.75 + 1.125 + 1.69 + 2.53), gaps
