"""Models at run time: ``GET /models``, live switch and rollback endpoints, the canary's driver.

* ``GET /models``: the registry, the loaded models, the default, room overrides and the canary
  state (with ``--secret``: ``Authorization: Bearer <secret>`` or the metrics token).
* ``POST /admin/rooms/{room}/model`` ``{"model": NAME}``: load NAME if needed (off the loop)
  and move every stream of the room to it, live (stage.switch: warm-up + 20 ms cross-fade,
  no frame dropped); later joins of that room get it too.
* ``POST /admin/canary/rollback`` ``{"reason": "..."}``: stop the canary and move its streams back.

Admin calls need ``Authorization: Bearer <secret>`` with ``--secret``; without it only
loopback clients may call them. The driver task polls the stage's per-model SLI counters
every ``check_s`` and rolls the canary back when :class:`Canary.observe` says so, logging the
reason and counting ``mediaserver_canary_rollbacks_total{model_version,reason}``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from typing import Any, Callable, Optional

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..enhance.canary import ModelRouter
from ..tasks import cancel_and_wait

logger = logging.getLogger(__name__)

CHECK_S = 1.0


class ModelsAdmin:
    """Owns the canary driver task and serves the model endpoints."""

    def __init__(self, *, stage: Any, router: ModelRouter, room_handles: Callable[[str], list],
                 registry: CollectorRegistry, secret: Optional[str], metrics_token: Optional[str] = None,
                 mos: Optional[Callable[[], dict]] = None, check_s: float = CHECK_S) -> None:
        self.stage = stage
        self.router = router
        self._room_handles = room_handles
        self._secret = secret
        self._token = metrics_token
        self._mos = mos
        self._check_s = check_s
        self._task: Optional[asyncio.Task] = None
        self.rollbacks = Counter("mediaserver_canary_rollbacks_total",
                                 "canary rollbacks (reason: over_suppression, suppression_depth, dnsmos, manual)",
                                 ["model_version", "reason"], registry=registry)
        self.active = Gauge("mediaserver_canary_active", "1 while the canary model is assigned to new rooms",
                            ["model_version"], registry=registry)
        self.share = Gauge("mediaserver_canary_share", "configured share of new rooms on the canary",
                           ["model_version"], registry=registry)
        canary = router.canary
        if canary is not None:
            self.active.labels(canary.candidate).set(1)
            self.share.labels(canary.candidate).set(canary.share)
            for reason in ("over_suppression", "suppression_depth", "dnsmos", "manual"):
                self.rollbacks.labels(canary.candidate, reason)

    # ---- driver ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.router.canary is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="canary")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        canary = self.router.canary
        assert canary is not None
        while canary.state == "active":
            await asyncio.sleep(self._check_s)
            try:
                reason = canary.observe(now=loop.time(), sli=self.stage.sli(),
                                        mos=self._mos() if self._mos else None)
            except Exception:
                logger.exception("canary check failed")
                continue
            if reason is not None:
                self._rolled_back(reason)

    def _rolled_back(self, reason: str) -> None:
        canary = self.router.canary
        assert canary is not None
        kind = ("over_suppression" if reason.startswith("over-suppression") else
                "suppression_depth" if reason.startswith("suppression depth") else
                "dnsmos" if reason.startswith("DNSMOS") else "manual")
        moved = 0
        for handle in self.stage.handles(canary.candidate):
            self.stage.switch(handle, canary.stable)
            moved += 1
        for room, model in list(self.router.overrides.items()):
            if model == canary.candidate:
                del self.router.overrides[room]
        self.rollbacks.labels(canary.candidate, kind).inc()
        self.active.labels(canary.candidate).set(0)
        logger.warning("canary %s rolled back to %s (%d streams moved): %s", canary.candidate, canary.stable,
                       moved, reason)

    # ---- HTTP -------------------------------------------------------------------------------
    def attach(self, app: web.Application) -> None:
        app.router.add_get("/models", self.get_models)
        app.router.add_post("/admin/rooms/{room}/model", self.post_room_model)
        app.router.add_post("/admin/canary/rollback", self.post_rollback)

    def _authorised(self, request: web.Request, *, read: bool) -> None:
        given = request.headers.get("Authorization", "").encode()
        if self._secret:
            keys = [self._secret] + ([self._token] if read and self._token else [])
            if any(hmac.compare_digest(given, f"Bearer {k}".encode()) for k in keys):
                return
            raise web.HTTPUnauthorized(text="needs Authorization: Bearer <server secret>",
                                       headers={"WWW-Authenticate": "Bearer"})
        if read:
            return
        try:
            loopback = ipaddress.ip_address(request.remote or "").is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise web.HTTPForbidden(text="admin calls without --secret are allowed from loopback only")

    def describe(self) -> dict:
        stage = self.stage
        per_model: dict[str, int] = {}
        for h in stage.handles():
            per_model[h.model] = per_model.get(h.model, 0) + 1
        return {"default": stage.model_version, "loaded": stage.loaded_models,
                "registry": [stage.models.get(n).describe() for n in stage.models.names()],
                "streams": per_model, "overrides": dict(self.router.overrides),
                "canary": self.router.canary.describe() if self.router.canary else None}

    async def get_models(self, request: web.Request) -> web.Response:
        self._authorised(request, read=True)
        return web.json_response(self.describe())

    async def post_room_model(self, request: web.Request) -> web.Response:
        self._authorised(request, read=False)
        room = request.match_info["room"]
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be JSON {\"model\": NAME}") from None
        name = body.get("model") if isinstance(body, dict) else None
        if not isinstance(name, str) or name not in self.stage.models:
            raise web.HTTPBadRequest(text=f"unknown model {name!r} (known: {', '.join(self.stage.models.names())})")
        try:
            version = await asyncio.to_thread(self.stage.load, name)
        except Exception as exc:  # WeightsError: a bad file never reaches a call
            raise web.HTTPBadRequest(text=f"model {name} does not load: {exc}") from None
        self.router.overrides[room] = version
        handles = self._room_handles(room)
        for h in handles:
            self.stage.switch(h, version)
        logger.info("room %s switched to model %s (%d streams)", room, version, len(handles))
        return web.json_response({"room": room, "model": version, "streams": len(handles)})

    async def post_rollback(self, request: web.Request) -> web.Response:
        self._authorised(request, read=False)
        canary = self.router.canary
        if canary is None:
            raise web.HTTPConflict(text="no canary configured")
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            body = {}
        reason = str(body.get("reason", "operator request")) if isinstance(body, dict) else "operator request"
        if not canary.rollback(f"manual: {reason}", now=asyncio.get_running_loop().time()):
            raise web.HTTPConflict(text=f"canary is {canary.state}")
        self._rolled_back(f"manual: {reason}")
        return web.json_response(canary.describe())


MODELS_ADMIN = web.AppKey("models_admin", ModelsAdmin)


def attach_models(app: web.Application, args: Any, *, stage: Any, manager: Any,
                  registry: CollectorRegistry, mos: Optional[Callable[[], dict]] = None) -> ModelRouter:
    """Build the router (loading ``--canary-model`` now, so a bad candidate fails at start),
    serve the endpoints and run the canary driver with the app."""
    from ..enhance.canary import canary_from_args

    canary = None
    if getattr(args, "canary_model", None):
        args.canary_model = stage.load(args.canary_model)
        canary = canary_from_args(args, stage.model_version)
    router = ModelRouter(stage.model_version, canary)

    def room_handles(room: str) -> list:
        r = manager.rooms.get(room)
        return [p.stream.handle for p in (r.participants.values() if r else [])
                if p.stream is not None and p.stream.handle is not None]

    if mos is None and getattr(stage, "mos", None) is not None:
        mos = stage.mos.mos_by_model  # DNSMOS samples feed the canary's comparison
    admin = ModelsAdmin(stage=stage, router=router, room_handles=room_handles, registry=registry,
                        secret=args.secret, metrics_token=getattr(args, "metrics_token", None), mos=mos)
    admin.attach(app)
    app[MODELS_ADMIN] = admin
    from .debug_view import attach_debug

    attach_debug(app, stage=stage, manager=manager, secret=args.secret)  # /debug (debug_view.py)

    async def start(app: web.Application) -> None:
        admin.start()

    async def stop(app: web.Application) -> None:
        await admin.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return router
