"""Glue between the hub and the aiohttp server: captions out, transcript route, lifecycle.

Kept here so the server's composition root only calls :func:`attach`; nothing in
``asr/`` imports ``sfu/``: the server passes in how to broadcast and how to authorise.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Awaitable, Callable, Optional

from aiohttp import web

from .hub import AsrHub
from .sink import Transcript

logger = logging.getLogger(__name__)

ASR_HUB = web.AppKey("asr_hub", AsrHub)
ROOM_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

Broadcast = Callable[[str, dict], Awaitable[None]]          # (room, message)
Authorise = Callable[[str, Optional[str], Optional[str]], None]  # (room, identity, token); raises
RoomExists = Callable[[str], bool]


class CaptionBroadcaster:
    """Turns transcripts into ``caption`` events; owns the send tasks so none outlive the app."""

    def __init__(self, broadcast: Broadcast, *, max_in_flight: int = 64) -> None:
        self._broadcast = broadcast
        self._tasks: set[asyncio.Task] = set()
        self._max = max_in_flight
        self.dropped = 0

    def __call__(self, caption: Transcript) -> None:
        """A partial's message also has ``unstable`` (provisional words after ``text``) when
        the newest decode heard more than the stable prefix; ``end_ms`` is then how far the
        unstable words' audio reaches and ``stable_end_ms`` how far the stable text's does."""
        final = caption.final
        limit = self._max if final else self._max // 2  # partials are superseded: drop them first
        if len(self._tasks) >= limit:  # participants' sockets stuck: do not pile up tasks
            self.dropped += 1
            return
        message = {"type": "caption", "identity": caption.identity, "text": caption.text,
                   "start_ms": round(caption.start_ms, 1), "end_ms": round(caption.end_ms, 1),
                   "final": final}
        if not final and caption.unstable:
            # the line shown reaches as far as its unstable words; its stable words less far
            message["unstable"] = caption.unstable
            message["stable_end_ms"] = message["end_ms"]
            if caption.unstable_end_ms is not None:
                message["end_ms"] = round(caption.unstable_end_ms, 1)
        room = caption.room
        task = asyncio.get_running_loop().create_task(self._send(room, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, room: str, message: dict) -> None:
        try:
            await self._broadcast(room, message)
        except Exception as exc:
            logger.warning("caption broadcast to room %s failed: %s", room, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def attach(app: web.Application, hub: AsrHub, *, broadcast: Broadcast, room_exists: RoomExists,
           authorise: Optional[Authorise] = None) -> None:
    """Start/stop the hub with the app, broadcast captions, add ``GET /rooms/{room}/transcript``."""
    captions = CaptionBroadcaster(broadcast)
    hub.add_caption_listener(captions)
    app[ASR_HUB] = hub

    async def transcript(request: web.Request) -> web.Response:
        room = request.match_info["room"]
        if not ROOM_RE.fullmatch(room):
            raise web.HTTPBadRequest(text="room name must be 1-64 of A-Z a-z 0-9 _ . -")
        if authorise is not None:
            try:
                authorise(room, request.query.get("identity"), _token(request))
            except ValueError as exc:
                raise web.HTTPForbidden(text=f"transcript access refused: {exc}") from None
        if not room_exists(room) and not hub.transcripts.has_room(room):
            raise web.HTTPNotFound(text=f"no room {room!r} and no transcript for it")
        return web.json_response({"room": room, "entries": hub.transcript(room)})

    async def on_startup(app: web.Application) -> None:
        await hub.start()

    async def on_shutdown(app: web.Application) -> None:
        await captions.close()
        await hub.stop()

    app.router.add_get("/rooms/{room}/transcript", transcript)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)


def _token(request: web.Request) -> Optional[str]:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:].strip()
    return request.query.get("token")
