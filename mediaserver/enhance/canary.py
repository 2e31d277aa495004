"""Which model a room gets, and the canary that rolls a candidate model back on its own.

Sans-I/O: :class:`ModelRouter` answers ``model_for(room)``; :class:`Canary` takes the
per-model SLI counters (``observe(now=..., sli=..., mos=...)``, time in seconds passed in)
and returns a rollback reason once the candidate is worse than the stable model past the
thresholds. The server's thin asyncio driver (``sfu/models_admin.py``) polls the stage, moves
the canary's streams back on a rollback and exports the state.

SLIs compared over the last ``window_s`` (both models' counter deltas over the same window):

* over-suppression: distorted / checked speech frames (enhance/telemetry.py). Rollback when
  the candidate's share is over ``max_distorted_share`` AND over the stable model's share plus
  ``distorted_margin`` (without stable traffic: the absolute limit alone).
* suppression depth: mean suppression (dB) of speech frames; rollback when the candidate's is
  more than ``max_extra_suppression_db`` over the stable model's (only with stable traffic).
* DNSMOS (when ``--dnsmos-sample-s`` is on): mean enhanced OVRL of the window's samples;
  rollback when the candidate's is more than ``max_mos_drop`` under the stable model's.

Nothing is judged before the candidate has ``min_speech_s`` of speech in the window. Late
ticks are process-wide (one media clock for all models), so they are shown but not compared.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Optional

from ..config import add_option, number_in
from .telemetry import Counts

logger = logging.getLogger(__name__)

FRAME_S = 0.02


def iso_utc(epoch_s: Optional[float]) -> Optional[str]:
    """Epoch seconds as ISO 8601 UTC to the millisecond (``2026-12-02T01:02:03.456Z``), or None."""
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def room_fraction(room: str) -> float:
    """A stable number in [0, 1) for a room name (the same on every server and restart)."""
    digest = hashlib.sha256(room.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


@dataclass(frozen=True)
class CanaryThresholds:
    window_s: float = 30.0
    min_speech_s: float = 5.0
    max_distorted_share: float = 0.05
    distorted_margin: float = 0.02
    max_extra_suppression_db: float = 10.0
    max_mos_drop: float = 0.3


@dataclass
class Canary:
    """A candidate model on a share of new rooms, with automatic rollback.

    States: ``active`` (assigning), ``rolled-back`` (stopped: no new rooms, its rooms moved
    back). ``reason`` says why, ``rolled_back_at`` when: the wall-clock time (Unix epoch
    seconds) the caller gave as ``wall`` to :meth:`observe` or :meth:`rollback` (``now`` is the
    caller's monotonic clock, for the window only, and means nothing outside the process);
    :meth:`describe` reports it as ISO 8601 UTC (``2026-12-02T01:02:03.456Z``).
    """

    stable: str
    candidate: str
    share: float
    thresholds: CanaryThresholds = field(default_factory=CanaryThresholds)
    state: str = "active"
    reason: Optional[str] = None
    rolled_back_at: Optional[float] = None
    last_window: dict = field(default_factory=dict)
    _history: deque = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"canary share must be within 0..1, got {self.share}")
        if self.stable == self.candidate:
            raise ValueError("the canary model must differ from the stable model")

    def assigns(self, room: str) -> bool:
        return self.state == "active" and room_fraction(room) < self.share

    def observe(self, *, now: float, sli: dict[str, Counts],
                mos: Optional[dict[str, tuple[float, int]]] = None, wall: Optional[float] = None) -> Optional[str]:
        """Feed cumulative counters (per model) at time ``now`` (s, monotonic); a reason string
        when the canary must roll back now (the state is then ``rolled-back``, at ``wall``:
        epoch s), else None."""
        if self.state != "active":
            return None
        snapshot = (now, dict(sli), dict(mos or {}))
        self._history.append(snapshot)
        while len(self._history) > 1 and self._history[1][0] <= now - self.thresholds.window_s:
            self._history.popleft()
        t0, sli0, mos0 = self._history[0]
        delta = {m: c - sli0.get(m, Counts()) for m, c in sli.items()}
        dmos = {m: (s - mos0.get(m, (0.0, 0))[0], n - mos0.get(m, (0.0, 0))[1]) for m, (s, n) in (mos or {}).items()}
        reason = self._judge(delta, dmos)
        if reason is not None:
            self.state, self.reason, self.rolled_back_at = "rolled-back", reason, wall
        return reason

    def rollback(self, reason: str, *, now: float, wall: Optional[float] = None) -> bool:
        """Manual rollback at ``now`` (s, monotonic) and ``wall`` (epoch s, reported as
        ``rolled_back_at``); False when it was not active."""
        if self.state != "active":
            return False
        self.state, self.reason, self.rolled_back_at = "rolled-back", reason, wall
        return True

    def _judge(self, delta: dict[str, Counts], mos: dict[str, tuple[float, int]]) -> Optional[str]:
        th = self.thresholds
        cand = delta.get(self.candidate, Counts())
        stab = delta.get(self.stable, Counts())
        share = lambda c: c.distorted_frames / c.checked_frames if c.checked_frames else 0.0  # noqa: E731
        depth = lambda c: c.suppression_db_speech / c.speech_frames if c.speech_frames else 0.0  # noqa: E731
        self.last_window = {
            "candidate": {"speech_s": cand.speech_frames * FRAME_S, "distorted_share": share(cand),
                          "suppression_db": depth(cand)},
            "stable": {"speech_s": stab.speech_frames * FRAME_S, "distorted_share": share(stab),
                       "suppression_db": depth(stab)},
        }
        if cand.speech_frames * FRAME_S < th.min_speech_s:
            return None
        has_stable = stab.speech_frames * FRAME_S >= th.min_speech_s
        c_share, s_share = share(cand), share(stab) if has_stable else 0.0
        if c_share > th.max_distorted_share and c_share > s_share + th.distorted_margin:
            return (f"over-suppression: {100 * c_share:.1f} % of checked speech frames distorted "
                    f"(stable {100 * s_share:.1f} %, limit {100 * th.max_distorted_share:.1f} %)")
        if has_stable and depth(cand) > depth(stab) + th.max_extra_suppression_db:
            return (f"suppression depth: {depth(cand):.1f} dB during speech vs stable {depth(stab):.1f} dB "
                    f"(limit +{th.max_extra_suppression_db:.1f} dB)")
        c_mos, s_mos = mos.get(self.candidate, (0.0, 0)), mos.get(self.stable, (0.0, 0))
        if c_mos[1] and s_mos[1]:
            cm, sm = c_mos[0] / c_mos[1], s_mos[0] / s_mos[1]
            self.last_window["candidate"]["dnsmos_ovrl"], self.last_window["stable"]["dnsmos_ovrl"] = cm, sm
            if cm < sm - th.max_mos_drop:
                return f"DNSMOS: OVRL {cm:.2f} vs stable {sm:.2f} (limit -{th.max_mos_drop:.2f})"
        return None

    def describe(self) -> dict:
        return {"stable": self.stable, "candidate": self.candidate, "share": self.share, "state": self.state,
                "reason": self.reason, "rolled_back_at": iso_utc(self.rolled_back_at),
                "thresholds": asdict(self.thresholds), "window": self.last_window}


class ModelRouter:
    """The model of each room: an admin override, else the canary's pick, else the default."""

    def __init__(self, default: str, canary: Optional[Canary] = None) -> None:
        self.default = default
        self.canary = canary
        self.overrides: dict[str, str] = {}

    def model_for(self, room: str) -> str:
        if room in self.overrides:
            return self.overrides[room]
        if self.canary is not None and self.canary.assigns(room):
            return self.canary.candidate
        return self.default


def add_canary_options(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--canary-model", default=None,
               help="candidate model (registry name) for a share of new rooms, rolled back automatically")
    add_option(parser, "--canary-share", type=number_in(0, 1), default=0.1,
               help="share of new rooms (stable by room name) on the canary model, 0..1")
    # Ranges, checked as the flags (or their variables) are parsed: the window holds at least
    # two of the driver's once-a-second observations (a shorter one compares nothing, so the
    # canary would never roll back); shares are fractions; a margin, a dB excess or a MOS drop
    # under 0 would roll back a candidate no worse than the stable model; OVRL is on 1..5.
    d = CanaryThresholds()
    add_option(parser, "--canary-window-s", type=number_in(2), default=d.window_s,
               help="window over which canary and stable SLIs are compared, s (at least 2)")
    add_option(parser, "--canary-min-speech-s", type=number_in(0), default=d.min_speech_s,
               help="canary speech needed in the window before it is judged (all its streams together), s")
    add_option(parser, "--canary-max-distorted-share", type=number_in(0, 1), default=d.max_distorted_share,
               help="roll back when this share (0..1) of the canary's checked speech frames is distorted "
                    "(and it is --canary-distorted-margin over the stable model's)")
    add_option(parser, "--canary-distorted-margin", type=number_in(0, 1), default=d.distorted_margin,
               help="how far over the stable model's distorted share the canary may go, 0..1")
    add_option(parser, "--canary-max-extra-suppression-db", type=number_in(0), default=d.max_extra_suppression_db,
               help="roll back when the canary suppresses speech this much more than the stable model, dB (>= 0)")
    add_option(parser, "--canary-max-mos-drop", type=number_in(0, 4), default=d.max_mos_drop,
               help="roll back when the canary's DNSMOS OVRL sample mean is this much under the stable "
                    "model's, 0..4")


def canary_from_args(args: argparse.Namespace, stable: str) -> Optional[Canary]:
    if not args.canary_model:
        return None
    return Canary(stable=stable, candidate=args.canary_model, share=args.canary_share,
                  thresholds=CanaryThresholds(
                      window_s=args.canary_window_s, min_speech_s=args.canary_min_speech_s,
                      max_distorted_share=args.canary_max_distorted_share,
                      distorted_margin=args.canary_distorted_margin,
                      max_extra_suppression_db=args.canary_max_extra_suppression_db,
                      max_mos_drop=args.canary_max_mos_drop))
