"""Seeded, in-process network impairment: loss (random or Gilbert–Elliott bursts), delay,
jitter, reordering and duplication.

``Impairment`` is a pure policy: for each packet it says at which extra delays copies go
out (none = dropped). ``mediaserver.patches.impair_peer_connection`` applies it to an aiortc
peer's outgoing SRTP media by wrapping ``RTCIceTransport._send``; DTLS, STUN and RTCP pass
untouched.
No ``tc netem`` is needed and runs are reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class ImpairmentConfig:
    loss: float = 0.0  # long-run packet loss probability, 0..1
    burst: float = 1.0  # mean loss burst length in packets; > 1 selects Gilbert–Elliott
    delay_ms: float = 0.0  # constant extra delay
    jitter_ms: float = 0.0  # extra delay drawn uniformly in [0, jitter_ms] (reorders too)
    reorder: float = 0.0  # probability a packet is held back by reorder_ms
    reorder_ms: float = 30.0
    duplicate: float = 0.0  # probability a packet is sent twice
    seed: int = 0
    drop: frozenset[int] = frozenset()  # explicit media packet ordinals to drop
    active_packets: int = 0  # impair only the first N media packets (0: all)

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        if self.loss >= 1.0:
            raise ValueError("loss must be below 1")
        if self.burst < 1.0:
            raise ValueError(f"burst must be >= 1 packet, got {self.burst}")
        for name in ("delay_ms", "jitter_ms", "reorder_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def active(self) -> bool:
        return bool(
            self.loss or self.delay_ms or self.jitter_ms or self.reorder or self.duplicate or self.drop
        )


class Impairment:
    """Per-packet decisions; the same seed and packet order give the same decisions."""

    def __init__(self, config: ImpairmentConfig | None = None, **kwargs: Any) -> None:
        self.config = config if config is not None else ImpairmentConfig(**kwargs)
        cfg = self.config
        self._rng = random.Random(cfg.seed)
        self._ordinal = 0
        self._bad = False
        # Gilbert: Good never loses, Bad always does. Mean burst = 1/r, loss = p/(p+r).
        if cfg.burst > 1.0 and cfg.loss > 0:
            self._r = 1.0 / cfg.burst
            self._p = cfg.loss * self._r / (1.0 - cfg.loss)
        else:
            self._r = self._p = 0.0
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    def _lost(self) -> bool:
        cfg = self.config
        if self._ordinal in cfg.drop:
            return True
        if cfg.loss <= 0:
            return False
        if cfg.burst <= 1.0:
            return self._rng.random() < cfg.loss
        u = self._rng.random()
        if self._bad:
            self._bad = u >= self._r
        else:
            self._bad = u < self._p
        return self._bad

    def decide(self) -> list[float]:
        """Extra delays in ms for each copy of the next packet; an empty list means drop."""
        cfg = self.config
        if cfg.active_packets and self._ordinal >= cfg.active_packets:
            self._ordinal += 1
            self.sent += 1
            return [0.0]
        # Draw every random number every time so one knob does not shift the others' sequence.
        lost = self._lost()
        jitter = self._rng.random() * cfg.jitter_ms
        held = self._rng.random() < cfg.reorder
        dup = self._rng.random() < cfg.duplicate
        dup_extra = self._rng.random() * 5.0
        self._ordinal += 1
        if lost:
            self.dropped += 1
            return []
        delay = cfg.delay_ms + jitter + (cfg.reorder_ms if held else 0.0)
        self.sent += 1
        if dup:
            self.duplicated += 1
            return [delay, delay + dup_extra]
        return [delay]


def is_srtp_media(data: bytes) -> bool:
    """SRTP media datagram: RTP version 2 (first byte 128–191) and not an RTCP type (200–207)."""
    return len(data) >= 2 and 128 <= data[0] <= 191 and not 200 <= data[1] <= 207
