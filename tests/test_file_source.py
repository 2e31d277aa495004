"""The client's microphone stand-in (``FileSource``): a file played once, or looped.

A looped source is what a long call needs (the soak's anchors talk for an hour from a 4 s
tone): past the file's end it must start again, not fall silent; a file played once ends in
silence. Packets are decoded with libopus and judged by their level.
"""

from __future__ import annotations

import numpy as np
import pytest

from mediaserver.client import FileSource
from mediaserver.media.opus import FRAME_SAMPLES, OpusDecoder
from rtc_peer import tone

FILE_FRAMES = 10


async def _levels(source: FileSource, frames: int) -> list[float]:
    """RMS of each of ``frames`` decoded frames (the source paces them at 20 ms)."""
    decoder = OpusDecoder()
    levels = []
    for _ in range(frames):
        packet = await source.recv()
        pcm = decoder.decode(bytes(packet))
        levels.append(float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))))
    return levels


async def test_a_looped_source_plays_past_its_end() -> None:
    samples = tone(500.0, FILE_FRAMES * FRAME_SAMPLES / 48000)
    levels = await _levels(FileSource(samples, loop=True), 4 * FILE_FRAMES)
    # after the codec's first frame, every frame carries the tone, through three restarts
    assert min(levels[2:]) > 0.05, np.round(levels, 3)


async def test_a_source_played_once_ends_in_silence() -> None:
    samples = tone(500.0, FILE_FRAMES * FRAME_SAMPLES / 48000)
    levels = await _levels(FileSource(samples), 3 * FILE_FRAMES)
    assert min(levels[2:FILE_FRAMES]) > 0.05
    assert max(levels[FILE_FRAMES + 2:]) < 0.01, np.round(levels, 3)


def test_a_looped_source_needs_whole_frames() -> None:
    with pytest.raises(ValueError, match="whole 960-sample frames"):
        FileSource(np.zeros(FRAME_SAMPLES + 1, np.float32), loop=True)
    with pytest.raises(ValueError):
        FileSource(np.zeros(0, np.float32), loop=True)
