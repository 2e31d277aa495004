"""One publisher's receive path: RTP payloads in, one 20 ms frame per media-clock tick out.

``JitterBuffer`` decides (play, recover from FEC, conceal, time-scale); this class
applies the decisions with libopus and a little DSP: pitch-period time compression /
stretching, fading a long outage into comfort noise, and a short crossfade when
packets come back. Every pulled frame is labelled so the VAD gate and the enhancer
know which audio was made up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from . import g711
from .jitter import Conceal, DecodeFec, JitterBuffer, JitterConfig, Packet, Play, Silence
from .opus import FRAME_SAMPLES, OpusDecoder, OpusError, packet_has_fec, packet_samples

logger = logging.getLogger(__name__)

KINDS = ("normal", "fec", "plc", "cng", "dtx", "silence")  # dtx: the sender's own pause
_CROSSFADE = 120  # 2.5 ms
_MIN_PITCH = 96  # 500 Hz
_MAX_PITCH = 480  # 100 Hz
_LP_B = np.array([0.3])
_LP_A = np.array([1.0, -0.7])


@dataclass(slots=True)
class PulledFrame:
    pcm: np.ndarray  # float32 [960], 48 kHz mono
    kind: str  # "normal" | "fec" | "plc" | "cng" | "dtx" | "silence"
    # ms from the arrival of the first packet decoded for this frame to the playout of its
    # first sample (the pull time plus the decoded samples queued ahead of it): the delay
    # the jitter buffer added to that packet. None when no packet was decoded.
    wait_ms: float | None = None
    target_ms: float | None = None  # the jitter buffer's target level then (with wait_ms)


@dataclass(slots=True)
class InboundConfig:
    jitter: JitterConfig | None = None
    plc_ms: float = 60.0  # pure Opus PLC this long ...
    fade_ms: float = 60.0  # ... then fade into comfort noise over this long
    cng_max_rms: float = 0.003  # comfort noise never louder than about -50 dBFS


class TimeScaler:
    """Remove or insert one pitch period with a crossfade (WSOLA-like), or squeeze silence."""

    def __init__(self) -> None:
        self._ramp_cache: dict[int, np.ndarray] = {}

    def _ramp(self, n: int) -> np.ndarray:
        ramp = self._ramp_cache.get(n)
        if ramp is None:
            ramp = ((np.arange(n, dtype=np.float32) + 0.5) / n).astype(np.float32)
            self._ramp_cache[n] = ramp
        return ramp

    def period(self, x: np.ndarray) -> tuple[int, float]:
        """Best lag in [_MIN_PITCH, min(_MAX_PITCH, len/2)] and its normalized correlation.

        The first ``seg`` samples against the window ``lag`` samples on, for every even lag
        at once (one ``np.correlate`` and a running energy): about 0.1 ms a frame, where a
        Python loop over the lags took 0.9 ms, which a busy host trimming many streams felt.
        """
        max_lag = min(_MAX_PITCH, len(x) // 2)
        if max_lag <= _MIN_PITCH:
            return max(1, max_lag), 0.0
        seg = min(len(x) - max_lag, max_lag)
        a = x[:seg].astype(np.float64)
        ea = float(np.dot(a, a)) + 1e-9
        tail = x[_MIN_PITCH:max_lag + seg].astype(np.float64)
        dots = np.correlate(tail, a, mode="valid")                  # [max_lag - _MIN_PITCH + 1]
        energy = np.concatenate(([0.0], np.cumsum(tail * tail)))
        eb = energy[seg:] - energy[:-seg]                           # window energies, same lags
        c = dots[::2] / np.sqrt(ea * (np.maximum(eb[::2], 0.0) + 1e-9))
        k = int(np.argmax(c))
        return _MIN_PITCH + 2 * k, float(c[k])

    def compress(self, x: np.ndarray, quiet: bool) -> np.ndarray:
        n = len(x)
        if quiet and n > 2 * _CROSSFADE:
            r = self._ramp(_CROSSFADE)
            return x[:_CROSSFADE] * (1 - r) + x[n - _CROSSFADE :] * r
        p, c = self.period(x)
        if c < 0.3:
            p = min(240, n // 2)
        if 2 * p > n:
            return x
        r = self._ramp(p)
        return np.concatenate((x[:p] * (1 - r) + x[p : 2 * p] * r, x[2 * p :]))

    def shift(self, x: np.ndarray, n: int) -> np.ndarray:
        """Remove (n < 0) or repeat (n > 0) |n| samples of a quiet frame with a crossfade."""
        p = abs(n)
        if 2 * p > len(x):
            return x
        r = self._ramp(p)
        if n < 0:
            return np.concatenate((x[:p] * (1 - r) + x[p : 2 * p] * r, x[2 * p :]))
        return np.concatenate((x[:p], x[p : 2 * p] * (1 - r) + x[:p] * r, x[p:]))

    def trim(self, x: np.ndarray, n: int, quiet: bool) -> np.ndarray:
        """Remove at most ``n`` samples: from a quiet frame with a crossfade (at most half
        the frame), from speech one pitch period when it is clearly periodic and fits."""
        if quiet:
            return self.shift(x, -min(n, len(x) // 2))
        p, c = self.period(x)
        if c < 0.6 or p > n or 2 * p > len(x):
            return x
        return self.shift(x, -p)

    def stretch(self, x: np.ndarray, quiet: bool) -> np.ndarray:
        n = len(x)
        p, c = self.period(x)
        if c < 0.3 and not quiet:
            p = min(240, n // 2)
        if quiet:
            p = min(_MAX_PITCH, n // 2)
        if 2 * p > n:
            return x
        r = self._ramp(p)
        return np.concatenate((x[:p], x[p : 2 * p] * (1 - r) + x[:p] * r, x[p:]))


class SampleQueue:
    """Decoded samples waiting to be pulled, with the kind of each run of samples."""

    def __init__(self, capacity: int = 16384) -> None:
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._len = 0
        self._kinds: list[list] = []  # [kind, count]

    def __len__(self) -> int:
        return self._len

    def push(self, pcm: np.ndarray, kind: str) -> None:
        n = len(pcm)
        if n == 0:
            return
        if self._len + n > len(self._buf):
            drop = self._len + n - len(self._buf)
            self.take(drop)  # never happens in steady state; bounded memory anyway
        self._buf[self._len : self._len + n] = pcm
        self._len += n
        if self._kinds and self._kinds[-1][0] == kind:
            self._kinds[-1][1] += n
        else:
            self._kinds.append([kind, n])

    def take(self, n: int, out: np.ndarray | None = None) -> str:
        """Move ``n`` samples into ``out``; returns the kind covering most of them."""
        n = min(n, self._len)
        if out is not None:
            out[:n] = self._buf[:n]
        self._buf[: self._len - n] = self._buf[n : self._len]
        self._len -= n
        counts: dict[str, int] = {}
        left = n
        while left > 0 and self._kinds:
            run = self._kinds[0]
            used = min(left, run[1])
            counts[run[0]] = counts.get(run[0], 0) + used
            run[1] -= used
            left -= used
            if run[1] == 0:
                self._kinds.pop(0)
        if not counts:
            return "silence"
        return max(counts, key=counts.__getitem__)

    def tail(self) -> float:
        return float(self._buf[self._len - 1]) if self._len else 0.0


class InboundAudio:
    """Jitter buffer + libopus decode + FEC/PLC/CNG for one publisher (48 kHz mono)."""

    def __init__(self, config: InboundConfig | None = None, *, seed: int = 0) -> None:
        self.config = config or InboundConfig()
        self._jb = JitterBuffer(self.config.jitter)
        self._decoder = OpusDecoder()
        self._g711 = g711.G711Decoder()
        self._last_codec = "opus"
        self._queue = SampleQueue()
        self._scaler = TimeScaler()
        self._rng = np.random.default_rng(seed)
        self._noise_rms = self.config.cng_max_rms
        self._in_cng = False
        self._lp_state = np.zeros(1)
        self._delay_ms = 0.0
        self._wait_ms: float | None = None  # this pull's first decoded packet (PulledFrame.wait_ms)
        self._counts = {k: 0 for k in KINDS}
        self._invalid = 0
        self._decode_errors = 0
        self._fec_recovered = 0
        self._concealed_frames = 0
        self._accelerate = 0
        self._expand = 0
        self._trimmed = 0  # samples of pure-delay residue removed (Play.trim)

    # ------------------------------------------------------------------ push
    def push(
        self,
        payload: bytes,
        *,
        seq: int,
        timestamp: int,
        ssrc: int,
        arrival_ms: float,
        audio_level: tuple[bool, int] | None = None,
        codec: str = "opus",
    ) -> None:
        """Queue one RTP payload. Malformed payloads are counted and dropped, never raised.

        ``codec``: "opus" (48 kHz RTP clock) or "pcmu" / "pcma" (G.711, 8 kHz clock: its
        timestamps and sizes are scaled to the 48 kHz path here).
        """
        if codec in g711.CODECS:
            if not payload:
                self._invalid += 1
                return
            self._jb.insert(seq=seq, timestamp=(timestamp * g711.UP) & 0xFFFFFFFF, ssrc=ssrc,
                            samples=len(payload) * g711.UP, payload=payload, now_ms=arrival_ms,
                            speech=None if audio_level is None else bool(audio_level[0]),
                            codec=codec)
            return
        try:
            samples = packet_samples(payload)
        except OpusError as exc:
            self._invalid += 1
            if self._invalid <= 3 or self._invalid % 1000 == 0:
                logger.warning("dropping invalid Opus payload (seq %d, ssrc %d): %s", seq, ssrc, exc)
            return
        speech = None if audio_level is None else bool(audio_level[0])
        self._jb.insert(
            seq=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            samples=samples,
            payload=payload,
            now_ms=arrival_ms,
            has_fec=packet_has_fec(payload),
            speech=speech,
        )

    # ------------------------------------------------------------------ pull
    def pull(self, *, now_ms: float) -> PulledFrame:
        """Exactly 960 samples for this tick; concealment or silence when nothing is there."""
        queue = self._queue
        self._wait_ms = None
        while len(queue) < FRAME_SAMPLES:
            decision = self._jb.pop(now_ms=now_ms, queued=len(queue), want=FRAME_SAMPLES - len(queue))
            if self._jb.take_reset():
                self._decoder.reset()
            if isinstance(decision, Silence):
                queue.push(np.zeros(decision.samples, dtype=np.float32), "silence")
                self._in_cng = False
                break
            self._apply(decision, now_ms)
        out = np.empty(FRAME_SAMPLES, dtype=np.float32)
        kind = queue.take(FRAME_SAMPLES, out)
        self._counts[kind] += 1
        if kind in ("plc", "cng"):
            self._concealed_frames += 1
        return PulledFrame(out, kind, self._wait_ms,
                           None if self._wait_ms is None else self._jb.target_ms)

    def _apply(self, decision: Play | DecodeFec | Conceal, now_ms: float) -> None:
        if isinstance(decision, Conceal):
            if decision.dtx:
                # The sender's comfort-noise pause: libopus continues it after a DTX frame.
                self._queue.push(self._decoder.conceal(decision.samples), "dtx")
                return
            self._conceal(decision.samples, decision.outage_ms)
            return
        try:
            if isinstance(decision, DecodeFec):
                pcm = self._decoder.decode_fec(decision.packet.payload, decision.samples)
                kind = "fec"
                self._fec_recovered += 1
            else:
                codec = decision.packet.codec
                if codec != self._last_codec:
                    self._last_codec = codec
                    self._g711.reset()
                pcm = (self._decoder.decode(decision.packet.payload) if codec == "opus"
                       else self._g711.decode(codec, decision.packet.payload))
                kind = "normal"
                delay = now_ms - decision.packet.arrival_ms + len(self._queue) / 48.0
                self._delay_ms += 0.05 * (delay - self._delay_ms)
                if self._wait_ms is None:
                    self._wait_ms = delay
        except OpusError as exc:
            self._decode_errors += 1
            logger.debug("decode failed, concealing: %s", exc)
            n = decision.samples if isinstance(decision, DecodeFec) else decision.packet.samples
            self._conceal(n, 0.0)
            return
        rms = float(np.sqrt(np.dot(pcm, pcm) / max(1, len(pcm))))
        if kind == "normal":
            # Slow-rising minimum tracker: the background level comfort noise imitates.
            self._noise_rms = min(self.config.cng_max_rms, max(1e-5, min(rms, self._noise_rms * 1.01)))
        if self._in_cng:
            pcm = self._merge(pcm)
            self._in_cng = False
        if isinstance(decision, Play) and decision.time_scale:
            quiet = self._quiet(rms, decision.packet)
            if decision.soft and quiet:
                # Small step (2.5 ms) in a pause: steers to the target without overshooting.
                pcm = self._scaler.shift(pcm, -120 if decision.time_scale < 0 else 120)
            elif not decision.soft:
                pcm = (self._scaler.compress if decision.time_scale < 0 else self._scaler.stretch)(pcm, quiet)
            if decision.time_scale < 0 and (quiet or not decision.soft):
                self._accelerate += 1
            elif decision.time_scale > 0 and (quiet or not decision.soft):
                self._expand += 1
        elif isinstance(decision, Play) and decision.trim:
            n = len(pcm)
            pcm = self._scaler.trim(pcm, decision.trim, self._quiet(rms, decision.packet))
            self._trimmed += n - len(pcm)
        self._queue.push(pcm, kind)

    def _quiet(self, rms: float, packet: Packet) -> bool:
        """A frame that may be squeezed freely: near the background level, or marked as no
        speech by the sender (RFC 6464)."""
        return rms < max(2.5 * self._noise_rms, 0.002) or packet.speech is False

    def _plc(self, samples: int) -> np.ndarray:
        """The current codec's own concealment (Opus PLC, or G.711 pitch repeat)."""
        if self._last_codec == "opus":
            return self._decoder.conceal(samples)
        return self._g711.conceal(samples)

    def _conceal(self, samples: int, outage_ms: float) -> None:
        cfg = self.config
        if outage_ms <= cfg.plc_ms:
            self._queue.push(self._plc(samples), "plc")
            return
        noise = self._noise(samples)
        fade_pos = outage_ms - cfg.plc_ms
        if fade_pos <= cfg.fade_ms + samples / 48.0:
            plc = self._plc(samples)
            start = max(0.0, (fade_pos - samples / 48.0) / cfg.fade_ms)
            end = min(1.0, fade_pos / cfg.fade_ms)
            g = np.linspace(1.0 - start, 1.0 - end, samples, dtype=np.float32)
            noise = plc * g + noise * (1.0 - g)
        self._in_cng = True
        self._queue.push(noise, "cng")

    def _noise(self, samples: int) -> np.ndarray:
        white = self._rng.standard_normal(samples).astype(np.float32)
        # One-pole low-pass: closer to room tone than white noise.
        out, self._lp_state = lfilter(_LP_B, _LP_A, white, zi=self._lp_state)
        out = out.astype(np.float32)
        rms = float(np.sqrt(np.mean(out * out))) + 1e-12
        return out * np.float32(self._noise_rms / rms)

    def _merge(self, pcm: np.ndarray) -> np.ndarray:
        """Crossfade from comfort noise into the first decoded frame after an outage."""
        n = min(_CROSSFADE * 2, len(pcm))
        noise = self._noise(n)
        r = np.linspace(0.0, 1.0, n, dtype=np.float32)
        pcm = pcm.copy()
        pcm[:n] = noise * (1 - r) + pcm[:n] * r
        return pcm

    # ----------------------------------------------------------------- stats
    def stats(self) -> dict[str, float]:
        """Per-peer receive statistics (the SFU exposes them in /metrics and signalling)."""
        jb = self._jb
        s = jb.stats
        return {
            "current_delay_ms": round(jb.current_delay_ms, 2),
            "target_delay_ms": round(jb.target_ms, 2),
            "packet_delay_ms": round(self._delay_ms, 2),
            "relative_delay_ms": round(jb.relative_delay_ms, 2),
            "buffered_packets": float(jb.buffered_packets),
            "packets_received": float(s.received),
            "packets_lost": float(jb.lost),
            "packets_late": float(s.late),
            "packets_reordered": float(s.reordered),
            "packets_duplicate": float(s.duplicate),
            "packets_invalid": float(self._invalid),
            "packets_dropped_overflow": float(s.dropped_overflow),
            "packets_flushed": float(s.flushed),
            "decode_errors": float(self._decode_errors),
            "fec_recovered": float(self._fec_recovered),
            "concealed_frames": float(self._concealed_frames),
            "concealed_ms": round(s.concealed_samples / 48.0, 2),
            "dtx_ms": round(s.dtx_samples / 48.0, 2),
            "accelerate": float(self._accelerate),
            "expand": float(self._expand),
            "trimmed_ms": round(self._trimmed / 48.0, 2),
            "resets": float(s.resets),
            "ssrc_changes": float(s.ssrc_changes),
            "rtp_discontinuities": float(s.discontinuities),
            **{f"frames_{k}": float(v) for k, v in self._counts.items()},
        }

    def close(self) -> None:
        self._decoder.close()
