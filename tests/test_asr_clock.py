"""The media clock drives the ASR hub: every participant's frames, and none while muted."""

from __future__ import annotations

import numpy as np

from mediaserver.asr.hub import AsrHub, FeedConfig
from mediaserver.media.inbound import InboundAudio
from mediaserver.media.opus import OpusEncoder
from mediaserver.sfu.mediaclock import ClockStream, MediaClock

from test_asr_pipeline import RecordingSink, call_with_pauses


async def run_call(x: np.ndarray, *, muted: bool) -> tuple[RecordingSink, AsrHub]:
    """Opus packets of ``x`` arrive on time at a real InboundAudio; the clock ticks every 20 ms."""
    sink = RecordingSink("clock")
    hub = AsrHub([sink], feed=FeedConfig(feed="raw"))
    await hub.start()
    sender = OpusEncoder(bitrate=32000)
    clock = MediaClock(stage=None, encode_pts=lambda enc, pcm, pts: enc.encode_packet(pcm, pts))
    clock.sinks.append(hub)
    stream = ClockStream(room="r", identity="frank", inbound=InboundAudio(),
                         encoder=OpusEncoder(bitrate=32000), muted=muted)
    clock.add(stream)
    frames = len(x) // 960
    for k in range(frames + 50):
        if k < frames:
            payload = sender.encode(x[k * 960:(k + 1) * 960])
            stream.inbound.push(payload, seq=k, timestamp=960 * k, ssrc=7, arrival_ms=20.0 * k)
        await clock._step(20.0 * k)
    hub.participant_left("r", "frank")
    await sink.drain()
    await hub.stop()
    await clock.stop()
    return sink, hub


async def test_clock_feeds_hub_and_muted_voice_is_not_transcribed(tmp_path) -> None:
    x, _ = call_with_pauses(tmp_path)
    live, hub = await run_call(x, muted=False)
    assert hub.frames >= len(x) // 960
    assert [(s.identity, s.seq) for s in live.items] == [("frank", 1), ("frank", 2)]
    muted, hub = await run_call(x, muted=True)
    assert hub.frames >= len(x) // 960 and muted.items == []
