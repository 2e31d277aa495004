"""Time-based adaptive jitter buffer (NetEq-like), pure: packets in, decisions out.

No asyncio, no I/O, no decoding: every time-dependent call takes keyword-only
``now_ms``. The caller (``InboundAudio``) decodes and applies the decisions.

Playout model: ``_playout`` is the extended RTP timestamp (48 kHz) of the next sample
to play. Each ``pop`` covers the samples at ``_playout``: the packet there is played,
or recovered from the next packet's FEC, or concealed. The buffer level is the audio
queued ahead of the playout point (buffered packets plus the caller's decoded but
unplayed samples). The target level comes from the distribution of packet relative
delays (97th percentile, exponential forgetting), as in WebRTC NetEq; when the
filtered level sits above the target the decision asks the caller to time-compress
(accelerate), below it to stretch (preemptive expand). That is also what absorbs
clock drift between sender and server.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Union

import numpy as np

logger = logging.getLogger(__name__)

CLOCK_RATE = 48000
SAMPLES_PER_MS = CLOCK_RATE // 1000
_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


def unwrap(value: int, last: int | None, modulus: int) -> int:
    """Extend a wrapping counter to an int closest to ``last`` (already extended)."""
    if last is None:
        return value
    half = modulus // 2
    delta = (value - last) % modulus
    if delta >= half:
        delta -= modulus
    return last + delta


@dataclass(slots=True)
class Packet:
    seq: int  # extended
    ts: int  # extended, 48 kHz
    samples: int
    payload: bytes
    arrival_ms: float
    has_fec: bool = False
    speech: bool | None = None  # RFC 6464 VAD bit when the sender set it


@dataclass(slots=True)
class Play:
    """Decode ``packet`` normally. ``time_scale``: -1 compress, +1 stretch, 0 none.

    ``soft``: only a small correction towards the target; apply it on a quiet frame only.
    """

    packet: Packet
    time_scale: int = 0
    soft: bool = False


@dataclass(slots=True)
class DecodeFec:
    """Recover ``samples`` lost before ``packet`` from its in-band FEC (``packet`` stays buffered)."""

    packet: Packet
    samples: int


@dataclass(slots=True)
class Conceal:
    """Nothing to play: conceal ``samples``. ``outage_ms``: how long concealment has lasted."""

    samples: int
    outage_ms: float


@dataclass(slots=True)
class Silence:
    """No stream (not started, idle or waiting for the start delay)."""

    samples: int


Decision = Union[Play, DecodeFec, Conceal, Silence]


@dataclass(slots=True)
class JitterConfig:
    min_delay_ms: float = 40.0  # lowest target level; 2 frames so the next packet's FEC is there
    max_delay_ms: float = 400.0  # highest target level; packets beyond it are dropped
    quantile: float = 0.97  # NetEq's target quantile of the relative delay
    forget: float = 0.983  # per-packet histogram forgetting (NetEq's value, ~1.2 s at 50 packets/s)
    bucket_ms: float = 5.0
    window_ms: float = 2000.0  # relative delay is taken against the fastest packet in this window
    idle_ms: float = 600.0  # concealing this long with nothing buffered -> stream idle, re-anchor
    max_late_run: int = 4  # this many late packets in a row -> re-anchor (sender jump)
    capacity: int = 200  # packets; beyond it the oldest are dropped


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    duplicate: int = 0
    late: int = 0
    reordered: int = 0
    dropped_overflow: int = 0
    resets: int = 0
    ssrc_changes: int = 0
    played: int = 0
    fec: int = 0
    concealed_samples: int = 0
    accelerate: int = 0
    expand: int = 0
    expected: int = 0
    delayed_outage: int = 0
    flushed: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class DelayEstimator:
    """97th percentile of the packet relative delay, with exponential forgetting."""

    def __init__(self, config: JitterConfig) -> None:
        self._cfg = config
        self._nbuckets = int(config.max_delay_ms / config.bucket_ms) + 2
        self._hist = np.zeros(self._nbuckets)
        self._hist[0] = 1.0
        self._cum = np.empty(self._nbuckets)
        self._window: collections.deque[tuple[float, float]] = collections.deque()  # (arrival, transit)
        self.last_relative_ms = 0.0
        self._quantile_ms = 0.0

    def reset(self) -> None:
        self._window.clear()

    def update(self, *, arrival_ms: float, ts: int) -> float:
        """Add one packet; returns its relative delay in ms."""
        transit = arrival_ms - ts / SAMPLES_PER_MS
        win = self._window
        while win and win[0][0] < arrival_ms - self._cfg.window_ms:
            win.popleft()
        while win and win[-1][1] >= transit:
            win.pop()  # monotonic deque: front is the minimum transit in the window
        win.append((arrival_ms, transit))
        relative = max(0.0, transit - win[0][1])
        self.last_relative_ms = relative
        f = self._cfg.forget
        hist = self._hist
        hist *= f
        b = min(self._nbuckets - 1, int(relative / self._cfg.bucket_ms))
        hist[b] += 1.0 - f
        np.cumsum(hist, out=self._cum)
        i = int(np.searchsorted(self._cum, self._cfg.quantile * self._cum[-1]))
        self._quantile_ms = (min(i, self._nbuckets - 1) + 1) * self._cfg.bucket_ms
        return relative

    @property
    def quantile_ms(self) -> float:
        return self._quantile_ms


class JitterBuffer:
    """One stream's adaptive jitter buffer. See the module docstring for the model."""

    def __init__(self, config: JitterConfig | None = None) -> None:
        self.config = config or JitterConfig()
        self.stats = JitterStats()
        self._estimator = DelayEstimator(self.config)
        self._packets: dict[int, Packet] = {}  # extended ts -> packet
        self._ssrc: int | None = None
        self._last_seq: int | None = None  # highest extended seq seen
        self._last_ts: int | None = None  # extended ts of the highest seq
        self._base_seq: int | None = None
        self._seen_seqs: collections.deque[int] = collections.deque(maxlen=256)
        self._seen_set: set[int] = set()
        self._playout: int | None = None  # extended ts of the next sample to play
        self._started = False
        self._first_arrival_ms = 0.0
        self._frame_samples = 960
        self._outage_samples = 0
        self._outage_start = 0
        self._late_run = 0
        self._level_filtered_ms = 0.0
        self._level_report_ms = 0.0
        self._newest_end: int | None = None
        self._newest_arrival_ms = 0.0
        self._reset_pending = False  # tells the caller to reset its decoder

    # ----------------------------------------------------------------- input
    def insert(
        self,
        *,
        seq: int,
        timestamp: int,
        ssrc: int,
        samples: int,
        payload: bytes,
        now_ms: float,
        has_fec: bool = False,
        speech: bool | None = None,
    ) -> str:
        """Add one packet. Returns "ok", "duplicate", "late" or "reset" (new SSRC/re-anchor)."""
        result = "ok"
        if self._ssrc is not None and ssrc != self._ssrc:
            self.stats.ssrc_changes += 1
            self._restart()
            result = "reset"
        self._ssrc = ssrc
        ext_seq = unwrap(seq & 0xFFFF, self._last_seq, _SEQ_MOD)
        ext_ts = unwrap(timestamp & 0xFFFFFFFF, self._last_ts, _TS_MOD)
        if ext_seq in self._seen_set:
            self.stats.duplicate += 1
            return "duplicate"
        self._remember(ext_seq)
        self.stats.received += 1
        if self._base_seq is None:
            self._base_seq = ext_seq
        if self._last_seq is None or ext_seq > self._last_seq:
            self._last_seq = ext_seq
            self._last_ts = ext_ts
        else:
            self.stats.reordered += 1
        self.stats.expected = self._last_seq - self._base_seq + 1
        self._frame_samples = samples
        self._estimator.update(arrival_ms=now_ms, ts=ext_ts)

        if self._playout is not None:
            if (
                ext_ts + samples <= self._playout
                and self._outage_samples > 0
                and not self._packets
                and ext_ts >= self._outage_start
            ):
                # The packet we are concealing, only delayed: play it and accept the added delay
                # (NetEq's "delayed-packet outage": expand, then normal).
                self._playout = ext_ts
                self.stats.delayed_outage += 1
            elif ext_ts + samples <= self._playout:
                self.stats.late += 1
                self._late_run += 1
                if self._late_run < self.config.max_late_run:
                    return "late"
                # The sender's timeline jumped back (or we fell far behind): start over.
                self._reanchor()
                result = "reset"
            elif ext_ts > self._playout + self.config.max_delay_ms * 4 * SAMPLES_PER_MS and not self._packets:
                # Far ahead with nothing buffered: a timestamp jump, not network delay.
                self._reanchor()
                result = "reset"
        self._late_run = 0
        if not self._started and not self._packets:
            self._first_arrival_ms = now_ms
        self._packets[ext_ts] = Packet(ext_seq, ext_ts, samples, payload, now_ms, has_fec, speech)
        end = ext_ts + samples
        if self._newest_end is None or end > self._newest_end:
            self._newest_end = end
            self._newest_arrival_ms = now_ms
        if len(self._packets) > self.config.capacity:
            oldest = min(self._packets)
            del self._packets[oldest]
            self.stats.dropped_overflow += 1
        return result

    def _remember(self, ext_seq: int) -> None:
        if len(self._seen_seqs) == self._seen_seqs.maxlen:
            self._seen_set.discard(self._seen_seqs[0])
        self._seen_seqs.append(ext_seq)
        self._seen_set.add(ext_seq)

    def _restart(self) -> None:
        """New SSRC: a different stream, so forget sequence state and buffered audio."""
        self._packets.clear()
        self._last_seq = None
        self._last_ts = None
        self._base_seq = None
        self._seen_seqs.clear()
        self._seen_set.clear()
        self._estimator.reset()
        self._reanchor()
        # Keep the totals of the previous SSRC in ``expected``.
        self.stats.extra["expected_before"] = self.stats.extra.get("expected_before", 0.0) + self.stats.expected
        self.stats.expected = 0

    def _reanchor(self) -> None:
        self._packets.clear()
        self._playout = None
        self._started = False
        self._newest_end = None
        self._late_run = 0
        self._outage_samples = 0
        self._reset_pending = True
        self.stats.resets += 1

    def take_reset(self) -> bool:
        """True once after the stream restarted (caller resets its decoder)."""
        pending = self._reset_pending
        self._reset_pending = False
        return pending

    # ---------------------------------------------------------------- output
    @property
    def target_ms(self) -> float:
        frame_ms = self._frame_samples / SAMPLES_PER_MS
        target = self._estimator.quantile_ms + frame_ms
        return min(self.config.max_delay_ms, max(self.config.min_delay_ms, target))

    def level_ms(self, queued: int = 0, now_ms: float | None = None) -> float:
        """Audio ready ahead of the playout point, in ms.

        The buffered span plus ``queued`` decoded samples, minus the time since the newest
        packet arrived: that makes the level continuous in time instead of jumping by a
        frame at each arrival, so slow drift shows up before it underruns.
        """
        if self._playout is None or self._newest_end is None:
            return queued / SAMPLES_PER_MS
        span = max(0, self._newest_end - self._playout + queued) / SAMPLES_PER_MS
        if now_ms is not None:
            frame_ms = self._frame_samples / SAMPLES_PER_MS
            span -= min(frame_ms, max(0.0, now_ms - self._newest_arrival_ms))
        return max(0.0, span)

    @property
    def filtered_level_ms(self) -> float:
        """The buffer level the time-scaling decisions use (slow to follow dips)."""
        return self._level_filtered_ms

    @property
    def current_delay_ms(self) -> float:
        """Smoothed buffer level while playing: the delay this buffer adds now."""
        return self._level_report_ms

    def pop(self, *, now_ms: float, queued: int = 0, want: int = 960) -> Decision:
        """Decide what fills the next samples; ``queued``: decoded samples the caller still holds."""
        if not self._started:
            if not self._packets:
                return Silence(want)
            # Start once the level (as if playing from the first packet) reaches the target
            # less half a frame: the steady level then lies within half a frame of the target
            # whatever the phase between packet arrivals and media-clock ticks.
            self._playout = min(self._packets)
            frame_ms = self._frame_samples / SAMPLES_PER_MS
            if self.level_ms(queued, now_ms) < self.target_ms - frame_ms / 2 - 1e-6:
                self._playout = None
                return Silence(want)
            self._started = True
            self._level_filtered_ms = self.level_ms(queued, now_ms)
            self._level_report_ms = self._level_filtered_ms
        assert self._playout is not None

        level = self.level_ms(queued, now_ms)
        if level > self.config.max_delay_ms and len(self._packets) > 1:
            level = self._flush(level)
        packet = self._packets.pop(self._playout, None)
        if packet is None:
            packet = self._straddling()
        if packet is not None:
            # Smooth like NetEq's BufferLevelFilter; outages do not count (the buffer is
            # empty then because packets are missing, not because it runs too shallow).
            # A lost or late *next* packet dips the level for a pop; that is not a draining
            # buffer, so one sample may pull the control filter down by at most 10 ms.
            sample = max(level, self._level_filtered_ms - 10.0)
            self._level_filtered_ms += 0.05 * (sample - self._level_filtered_ms)
            self._level_report_ms += 0.1 * (level - self._level_report_ms)
            self._playout = packet.ts + packet.samples
            self._outage_samples = 0
            self.stats.played += 1
            scale, soft = self._time_scale(level)
            if scale < 0:
                self.stats.accelerate += 1  # requests; the caller may skip soft ones
            elif scale > 0:
                self.stats.expand += 1
            return Play(packet, scale, soft)

        # Nothing at the playout point.
        nxt = min(self._packets) if self._packets else None
        if nxt is None:
            gap = self._frame_samples
        else:
            gap = nxt - self._playout
        samples = min(gap, self._frame_samples)
        samples = max(120, samples - samples % 120)
        if nxt is not None and gap <= self._frame_samples and self._packets[nxt].has_fec:
            self._playout += gap
            self._outage_samples = 0
            self.stats.fec += 1
            return DecodeFec(self._packets[nxt], gap)

        outage_ms = (self._outage_samples + samples) / SAMPLES_PER_MS
        if nxt is None and self._outage_samples / SAMPLES_PER_MS >= self.config.idle_ms:
            # Long silence with nothing buffered: the stream is idle; re-anchor on the next packet.
            self._playout = None
            self._started = False
            self._newest_end = None
            self._outage_samples = 0
            return Silence(want)
        if self._outage_samples == 0:
            self._outage_start = self._playout
        self._playout += samples
        self._outage_samples += samples
        self.stats.concealed_samples += samples
        return Conceal(samples, outage_ms)

    def _flush(self, level: float) -> float:
        """Far beyond the maximum delay (e.g. the consumer stalled): skip audio down to target.

        Time-scaling removes at most a pitch period per frame, too slow for seconds of backlog.
        """
        frame_ms = self._frame_samples / SAMPLES_PER_MS
        while self._packets and level > self.target_ms + frame_ms:
            first = min(self._packets)
            packet = self._packets.pop(first)
            skipped = first + packet.samples - self._playout
            self._playout = first + packet.samples
            level -= skipped / SAMPLES_PER_MS
            self.stats.flushed += 1
        self._level_filtered_ms = min(self._level_filtered_ms, level)
        self._level_report_ms = min(self._level_report_ms, level)
        return level

    def _straddling(self) -> Packet | None:
        """A packet that starts a little before the playout point (after a partial conceal)."""
        if not self._packets:
            return None
        first = min(self._packets)
        if first < self._playout:
            packet = self._packets.pop(first)
            if first + packet.samples > self._playout:
                # Playing it whole shifts playout back a little; a few ms, better than losing it.
                return packet
            self.stats.late += 1
            return self._straddling()
        return None

    def _time_scale(self, level: float) -> tuple[int, bool]:
        """Hard requests outside a wide band; soft ones (quiet frames only) to centre on target."""
        target = self.target_ms
        # A wide band and both the filtered and the instantaneous level past it: jitter
        # alone must not make the buffer stretch and squeeze speech all the time.
        high = target + max(30.0, 0.5 * target)
        low = target - 20.0
        filt = self._level_filtered_ms
        if filt > high and level > high:
            return -1, False
        if filt < low and level < low:
            return 1, False
        if filt > target + 5.0 and level > target + 2.0:
            return -1, True
        if filt < target - 5.0 and target - 10.0 < level < target - 2.0:
            return 1, True
        return 0, False

    # ----------------------------------------------------------------- stats
    @property
    def lost(self) -> int:
        expected = self.stats.expected + int(self.stats.extra.get("expected_before", 0))
        return max(0, expected - self.stats.received)

    @property
    def relative_delay_ms(self) -> float:
        return self._estimator.last_relative_ms

    @property
    def buffered_packets(self) -> int:
        return len(self._packets)
