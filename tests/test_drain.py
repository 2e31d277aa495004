"""Stopping the server (issue 15 §4): SIGTERM / SIGINT tell everyone, close their calls, exit.

A real ``mediaserver serve`` process with aiortc participants in the test's loop. On the
signal each participant gets ``server-shutdown`` with the retry hint, its socket is closed by
the server, its peer connection is closed by the server (DTLS close_notify: the client's
connection leaves ``connected``), and the process exits 0 well within Docker's grace period
(``--drain-s``, default 5 s). Before the drain, Ctrl-C / SIGTERM left the server running
about 46 s waiting for the WebSockets, and nobody was told. The deadlines below only bound
a hang (30 s: a server that waits on its sockets again misses it); the time is printed.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from rtc_peer import RtcPeer, loopback_ice, small_buffer_session
from waiting import until

pytestmark = pytest.mark.timeout(240)


async def _two_in_a_call(server, room: str, session: aiohttp.ClientSession) -> list[RtcPeer]:
    peers = [RtcPeer(server.ws_url, room, "ann", tone_hz=440.0),
             RtcPeer(server.ws_url, room, "bob", tone_hz=660.0)]
    for peer in peers:
        await peer.connect(session)
        await peer.join()
        await peer.publish()
    await peers[1].hears("ann")
    await peers[0].hears("bob")
    return peers


async def _exit_after(server, sig: int) -> tuple[int, float]:
    """Send ``sig``; wait (30 s at most) for the process to end: (exit code, seconds)."""
    t0 = time.monotonic()
    server.proc.send_signal(sig)
    rc = await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 30)
    return rc, time.monotonic() - t0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_stop_signal_tells_everyone_closes_calls_and_exits(start_server, sig) -> None:
    server = start_server("--no-enhance", "--retry-hint-ms", "1500")
    with loopback_ice():
        async with aiohttp.ClientSession() as session:
            peers = await _two_in_a_call(server, "drain", session)
            try:
                rc, seconds = await _exit_after(server, sig)
                for peer in peers:
                    await until(peer.closed.is_set, timeout=30, what=f"{peer.identity}'s socket closed")
                    shutdown = [e for e in peer.events if e.get("type") == "server-shutdown"]
                    assert shutdown and shutdown[0]["retry_after_ms"] == 1500, peer.events[-5:]
                    assert peer.ws is not None and peer.ws.close_code == 1012
                    await until(lambda p=peer: p.pc.connectionState in ("closed", "failed"),
                                timeout=30, what=f"{peer.identity}'s peer connection closed by the server")
            finally:
                for peer in peers:
                    await peer.close()
    print(f"{signal.Signals(sig).name}: exit {rc} after {seconds:.2f} s")
    assert rc == 0, server.tail()
    log = server.tail(20000)
    assert "telling 2 connected clients" in log and "drained in" in log, log[-3000:]


async def test_drain_does_not_wait_for_a_client_that_stopped_reading(start_server) -> None:
    """A client that never answers the close handshake must not hold the exit up. Its media
    is closed when the drain time for the sockets runs out (logged), not before: the server
    waits for a client's answer to the close that follows server-shutdown (sfu/wsclose.py);
    bob, who reads, is told while his peer connection is still connected."""
    server = start_server("--no-enhance", "--drain-s", "3")
    with loopback_ice():
        async with small_buffer_session() as session:
            peers = await _two_in_a_call(server, "drain-stuck", session)
            await peers[0].stop_reading()   # ann's socket is read by nobody from now on
            told_while: list[str] = []
            handle = peers[1]._handle

            async def noting(data: dict) -> None:   # bob notes his media's state when told
                if data.get("type") == "server-shutdown":
                    told_while.append(peers[1].pc.connectionState)
                await handle(data)
            peers[1]._handle = noting  # type: ignore[method-assign]
            try:
                rc, seconds = await _exit_after(server, signal.SIGTERM)
                await until(peers[1].closed.is_set, timeout=30, what="bob's socket closed")
                assert any(e.get("type") == "server-shutdown" for e in peers[1].events)
                assert told_while == ["connected"], told_while
            finally:
                for peer in peers:
                    await peer.close()
    print(f"with a client that does not read: exit {rc} after {seconds:.2f} s (--drain-s 3)")
    assert rc == 0, server.tail()
    assert "1 sessions did not close in time" in server.tail(20000), server.tail()   # ann's


async def test_new_sockets_are_refused_while_draining(start_server, tmp_path: Path) -> None:
    """During the drain a reconnecting client is sent away (503), not admitted by the
    server that is going away. Seen from outside: after the signal, an upgrade either fails
    to connect or gets 503, never a socket."""
    server = start_server("--no-enhance", "--drain-s", "4")
    with loopback_ice():
        async with aiohttp.ClientSession() as session:
            peers = await _two_in_a_call(server, "drain-refuse", session)
            try:
                server.proc.send_signal(signal.SIGTERM)
                await until(peers[0].closed.is_set, timeout=30, what="ann told and closed")
                outcomes = []
                try:
                    async with session.ws_connect(server.ws_url) as ws:
                        outcomes.append(f"admitted: {await ws.receive(timeout=5)}")
                except aiohttp.WSServerHandshakeError as exc:
                    outcomes.append(exc.status)
                except aiohttp.ClientConnectionError:
                    outcomes.append("refused")
                assert outcomes[0] in (503, "refused"), outcomes
            finally:
                for peer in peers:
                    await peer.close()
    await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 30)
