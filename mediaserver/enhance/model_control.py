"""The model admin's logic, wherever the stage lives: ``GET /models``, a room's live switch,
the canary's rollback (manual or automatic).

Sans-I/O: no HTTP, no sockets. Requests come in as their raw body; answers go out as a dict
(the JSON body) or :class:`AdminError` (status and text), so the single process
(``sfu/models_admin.py``, aiohttp handlers) and the shared inference process of
``--workers N`` (``enhance/shared_admin.py``, its Unix socket) answer the same bytes. Loading a
model is the one blocking step; the caller runs :meth:`EnhancerStage.load` off its loop
between :meth:`ModelControl.model_to_load` and :meth:`ModelControl.room_switched`.
:class:`CanaryDriver` is the thin asyncio loop that feeds the canary every ``check_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from ..tasks import cancel_and_wait
from .canary import ModelRouter

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger(__name__)

CHECK_S = 1.0   # seconds between two canary observations
ROLLBACK_KINDS = ("over_suppression", "suppression_depth", "dnsmos", "manual")


class AdminError(Exception):
    """A refused admin request: the HTTP ``status`` and the plain-text ``text`` to answer."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def rollback_kind(reason: str) -> str:
    """The ``reason`` label of ``mediaserver_canary_rollbacks_total`` for a rollback reason."""
    return ("over_suppression" if reason.startswith("over-suppression") else
            "suppression_depth" if reason.startswith("suppression depth") else
            "dnsmos" if reason.startswith("DNSMOS") else "manual")


