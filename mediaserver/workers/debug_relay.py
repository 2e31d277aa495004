"""``/debug`` behind the front of ``serve --workers N``: the rooms of every worker in one view.

Each media worker serves ``/debug/rooms`` and ``/debug/spectra`` for its own rooms
(``sfu/debug_view.py``, fed by its ``SharedStage``'s outputs). The front checks the caller with
the single process's rule (``debug_view.authorise_debug``; the worker checks again, with the
client's address the front forwards), then:

* ``GET /debug/rooms``: asks every live worker and merges their ``rooms``; each participant
  gets ``worker_index``: its worker's index N, the ``index`` of that worker in ``/healthz``
  (README "One name per worker": an integer index in JSON, ``worker="LABEL-wN"`` only in
  ``/metrics``). A worker that does not answer is named in ``workers_unreachable`` (absent
  when all answered).
* ``GET /debug/spectra?room=R&...``: relayed to room R's worker unchanged (404
  ``no such enhanced participant`` when no worker hosts R, as in a single process).
* ``GET /debug``: the page, served by the front.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Optional

import aiohttp
from aiohttp import web

from ..sfu.debug_view import authorise_debug, debug_page
from ..sfu.websec import FRONT_HEADER

if TYPE_CHECKING:
    from .front import Front

logger = logging.getLogger(__name__)


def merge_rooms(views: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``{worker index: that worker's /debug/rooms body}`` → one body; each participant gets
    ``worker_index``. A room reported by two workers (moving after a crash) lists both's
    participants."""
    rooms: dict[str, list[dict[str, Any]]] = {}
    for index in sorted(views):
        for name, participants in (views[index].get("rooms") or {}).items():
            rooms.setdefault(name, []).extend({**p, "worker_index": index} for p in participants)
    return {"rooms": rooms}


class DebugRelay:
    """The front's ``/debug`` routes (see the module docstring)."""

    def __init__(self, front: "Front") -> None:
        self.front = front
        self._secret: Optional[str] = front.args.secret

    def attach(self, app: web.Application) -> None:
        app.router.add_get("/debug", debug_page)
        app.router.add_get("/debug/rooms", self.rooms)
        app.router.add_get("/debug/spectra", self.spectra)

    async def _get(self, index: int, request: web.Request) -> Optional[tuple[int, bytes, str]]:
        """GET the request's path at worker ``index`` for its client: (status, body, type)."""
        front = self.front
        url = front.url(index, request.path_qs)
        if url is None or front.session is None:
            return None
        headers = {FRONT_HEADER: front.token, "X-Forwarded-For": request.remote or "unknown"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        try:
            async with front.session.get(url, headers=headers) as resp:
                return resp.status, await resp.read(), resp.content_type
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("worker %d did not answer %s: %s", index, request.path, exc)
            return None

    async def rooms(self, request: web.Request) -> web.Response:
        authorise_debug(request, secret=self._secret)
        live = self.front.live()
        answers = await asyncio.gather(*(self._get(i, request) for i in live))
        views: dict[int, dict[str, Any]] = {}
        unreachable: list[int] = []
        for index, answer in zip(live, answers):
            if answer is None or answer[0] != 200:
                unreachable.append(index)
                continue
            try:
                views[index] = json.loads(answer[1])
            except ValueError:
                unreachable.append(index)
        body = merge_rooms(views)
        if unreachable:
            body["workers_unreachable"] = unreachable
        return web.json_response(body)

    async def spectra(self, request: web.Request) -> web.Response:
        authorise_debug(request, secret=self._secret)
        index = self.front.placement.worker_of(request.query.get("room", ""))
        answer = await self._get(index, request) if index is not None else None
        if answer is None:
            raise web.HTTPNotFound(text="no such enhanced participant")
        status, body, content_type = answer
        return web.Response(status=status, body=body, content_type=content_type,
                            charset="utf-8" if content_type.startswith(("text/", "application/json")) else None)
