"""The ASR hub: the media clock's frame hook, fanning speech segments out to sinks.

Per participant: feed choice (raw/enhanced/mix) -> streaming 48->16 kHz decimation ->
VAD segmenter. All of it is a few numpy/C calls per 20 ms frame on the event loop
(~0.15 ms); recognition and I/O happen in the sinks' own tasks and threads.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from . import metrics
from .feed import DEFAULT_FEED, DEFAULT_RAW_SHARE, FeedMixer, check_feed
from .resample import StreamingDecimator
from .segmenter import Segment, SegmenterConfig, VadSegmenter, to_int16
from .sink import AsrSink, LiveChunk, Transcript
from .transcripts import TranscriptLog

logger = logging.getLogger(__name__)

FRAME_48K = 960
_EMPTY = np.zeros(0, dtype=np.int16)


class FrameSink(Protocol):
    def on_frame(self, *, room: str, identity: str, t_ms: float, raw: np.ndarray,
                 enhanced: np.ndarray, speech: bool) -> None: ...


@dataclass(frozen=True)
class FeedConfig:
    feed: str = DEFAULT_FEED
    raw_share: float = DEFAULT_RAW_SHARE
    raw_delay: int = 0          # delay raw by this many 48 kHz samples to align it with enhanced
    input_delay: int = 0        # delay of the frames themselves behind the call clock (stage latency)

    def __post_init__(self) -> None:
        check_feed(self.feed, self.raw_share)


class ParticipantPipeline:
    """One participant's path from 48 kHz frames to closed segments."""

    def __init__(self, room: str, identity: str, feed: FeedConfig,
                 seg: SegmenterConfig | None = None) -> None:
        self.mixer = FeedMixer(feed.feed, raw_share=feed.raw_share, raw_delay=feed.raw_delay)
        self.decimator = StreamingDecimator(3)
        self.segmenter = VadSegmenter(room, identity, seg, feed=feed.feed)
        # times reported on the call clock: remove the feed's delay and the FIR group delay
        self._offset_ms = (feed.input_delay + self.mixer.latency
                           + self.decimator.delay_samples_in) / 48.0

    def push(self, t_ms: float, raw: np.ndarray, enhanced: np.ndarray) -> Optional[Segment]:
        audio16 = self.decimator.process(self.mixer.select(raw, enhanced))
        t = max(0.0, t_ms - self._offset_ms)  # the first frames of a call: no negative times
        return self.segmenter.push(t, to_int16(audio16))

    def live_chunk(self) -> Optional[LiveChunk]:
        """What the last ``push`` added to an open segment (or a discard notice), if anything."""
        seg = self.segmenter
        if seg.discarded_seq is not None:
            return LiveChunk(seg.room, seg.identity, seg.discarded_seq, seg.live_start_ms,
                             _EMPTY, seg.feed, discarded=True)
        if seg.live_audio is None:
            return None
        return LiveChunk(seg.room, seg.identity, seg.live_seq, seg.live_start_ms, seg.live_audio,
                         seg.feed, silence_ms=seg.live_silence_ms,
                         hangover_ms=seg.live_hangover_ms)

    def flush(self) -> Optional[Segment]:
        return self.segmenter.flush()


TranscriptListener = Callable[[str, str, str, float, float, bool], None]
CaptionListener = Callable[[Transcript], None]


