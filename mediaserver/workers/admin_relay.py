"""The model admin behind the front of ``serve --workers N``: ``GET /models``,
``POST`` and ``DELETE /admin/rooms/{room}/model`` and ``POST /admin/canary/rollback``.

The shared inference process owns the models (it loads them, switches streams live, runs the
canary), so the front answers these by relaying each request there as one ``admin`` message
(``enhance/shared_request.ask``, answered by ``enhance/shared_admin.py``). The front checks
the caller first with the single process's own rule (``sfu/models_admin.authorise_admin``:
the secret, the metrics token for reading, loopback without ``--secret``), and the inference
process answers with the single process's logic (``enhance/model_control.py``), so statuses
and bodies are the same as with ``--workers 1``. While the inference process is down (the
front restarts it) the answer is 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from aiohttp import web

from ..enhance.shared_client import SharedStageError
from ..enhance.shared_request import ask
from ..sfu.models_admin import authorise_admin

if TYPE_CHECKING:
    from .front import Front

logger = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 120.0   # a room switch may load a model first (seconds on a busy machine)


class ModelsRelay:
    """The front's model-admin routes (see the module docstring)."""

    def __init__(self, front: "Front") -> None:
        self.front = front
        self._secret: Optional[str] = front.args.secret
        self._token: Optional[str] = getattr(front.args, "metrics_token", None)

    def attach(self, app: web.Application) -> None:
        app.router.add_get("/models", self.get_models)
        app.router.add_post("/admin/rooms/{room}/model", self.post_room_model)
        app.router.add_delete("/admin/rooms/{room}/model", self.delete_room_model)
        app.router.add_post("/admin/canary/rollback", self.post_rollback)

    async def get_models(self, request: web.Request) -> web.Response:
        authorise_admin(request, secret=self._secret, metrics_token=self._token, read=True)
        return await self._relay("models")

    async def post_room_model(self, request: web.Request) -> web.Response:
        authorise_admin(request, secret=self._secret, metrics_token=self._token, read=False)
        room = request.match_info["room"]
        # live: placed on a worker now (the single process's "the room exists"); the inference
        # process sees only streams, not a room whose participants do not publish (yet)
        return await self._relay("room_model", room=room, body=await request.read(),
                                 live=self.front.placement.worker_of(room) is not None)

    async def delete_room_model(self, request: web.Request) -> web.Response:
        authorise_admin(request, secret=self._secret, metrics_token=self._token, read=False)
        return await self._relay("room_reset", room=request.match_info["room"])

    async def post_rollback(self, request: web.Request) -> web.Response:
        authorise_admin(request, secret=self._secret, metrics_token=self._token, read=False)
        body = await request.read() if request.can_read_body else b""
        return await self._relay("rollback", body=body)

    async def _relay(self, op: str, *, room: Optional[str] = None, body: bytes = b"",
                     live: bool = False) -> web.Response:
        enhancer = self.front.enhancer
        down = web.HTTPServiceUnavailable(text="the shared enhancer is restarting; try again shortly",
                                          headers={"Retry-After": "2"})
        if enhancer is None or enhancer.proc is None or enhancer.proc.poll() is not None:
            raise down
        message = {"t": "admin", "op": op, "room": room, "live": live, "body": body.decode("utf-8", "replace")}
        try:
            reply = await ask(enhancer.socket_path, message, timeout_s=ADMIN_TIMEOUT_S)
        except SharedStageError as exc:
            logger.warning("model admin %s not relayed: %s", op, exc)
            raise down from None
        if reply.get("status") == 200:
            return web.json_response(reply.get("json"))
        return web.Response(status=int(reply.get("status", 502)), text=str(reply.get("text", "")))
