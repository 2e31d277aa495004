"""Cut a 16 kHz stream into speech segments with webrtcvad, pre-roll and hangover.

Pre-roll keeps the onset that the VAD needs a few frames to notice (clipped onsets
are a top complaint about gated audio); hangover keeps short pauses inside one
segment so the recogniser sees whole phrases. Long speech is cut softly at a short
pause after ``soft_max_ms`` and hard at ``max_ms`` so captions keep coming.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import webrtcvad

logger = logging.getLogger(__name__)

RATE = 16000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000  # 320


@dataclass(frozen=True)
class SegmenterConfig:
    """VAD segmentation knobs; all times in milliseconds."""

    aggressiveness: int = 2        # webrtcvad mode 0..3
    preroll_ms: int = 300          # audio kept before the detected onset
    start_window_ms: int = 200     # onset: at least start_ratio voiced frames in this window
    start_ratio: float = 0.6
    hangover_ms: int = 600         # silence that ends a segment
    soft_max_ms: int = 12000       # after this, a shorter pause ends the segment
    soft_hangover_ms: int = 200
    max_ms: int = 25000            # hard cut (Whisper's window is 30 s)
    min_speech_ms: int = 200       # segments with less voiced audio are dropped

    def __post_init__(self) -> None:
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError("VAD aggressiveness must be 0..3")
        for name in ("preroll_ms", "start_window_ms", "hangover_ms", "soft_max_ms",
                     "soft_hangover_ms", "max_ms", "min_speech_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass
class Segment:
    """One stretch of speech of one participant, 16 kHz mono int16, times on the call's clock."""

    room: str
    identity: str
    start_ms: float
    end_ms: float
    pcm: np.ndarray                # int16 [T] at 16 kHz
    feed: str = "raw"
    sample_rate: int = RATE
    seq: int = 0                   # per participant, increasing
    # "cut": "pause" | "length" | "flush", "voiced_frames", "speech_end_ms" (end of the last
    # voiced frame: the segment ends a hangover of silence after it)
    meta: dict = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return 1000.0 * len(self.pcm) / self.sample_rate


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


class VadSegmenter:
    """Feed 20 ms int16 frames with their start time; get a closed ``Segment`` back when one ends.

    For live streaming, after each ``push`` ``live_audio`` holds the audio that joined the
    open segment on this frame (the whole pre-roll when it opened), ``live_seq`` its number
    and ``live_start_ms`` its start, ``live_silence_ms`` the unvoiced audio at its end (0 after
    a voiced frame; the pause that reaches the hangover closes it), ``live_hangover_ms`` that
    hangover (the soft one once the segment is ``soft_max_ms`` long); ``discarded_seq`` names
    a segment closed as too short.
    """

    def __init__(self, room: str, identity: str, config: SegmenterConfig | None = None,
                 feed: str = "raw") -> None:
        self.room, self.identity, self.feed = room, identity, feed
        self.cfg = config or SegmenterConfig()
        self._vad = webrtcvad.Vad(self.cfg.aggressiveness)
        n = lambda ms: max(1, int(round(ms / FRAME_MS)))  # noqa: E731
        self._preroll: deque[tuple[float, np.ndarray]] = deque(maxlen=max(1, n(self.cfg.preroll_ms)))
        self._window: deque[bool] = deque(maxlen=n(self.cfg.start_window_ms))
        self._start_needed = max(1, int(np.ceil(self.cfg.start_ratio * self._window.maxlen)))
        self._hangover = n(self.cfg.hangover_ms)
        self._soft_hangover = n(self.cfg.soft_hangover_ms)
        self._soft_max = n(self.cfg.soft_max_ms)
        self._max = n(self.cfg.max_ms)
        self._min_voiced = n(self.cfg.min_speech_ms) if self.cfg.min_speech_ms else 0
        self._active: list[np.ndarray] = []
        self._start_ms = 0.0
        self._voiced = 0
        self._silent_run = 0
        self._last_end_ms = 0.0
        self._seq = 0
        self.live_audio: Optional[np.ndarray] = None
        self.live_seq = 0
        self.live_start_ms = 0.0
        self.live_silence_ms = 0.0
        self.live_hangover_ms = float(FRAME_MS * self._hangover)
        self.discarded_seq: Optional[int] = None

    @property
    def in_speech(self) -> bool:
        return bool(self._active)

    def push(self, t_ms: float, frame: np.ndarray) -> Optional[Segment]:
        """``frame``: 320 int16 samples starting at ``t_ms``."""
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"segmenter wants {FRAME_SAMPLES} samples, got {len(frame)}")
        voiced = self._vad.is_speech(frame.tobytes(), RATE)
        end_ms = t_ms + FRAME_MS
        self.live_audio, self.discarded_seq = None, None
        if not self._active:
            self._preroll.append((t_ms, frame))
            self._window.append(voiced)
            if sum(self._window) >= self._start_needed:
                self._seq += 1
                self._start_ms = self._preroll[0][0]
                self._active = [f for _, f in self._preroll]
                self._voiced = sum(self._window)
                self._silent_run = 0
                self._last_end_ms = end_ms
                self._preroll.clear()
                self._window.clear()
                self.live_seq, self.live_start_ms = self._seq, self._start_ms
                self.live_silence_ms = 0.0
                self.live_hangover_ms = float(FRAME_MS * self._hangover)
                self.live_audio = np.concatenate(self._active)
            return None
        self._active.append(frame)
        self._last_end_ms = end_ms
        self.live_audio = frame
        if voiced:
            self._voiced += 1
            self._silent_run = 0
        else:
            self._silent_run += 1
        self.live_silence_ms = float(FRAME_MS * self._silent_run)
        length = len(self._active)
        hangover = self._soft_hangover if length >= self._soft_max else self._hangover
        self.live_hangover_ms = float(FRAME_MS * hangover)
        if self._silent_run >= hangover:
            return self._close(end_ms, "pause")
        if length >= self._max:
            return self._close(end_ms, "length")   # no pause: may end inside a word
        return None

    def flush(self) -> Optional[Segment]:
        """Close the open segment (participant left or stream ended)."""
        self.live_audio, self.discarded_seq = None, None
        if not self._active:
            return None
        return self._close(self._last_end_ms or self._start_ms + FRAME_MS * len(self._active), "flush")

    def _close(self, end_ms: float, cut: str) -> Optional[Segment]:
        frames, voiced, silent = self._active, self._voiced, self._silent_run
        self._active, self._voiced, self._silent_run = [], 0, 0
        if voiced < self._min_voiced:
            self.discarded_seq = self._seq
            return None
        return Segment(self.room, self.identity, self._start_ms, end_ms, np.concatenate(frames),
                       feed=self.feed, seq=self._seq,
                       meta={"voiced_frames": voiced, "cut": cut,
                             "speech_end_ms": end_ms - FRAME_MS * silent})
