"""RTP numbering faults for tests: sequence restarts and jumps, timestamp jumps, SSRC changes.

What SIP gateways and B2BUAs do on hold/resume, transfer or ringback-to-answer, injected in
process on a sender (``tc netem`` cannot rewrite RTP headers). ``RtpRewriter`` is a pure
policy over (seq, ts, ssrc) with time passed in; ``mediaserver.media.impair``'s
``mediaserver.patches.rewrite_peer_connection`` applies it to an aiortc peer's clear RTP before SRTP.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KINDS = ("seq-restart", "seq-jump", "ts-back", "ts-forward", "ssrc-change")
SEQ_JUMP = 10_000  # packets forward (kept under 2^15 so SRTP's index estimate follows)
TS_JUMP = 48_000  # 1 s at 48 kHz, back or forward


@dataclass(frozen=True, slots=True)
class RtpDiscontinuity:
    """One fault: ``kind`` (see ``KINDS``) at ``at_s`` seconds after the first sent packet."""

    kind: str
    at_s: float

    @classmethod
    def parse(cls, text: str) -> "RtpDiscontinuity":
        """``KIND@SECONDS``, e.g. ``seq-restart@3``. Raises ``ValueError`` on bad input."""
        kind, sep, at = text.strip().partition("@")
        if not sep or kind not in KINDS:
            raise ValueError(f"expected KIND@SECONDS with KIND one of {', '.join(KINDS)}, got {text!r}")
        try:
            at_s = float(at)
        except ValueError:
            raise ValueError(f"bad SECONDS in {text!r}") from None
        if not at_s >= 0.0:
            raise ValueError(f"SECONDS must be >= 0 in {text!r}")
        return cls(kind, at_s)


@dataclass(slots=True)
class Rewritten:
    seq: int
    ts: int
    ssrc: int
    new_sequence: bool  # the sequence restarted: a sender's SRTP stream must start afresh


class RtpRewriter:
    """Applies the faults due by ``now_s`` (seconds on any clock) to each packet's header."""

    def __init__(self, faults: list[RtpDiscontinuity], *, seed: int = 0) -> None:
        self._pending = sorted(faults, key=lambda f: f.at_s)
        self._rng = random.Random(seed)
        self._start: float | None = None
        self._seq_off = 0
        self._ts_off = 0
        self._ssrc: dict[int, int] = {}  # original -> sent
        self.applied: list[RtpDiscontinuity] = []

    def rewrite(self, *, seq: int, ts: int, ssrc: int, now_s: float) -> Rewritten:
        if self._start is None:
            self._start = now_s
        new_sequence = False
        while self._pending and now_s - self._start >= self._pending[0].at_s:
            fault = self._pending.pop(0)
            self.applied.append(fault)
            if fault.kind == "seq-restart":
                self._seq_off = -seq  # this packet goes out as 0
                new_sequence = True
            elif fault.kind == "seq-jump":
                self._seq_off += SEQ_JUMP
            elif fault.kind == "ts-back":
                self._ts_off -= TS_JUMP
            elif fault.kind == "ts-forward":
                self._ts_off += TS_JUMP
            elif fault.kind == "ssrc-change":
                old = self._ssrc.get(ssrc, ssrc)
                new = old
                while new == old:
                    new = self._rng.getrandbits(32)
                self._ssrc[ssrc] = new
        return Rewritten((seq + self._seq_off) & 0xFFFF, (ts + self._ts_off) & 0xFFFFFFFF,
                         self._ssrc.get(ssrc, ssrc), new_sequence)
