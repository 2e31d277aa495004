"""One client that stops reading must not delay anyone else (issue 13 §1).

A real server and real aiortc participants in the test's loop: ``alice`` publishes a tone;
``stuck`` publishes, then floods ``stats`` requests and stops reading its socket (variants:
never reads at all, reads very slowly, rate limit at its default). While ``stuck``'s replies
back up, a newcomer joins and must get its answer and hear alice; ``stuck`` is then dropped
(log line, ``mediaserver_ws_slow_consumer_drops_total``) and the others see it leave.
"""

from __future__ import annotations

import asyncio
from typing import Iterator, Optional

import aiohttp
import pytest
from conftest import ServerProcess
from metrics_probe import metric_async, wait_metric
from rtc_peer import RtcPeer, flood, loopback_ice, small_buffer_session, wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def _loopback_ice() -> Iterator[None]:
    with loopback_ice():
        yield

ROOM = "main"
FLOOD = 4_000   # stats replies (~0.7 KiB each): several times what the server's 256 KiB socket
                # send buffer and the client's fixed 16 KiB receive buffer hold together
NO_RATE_LIMIT = ("--ws-rate", "1000000", "--ws-burst", "1000000")


async def _call_with_stuck_client(server: ServerProcess, *, how: str, expect_reason: Optional[str],
                                  join_while_blocked: bool = False) -> dict:
    """alice publishes; stuck floods and stops reading (``how``); newbie joins meanwhile.

    ``join_while_blocked``: newbie joins only once stuck's replies are piling up in the
    server (its socket takes no more), so newbie's join and answer happen while it is blocked.
    """
    async with aiohttp.ClientSession() as session, small_buffer_session() as stuck_session:
        alice = RtcPeer(server.ws_url, ROOM, "alice", tone_hz=440.0)
        stuck = RtcPeer(server.ws_url, ROOM, "stuck", tone_hz=660.0)
        newbie = RtcPeer(server.ws_url, ROOM, "newbie", tone_hz=880.0)
        peers = [alice, stuck, newbie]
        try:
            await alice.connect(session)
            await stuck.connect(stuck_session)   # a fixed socket buffer: it fills the same way each run
            for p in (alice, stuck):
                await p.join()
            await alice.publish()
            if how == "never-reads":
                # joins and offers, then never reads a byte: not even the answer
                await stuck.send({"type": "offer", "sdp": await stuck.make_offer()})
            else:
                await stuck.publish()
                await wait_until(lambda: stuck.answered_offers >= 1, timeout=60,
                                 what="stuck to answer the server's offer for alice")
                await stuck.hears("alice", frames=25)
                await stuck.stop_reading()
            slow_reader: Optional[asyncio.Task] = None
            if how == "slow-reader":
                async def read_slowly() -> None:   # one message every 200 ms
                    assert stuck.ws is not None
                    while not stuck.ws.closed:
                        await stuck.ws.receive()
                        await asyncio.sleep(0.2)
                slow_reader = asyncio.get_running_loop().create_task(read_slowly())
            flooding = asyncio.get_running_loop().create_task(flood(stuck, FLOOD))
            if join_while_blocked:
                # the server's replies to stuck back up: its socket is really blocked now
                await wait_metric(server, "mediaserver_ws_send_queue_messages", at_least=500, timeout=120)
            elif expect_reason is not None:
                # stuck is dropped by the bound the variant sets (before newbie's arrival would
                # get it removed anyway, for not answering the offer that arrival causes)
                await wait_metric(server, "mediaserver_ws_slow_consumer_drops_total", at_least=1,
                                  timeout=120, reason=expect_reason)
            # a newcomer joins while that goes on, and is not held up by it
            await newbie.connect(session)
            joined = await newbie.join()
            assert joined["participants"]
            await newbie.publish()
            await newbie.hears("alice", frames=50)
            still_blocked = await metric_async(server, "mediaserver_ws_send_queue_messages")
            # the others see stuck go
            # (at default limits the flood gets stuck closed before newbie may have joined)
            stuck_was_there = "stuck" in [q["identity"] for q in joined["participants"]]
            await wait_until(lambda: "stuck" in alice.left()
                             and ("stuck" in newbie.left() or not stuck_was_there),
                             timeout=120, what="alice and newbie to see stuck leave")
            for task in (flooding, slow_reader):   # done their job (a closed socket may hold them)
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            # the call goes on: each hears the other after all of it
            await newbie.hears("alice", frames=50)
            await alice.hears("newbie", frames=50)
            return {
                "queued_when_newbie_heard": still_blocked,
                "refused_rate": await metric_async(server, "mediaserver_limit_refusals_total",
                                                   limit="rate"),
                "drops": {r: await metric_async(server, "mediaserver_ws_slow_consumer_drops_total",
                                                reason=r) for r in ("queue-full", "stalled")},
                "stuck_errors": [e.get("code") for e in stuck.errors],
            }
        finally:
            for p in peers:
                await p.close()