class AsrHub:
    """Implements ``FrameSink``; owns the sinks and the per-room transcript.

    Times on segments, transcripts and captions are milliseconds on the call's clock:
    since the first frame of the room (the media clock's own time base is arbitrary).
    """

    def __init__(self, sinks: Sequence[AsrSink], *, feed: FeedConfig | None = None,
                 segmenter: SegmenterConfig | None = None, transcript_entries: int = 2000) -> None:
        self.sinks = list(sinks)
        self._live_sinks = [s for s in self.sinks if getattr(s, "wants_live_audio", False)]
        self.feed = feed or FeedConfig()
        self.seg_config = segmenter or SegmenterConfig()
        self.transcripts = TranscriptLog(transcript_entries)
        self._pipes: dict[tuple[str, str], ParticipantPipeline] = {}
        self._call_start: dict[str, float] = {}  # room -> clock ms of its first frame
        self._listeners: list[TranscriptListener] = []
        self._caption_listeners: list[CaptionListener] = []
        self.segments = 0
        self.frames = 0

    def add_transcript_listener(self, listener: TranscriptListener) -> None:
        """``listener(room, identity, text, start_ms, end_ms, final)``; the server broadcasts a
        caption. ``final`` is False for a streaming recogniser's partial result."""
        self._listeners.append(listener)

    def add_caption_listener(self, listener: CaptionListener) -> None:
        """``listener(transcript)`` for every caption, partials with their unstable tail."""
        self._caption_listeners.append(listener)

    async def start(self) -> None:
        for sink in self.sinks:
            await sink.start(self._on_transcript)

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Flush open segments, give sinks ``drain_timeout`` seconds to finish, then stop them."""
        for key in list(self._pipes):
            self.participant_left(*key)
        drains = [s.drain() for s in self.sinks if hasattr(s, "drain")]
        if drains:
            try:
                await asyncio.wait_for(asyncio.gather(*drains), drain_timeout)
            except asyncio.TimeoutError:
                logger.info("ASR sinks still busy at shutdown; remaining items are dropped")
        for sink in self.sinks:
            try:
                await sink.stop()
            except Exception as exc:  # one broken sink must not keep others open
                logger.warning("ASR sink %s did not stop cleanly: %s", sink.name, exc)

    # -- FrameSink ---------------------------------------------------------------------------
    def on_frame(self, *, room: str, identity: str, t_ms: float, raw: np.ndarray,
                 enhanced: np.ndarray, speech: bool) -> None:
        if raw.shape != (FRAME_48K,) or enhanced.shape != (FRAME_48K,):
            metrics.FRAME_ERRORS.inc()
            logger.debug("ASR hub: dropped frame of %s/%s with shapes %s %s", room, identity,
                         raw.shape, enhanced.shape)
            return
        self.frames += 1
        key = (room, identity)
        pipe = self._pipes.get(key)
        if pipe is None:
            pipe = self._pipes[key] = ParticipantPipeline(room, identity, self.feed, self.seg_config)
        start = self._call_start.setdefault(room, t_ms)
        self._deliver(pipe, pipe.push(t_ms - start, raw, enhanced))

    def participant_left(self, room: str, identity: str) -> None:
        """Flush the open segment of a participant who left, and forget their state."""
        pipe = self._pipes.pop((room, identity), None)
        if pipe is not None:
            self._deliver(pipe, pipe.flush())
            if not any(k[0] == room for k in self._pipes):   # the room's last speaker left
                for sink in self.sinks:
                    notify = getattr(sink, "submit_room_ended", None)
                    if notify is not None:
                        notify(room)
        for sink in self.sinks:   # sinks with per-talker state forget this talker's
            forget = getattr(sink, "submit_participant_left", None)
            if forget is not None:
                forget(room, identity)
        if not any(k[0] == room for k in self._pipes) and not self.transcripts.has_room(room):
            self._call_start.pop(room, None)  # nothing refers to this call's clock any more

    def room_closed(self, room: str) -> None:
        for key in [k for k in self._pipes if k[0] == room]:
            self.participant_left(*key)

    def health(self) -> dict:
        """ASR state for /healthz: per sink its queue depth and drops (and the local
        recogniser's engine, device and workers), plus totals."""
        sinks = []
        for sink in self.sinks:
            report = getattr(sink, "health", None)
            sinks.append(report() if report is not None else {"name": sink.name})
        return {"sinks": sinks, "segments": self.segments, "frames": self.frames,
                "feed": self.feed.feed,
                "queue_depth": sum(s.get("queue_depth", 0) for s in sinks),
                "dropped": sum(s.get("dropped", 0) for s in sinks)}

    def transcript(self, room: str) -> list[dict]:
        return self.transcripts.room(room)

    # -- internals ---------------------------------------------------------------------------
    def _deliver(self, pipe: ParticipantPipeline, segment: Optional[Segment]) -> None:
        if self._live_sinks:
            chunk = pipe.live_chunk()
            if chunk is not None:
                for sink in self._live_sinks:
                    sink.submit_live(chunk)
        if segment is not None:
            self._dispatch(segment)

    def _dispatch(self, segment: Segment) -> None:
        self.segments += 1
        self.transcripts.open(segment.room)
        metrics.SEGMENTS.inc()
        metrics.SEGMENT_SECONDS.inc(segment.duration_ms / 1000.0)
        for sink in self.sinks:
            sink.submit_segment(segment)

    def _on_transcript(self, transcript: Transcript) -> None:
        if transcript.final:  # partials are for the live caption only: not logged or stored
            metrics.TRANSCRIPTS.labels(transcript.source).inc()
            self.transcripts.add(transcript)
            for sink in self.sinks:
                sink.submit_transcript(transcript)
        for listener in self._listeners:
            try:
                listener(transcript.room, transcript.identity, transcript.text,
                         transcript.start_ms, transcript.end_ms, transcript.final)
            except Exception as exc:
                logger.warning("caption listener failed: %s", exc)
        for caption_listener in self._caption_listeners:
            try:
                caption_listener(transcript)
            except Exception as exc:
                logger.warning("caption listener failed: %s", exc)
