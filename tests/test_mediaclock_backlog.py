"""The enhancer's backlog is bounded: a stage slower than real time (CPU starved) cannot make
the media clock queue ticks without limit (soak: ~0.65 MiB/s RSS growth, one tuple and three
lists per queued tick). Beyond ``MAX_BACKLOG`` queued ticks the oldest is dropped (counted as
skipped); what goes out stays in order.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np

from mediaserver.enhance.stage import EnhancerStage
from mediaserver.media.inbound import InboundAudio
from mediaserver.media.opus import OpusEncoder
from mediaserver.sfu.mediaclock import FRAME, MAX_BACKLOG, ClockStream, MediaClock

from test_enhance_common import constant_mask_model, saved


async def test_a_stalled_enhancer_keeps_the_backlog_bounded_and_the_ticks_in_order(
        tmp_path: Path) -> None:
    stage = EnhancerStage(saved(constant_mask_model(0.5), tmp_path), gate=False)
    pts_out: list[int] = []
    clock = MediaClock(stage=stage, encode_pts=lambda enc, pcm, pts: pts_out.append(pts))
    stream = ClockStream(room="r", identity="tone", inbound=InboundAudio(),
                         encoder=OpusEncoder(bitrate=32000), handle=stage.open())
    clock.add(stream)
    release = threading.Event()

    class Stall:
        """Worker-thread hook: the stage's first batch waits until the test releases it."""

        def on_batch(self, handles, raw, enhanced, speech) -> None:  # noqa: ANN001
            release.wait(60)

    stage.frame_sinks.append(Stall())
    sender = OpusEncoder(bitrate=32000)
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(FRAME) / 48000.0)).astype(np.float32)
    loop = asyncio.get_running_loop()
    ticks = 3 * MAX_BACKLOG
    most = 0
    try:
        for k in range(ticks):
            t_ms = loop.time() * 1000.0
            stream.inbound.push(sender.encode(tone), seq=k, timestamp=FRAME * k, ssrc=7,
                                arrival_ms=t_ms)
            clock.tick = k
            await clock._step(t_ms)
            await asyncio.sleep(0)
            most = max(most, clock.core.backlog)
        release.set()
        deadline = loop.time() + 60
        while len(pts_out) < ticks - clock.skipped and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await clock.stop()
    finally:
        release.set()
        stage.shutdown()
    assert most <= MAX_BACKLOG, most
    assert pts_out == sorted(set(pts_out))   # in order, none twice
    assert clock.skipped >= ticks - MAX_BACKLOG - 2
    assert len(pts_out) == ticks - clock.skipped
    assert pts_out[-1] == FRAME * (ticks - 1)   # the newest ticks were kept
