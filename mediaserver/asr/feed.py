"""Which audio the recogniser hears: raw (concealed, not enhanced), enhanced, or a mix.

Denoising can raise WER (published studies: MetricGAN+ raised semWER in all 40 tested
set-ups), so the feed is a choice. ``mix`` adds a share of raw back to the enhanced
signal; raw is delayed by the enhancer's latency first so the two line up.
"""

from __future__ import annotations

import numpy as np

FEEDS = ("raw", "enhanced", "mix")
DEFAULT_FEED = "mix"          # see benchmarks/asr.py and docs: chosen by measured WER
DEFAULT_RAW_SHARE = 0.3


def check_feed(feed: str, raw_share: float) -> None:
    if feed not in FEEDS:
        raise ValueError(f"unknown ASR feed {feed!r}; choose one of {', '.join(FEEDS)}")
    if not 0.0 <= raw_share <= 1.0:
        raise ValueError(f"raw share must be within 0..1, got {raw_share}")


class FeedMixer:
    """Pick or mix one 48 kHz frame per tick; allocation-free after construction."""

    def __init__(self, feed: str = "mix", *, raw_share: float = 0.3, raw_delay: int = 0,
                 frame: int = 960) -> None:
        check_feed(feed, raw_share)
        if raw_delay < 0:
            raise ValueError("raw delay must be >= 0 samples")
        self.feed, self.raw_share, self.raw_delay = feed, float(raw_share), int(raw_delay)
        self._delay_line = np.zeros(self.raw_delay + frame, dtype=np.float32)
        self._out = np.zeros(frame, dtype=np.float32)

    @property
    def latency(self) -> int:
        """Delay of the chosen feed relative to raw, in 48 kHz samples."""
        return 0 if self.feed == "raw" else self.raw_delay

    def _delayed_raw(self, raw: np.ndarray) -> np.ndarray:
        if self.raw_delay == 0:
            return raw
        n = len(raw)
        line = self._delay_line
        line[self.raw_delay:self.raw_delay + n] = raw
        out = self._out
        out[:n] = line[:n]
        line[:self.raw_delay] = line[n:n + self.raw_delay]
        return out[:n]

    def select(self, raw: np.ndarray, enhanced: np.ndarray) -> np.ndarray:
        if self.feed == "raw":
            return raw
        if self.feed == "enhanced":
            return enhanced
        delayed = self._delayed_raw(raw)
        s = self.raw_share
        np.multiply(delayed, s, out=self._out[:len(delayed)])
        out = self._out[:len(delayed)]
        out += (1.0 - s) * enhanced
        return out
