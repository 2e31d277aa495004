"""Time-based adaptive jitter buffer (NetEq-like), pure: packets in, decisions out.

No asyncio, no I/O, no decoding: every time-dependent call takes keyword-only
``now_ms``. The caller (``InboundAudio``) decodes and applies the decisions.

Playout model: ``_playout`` is the extended RTP timestamp (48 kHz) of the next sample
to play. Each ``pop`` covers the samples at ``_playout``: the packet there is played,
or recovered from the next packet's FEC, or concealed. The buffer level is the audio
queued ahead of the playout point (buffered packets plus the caller's decoded but
unplayed samples). The target level comes from the distribution of packet relative
delays (97th percentile, exponential forgetting), as in WebRTC NetEq, plus a frame; its
floor is one frame on a clean link and two while frames go missing (so the next packet's
FEC is there in time; a concealed packet that turns up late was jitter, not loss, and
does not count). The control steers the next packet's margin (how late it may come
before a 20 ms puller runs dry), which, unlike the buffered span, does not swing with the
phase of arrivals against pulls: a frame of margin above the target is given back by
time compression (accelerate), a shortfall is stretched (preemptive expand), anything in
between is left alone, so a clean link is never time-scaled. That is also what absorbs
clock drift between sender and server. Decoded samples left over beyond whole packets (by
a compress, a stretch or a partial concealment) add delay but no margin, since pulls take
whole frames: ``Play.trim`` lets the caller drop them. A delay spike (a late packet
played after its concealment) adds its outage to the delay: like any whole frame of
spare margin, it is compressed away again, in speech too, once the filtered level shows
it (about a second).

Numbering discontinuities (SIP gateways on hold/resume, transfer, ringback-to-answer;
a sender that restarts): every packet's sequence number and timestamp are checked
against each other and against its arrival time, relative to the stream's newest
packet. When one of them breaks (sequence restarts or jumps, timestamp jumps back or
forward) the trustworthy one places the packet and the broken one is re-based with an
offset, so the stream continues on one internal timeline: no re-anchor, no refill, no
change of delay. When both break at once (or the SSRC changes) the packet is placed by
its arrival time; on the same SSRC that waits for one confirming packet first, so a
single stray or very late packet cannot move the timeline. Duplicates are recognised
by sequence number, timestamp and payload together.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Union

import numpy as np

logger = logging.getLogger(__name__)

CLOCK_RATE = 48000
_MIN_TRIM = 120  # samples (2.5 ms): a smaller residue of decoded samples is left alone
_START_CUSHION_MS = 2.0  # start with this much margin beyond the jitter allowance, so a little
# jitter does not dip the level below the point where it is stretched back up
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
    codec: str = "opus"  # "opus", "pcmu" or "pcma" (the caller decodes)


@dataclass(slots=True)
class Play:
    """Decode ``packet`` normally. ``time_scale``: -1 compress, +1 stretch, 0 none.

    ``soft``: only a small correction towards the target; apply it on a quiet frame only.
    ``trim``: decoded samples the caller holds ahead of this packet that are pure delay (see
    ``JitterBuffer.pop``): it may remove up to this many, from a quiet frame or as whole
    pitch periods, without the next packet being needed any sooner.
    """

    packet: Packet
    time_scale: int = 0
    soft: bool = False
    trim: int = 0


@dataclass(slots=True)
class DecodeFec:
    """Recover ``samples`` lost before ``packet`` from its in-band FEC (``packet`` stays buffered)."""

    packet: Packet
    samples: int


@dataclass(slots=True)
class Conceal:
    """Nothing to play: conceal ``samples``. ``outage_ms``: how long concealment has lasted.

    ``dtx``: the sender paused on purpose (Opus DTX: its last packet was a DTX frame of at
    most 2 bytes, or the next packet follows it without a sequence gap); nothing was lost.
    """

    samples: int
    outage_ms: float
    dtx: bool = False


@dataclass(slots=True)
class Silence:
    """No stream (not started, idle or waiting for the start delay)."""

    samples: int


Decision = Union[Play, DecodeFec, Conceal, Silence]


@dataclass(slots=True)
class JitterConfig:
    min_delay_ms: float = 20.0  # lowest target level on a clean link: one frame
    loss_min_delay_ms: float = 40.0  # lowest target while packets go missing: 2 frames, so the
    # next packet (and its FEC) is there when a lost one is due
    loss_forget: float = 0.99  # per-frame forgetting of the playout loss rate (outages and FEC
    # recoveries per frame played; DTX pauses aside)
    loss_floor_rate: float = 0.002  # a loss rate above this keeps the 2-frame floor (one lost
    # frame keeps it about 3 s)
    max_delay_ms: float = 400.0  # highest target level; packets beyond it are dropped
    quantile: float = 0.97  # NetEq's target quantile of the relative delay
    forget: float = 0.983  # per-packet histogram forgetting (NetEq's value, ~1.2 s at 50 packets/s)
    bucket_ms: float = 1.0  # histogram resolution: the quantile is a bucket's upper edge, so
    # coarse buckets (5 ms) held an extra frame for packets up to 10 ms ahead of a pull on clean links
    window_ms: float = 2000.0  # relative delay is taken against the fastest packet in this window
    idle_ms: float = 600.0  # concealing this long with nothing buffered -> stream idle, re-anchor
    max_late_run: int = 4  # this many late packets in a row -> re-anchor (fallback for jumps)
    capacity: int = 200  # packets; beyond it the oldest are dropped
    max_misorder: int = 100  # packets a reordered packet may lag the newest (RFC 3550 A.1)
    max_dropout: int = 3000  # packets the sequence may advance in one step (RFC 3550 A.1)
    jump_tolerance_ms: float = 80.0  # timestamp ahead of arrival by more (plus the jitter
    # quantile) -> a forward timestamp jump, not a pause
    min_packet_samples: int = 120  # 2.5 ms: the shortest Opus frame, for seq/ts consistency


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
    discontinuities: int = 0  # numbering breaks re-based onto the stream's timeline
    dtx_samples: int = 0  # gaps the sender left on purpose (DTX), not in concealed_samples
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
        """Forget the transit window (its minimum belongs to a timeline that is gone).

        The histogram is kept: it describes the network's jitter, which has not changed.
        """
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


@dataclass(slots=True)
class _Candidate:
    """A packet that may start a new numbering (raw seq/ts in ``packet``)."""

    packet: Packet


class JitterBuffer:
    """One stream's adaptive jitter buffer. See the module docstring for the model."""

    def __init__(self, config: JitterConfig | None = None) -> None:
        self.config = config or JitterConfig()
        self.stats = JitterStats()
        self._estimator = DelayEstimator(self.config)
        self._packets: dict[int, Packet] = {}  # extended ts -> packet
        self._ssrc: int | None = None
        self._last_seq: int | None = None  # highest seq seen, on the internal timeline
        self._last_ts: int | None = None  # internal ts of the highest seq
        self._raw_seq = 0  # the highest-seq packet's own numbering, extended (unwrap base)
        self._raw_ts = 0
        self._last_arrival_ms = 0.0  # arrival of the highest-seq packet
        self._seq_off = 0  # internal = raw extended + offset
        self._ts_off = 0
        self._candidate: _Candidate | None = None  # first packet of a new numbering, unconfirmed
        self._base_seq: int | None = None
        # Recent numberings (raw seq, raw ts) -> payload hash: duplicates and reused numbering.
        self._seen: collections.deque[tuple[int, int]] = collections.deque(maxlen=256)
        self._seen_payload: dict[tuple[int, int], int] = {}
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
        self._played_seq: int | None = None  # internal seq of the last played packet
        self._played_dtx = False  # that packet was an Opus DTX frame (<= 2 bytes)
        self._loss_rate = 0.0  # recent share of frames missing when due (concealed or FEC)
        self._outage_loss = 0.0  # what the current outage added to it (taken back when the
        # concealed packet turns up after all: a delay spike)

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
        codec: str = "opus",
    ) -> str:
        """Add one packet (``timestamp`` on the 48 kHz clock, ``samples`` at 48 kHz).

        Returns "ok", "duplicate", "late", "reset" (new SSRC or re-anchor), "rebased"
        (numbering discontinuity absorbed) or "probation" (held until the next packet
        confirms a new numbering).
        """
        seq &= 0xFFFF
        timestamp &= 0xFFFFFFFF
        key = (seq, timestamp)
        digest = hash(payload)
        reused = False
        if ssrc == self._ssrc and key in self._seen_payload:
            if self._seen_payload[key] == digest:
                self.stats.duplicate += 1
                return "duplicate"
            reused = True  # same numbering, other audio: the sender went back in time
        packet = Packet(seq, timestamp, samples, payload, now_ms, has_fec, speech, codec)
        if self._ssrc is None or self._last_seq is None:
            self._ssrc = ssrc
            self._remember(key, digest)
            self._raw_seq, self._raw_ts = seq, timestamp
            return self._accept(packet, "ok")
        if ssrc != self._ssrc:
            # A new sender on this stream (the browser restarted its sender, a gateway
            # switched legs): it continues this stream's timeline from its arrival time.
            self.stats.ssrc_changes += 1
            self.stats.resets += 1
            self._ssrc = ssrc
            self._candidate = None
            self._seen.clear()
            self._seen_payload.clear()
            self._remember(key, digest)
            self._rebase_by_arrival(packet)
            return self._accept(packet, "reset")
        self._remember(key, digest)
        return self._classify(packet, reused=reused)

    def _classify(self, packet: Packet, *, reused: bool = False) -> str:
        """Place ``packet`` (raw numbering in ``seq``/``ts``) on the internal timeline."""
        cfg = self.config
        ext_seq = unwrap(packet.seq, self._raw_seq, _SEQ_MOD)
        ext_ts = unwrap(packet.ts, self._raw_ts, _TS_MOD)
        ds = ext_seq - self._raw_seq
        dt = ext_ts - self._raw_ts
        # How far the timestamp runs ahead of the arrival time (ms), against the newest packet.
        dev_ms = dt / SAMPLES_PER_MS - (packet.arrival_ms - self._last_arrival_ms)
        fwd_tol = cfg.jump_tolerance_ms + self._estimator.quantile_ms
        min_step = cfg.min_packet_samples

        if self._confirms_candidate(packet):
            return self._rebase_both(packet)
        if 0 < ds <= cfg.max_dropout and dt >= ds * min_step and dev_ms <= fwd_tol:
            return self._place(packet, ext_seq, ext_ts)  # next packets, loss, a pause
        if -cfg.max_misorder <= ds < 0 and dt <= ds * min_step:
            # An older packet (reordered or late). Hopelessly late may also mean the sender
            # restarted both numberings: hold it for the next packet to confirm.
            # (A late packet is never a reordered one when its numbering was already used.)
            late = self._playout is not None and ext_ts + self._ts_off + packet.samples <= self._playout
            if late and (reused or dev_ms < -(cfg.max_delay_ms + cfg.jump_tolerance_ms)):
                self.stats.late += 1
                self._candidate = _Candidate(packet)
                return "probation"
            return self._place(packet, ext_seq, ext_ts)
        if ds == 0 and dt == 0:
            return self._place(packet, ext_seq, ext_ts)  # same numbering, other payload
        if dt > 0 and -cfg.max_delay_ms <= dev_ms <= fwd_tol:
            # The timestamp fits the arrival time; the sequence restarted or jumped.
            lost_between = max(0, round(dt / max(1, self._frame_samples)) - 1)
            self._seq_off = self._last_seq + 1 + lost_between - packet.seq
            self._raw_seq = packet.seq
            self.stats.discontinuities += 1
            return self._place(packet, packet.seq, ext_ts, result="rebased")
        if 0 < ds <= cfg.max_misorder:
            # The sequence continues; the timestamp jumped back or forward.
            ts_int = self._last_ts + ds * self._frame_samples
            if self._playout is not None:
                ts_int = max(ts_int, self._playout)
            self._ts_off = ts_int - packet.ts
            self._raw_ts = packet.ts
            self.stats.discontinuities += 1
            return self._place(packet, ext_seq, packet.ts, result="rebased")
        # Both broke at once: wait for the next packet to confirm the new numbering.
        self._candidate = _Candidate(packet)
        return "probation"

    def _confirms_candidate(self, packet: Packet) -> bool:
        """``packet`` directly follows the held candidate's numbering (up to 2 lost between)."""
        cand = self._candidate
        if cand is None:
            return False
        first = cand.packet
        ds = (packet.seq - first.seq) % _SEQ_MOD
        dt = (packet.ts - first.ts) % _TS_MOD
        gap_ms = packet.arrival_ms - first.arrival_ms
        slack_ms = self.config.jump_tolerance_ms + self._estimator.quantile_ms
        return (0 < ds <= 3 and ds * self.config.min_packet_samples <= dt
                and dt / SAMPLES_PER_MS <= gap_ms + slack_ms)

    def _rebase_both(self, packet: Packet) -> str:
        """The candidate is confirmed: it starts the new numbering, ``packet`` follows it."""
        cand = self._candidate
        assert cand is not None
        self._candidate = None
        self._rebase_by_arrival(cand.packet)
        self.stats.discontinuities += 1
        self._accept(cand.packet, "rebased")
        self._classify(packet)
        return "rebased"

    def _rebase_by_arrival(self, packet: Packet) -> None:
        """Both numberings new: place ``packet`` after the newest one by its arrival time."""
        assert self._last_seq is not None and self._last_ts is not None
        frame = self._frame_samples
        k = max(1, round((packet.arrival_ms - self._last_arrival_ms) * SAMPLES_PER_MS / frame))
        ts_int = self._last_ts + k * frame
        if self._playout is not None and ts_int < self._playout:
            ts_int = self._playout  # it would be late: play it next instead
        # Continue the sequence (packets lost at the break are not counted: with jitter the
        # arrival gap cannot tell loss from delay, and a phantom loss is worse than none).
        self._seq_off = self._last_seq + 1 - packet.seq
        self._ts_off = ts_int - packet.ts
        self._raw_seq = packet.seq
        self._raw_ts = packet.ts

    def _accept(self, packet: Packet, result: str) -> str:
        """Place a packet whose numbering is the current unwrap base."""
        return self._place(packet, packet.seq, packet.ts, result=result)

    def _place(self, packet: Packet, ext_seq: int, ext_ts: int, *, result: str = "ok") -> str:
        """Insert ``packet`` at raw extended (``ext_seq``, ``ext_ts``) plus the offsets."""
        seq_int = ext_seq + self._seq_off
        ts_int = ext_ts + self._ts_off
        samples = packet.samples
        now_ms = packet.arrival_ms
        self.stats.received += 1
        if self._base_seq is None:
            self._base_seq = seq_int
        if self._last_seq is None or seq_int > self._last_seq:
            self._last_seq = seq_int
            self._last_ts = ts_int
            self._raw_seq = ext_seq
            self._raw_ts = ext_ts
            self._last_arrival_ms = now_ms
        else:
            self.stats.reordered += 1
        self.stats.expected = self._last_seq - self._base_seq + 1
        self._frame_samples = samples
        self._estimator.update(arrival_ms=now_ms, ts=ts_int)

        if self._playout is not None:
            if (
                ts_int + samples <= self._playout
                and self._outage_samples > 0
                and not self._packets
                and ts_int >= self._outage_start
            ):
                # The packet we are concealing, only delayed: play it and accept the added delay
                # (NetEq's "delayed-packet outage": expand, then normal).
                self._playout = ts_int
                self.stats.delayed_outage += 1
                # It was jitter, not loss: the relative-delay quantile answers jitter, and the
                # two-frame loss floor (there for the next packet's FEC) would only add a frame.
                self._loss_rate = max(0.0, self._loss_rate - self._outage_loss)
                self._outage_loss = 0.0
            elif ts_int + samples <= self._playout:
                self.stats.late += 1
                self._late_run += 1
                if self._late_run < self.config.max_late_run:
                    return "late"
                # Still falling behind after the checks above: start over.
                self._reanchor()
                result = "reset"
            elif ts_int > self._playout + self.config.max_delay_ms * 4 * SAMPLES_PER_MS and not self._packets:
                # Far ahead with nothing buffered: a timestamp jump, not network delay.
                self._reanchor()
                result = "reset"
        self._late_run = 0
        if not self._started and not self._packets:
            self._first_arrival_ms = now_ms
        self._packets[ts_int] = Packet(seq_int, ts_int, samples, packet.payload, now_ms,
                                       packet.has_fec, packet.speech, packet.codec)
        end = ts_int + samples
        if self._newest_end is None or end > self._newest_end:
            self._newest_end = end
            self._newest_arrival_ms = now_ms
        if len(self._packets) > self.config.capacity:
            oldest = min(self._packets)
            del self._packets[oldest]
            self.stats.dropped_overflow += 1
        return result

    def _remember(self, key: tuple[int, int], digest: int) -> None:
        if key not in self._seen_payload:
            if len(self._seen) == self._seen.maxlen:
                self._seen_payload.pop(self._seen[0], None)
            self._seen.append(key)
        self._seen_payload[key] = digest

    def _reanchor(self) -> None:
        self._packets.clear()
        self._playout = None
        self._started = False
        self._newest_end = None
        self._late_run = 0
        self._outage_samples = 0
        self._reset_pending = True
        self._estimator.reset()  # its transit minimum belongs to the old timeline
        self.stats.resets += 1

    def take_reset(self) -> bool:
        """True once after the stream restarted (caller resets its decoder)."""
        pending = self._reset_pending
        self._reset_pending = False
        return pending

    # ---------------------------------------------------------------- output
    @property
    def target_ms(self) -> float:
        """The level the buffer steers to: the jitter quantile plus a frame, at least one frame
        on a clean link and two while packets go missing (``loss_min_delay_ms``)."""
        cfg = self.config
        frame_ms = self._frame_samples / SAMPLES_PER_MS
        target = self._estimator.quantile_ms + frame_ms
        floor = cfg.loss_min_delay_ms if self._loss_rate > cfg.loss_floor_rate else cfg.min_delay_ms
        return min(cfg.max_delay_ms, max(floor, target))

    @property
    def loss_rate(self) -> float:
        """Recent share of frames whose packet was missing when due (exponentially forgotten)."""
        return self._loss_rate

    def _count_playout(self, missing: bool) -> None:
        f = self.config.loss_forget
        self._loss_rate = f * self._loss_rate + (1.0 - f) * (1.0 if missing else 0.0)
        self._outage_loss *= f

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

    def _margin_ms(self, queued: int, now_ms: float) -> float:
        """How late the next packet may come before a 20 ms consumer pulling now runs dry.

        Pulls take whole frames: the next packet is needed at the pull whose frame first
        reaches past the buffered span, ``floor(span / frame)`` pulls from now, and it is
        due a frame after the newest packet arrived.
        """
        assert self._playout is not None and self._newest_end is not None
        frame_ms = self._frame_samples / SAMPLES_PER_MS
        span = (self._newest_end - self._playout + queued) / SAMPLES_PER_MS
        since = min(frame_ms, max(0.0, now_ms - self._newest_arrival_ms))
        return frame_ms * (np.floor(span / frame_ms + 1e-9) - 1) + since

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
            # Start once the next packet may be late by the jitter allowance (the target less
            # a frame) without the playout running dry; the steady level then depends only
            # on the phase between packet arrivals and media-clock ticks, and stays put.
            self._playout = min(self._packets)
            frame_ms = self._frame_samples / SAMPLES_PER_MS
            if self._margin_ms(queued, now_ms) < self.target_ms - frame_ms + _START_CUSHION_MS:
                self._playout = None
                return Silence(want)
            self._started = True
            self._level_filtered_ms = self.level_ms(queued, now_ms)
            self._level_report_ms = self._level_filtered_ms
        assert self._playout is not None

        level = self.level_ms(queued, now_ms)
        if level > self.config.max_delay_ms and len(self._packets) > 1:
            level = self._flush(level)
        if self._newest_end is not None:
            # What the control steers: the next packet's margin plus a frame. Unlike the
            # span, it does not swing with the phase of arrivals against pulls.
            frame_ms = self._frame_samples / SAMPLES_PER_MS
            level = max(0.0, self._margin_ms(queued, now_ms) + frame_ms)
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
            self._played_seq = packet.seq
            self._played_dtx = packet.codec == "opus" and len(packet.payload) <= 2
            self.stats.played += 1
            self._count_playout(False)
            scale, soft = self._time_scale(level)
            if scale < 0:
                self.stats.accelerate += 1  # requests; the caller may skip soft ones
            elif scale > 0:
                self.stats.expand += 1
            # Pulls take whole frames, so decoded samples queued ahead of this packet beyond
            # whole packets (left by a compress, a stretch or a partial concealment) never
            # make the next packet due later: they only delay everything behind them. Once
            # the margin is not short, they may go; never while the filtered level is short,
            # where a stretch is building up the samples of the frame it needs.
            trim = 0
            target = self.target_ms
            if scale == 0 and level >= target and self._level_filtered_ms >= target - 2.5:
                trim = queued % self._frame_samples
                trim = trim if trim >= _MIN_TRIM else 0
            return Play(packet, scale, soft, trim)

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
            self._count_playout(True)
            return DecodeFec(self._packets[nxt], gap)

        outage_ms = (self._outage_samples + samples) / SAMPLES_PER_MS
        if nxt is None and self._outage_samples / SAMPLES_PER_MS >= self.config.idle_ms:
            # Long silence with nothing buffered: the stream is idle; re-anchor on the next packet.
            self._playout = None
            self._started = False
            self._newest_end = None
            self._outage_samples = 0
            return Silence(want)
        first_of_outage = self._outage_samples == 0
        if first_of_outage:
            self._outage_start = self._playout
        self._playout += samples
        self._outage_samples += samples
        if nxt is not None and self._played_seq is not None:
            dtx = self._packets[nxt].seq == self._played_seq + 1
        else:
            dtx = self._played_dtx
        if dtx:
            self.stats.dtx_samples += samples
        else:
            self.stats.concealed_samples += samples
            self._count_playout(first_of_outage)  # a burst or a delay spike is one event
            if first_of_outage:
                self._outage_loss = 1.0 - self.config.loss_forget
        return Conceal(samples, outage_ms, dtx)

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
        """Hard requests (speech too) outside the band a clean link lives in; soft ones (quiet
        frames only) to make up a small shortfall.

        ``level`` is the next packet's margin plus a frame (``_margin_ms``). A 20 ms consumer
        can only hold whole frames of margin beyond the arrival phase, so the start rule
        leaves it between the target and a frame above: a frame of extra margin is given
        back, a shortfall is made up, and a clean link whose arrival phase stays put is
        never time-scaled.
        """
        target = self.target_ms
        frame_ms = self._frame_samples / SAMPLES_PER_MS
        # A wide band and both the filtered and the instantaneous level past it: jitter
        # alone must not make the buffer stretch and squeeze speech all the time.
        high = target + max(30.0, 0.5 * target)
        low = target - 20.0
        filt = self._level_filtered_ms
        if filt > high and level > high:
            return -1, False
        if filt < low and level < low:
            return 1, False
        if filt > target + frame_ms / 2 + 2.0 and level > target + frame_ms + _START_CUSHION_MS + 1.0:
            # A whole frame of margin to spare, for a while (the filter takes about a second):
            # give it back in speech too (one pitch period, then the residue is trimmed), or
            # a talker who never pauses keeps 20 ms of delay that protects against nothing.
            return -1, False
        if filt < target - 2.5 and level < target - 2.5:
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
