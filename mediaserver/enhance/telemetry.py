"""Per-stream quality telemetry of the enhancer stage: cheap enough for every stream, every frame.

Pure numpy, no I/O: :meth:`Telemetry.update` takes one tick's batch (the stage's worker thread
calls it after enhancement) and updates every stream's :class:`StreamTelemetry` in a few
vectorised operations (one windowed FFT of raw and enhanced per frame, ~30 µs per stream per
20 ms frame on this machine, see ``benchmarks/telemetry.py``).

What each stream carries (all levels in dB re full scale, 1.0 = 0 dBFS; power is the frame's
mean square):

* ``level_dbfs``: input level, 100 ms average.
* ``noise_in_dbfs`` / ``noise_out_dbfs``: noise floor before / after enhancement: a running
  average of the frame power over frames without speech or within 3 dB of the floor (time
  constant 1 s), pulled down fast (200 ms) by any quieter frame (so a stream that starts
  talking, or whose VAD stays on in its pauses, still gets an estimate), and rising 10 dB/s
  through louder speech frames (so a floor first set by a quiet start, under a VAD that never
  closes in loud noise, still reaches the real noise).
* ``snr_in_db`` / ``snr_out_db``: (speech power − noise) / noise, speech power averaged over
  speech frames above the noise floor (1 s time constant). Known-SNR mixtures (white and
  low-pass noise, 0–20 dB) come out within ±2.5 dB.
* ``suppression_db``: raw over enhanced power of every audible frame (1 s average);
  ``noise_reduction_db`` = noise_in − noise_out.
* ``speech_pct``, ``concealed_pct`` (plc + cng), ``fec_pct``, ``dtx_pct``: shares of the
  last ~2 s of frames (exponential average, 0..100).
* ``clipped_frames``: frames with at least :data:`CLIP_SAMPLES` samples at |x| ≥ :data:`CLIP_LEVEL`.
* ``distortion_events``: over-suppression. A speech frame is *checked* when its speech band
  (300–3400 Hz) is at least :data:`CHECK_SNR_DB` over that band's noise floor, and that floor
  was confirmed by a frame near it within :data:`STALE_FRAMES` (not a floor still climbing
  after a quiet start or a noise rise, whose "speech" is mostly noise), after the stream's
  first :data:`WARMUP_FRAMES` frames of sound; it is *distorted*
  when the enhancer left less than the band's speech power (raw band power − noise) minus
  :data:`DISTORTION_DB`, i.e. it removed speech, not noise. :data:`EVENT_FRAMES` distorted frames
  in a row (within one stretch of speech) make one event (the thing an operator is paged for);
  concealed frames are not checked (their damage is the network's, not the model's).
  Calibration (espeak speech + white noise at 0/10/20/30 dB, msenh-v2): of the checked frames
  0–1 % lose more than 10 dB, never three in a row; an enhancer whose mask is scaled by 0.02
  loses 40+ dB on every checked frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .noisegain import power_spectra

RATE = 48000
FRAME = 960
BAND_HZ = (300.0, 3400.0)  # speech band checked for over-suppression
_LO, _HI = int(BAND_HZ[0] * FRAME / RATE), int(BAND_HZ[1] * FRAME / RATE) + 1
CHECK_SNR_DB = 10.0  # speech band this far over its noise floor: the frame is checked
DISTORTION_DB = 10.0  # enhancer removed this much more than the noise: distorted frame
EVENT_FRAMES = 3  # consecutive distorted frames (60 ms) = one distortion event
CLIP_LEVEL = 0.99
CLIP_SAMPLES = 2
EPS = 1e-10  # -100 dBFS: power floor
AUDIBLE = 1e-8  # -80 dBFS: quieter frames do not count for suppression
A_LEVEL, A_SLOW, A_SHARE = 0.2, 0.02, 0.01  # averaging weights per 20 ms frame (100 ms, 1 s, 2 s)
A_DOWN = 0.1  # a frame below the noise floor pulls it down fast (200 ms)
NEAR = 2.0  # during speech, frames within 3 dB of the floor still update it (pauses between words)
RISE_DB_PER_S = 10.0  # during speech louder than NEAR x floor the floor rises this fast (minimum
RISE = 10.0 ** (RISE_DB_PER_S * FRAME / RATE / 10.0)  # tracking with a slow rise, Doblinger 1995)
STALE_FRAMES = 10  # the band floor is trusted for over-suppression checks for 200 ms after a frame
                   # near it (a pause, or noise under a VAD that stays on) last confirmed it
WARMUP_FRAMES = 25  # no check in a stream's first 500 ms of sound (codec/mic fade-in sets the floor)
CONCEALED = ("plc", "cng")

# rows of the per-stream state vector
(LEVEL, N_IN, N_OUT, S_IN, S_OUT, SUPP, SPEECH, CONC, FEC, DTX, N_BAND, RUN, INIT, SEEN_SPEECH,
 FRAMES, SPEECH_FRAMES, CLIPPED, EVENTS, DISTORTED, CHECKED, SUPP_SPEECH, STALE, HEARD) = range(23)
STATE = 23


def _db(p: float) -> float:
    return 10.0 * math.log10(max(p, EPS))


@dataclass(frozen=True)
class Counts:
    """Cumulative counters of one stream (or a sum over streams): the canary's SLI inputs."""

    frames: int = 0
    speech_frames: int = 0
    checked_frames: int = 0  # speech frames whose speech band stands out of the noise
    distorted_frames: int = 0
    distortion_events: int = 0
    clipped_frames: int = 0
    suppression_db_speech: float = 0.0  # sum over speech frames of the frame's suppression (dB)

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts(*(a - b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple:
        return (self.frames, self.speech_frames, self.checked_frames, self.distorted_frames,
                self.distortion_events, self.clipped_frames, self.suppression_db_speech)


class StreamTelemetry:
    """One stream's running estimates; written by the worker thread, read anywhere (floats)."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = np.zeros(STATE, dtype=np.float64)

    def reset_model_view(self) -> None:
        """After a model switch: the enhanced-side averages restart (input side kept)."""
        s = self.state
        s[N_OUT] = s[N_IN]
        s[S_OUT] = s[S_IN]
        s[SUPP] = 0.0

    def counts(self) -> Counts:
        s = self.state
        return Counts(int(s[FRAMES]), int(s[SPEECH_FRAMES]), int(s[CHECKED]), int(s[DISTORTED]),
                      int(s[EVENTS]), int(s[CLIPPED]), float(s[SUPP_SPEECH]))

    def snapshot(self) -> dict[str, float]:
        """The numbers a participant sees in the connection panel (JSON-ready, rounded)."""
        s = self.state.copy()
        if s[INIT] == 0:
            return {}
        n_in, n_out = max(s[N_IN], EPS), max(s[N_OUT], EPS)
        out = {
            "level_dbfs": _db(s[LEVEL]),
            "noise_in_dbfs": _db(n_in),
            "noise_out_dbfs": _db(n_out),
            "noise_reduction_db": _db(n_in) - _db(n_out),
            "suppression_db": float(s[SUPP]),
            "speech_pct": 100.0 * s[SPEECH],
            "concealed_pct": 100.0 * s[CONC],
            "fec_pct": 100.0 * s[FEC],
            "dtx_pct": 100.0 * s[DTX],
            "clipped_frames": int(s[CLIPPED]),
            "distortion_events": int(s[EVENTS]),
            "frames": int(s[FRAMES]),
        }
        if s[SEEN_SPEECH]:
            out["snr_in_db"] = _db(max(s[S_IN] - n_in, EPS)) - _db(n_in)
            out["snr_out_db"] = _db(max(s[S_OUT] - n_out, EPS)) - _db(n_out)
        return {k: (round(float(v), 1) if isinstance(v, float) else v) for k, v in out.items()}


class Telemetry:
    """Batch update of many streams' :class:`StreamTelemetry` (one call per tick)."""

    def update(self, streams: Sequence[StreamTelemetry], raw: np.ndarray, enhanced: np.ndarray,
               speech: np.ndarray, kinds: Sequence[Optional[str]], inputs: Optional[np.ndarray] = None,
               modelled: Optional[np.ndarray] = None) -> None:
        """raw, enhanced [N, 960] float32 aligned (the stage's outputs); speech [N] bool;
        kinds: the inbound frame kinds (None = unknown, counted as normal); inputs [N, 960]:
        the undelayed input frames for the clipping check (default: raw); modelled [N] bool:
        frames the model shaped (False: passed through, enhancement off or an overloaded tick;
        they are not checked for over-suppression). Default: all."""
        n = len(streams)
        if n == 0:
            return
        st = np.stack([t.state for t in streams])  # [N, STATE]
        p_raw = np.einsum("ij,ij->i", raw, raw, dtype=np.float64) / FRAME + EPS
        p_enh = np.einsum("ij,ij->i", enhanced, enhanced, dtype=np.float64) / FRAME + EPS
        spec = power_spectra(np.concatenate([raw, enhanced]))[:, _LO:_HI].sum(axis=1)
        b_raw, b_enh = spec[:n].astype(np.float64) + EPS, spec[n:].astype(np.float64) + EPS
        kinds = [k or "normal" for k in kinds]
        conc = np.array([k in CONCEALED for k in kinds])
        fec = np.array([k == "fec" for k in kinds])
        dtx = np.array([k == "dtx" for k in kinds])
        source = raw if inputs is None else inputs
        clipped = (np.abs(source) >= CLIP_LEVEL).sum(axis=1) >= CLIP_SAMPLES
        speech = np.asarray(speech, dtype=bool)

        audible = p_raw > AUDIBLE
        first = (st[:, INIT] == 0) & audible
        if first.any():  # initialise every average from the first audible frame
            for row, value in ((LEVEL, p_raw), (N_IN, p_raw), (N_OUT, p_enh), (S_IN, p_raw),
                               (S_OUT, p_enh), (N_BAND, b_raw)):
                st[first, row] = value[first]
            st[first, INIT] = 1.0

        st[:, LEVEL] += A_LEVEL * (p_raw - st[:, LEVEL])
        for row, p in ((N_IN, p_raw), (N_OUT, p_enh), (N_BAND, b_raw)):
            floor = st[:, row]
            weight = np.where(p < floor, A_DOWN, np.where(~speech | (p < NEAR * floor), A_SLOW, 0.0))
            weight = np.where(audible, weight, 0.0)  # digital silence (muted, no packets) is no noise floor
            updated = floor + weight * (p - floor)
            # in speech the floor still creeps up (never past the frame): a VAD that never closes
            # (0 dB babble) must not freeze a floor first set by a quiet start
            creep = audible & (weight == 0.0)
            st[:, row] = np.where(creep, np.minimum(floor * RISE, p), updated)
            if row == N_BAND:  # frames since a frame confirmed the floor (not a creep step)
                st[:, STALE] = np.where(creep | ~audible, st[:, STALE] + 1, 0.0)
        for row, floor, p in ((S_IN, N_IN, p_raw), (S_OUT, N_OUT, p_enh)):
            active = speech & (p > st[:, floor])  # (a VAD may call steady low noise speech)
            st[:, row] = np.where(active, st[:, row] + A_SLOW * (p - st[:, row]), st[:, row])
        st[:, SEEN_SPEECH] = np.maximum(st[:, SEEN_SPEECH], speech)
        supp = 10.0 * np.log10(p_raw / p_enh)
        st[:, SUPP] = np.where(audible, st[:, SUPP] + A_SLOW * (supp - st[:, SUPP]), st[:, SUPP])
        for row, flag in ((SPEECH, speech), (CONC, conc), (FEC, fec), (DTX, dtx)):
            st[:, row] += A_SHARE * (flag - st[:, row])

        # over-suppression: speech removed beyond what the band's noise explains
        clean = b_raw - st[:, N_BAND]
        unchecked = conc if modelled is None else conc | ~np.asarray(modelled, dtype=bool)
        st[:, HEARD] += audible
        trusted = (st[:, STALE] <= STALE_FRAMES) & (st[:, HEARD] > WARMUP_FRAMES)  # a floor still
        # climbing, or just set by a quiet start, is no reference
        checked = (speech & ~unchecked & trusted & (b_raw > st[:, N_BAND] * 10.0 ** (CHECK_SNR_DB / 10.0))
                   & (b_raw > AUDIBLE))
        distorted = checked & (b_enh < clean * 10.0 ** (-DISTORTION_DB / 10.0))
        # a run ends on a checked frame that kept its speech, or on a frame without speech
        run = np.where(distorted, st[:, RUN] + 1, np.where(checked | ~speech, 0.0, st[:, RUN]))
        st[:, EVENTS] += run == EVENT_FRAMES
        st[:, RUN] = run
        st[:, FRAMES] += 1
        st[:, SPEECH_FRAMES] += speech
        st[:, CHECKED] += checked
        st[:, DISTORTED] += distorted
        st[:, CLIPPED] += clipped
        st[:, SUPP_SPEECH] += np.where(speech & audible, supp, 0.0)
        for t, row in zip(streams, st):
            t.state = row
        self.last = _Batch(p_raw, p_enh, supp, audible, speech, checked, distorted, run == EVENT_FRAMES,
                           clipped, conc, fec, dtx)


@dataclass
class _Batch:
    """Per-frame values of the last :meth:`Telemetry.update` (for the exporter)."""

    p_raw: np.ndarray
    p_enh: np.ndarray
    suppression_db: np.ndarray
    audible: np.ndarray
    speech: np.ndarray
    checked: np.ndarray
    distorted: np.ndarray
    events: np.ndarray
    clipped: np.ndarray
    concealed: np.ndarray
    fec: np.ndarray
    dtx: np.ndarray
