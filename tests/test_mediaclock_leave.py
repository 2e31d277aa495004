"""A publisher removed while its tick is in the enhancer gets no frame after it left.

The enhancer runs behind the clock (``MediaClock._enhance_loop`` awaits the stage). A
participant who leaves during that await must not reach the frame sinks afterwards: the
ASR hub's ``participant_left`` has run by then, and a late frame would open per-talker state
(pipeline, streaming recogniser) that nothing closes again (soak: linear memory growth).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from mediaserver.enhance.stage import EnhancerStage
from mediaserver.media.inbound import InboundAudio
from mediaserver.media.opus import OpusEncoder
from mediaserver.sfu.mediaclock import FRAME, ClockStream, MediaClock

from test_enhance_common import constant_mask_model, saved


class Frames:
    """Frame sink: which identities got a frame."""

    def __init__(self) -> None:
        self.who: list[str] = []
        self.emitted = asyncio.Event()

    def on_frame(self, *, room: str, identity: str, t_ms: float, raw: np.ndarray,
                 enhanced: np.ndarray, speech: bool) -> None:
        self.who.append(identity)
        self.emitted.set()


async def test_a_stream_removed_during_enhancement_reaches_no_sink(tmp_path: Path) -> None:
    stage = EnhancerStage(saved(constant_mask_model(0.5), tmp_path), gate=False)
    clock = MediaClock(stage=stage, encode_pts=lambda enc, pcm, pts: None)
    sink = Frames()
    clock.sinks.append(sink)
    sender = OpusEncoder(bitrate=32000)
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(FRAME) / 48000.0)).astype(np.float32)
    stay, leave = (ClockStream(room="r", identity=who, inbound=InboundAudio(),
                               encoder=OpusEncoder(bitrate=32000), handle=stage.open())
                   for who in ("stay", "leave"))
    for s in (stay, leave):
        clock.add(s)
    loop = asyncio.get_running_loop()
    removing = {"armed": False}

    class LeaveDuringBatch:
        """Worker-thread hook: while the batch is in the stage, ``leave`` is removed on the
        loop (ordered before the stage's result reaches the clock)."""

        def on_batch(self, handles, raw, enhanced, speech) -> None:  # noqa: ANN001
            if removing["armed"]:
                loop.call_soon_threadsafe(clock.remove, leave)

    stage.frame_sinks.append(LeaveDuringBatch())
    try:
        for k in range(6):
            t_ms = loop.time() * 1000.0
            for s in (stay, leave):
                s.inbound.push(sender.encode(tone), seq=k, timestamp=FRAME * k, ssrc=7,
                               arrival_ms=t_ms)
            removing["armed"] = k == 3
            sink.emitted.clear()
            clock.tick = k
            await clock._step(t_ms)
            await asyncio.wait_for(sink.emitted.wait(), 60)
            await asyncio.sleep(0)
        await clock.stop()
    finally:
        stage.shutdown()
    assert leave not in clock.streams
    # ticks 0-2 reach both; from tick 3 on (removed while enhanced) only ``stay``
    assert sink.who == ["stay", "leave"] * 3 + ["stay"] * 3, sink.who