def test_newcomer_is_served_while_a_client_is_blocked(start_server) -> None:
    """The issue's case with the rate limit out of the way and bounds that do not fire: stuck's
    socket is blocked the whole time newbie joins, gets its answer and hears alice."""
    server = start_server("--no-enhance", *NO_RATE_LIMIT, "--ws-send-queue", "1000000",
                          "--ws-send-timeout", "300")
    out = asyncio.run(_call_with_stuck_client(server, how="stops-reading", expect_reason=None,
                                              join_while_blocked=True))
    assert out["queued_when_newbie_heard"] >= 500   # stuck was still blocked, not yet dropped
    assert out["drops"] == {"queue-full": 0, "stalled": 0}
    # stuck left the room all the same: it did not answer the offer newbie's arrival caused
    assert "stuck renegotiation failed: no answer" in server.tail(200_000)


def test_stalled_client_is_dropped(start_server) -> None:
    server = start_server("--no-enhance", *NO_RATE_LIMIT, "--ws-send-queue", "1000000",
                          "--ws-send-timeout", "5")
    out = asyncio.run(_call_with_stuck_client(server, how="stops-reading", expect_reason="stalled"))
    assert out["drops"] == {"queue-full": 0, "stalled": 1}
    assert "main/stuck: slow consumer dropped (stalled" in server.tail(200_000)
    assert server.alive()


def test_stuck_client_is_dropped_when_its_queue_is_full(start_server) -> None:
    server = start_server("--no-enhance", *NO_RATE_LIMIT, "--ws-send-queue", "64",
                          "--ws-send-timeout", "300")
    out = asyncio.run(_call_with_stuck_client(server, how="stops-reading", expect_reason="queue-full"))
    assert out["drops"] == {"queue-full": 1, "stalled": 0}
    assert "main/stuck: slow consumer dropped (queue-full" in server.tail(200_000)


def test_client_that_never_reads_is_dropped(start_server) -> None:
    server = start_server("--no-enhance", *NO_RATE_LIMIT, "--ws-send-queue", "1000000",
                          "--ws-send-timeout", "5")
    out = asyncio.run(_call_with_stuck_client(server, how="never-reads", expect_reason="stalled"))
    assert out["drops"] == {"queue-full": 0, "stalled": 1}


def test_very_slow_reader_is_dropped(start_server) -> None:
    server = start_server("--no-enhance", *NO_RATE_LIMIT, "--ws-send-queue", "256",
                          "--ws-send-timeout", "300")
    out = asyncio.run(_call_with_stuck_client(server, how="slow-reader", expect_reason="queue-full"))
    assert out["drops"] == {"queue-full": 1, "stalled": 0}


def test_flood_at_default_limits_is_cut_by_the_rate_limit(start_server) -> None:
    """The issue's case at default settings: the flood itself is refused, then its socket closed."""
    server = start_server("--no-enhance")
    out = asyncio.run(_call_with_stuck_client(server, how="stops-reading", expect_reason=None))
    assert out["refused_rate"] == 1
    assert out["drops"] == {"queue-full": 0, "stalled": 0}
    assert "main/stuck: closing a socket that kept sending over 20 messages/s" in server.tail(200_000)
