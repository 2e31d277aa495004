"""``mediaserver client``'s summary keeps every server event, in order, each with ``t``; the
last ``--keep-events`` of them (and of its partial captions; finals have ``--keep-finals``),
counting the older ones.

A user scripting the client (a dispatch console's test harness) needs every event the server
sends: the summary kept only participant-joined/-left and server-shutdown (``redirect``
recorded, then filtered out; ``speaking`` and ``muted`` never reached it), and the lists it
keeps grew all call long.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp

from conftest import client_summary, start_client, stop_client, wait_participants
from mediaserver import client as client_module
from mediaserver.client import EventLog, HeadlessClient, event_record

ROOM = "events"
SERVER_EVENTS = {"participant-joined", "participant-left", "speaking", "muted", "caption",
                 "server-shutdown", "error", "redirect", "reconnect-ticket", "enhancement"}


def test_the_event_log_keeps_the_last_n_and_counts_the_rest() -> None:
    log = EventLog(3)
    for i in range(3):
        log.append({"i": i})
    assert [e["i"] for e in log.items()] == [0, 1, 2] and log.dropped == 0
    for i in range(3, 8):
        log.append({"i": i})
    assert [e["i"] for e in log.items()] == [5, 6, 7] and log.dropped == 5


def _caption(n: int, final: bool) -> dict:
    return {"type": "caption", "identity": "alice", "text": f"phrase {n}", "final": final,
            "start_ms": 1000 * n, "end_ms": 1000 * n + 900}


def test_final_captions_outlive_the_partials_bound() -> None:
    """An hour of speech is ~12,000 partials: with one bound for both kinds they pushed the
    call's first finals out of ``captions``. A client with ``--keep-events 3`` (partials) and
    ``--keep-finals 4`` is fed 10 phrases of 5 partials and a final each, through its own
    caption handler: it keeps the last 3 partials and the last 4 finals, in arrival order,
    and counts the rest (``captions_dropped`` both kinds, ``finals_dropped`` finals)."""
    parser = argparse.ArgumentParser()
    client_module.add_arguments(parser)
    args = parser.parse_args(["--room", "r", "--keep-events", "3", "--keep-finals", "4"])
    headless = HeadlessClient(args, None)
    sent = []

    async def feed() -> None:
        for n in range(10):
            for caption in [*(_caption(n, False) for _ in range(5)), _caption(n, True)]:
                sent.append({**caption, "i": len(sent)})
                headless._caption(sent[-1])

    asyncio.run(feed())
    kept = headless.captions.items()
    assert [c["text"] for c in kept if c["final"]] == [f"phrase {n}" for n in range(6, 10)], kept
    assert [c["i"] for c in kept if not c["final"]] == [c["i"] for c in sent if not c["final"]][-3:]
    order = [c["i"] for c in kept]
    assert order == sorted(order), order   # one list, as the captions came
    assert (headless.captions.dropped, headless.captions.finals_dropped) == (len(sent) - 7, 6)
    # the default keeps an hour of continuous talk's finals (~1,440) whatever the partials
    defaults = parser.parse_args(["--room", "r", "--keep-events", "3"])
    assert defaults.keep_finals == client_module.DEFAULT_KEEP_FINALS >= 24 * 1440


def test_an_event_is_kept_as_sent_with_its_time_and_without_a_ticket() -> None:
    assert event_record({"type": "muted", "identity": "a", "muted": True}, 1.25) == {
        "type": "muted", "identity": "a", "muted": True, "t": 1.25}
    assert event_record({"type": "reconnect-ticket", "ticket": "SECRET", "expires_in_s": 300}, 2.0) == {
        "type": "reconnect-ticket", "expires_in_s": 300, "t": 2.0}
    moved = event_record({"type": "redirect", "url": "ws://b/ws", "node": "b",
                          "reconnect": {"ticket": "SECRET", "expires_in_s": 300}}, 3.0)
    assert moved == {"type": "redirect", "url": "ws://b/ws", "node": "b",
                     "reconnect": {"expires_in_s": 300}, "t": 3.0}


async def _join_mute_unmute_leave(ws_url: str, identity: str) -> None:
    """A bare signalling participant: joins (no media), mutes, unmutes, leaves."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url) as ws:
            await ws.send_str(json.dumps({"type": "join", "room": ROOM, "identity": identity}))
            while json.loads((await ws.receive(timeout=30)).data)["type"] != "joined":
                pass
            for muted in (True, False):
                await ws.send_str(json.dumps({"type": "mute", "muted": muted}))
            await ws.send_str(json.dumps({"type": "leave"}))


def _plain(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "t"} for e in events]


def test_the_summary_keeps_every_server_event_in_order_within_its_bound(
        start_server, speech_wav, tmp_path) -> None:
    """bob keeps every event; bob3 (``--keep-events 3``) keeps the last three of the same
    events and counts the others. alice speaks (speaking on/off), carol mutes and unmutes;
    bob3 is stopped once carol has left, so both saw the same events in between."""
    server = start_server("--no-enhance")
    bob = start_client(server.url, ROOM, "bob", "--duration", "240", log=tmp_path / "bob.log")
    bob3 = None
    try:
        wait_participants(server, 1, timeout=120)
        bob3 = start_client(server.url, ROOM, "bob3", "--duration", "240", "--keep-events", "3",
                            log=tmp_path / "bob3.log")
        wait_participants(server, 2, timeout=120)
        alice = start_client(server.url, ROOM, "alice", "--send", str(speech_wav),
                             log=tmp_path / "alice.log")
        client_summary(alice, 120)
        wait_participants(server, 2)
        asyncio.run(_join_mute_unmute_leave(server.ws_url, "carol"))
        wait_participants(server, 2)
        kept = stop_client(bob3)
        wait_participants(server, 1)
        full = stop_client(bob)
    finally:
        for proc in (bob, bob3):
            if proc is not None and proc.poll() is None:
                proc.kill()
    events = full["events"]
    assert full["events_dropped"] == 0 and full["captions"] == [] == kept["captions"]
    assert all(isinstance(e["t"], float) and e["type"] in SERVER_EVENTS for e in events), events
    assert [e["t"] for e in events] == sorted(e["t"] for e in events), events
    assert "ticket" not in json.dumps(events)
    said = [(e["type"], e.get("identity")) for e in events if e["type"] != "speaking"]
    assert said == [("participant-joined", "bob3"), ("participant-joined", "alice"),
                    ("participant-left", "alice"), ("participant-joined", "carol"),
                    ("muted", "carol"), ("muted", "carol"), ("participant-left", "carol"),
                    ("participant-left", "bob3")], said
    assert [e["muted"] for e in events if e["type"] == "muted"] == [True, False]
    talk = [e["speaking"] for e in events if e["type"] == "speaking"]
    assert talk and talk[0] is True and talk[-1] is False, talk   # alice's, on then off
    assert all(e["identity"] == "alice" for e in events if e["type"] == "speaking")
    # bob3 saw what bob saw between bob3's join and leave: it keeps the last 3, counts the rest
    first = said.index(("participant-joined", "bob3"))
    between = events[first + 1:-1]
    assert _plain(kept["events"]) == _plain(between[-3:]), (kept["events"], between)
    assert kept["events_dropped"] == len(between) - 3 > 0, (kept["events_dropped"], between)
