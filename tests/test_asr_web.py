"""The hub's web glue: caption events, transcript route, token check, lifecycle."""

from __future__ import annotations

import asyncio

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mediaserver.asr.hub import AsrHub, FeedConfig
from mediaserver.asr.sink import QueuedSink, Transcript
from mediaserver.asr.web import attach
from mediaserver.sfu.tokens import mint, verify
from waiting import until


class EchoRecogniser(QueuedSink):
    """A real queued sink that 'recognises' each segment as its length (no model needed)."""

    def __init__(self) -> None:
        super().__init__("echo")

    async def handle(self, item) -> None:
        if hasattr(item, "pcm"):
            self._on_transcript(Transcript(item.room, item.identity, f"{len(item.pcm)} samples",
                                           item.start_ms, item.end_ms, source="echo"))


async def make_client(secret: str | None) -> tuple[TestClient, AsrHub, list]:
    sent: list[tuple[str, dict]] = []

    async def broadcast(room: str, message: dict) -> None:
        sent.append((room, message))

    def authorise(room: str, identity: str | None, token: str | None) -> None:
        verify(secret, token, room=room, identity=identity or "")

    hub = AsrHub([EchoRecogniser()], feed=FeedConfig(feed="raw"))
    app = web.Application()
    attach(app, hub, broadcast=broadcast, room_exists=lambda r: r == "live",
           authorise=authorise if secret else None)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client, hub, sent


def tone_burst() -> np.ndarray:
    t = np.arange(48000) / 48000.0
    voice = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.concatenate([np.zeros(24000, np.float32), voice, np.zeros(48000, np.float32)])


async def test_transcripts_become_captions_and_are_served() -> None:
    client, hub, sent = await make_client(None)
    x = tone_burst()
    for k in range(len(x) // 960):
        f = x[k * 960:(k + 1) * 960]
        hub.on_frame(room="live", identity="eve", t_ms=20.0 * k, raw=f, enhanced=f, speech=True)
    await hub.sinks[0].drain()
    await until(lambda: len(sent) >= 1, what="the caption broadcast")
    assert len(sent) == 1
    room, msg = sent[0]
    assert room == "live" and msg["type"] == "caption" and msg["identity"] == "eve"
    assert msg["text"].endswith("samples") and msg["end_ms"] > msg["start_ms"] >= 0
    resp = await client.get("/rooms/live/transcript")
    body = await resp.json()
    assert resp.status == 200 and body["room"] == "live"
    assert body["entries"] == [{k: msg[k] for k in ("identity", "text", "start_ms", "end_ms")}]
    assert (await client.get("/rooms/gone/transcript")).status == 404
    assert (await client.get("/rooms/a%2Fb/transcript")).status in (400, 404)
    assert (await client.get("/rooms/" + "x" * 65 + "/transcript")).status == 400
    await client.close()


async def test_transcript_needs_a_token_when_the_server_has_a_secret() -> None:
    client, hub, _ = await make_client("s3cret")
    assert (await client.get("/rooms/live/transcript")).status == 403
    token = mint("s3cret", room="live", identity="eve")
    other = mint("s3cret", room="elsewhere", identity="eve")
    ok = await client.get("/rooms/live/transcript", params={"identity": "eve", "token": token})
    assert ok.status == 200
    bearer = await client.get("/rooms/live/transcript?identity=eve",
                              headers={"Authorization": f"Bearer {token}"})
    assert bearer.status == 200
    wrong = await client.get("/rooms/live/transcript", params={"identity": "eve", "token": other})
    assert wrong.status == 403
    await client.close()


class PartialThenFinal(QueuedSink):
    """A real queued sink that answers each segment with a partial (stable and unstable
    words) and then a final, as the streaming recogniser does."""

    def __init__(self) -> None:
        super().__init__("twostep")

    async def handle(self, item) -> None:
        if hasattr(item, "pcm"):
            self._on_transcript(Transcript(item.room, item.identity, "please send", item.start_ms,
                                           item.start_ms + 500, final=False,
                                           unstable="an ambu", unstable_end_ms=item.start_ms + 900))
            self._on_transcript(Transcript(item.room, item.identity, "please send an ambulance",
                                           item.start_ms, item.end_ms, final=True))


async def test_a_partial_caption_carries_its_unstable_words_and_a_final_none() -> None:
    sent: list[tuple[str, dict]] = []

    async def broadcast(room: str, message: dict) -> None:
        sent.append((room, message))

    hub = AsrHub([PartialThenFinal()], feed=FeedConfig(feed="raw"))
    app = web.Application()
    attach(app, hub, broadcast=broadcast, room_exists=lambda r: r == "live")
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    x = tone_burst()
    for k in range(len(x) // 960):
        f = x[k * 960:(k + 1) * 960]
        hub.on_frame(room="live", identity="eve", t_ms=20.0 * k, raw=f, enhanced=f, speech=True)
    await hub.sinks[0].drain()
    await until(lambda: len(sent) >= 2, what="the partial and the final caption")
    partial, final = (m for _, m in sent)
    assert (partial["final"], partial["text"], partial["unstable"]) == (False, "please send", "an ambu")
    assert partial["end_ms"] == partial["stable_end_ms"] + 400 > partial["start_ms"]   # the line's audio
    assert final["final"] and final["text"] == "please send an ambulance" and "unstable" not in final
    body = await (await client.get("/rooms/live/transcript")).json()
    assert [e["text"] for e in body["entries"]] == ["please send an ambulance"]
    await client.close()