class ModelControl:
    """The models of one stage: which room gets which model, the canary and its metrics.

    Args:
        stage: the enhancer stage (``EnhancerStage``: ``models``, ``loaded_models``,
            ``model_version``, ``handles(model)``, ``switch(handle, model)``).
        router: the room → model router (holds the overrides and the canary).
        room_handles: the open stream handles of a room (all of them, whatever their model).
        registry: where the ``mediaserver_canary_*`` series go (None: nowhere).
        on_change: called after every change of :meth:`state` (a room switch, a rollback).
    """

    def __init__(self, *, stage: Any, router: ModelRouter, room_handles: Callable[[str], list],
                 registry: Optional["CollectorRegistry"], on_change: Optional[Callable[[], None]] = None) -> None:
        from prometheus_client import Counter, Gauge

        self.stage = stage
        self.router = router
        self._room_handles = room_handles
        self._on_change = on_change
        self.rollbacks = Counter("mediaserver_canary_rollbacks_total",
                                 "canary rollbacks (reason: over_suppression, suppression_depth, dnsmos, manual)",
                                 ["model_version", "reason"], registry=registry)
        self.active = Gauge("mediaserver_canary_active", "1 while the canary model is assigned to new rooms",
                            ["model_version"], registry=registry)
        self.share = Gauge("mediaserver_canary_share", "configured share of new rooms on the canary",
                           ["model_version"], registry=registry)
        canary = router.canary
        if canary is not None:
            self.active.labels(canary.candidate).set(1 if canary.state == "active" else 0)
            self.share.labels(canary.candidate).set(canary.share)
            for kind in ROLLBACK_KINDS:
                self.rollbacks.labels(canary.candidate, kind)

    # ---- GET /models ------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The ``GET /models`` body: registry, loaded models, default, streams per model,
        room overrides and the canary state."""
        stage = self.stage
        per_model: dict[str, int] = {}
        for h in stage.handles():
            per_model[h.model] = per_model.get(h.model, 0) + 1
        return {"default": stage.model_version, "loaded": stage.loaded_models,
                "registry": [stage.models.get(n).describe() for n in stage.models.names()],
                "streams": per_model, "overrides": dict(self.router.overrides),
                "canary": self.router.canary.describe() if self.router.canary else None}

    # ---- POST /admin/rooms/{room}/model ----------------------------------------------------
    def model_to_load(self, body: Union[bytes, str], *, room: str, live: bool) -> str:
        """The registry name a room-model request (``{"model": NAME}``, optionally
        ``"preset": true``) asks for ``room``; ``live``: the room has participants now (one
        process: on this server; ``--workers N``: placed on a worker by the front).

        A room that is not live is refused (AdminError 404) unless the body says ``preset``:
        a switch of a room that does not exist was answered 200 ``{"streams": 0}`` and kept its
        override for good, so a typo in a room name looked like a switch and pinned a room no
        one meant. ``preset`` is the operator's explicit choice of the model of a call that has
        not started. AdminError 400 for a bad body; nothing is loaded for a refused request."""
        try:
            parsed = json.loads(body)
        except ValueError:
            raise AdminError(400, "body must be JSON {\"model\": NAME}") from None
        name = parsed.get("model") if isinstance(parsed, dict) else None
        if not isinstance(name, str) or name not in self.stage.models:
            raise AdminError(400, f"unknown model {name!r} (known: {', '.join(self.stage.models.names())})")
        preset = parsed.get("preset", False)
        if not isinstance(preset, bool):
            raise AdminError(400, f"preset must be true or false, got {preset!r}")
        if not live and not preset:
            raise AdminError(404, f"room {room!r} is not live (no participant); to choose the model of its "
                                  f"next call, send {{\"model\": {json.dumps(name)}, \"preset\": true}}")
        return name

    @staticmethod
    def load_failed(name: str, exc: BaseException) -> AdminError:
        """The answer when ``stage.load(name)`` raised (a bad file never reaches a call)."""
        return AdminError(400, f"model {name} does not load: {exc}")

    def room_switched(self, room: str, version: str) -> dict[str, Any]:
        """After ``version`` loaded: the room's later joins get it, its streams move now (live:
        warm-up and a 20 ms cross-fade in the stage). Returns the answer's body."""
        self.router.overrides[room] = version
        handles = self._room_handles(room)
        for h in handles:
            self.stage.switch(h, version)
        logger.info("room %s switched to model %s (%d streams)", room, version, len(handles))
        self._changed()
        return {"room": room, "model": version, "streams": len(handles)}

    # ---- DELETE /admin/rooms/{room}/model --------------------------------------------------
    def room_reset(self, room: str) -> dict[str, Any]:
        """Take back a room's override (a switch or a preset): the room gets the model the
        router picks without it (the canary's share, else the default), its live streams move
        there now and its later joins get it. AdminError 404 when the room has no override.
        Returns the answer's body."""
        if room not in self.router.overrides:
            raise AdminError(404, f"room {room!r} has no model override")
        del self.router.overrides[room]
        version = self.router.model_for(room)   # (loaded: the default, or the active canary's)
        handles = self._room_handles(room)
        for h in handles:
            self.stage.switch(h, version)
        logger.info("room %s: model override taken back, now %s (%d streams)", room, version, len(handles))
        self._changed()
        return {"room": room, "model": version, "streams": len(handles)}

    # ---- canary -------------------------------------------------------------------------------
    def rollback_request(self, body: Union[bytes, str], *, now: float, wall: float) -> dict[str, Any]:
        """``POST /admin/canary/rollback`` with ``body`` (JSON ``{"reason": ...}``, may be empty)
        at ``now`` (s, monotonic) and ``wall`` (epoch s: ``rolled_back_at``): the canary's state
        after the rollback, and ``rooms_kept``: the rooms switched to the candidate by hand,
        left on it (:meth:`rolled_back`); AdminError 409 without an active canary."""
        canary = self.router.canary
        if canary is None:
            raise AdminError(409, "no canary configured")
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {}
        reason = str(parsed.get("reason", "operator request")) if isinstance(parsed, dict) else "operator request"
        if not canary.rollback(f"manual: {reason}", now=now, wall=wall):
            raise AdminError(409, f"canary is {canary.state}")
        self.rolled_back(f"manual: {reason}")
        return {**canary.describe(), "rooms_kept": self.pinned_to_candidate()}

    def observe(self, *, now: float, wall: float, mos: Optional[dict] = None) -> Optional[str]:
        """One canary check at ``now`` (s, monotonic; ``wall``: epoch s, the rollback's
        ``rolled_back_at``) over the stage's per-model SLI counters; rolls back (and returns the
        reason) when the canary says so."""
        canary = self.router.canary
        if canary is None or canary.state != "active":
            return None
        reason = canary.observe(now=now, sli=self.stage.sli(), mos=mos, wall=wall)
        if reason is not None:
            self.rolled_back(reason)
        return reason

    def pinned_to_candidate(self) -> list[str]:
        """The rooms switched to the canary's candidate by hand (room overrides, presets
        included), which a rollback leaves on it."""
        canary = self.router.canary
        return sorted(r for r, m in self.router.overrides.items() if canary is not None and m == canary.candidate)

    def rolled_back(self, reason: str) -> None:
        """Undo what the canary placed: every stream on the candidate moves back to the stable
        model, live, except those of rooms switched to the candidate by hand
        (:meth:`pinned_to_candidate`): a room override is an operator's explicit choice, the
        canary's share is not, and the rollback stops the share only. Those rooms keep their
        override (later joins get the candidate too) and are named in the log; the operator
        moves them with ``POST /admin/rooms/{room}/model``. Counts and logs the rollback."""
        canary = self.router.canary
        assert canary is not None
        pinned = self.pinned_to_candidate()
        kept = {id(h) for room in pinned for h in self._room_handles(room)}
        moved = 0
        for handle in self.stage.handles(canary.candidate):
            if id(handle) not in kept:
                self.stage.switch(handle, canary.stable)
                moved += 1
        self.rollbacks.labels(canary.candidate, rollback_kind(reason)).inc()
        self.active.labels(canary.candidate).set(0)
        logger.warning("canary %s rolled back to %s (%d streams moved%s): %s", canary.candidate, canary.stable,
                       moved, f"; kept on it, switched there by hand: {', '.join(pinned)}" if pinned else "",
                       reason)
        self._changed()

    # ---- state that outlives the process (the shared inference process's restarts) -----------
    def state(self) -> dict[str, Any]:
        """What the admin changed: room overrides and the canary's rollback (JSON-ready)."""
        canary = self.router.canary
        return {"overrides": dict(self.router.overrides),
                "canary": None if canary is None else {"candidate": canary.candidate, "state": canary.state,
                                                       "reason": canary.reason,
                                                       "rolled_back_at": canary.rolled_back_at}}

    def restore(self, state: dict[str, Any], *, now: float) -> list[str]:
        """Take back :meth:`state` of a previous run, before any stream opens: room overrides
        whose model is loaded (the caller loads them first) and a rollback of the same
        candidate (the canary stays rolled back, counted once). Returns what was skipped."""
        skipped: list[str] = []
        for room, model in dict(state.get("overrides") or {}).items():
            if isinstance(room, str) and model in self.stage.loaded_models:
                self.router.overrides[room] = model
            else:
                skipped.append(f"room {room!r}: model {model!r} not loaded")
        saved, canary = state.get("canary"), self.router.canary
        if isinstance(saved, dict) and saved.get("state") == "rolled-back":
            if canary is not None and canary.candidate == saved.get("candidate"):
                at = saved.get("rolled_back_at")   # (the original time, epoch s: not the restart's)
                canary.rollback(str(saved.get("reason") or "rolled back before a restart"), now=now,
                                wall=float(at) if isinstance(at, (int, float)) else None)
                self.active.labels(canary.candidate).set(0)
            else:
                skipped.append(f"canary rollback of {saved.get('candidate')!r} (now: "
                               f"{canary.candidate if canary else 'no canary'})")
        return skipped

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:   # (a full disk never fails the switch itself)
                logger.exception("model admin state not saved")


