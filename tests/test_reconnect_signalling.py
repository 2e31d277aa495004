"""Signalling for rejoining (issue 15 §4) and the smaller §5 items, against a real server.

- ``joined`` carries a reconnect ticket (sfu/tickets.py) and the node list; the ticket
  admits the same room and identity again without the single-use join token, once, and
  replaces a stale connection of that identity still in the room; it is not a join token
  and a join token is not a ticket; a ticket for someone else is refused.
- ``joined`` carries each present participant's speaking state (a newcomer sees who is
  talking now, not only after that person's next change).
- a ``stats`` reply holds only what concerns the asker.
"""

from __future__ import annotations

import aiohttp
import pytest

from mediaserver.sfu.tokens import mint
from rtc_peer import RtcPeer, loopback_ice
from waiting import until

pytestmark = pytest.mark.timeout(240)

SECRET = "reconnect-test-secret"


async def _joined(server, session, room: str, identity: str, **join: object) -> tuple[RtcPeer, dict]:
    peer = RtcPeer(server.ws_url, room, identity)
    await peer.connect(session)
    await peer.send({"type": "join", "room": room, "identity": identity, **join})
    return peer, await peer.expect("joined")


async def _refused(server, session, room: str, identity: str, **join: object) -> dict:
    peer = RtcPeer(server.ws_url, room, identity)
    await peer.connect(session)
    try:
        await peer.send({"type": "join", "room": room, "identity": identity, **join})
        reply = await peer.receive()
        assert reply["type"] == "error", reply
        return reply
    finally:
        await peer.close()


async def test_ticket_rejoins_once_where_the_token_is_spent(start_server) -> None:
    server = start_server("--no-enhance", "--secret", SECRET)
    room = "tickets"
    async with aiohttp.ClientSession() as session:
        token = mint(SECRET, room=room, identity="ann")
        ann, joined = await _joined(server, session, room, "ann", token=token)
        ticket = joined["reconnect"]["ticket"]
        assert joined["reconnect"]["expires_in_s"] > 0
        assert joined["nodes"] == [server.ws_url]
        await ann.close()
        # the token admitted one join; the ticket admits the rejoin (once)
        assert (await _refused(server, session, room, "ann", token=token))["code"] == "bad-token"
        again, rejoined = await _joined(server, session, room, "ann", token=token, reconnect=ticket)
        assert rejoined["reconnect"]["ticket"] != ticket
        await again.close()
        assert (await _refused(server, session, room, "ann", reconnect=ticket))["code"] == "bad-token"
        fresh = rejoined["reconnect"]["ticket"]
        # bound to room and identity; not interchangeable with join tokens
        assert (await _refused(server, session, room, "bob", reconnect=fresh))["code"] == "bad-token"
        assert (await _refused(server, session, "other", "ann", reconnect=fresh))["code"] == "bad-token"
        assert (await _refused(server, session, room, "ann", token=fresh))["code"] == "bad-token"
        assert (await _refused(server, session, room, "ann",
                               reconnect=mint(SECRET, room=room, identity="ann")))["code"] == "bad-token"
        final, _ = await _joined(server, session, room, "ann", reconnect=fresh)
        await final.close()


@pytest.mark.parametrize("secret", [False, True], ids=["open", "secret"])
async def test_ticket_replaces_a_stale_connection_of_the_same_identity(start_server, secret) -> None:
    """The old socket is still open (its loss not noticed yet): a rejoin with the ticket
    takes the place; the old socket is told (``replaced``) and closed, the others see the
    person leave and come back. Without the ticket the name stays taken."""
    server = start_server("--no-enhance", *(["--secret", SECRET] if secret else []))
    room = "takeover"
    tokens = {who: mint(SECRET, room=room, identity=who) for who in ("ann", "bob")} if secret else {}
    with loopback_ice():
        async with aiohttp.ClientSession() as session:
            ann, joined = await _joined(server, session, room, "ann",
                                        **({"token": tokens["ann"]} if secret else {}))
            await ann.publish()
            bob, _ = await _joined(server, session, room, "bob",
                                   **({"token": tokens["bob"]} if secret else {}))
            await bob.publish()
            await bob.hears("ann")
            try:
                refused = await _refused(server, session, room, "ann")
                assert refused["code"] in ("bad-request", "bad-token"), refused
                new_ann, rejoined = await _joined(server, session, room, "ann",
                                                  reconnect=joined["reconnect"]["ticket"])
                assert [p["identity"] for p in rejoined["participants"]] == ["bob"]
                await until(ann.closed.is_set, timeout=30, what="the stale socket closed")
                assert any(e.get("code") == "replaced" for e in ann.errors), ann.errors
                await new_ann.publish()
                await bob.hears("ann")   # the new connection's audio reaches bob
                await until(lambda: any(e.get("type") == "participant-joined" for e in bob.events),
                            timeout=30, what="bob sees ann come back")
                assert "ann" in bob.left()
                await new_ann.close()
            finally:
                await ann.close()
                await bob.close()


async def test_newcomer_sees_who_is_speaking_now(start_server) -> None:
    server = start_server("--no-enhance")
    room = "presence"
    with loopback_ice():
        async with aiohttp.ClientSession() as session:
            talker = RtcPeer(server.ws_url, room, "talker", tone_hz=300.0)
            quiet = RtcPeer(server.ws_url, room, "quiet", tone_hz=None)
            muted = RtcPeer(server.ws_url, room, "muted", tone_hz=500.0)
            peers = [talker, quiet, muted]
            try:
                for peer in peers:
                    await peer.connect(session)
                    await peer.join()
                    await peer.publish()
                await muted.send({"type": "mute", "muted": True})
                await until(lambda: any(e.get("type") == "speaking" and e["identity"] == "talker"
                                        and e["speaking"] for e in quiet.events),
                            timeout=60, what="the talker is speaking")
                late, joined = await _joined(server, session, room, "late")
                await late.close()
                seen = {p["identity"]: p for p in joined["participants"]}
                assert seen["talker"]["speaking"] is True and seen["talker"]["level"] > 0
                assert seen["quiet"]["speaking"] is False
                assert seen["muted"] == {**seen["muted"], "muted": True, "speaking": False}
            finally:
                for peer in peers:
                    await peer.close()


async def test_stats_reply_holds_only_what_concerns_the_asker(start_server) -> None:
    server = start_server("--no-enhance")
    room = "private-stats"
    with loopback_ice():
        async with aiohttp.ClientSession() as session:
            peers = [RtcPeer(server.ws_url, room, who, tone_hz=hz)
                     for who, hz in (("ann", 300.0), ("bob", 400.0), ("cy", 500.0))]
            try:
                for peer in peers:
                    await peer.connect(session)
                    await peer.join()
                    await peer.publish()
                ann = peers[0]
                await ann.hears("bob")
                await ann.hears("cy")
                await ann.stop_reading()
                await ann.send({"type": "stats"})
                reply = await ann.expect("stats")
            finally:
                for peer in peers:
                    await peer.close()
    assert reply["identity"] == "ann"
    assert set(reply["participants"]) == {"ann"}
    mine = reply["participants"]["ann"]
    assert mine["packets_received"] > 0 and sorted(mine["subscriptions"]) == ["bob", "cy"]
    assert set(reply["receiving"]) == {"bob", "cy"}
    for entry in reply["receiving"].values():
        assert set(entry) == {"current_delay_ms", "enhancement"}
