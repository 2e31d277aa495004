"""The local recogniser forgets the streaming state of a talker who left (soak: issue 13).

Rooms live for hours while visitors come and go; each visitor's ``TalkerStream`` (open
utterance audio, context, carry-over) and caption-delay arrivals must go when they leave,
not only when the whole room ends. The count is ``talkers`` in the sink's health
(``/healthz`` -> asr.sinks[].talkers).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from mediaserver.asr.hub import AsrHub, FeedConfig
from test_asr_pipeline import espeak48  # noqa: E402  (same folder)
from test_asr_streaming import needs_whisper  # noqa: E402
from waiting import until

FRAME = 960   # 20 ms at 48 kHz


def frames(x: np.ndarray) -> list[np.ndarray]:
    x = np.pad(x, (0, -len(x) % FRAME))
    return [x[i:i + FRAME] for i in range(0, len(x), FRAME)]


@pytest.mark.timeout(900)
async def test_visitors_state_is_forgotten_when_they_leave_while_the_room_goes_on(
        tmp_path: Path) -> None:
    needs_whisper()
    from mediaserver.asr.local import LocalRecogniserSink

    sink = LocalRecogniserSink(workers=1)
    hub = AsrHub([sink], feed=FeedConfig(feed="raw"))
    finals: dict[str, list[str]] = {}
    hub.add_transcript_listener(
        lambda room, who, text, s, e, final: final and finals.setdefault(who, []).append(text))
    silence = np.zeros(36000, np.float32)
    anchor = frames(np.concatenate([silence, espeak48("The meeting starts now.", tmp_path, "a"),
                                    silence]))
    visit = espeak48("Please send the report before Friday.", tmp_path, "v")
    await hub.start()
    t = 0.0

    async def tick(who: list[tuple[str, np.ndarray]]) -> None:
        nonlocal t
        for identity, frame in who:
            hub.on_frame(room="r", identity=identity, t_ms=t, raw=frame, enhanced=frame, speech=True)
        t += 20.0
        await asyncio.sleep(0)   # let the decode workers run between frames

    try:
        for frame in anchor:     # the anchor stays in the room for the whole test
            await tick([("anchor", frame)])
        await asyncio.wait_for(sink.drain(), 300)
        baseline = sink.health()["talkers"]
        assert baseline == 1
        quiet = np.zeros(FRAME, np.float32)
        # three visitors: one leaves after a pause (segment closed), two mid-utterance
        for n, cut in enumerate((None, 0.6, 0.3)):
            who = f"visitor-{n}"
            audio = visit if cut is None else visit[:int(len(visit) * cut)]
            tail = 60 if cut is None else 0
            for frame in frames(audio) + [np.zeros(FRAME, np.float32)] * tail:
                await tick([("anchor", quiet), (who, frame)])
            await until(lambda: sink.health()["talkers"] >= baseline + 1, timeout=60,
                        what=f"{who}'s streaming state")
            hub.participant_left("r", who)
        await asyncio.wait_for(sink.drain(), 600)
        await until(lambda: sum(len(finals.get(f"visitor-{n}", [])) for n in range(3)) >= 3,
                    timeout=60, what="a final caption of every visitor")
        health = sink.health()
    finally:
        await hub.stop()
    # every visitor's last words were still decoded, and none of their state stayed behind
    assert all(finals.get(f"visitor-{n}") for n in range(3)), finals
    assert health["talkers"] == baseline, health