class CanaryDriver:
    """The asyncio loop around :meth:`ModelControl.observe`: every ``check_s`` while the
    canary is active. ``mos``: the DNSMOS sums per model (``MosSampler.mos_by_model``) or None."""

    def __init__(self, control: ModelControl, *, mos: Optional[Callable[[], dict]] = None,
                 check_s: float = CHECK_S) -> None:
        self.control = control
        self._mos = mos
        self._check_s = check_s
        self._task: Optional[asyncio.Task[None]] = None

    def start(self) -> None:
        if self.control.router.canary is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="canary")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        canary = self.control.router.canary
        assert canary is not None
        while canary.state == "active":
            await asyncio.sleep(self._check_s)
            try:
                self.control.observe(now=loop.time(), wall=time.time(), mos=self._mos() if self._mos else None)
            except Exception:
                logger.exception("canary check failed")


def router_from_args(args: Any, stage: Any) -> ModelRouter:
    """The router of a stage: ``--canary-model`` is loaded now (blocking), so a bad candidate
    fails at start, not at the first room it is assigned to."""
    from .canary import canary_from_args

    canary = None
    if getattr(args, "canary_model", None):
        args.canary_model = stage.load(args.canary_model)
        canary = canary_from_args(args, stage.model_version)
    return ModelRouter(stage.model_version, canary)
