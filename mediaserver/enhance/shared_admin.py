"""The model admin of ``serve --workers N``, in the shared inference process that owns the models.

The front authorises ``GET /models``, ``POST /admin/rooms/{room}/model`` and
``POST /admin/canary/rollback`` as a single process does (``sfu/models_admin.authorise_admin``)
and relays them here as one ``admin`` message on the inference socket (``enhance/shared.py``)::

    {"t": "admin", "req": N, "op": "models" | "room_model" | "room_reset" | "rollback", "room": R, "live": BOOL,
     "body": TEXT}
    → {"t": "admin", "req": N, "status": 200, "json": {...}}  or  {..., "status": 4xx, "text": "..."}

The logic is :class:`~.model_control.ModelControl`, the same as the single process's, over
the machine's one stage: a room's switch reaches its streams whichever worker they came from
(each stream is opened with its room name), ``/models`` counts every worker's streams, and
the canary judges the whole machine's SLI counters. :meth:`SharedAdmin.model_for` picks the
model of a stream opened for a room (override, canary share, default), as ``ModelRouter`` does
in a single process.

What the admin changed (room overrides, a canary rollback) is saved to ``state_path`` (the
front's private folder) after each change and taken back when the front restarts a dead
inference process, so a rolled-back canary stays rolled back and switched rooms keep their
model; the workers then reopen their streams with their rooms.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .canary import ModelRouter
from .model_control import AdminError, CanaryDriver, ModelControl

logger = logging.getLogger(__name__)

OPS = ("models", "room_model", "room_reset", "rollback")


class SharedAdmin:
    """Answers ``admin`` messages for one stage (see the module docstring).

    Args:
        stage: the inference process's ``EnhancerStage``.
        router: its room → model router (``model_control.router_from_args``).
        room_handles: the stage handles of a room's streams over all workers.
        registry: the inference process's Prometheus registry (the front scrapes it), or None.
        state_path: the JSON file of the admin's changes (None: not kept).
    """

    def __init__(self, *, stage: Any, router: ModelRouter, room_handles: Callable[[str], list],
                 registry: Any = None, state_path: Optional[str] = None) -> None:
        self.stage = stage
        self.router = router
        self.state_path = Path(state_path) if state_path else None
        self.control = ModelControl(stage=stage, router=router, room_handles=room_handles, registry=registry,
                                    on_change=self._save if self.state_path else None)
        mos = stage.mos.mos_by_model if getattr(stage, "mos", None) is not None else None
        self.driver = CanaryDriver(self.control, mos=mos)

    def _save(self) -> None:
        assert self.state_path is not None
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.control.state()))
        os.replace(tmp, self.state_path)

    def restore_saved(self, *, now: float) -> None:
        """Blocking (loads the overrides' models): take back the saved state, if any, before
        the first stream opens. A model that no longer loads is logged and skipped."""
        if self.state_path is None or not self.state_path.is_file():
            return
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as exc:
            logger.error("model admin state %s unreadable (%s): starting afresh", self.state_path, exc)
            return
        for model in set(dict(state.get("overrides") or {}).values()):
            try:
                self.stage.load(model)
            except Exception as exc:
                logger.error("model %s of a room override does not load any more: %s", model, exc)
        skipped = self.control.restore(state, now=now)
        logger.warning("model admin state taken back after a restart: overrides %s, canary %s%s",
                       self.router.overrides or "none",
                       self.router.canary.state if self.router.canary else "none",
                       f"; skipped: {'; '.join(skipped)}" if skipped else "")

    def model_for(self, room: Optional[str]) -> Optional[str]:
        """The model of a new stream of ``room`` (None without a room: the stage's default)."""
        return self.router.model_for(room) if room is not None else None

    async def answer(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The reply to one ``admin`` message (never raises for a refused request)."""
        reply: dict[str, Any] = {"t": "admin", "req": msg.get("req")}
        try:
            reply.update(status=200, json=await self._run(msg))
        except AdminError as error:
            reply.update(status=error.status, text=error.text)
        return reply

    async def _run(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg.get("op")
        body = str(msg.get("body") or "")
        if op == "models":
            return self.control.describe()
        if op == "room_model":
            room = msg.get("room")
            if not isinstance(room, str) or not room:
                raise AdminError(400, "no room named")
            name = self.control.model_to_load(body, room=room, live=msg.get("live") is True)
            try:
                version = await asyncio.to_thread(self.stage.load, name)
            except Exception as exc:  # WeightsError: a bad file never reaches a call
                raise self.control.load_failed(name, exc) from None
            return self.control.room_switched(room, version)
        if op == "room_reset":
            room = msg.get("room")
            if not isinstance(room, str) or not room:
                raise AdminError(400, "no room named")
            return self.control.room_reset(room)
        if op == "rollback":
            return self.control.rollback_request(body, now=asyncio.get_running_loop().time(), wall=time.time())
        raise AdminError(400, f"unknown admin operation {op!r} (known: {', '.join(OPS)})")
