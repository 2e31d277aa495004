"""Which audio the recogniser hears: raw (concealed, not enhanced), enhanced, or a mix.

Denoising can raise WER (published studies: MetricGAN+ raised semWER in all 40 tested
set-ups), so the feed is a choice. ``mix`` adds a fixed share of raw back to the enhanced
signal; raw is delayed by the enhancer's latency first so the two line up. ``auto`` mixes
with a share that follows a running SNR estimate: all raw when the input is clean (where
enhancement can only remove detail), down to the ``mix`` share in heavy noise.
"""

from __future__ import annotations

import numpy as np

FEEDS = ("raw", "enhanced", "mix", "auto")
# Chosen by measured WER (benchmarks/asr.py, results/asr.json and asr_all_files.json): with
# msenh-v2, whisper tiny.en does worse on the enhanced feed at every SNR (0 dB: 59 % vs 39 %
# raw), and half raw + half enhanced is within ±1 point of raw over all 116 test utterances
# (better at 0 dB, worse at 10 dB). DeepFilterNet3 in front of the recogniser is worse too.
# Raw is the feed that is never worse than raw; switch with --asr-feed when a model helps.
DEFAULT_FEED = "raw"
DEFAULT_RAW_SHARE = 0.3


def check_feed(feed: str, raw_share: float) -> None:
    if feed not in FEEDS:
        raise ValueError(f"unknown ASR feed {feed!r}; choose one of {', '.join(FEEDS)}")
    if not 0.0 <= raw_share <= 1.0:
        raise ValueError(f"raw share must be within 0..1, got {raw_share}")


class SnrTracker:
    """Running SNR estimate from frame energies: minimum-tracking noise floor, peak-ish speech.

    The noise floor follows dips at once and rises by at most ~1 dB/s; the speech level
    jumps up quickly and decays slowly. Crude (non-stationary noise reads optimistic), but
    it costs one dot product per frame and needs no VAD.
    """

    def __init__(self) -> None:
        self.noise = 0.0
        self.speech = 0.0
        self._started = False

    def update(self, frame: np.ndarray) -> float:
        e = float(np.dot(frame, frame)) / max(1, len(frame)) + 1e-10
        if not self._started:
            self.noise = self.speech = e
            self._started = True
        self.noise = e if e < self.noise else self.noise * 1.0046
        self.speech = 0.8 * self.speech + 0.2 * e if e > self.speech else 0.9954 * self.speech + 0.0046 * e
        self.speech = max(self.speech, self.noise)
        return 10.0 * float(np.log10(self.speech / self.noise))


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
        self._snr = SnrTracker() if feed == "auto" else None
        self.current_share = self.raw_share if feed != "auto" else 1.0

    # auto feed: raw share 1.0 at or above AUTO_HIGH_DB estimated SNR, raw_share at or below
    AUTO_LOW_DB, AUTO_HIGH_DB, AUTO_SLEW = 15.0, 30.0, 0.02

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
        if self._snr is not None:
            snr = self._snr.update(raw)
            t = min(1.0, max(0.0, (snr - self.AUTO_LOW_DB) / (self.AUTO_HIGH_DB - self.AUTO_LOW_DB)))
            target = self.raw_share + (1.0 - self.raw_share) * t
            step = max(-self.AUTO_SLEW, min(self.AUTO_SLEW, target - self.current_share))
            self.current_share += step
        delayed = self._delayed_raw(raw)
        s = self.current_share
        np.multiply(delayed, s, out=self._out[:len(delayed)])
        out = self._out[:len(delayed)]
        out += (1.0 - s) * enhanced
        return out
