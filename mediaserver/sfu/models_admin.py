"""Models at run time: ``GET /models``, live switch and rollback endpoints, the canary's driver.

* ``GET /models``: the registry, the loaded models, the default, room overrides and the canary
  state (with ``--secret``: ``Authorization: Bearer <secret>`` or the metrics token).
* ``POST /admin/rooms/{room}/model`` ``{"model": NAME}``: load NAME if needed (off the loop)
  and move every stream of the room to it, live (stage.switch: warm-up + 20 ms cross-fade,
  no frame dropped); later joins of that room get it too. A room with no participant is 404
  unless the body adds ``"preset": true`` (the model of its next call).
* ``DELETE /admin/rooms/{room}/model``: take the room's override (switch or preset) back; its
  streams move to the model the router picks without it (canary share, else the default).
* ``POST /admin/canary/rollback`` ``{"reason": "..."}``: stop the canary and move its streams back.

Admin calls need ``Authorization: Bearer <secret>`` with ``--secret``; without it only
loopback clients may call them (:func:`authorise_admin`, also the front's check with
``--workers N``). The logic is :class:`~..enhance.model_control.ModelControl` (shared with the
inference process of ``--workers N``); this module is its aiohttp face in a single process.
The driver task polls the stage's per-model SLI counters every ``check_s`` and rolls the
canary back when :class:`Canary.observe` says so, logging the reason and counting
``mediaserver_canary_rollbacks_total{model_version,reason}``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from typing import Any, Callable, Optional

from aiohttp import web
from prometheus_client import CollectorRegistry

from ..config import UsageError
from ..enhance.canary import ModelRouter
from ..enhance.model_control import CHECK_S, AdminError, CanaryDriver, ModelControl, router_from_args
from .websec import METRICS_TOKEN, SERVER_SECRET, unauthorised

logger = logging.getLogger(__name__)


def authorise_admin(request: web.Request, *, secret: Optional[str], metrics_token: Optional[str],
                    read: bool, address: Optional[str] = None) -> None:
    """Raise the refusal of a model-admin request, or return. ``read``: ``GET /models`` (the
    metrics token will do too; without ``--secret`` anyone may read). ``address``: the
    client's address (default: the socket's peer)."""
    given = request.headers.get("Authorization", "").encode()
    if secret:
        keys = [secret] + ([metrics_token] if read and metrics_token else [])
        keys_named = [SERVER_SECRET] + ([METRICS_TOKEN] if read and metrics_token else [])
        if any(hmac.compare_digest(given, f"Bearer {k}".encode()) for k in keys):
            return
        raise unauthorised(request, keys_named)
    if read:
        return
    try:
        loopback = ipaddress.ip_address(address or request.remote or "").is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise web.HTTPForbidden(text="admin calls without --secret are allowed from loopback only")


def refusal(error: AdminError) -> web.Response:
    """The plain-text answer for an :class:`AdminError` (the same bytes as aiohttp's own
    ``HTTPBadRequest(text=...)`` and friends)."""
    return web.Response(status=error.status, text=error.text)


class ModelsAdmin:
    """Serves the model endpoints over one :class:`ModelControl` and owns the canary driver."""

    def __init__(self, *, stage: Any, router: ModelRouter, room_handles: Callable[[str], list],
                 registry: CollectorRegistry, secret: Optional[str], metrics_token: Optional[str] = None,
                 mos: Optional[Callable[[], dict]] = None, check_s: float = CHECK_S,
                 room_live: Callable[[str], bool] = lambda room: False) -> None:
        self.stage = stage
        self._live = room_live   # the room has participants on this server now
        self.router = router
        self.control = ModelControl(stage=stage, router=router, room_handles=room_handles, registry=registry)
        self.driver = CanaryDriver(self.control, mos=mos, check_s=check_s)
        self._secret = secret
        self._token = metrics_token

    def start(self) -> None:
        self.driver.start()

    async def stop(self) -> None:
        await self.driver.stop()

    # ---- HTTP -------------------------------------------------------------------------------
    def attach(self, app: web.Application) -> None:
        app.router.add_get("/models", self.get_models)
        app.router.add_post("/admin/rooms/{room}/model", self.post_room_model)
        app.router.add_delete("/admin/rooms/{room}/model", self.delete_room_model)
        app.router.add_post("/admin/canary/rollback", self.post_rollback)

    def _authorised(self, request: web.Request, *, read: bool) -> None:
        authorise_admin(request, secret=self._secret, metrics_token=self._token, read=read)

    def describe(self) -> dict:
        return self.control.describe()

    async def get_models(self, request: web.Request) -> web.Response:
        self._authorised(request, read=True)
        return web.json_response(self.control.describe())

    async def post_room_model(self, request: web.Request) -> web.Response:
        self._authorised(request, read=False)
        room = request.match_info["room"]
        try:
            name = self.control.model_to_load(await request.read(), room=room, live=self._live(room))
            try:
                version = await asyncio.to_thread(self.stage.load, name)
            except Exception as exc:  # WeightsError: a bad file never reaches a call
                raise self.control.load_failed(name, exc) from None
        except AdminError as error:
            return refusal(error)
        return web.json_response(self.control.room_switched(room, version))

    async def delete_room_model(self, request: web.Request) -> web.Response:
        self._authorised(request, read=False)
        try:
            return web.json_response(self.control.room_reset(request.match_info["room"]))
        except AdminError as error:
            return refusal(error)

    async def post_rollback(self, request: web.Request) -> web.Response:
        self._authorised(request, read=False)
        try:
            body = await request.read() if request.can_read_body else b""
            described = self.control.rollback_request(body, now=asyncio.get_running_loop().time(), wall=time.time())
        except AdminError as error:
            return refusal(error)
        return web.json_response(described)


MODELS_ADMIN = web.AppKey("models_admin", ModelsAdmin)


def attach_models(app: web.Application, args: Any, *, stage: Any, manager: Any,
                  registry: CollectorRegistry, mos: Optional[Callable[[], dict]] = None) -> ModelRouter:
    """Build the router (loading ``--canary-model`` now, so a bad candidate fails at start),
    serve the endpoints and run the canary driver with the app. A candidate file that is
    there but no checkpoint is a :class:`~mediaserver.config.UsageError` naming the flag (one
    line, exit 2), as ``--model``'s is (``sfu/server.py``), not a traceback."""
    from ..enhance.registry import RegistryError

    try:
        router = router_from_args(args, stage)
    except (RuntimeError, RegistryError) as exc:
        from ..enhance.weights import WeightsError   # (torch: loaded already where one loads)

        if not isinstance(exc, (WeightsError, RegistryError)):
            raise
        raise UsageError(f"--canary-model: {(str(exc).strip().splitlines() or [''])[0]}") from None

    def room_handles(room: str) -> list:
        r = manager.rooms.get(room)
        return [p.stream.handle for p in (r.participants.values() if r else [])
                if p.stream is not None and p.stream.handle is not None]

    if mos is None and getattr(stage, "mos", None) is not None:
        mos = stage.mos.mos_by_model  # DNSMOS samples feed the canary's comparison
    admin = ModelsAdmin(stage=stage, router=router, room_handles=room_handles, registry=registry,
                        secret=args.secret, metrics_token=getattr(args, "metrics_token", None), mos=mos,
                        room_live=lambda room: room in manager.rooms)
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
