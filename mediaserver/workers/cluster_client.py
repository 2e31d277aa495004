"""A media worker's way into the cluster when its front is the machine's node
(``serve --workers N --redis-url URL``).

The worker runs the single process's signalling unchanged (sfu/signalling.py): it spends a
join's token once cluster-wide, asks where a new room belongs, sends ``redirect`` and closes
with 4307 when the room lives on another node. Here those questions go over loopback HTTP to
the front (:mod:`.cluster_front`), which holds the one :class:`~mediaserver.cluster.node.ClusterNode`
of the machine: it registers, claims and renews the rooms of all its workers, and talks to
Redis. The front's address and token come in the worker's environment (``FRONT_CLUSTER_ENV``,
``MEDIASERVER_FRONT_TOKEN``).

The front unreachable (it is restarting its cluster side, or not started yet) reads as Redis
unreachable for one process: the join is served here (placement ``degraded``), the token is
checked by this worker's memory only. Nothing here ever ends a call.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Optional

import aiohttp
from aiohttp import web

from ..cluster.node import ClusterAccess, Placement
from ..sfu.websec import FRONT_HEADER
from ..tasks import cancel_and_wait

logger = logging.getLogger(__name__)

FRONT_CLUSTER_ENV = "MEDIASERVER_FRONT_CLUSTER"   # http://127.0.0.1:PORT of the front's cluster API
LOST_PATH = "/_front/cluster-lost"   # on a worker: move a room's participants to another node
REFRESH_S = 1.0      # the live nodes' URLs (``joined.nodes``, allowed page origins)
FLUSH_S = 0.25       # room events queued for the front (it writes them to Redis)
_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


class FrontCluster:
    """:class:`ClusterAccess` through the front (see the module docstring).

    Args:
        base_url: the front's cluster API, e.g. ``http://127.0.0.1:40123``.
        token: the front's token (sent in ``X-Mediaserver-Front``).
    """

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {FRONT_HEADER: token}
        self._session: Optional[aiohttp.ClientSession] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._events: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=1000)
        self._node_urls: list[str] = []   # signalling URLs, the front's node first
        self.peer_urls: list[str] = []    # the live nodes' HTTP URLs (sfu/origin.py peers)
        self.unreachable = 0              # calls the front did not answer (served as degraded)
        self._down = False

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        await self._refresh()   # (a restarted worker: ``joined.nodes`` from its first join)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="front-cluster")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self._flush()
        if self._session is not None:
            session, self._session = self._session, None   # later calls: served as degraded
            await session.close()

    async def _run(self) -> None:
        ticks_per_refresh = max(1, round(REFRESH_S / FLUSH_S))
        tick = 0
        while True:
            await asyncio.sleep(FLUSH_S)
            await self._flush()
            tick += 1
            if tick % ticks_per_refresh == 0:
                await self._refresh()

    async def _call(self, method: str, path: str, body: Optional[dict[str, Any]] = None
                    ) -> Optional[dict[str, Any]]:
        """The front's JSON reply, or None when it did not answer (counted)."""
        if self._session is None:
            return None
        try:
            async with self._session.request(method, self.base_url + path, json=body,
                                             headers=self._headers) as resp:
                if resp.status == 503:   # the front's node is starting: served here, quietly
                    logger.debug("the front's cluster node is starting: %s %s served here", method, path)
                    return None
                if resp.status != 200:
                    raise aiohttp.ClientError(f"HTTP {resp.status}")
                reply = await resp.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            self.unreachable += 1
            if not self._down:   # once per outage (the front starts its node after us)
                logger.warning("the front's cluster API did not answer %s %s (%s): joins are "
                               "served here until it does", method, path, exc)
            self._down = True
            return None
        if self._down:
            logger.info("the front's cluster API answers again")
        self._down = False
        if isinstance(reply, dict) and isinstance(reply.get("nodes"), list):
            self._node_urls = [str(u) for u in reply["nodes"]]
            self.peer_urls = [str(u) for u in reply.get("peers") or []]
        return reply if isinstance(reply, dict) else None

    async def _refresh(self) -> None:
        await self._call("GET", "/cluster/nodes")

    async def _flush(self) -> None:
        if not self._events:
            return
        batch = list(self._events)
        if await self._call("POST", "/cluster/events", {"events": batch}) is not None:
            for _ in batch:
                self._events.popleft()

    # -- ClusterAccess -------------------------------------------------------------------
    async def spend_once(self, jti: str, expires_unix: float) -> bool:
        reply = await self._call("POST", "/cluster/spend", {"jti": jti, "expires": expires_unix})
        return True if reply is None else bool(reply.get("first"))

    async def unspend(self, jti: str) -> None:
        await self._call("POST", "/cluster/unspend", {"jti": jti})

    async def place(self, room: str) -> Placement:
        reply = await self._call("POST", "/cluster/place", {"room": room})
        if reply is None:
            return Placement(outcome="degraded")
        try:
            return Placement.from_json(reply["placement"])
        except (KeyError, TypeError, ValueError):
            return Placement(outcome="degraded")

    def node_urls(self) -> list[str]:
        return list(self._node_urls)

    def publish_event(self, room: str, event: dict[str, Any]) -> None:
        """Queued for the front (sent within FLUSH_S; the oldest dropped beyond 1,000)."""
        self._events.append((room, event))


_check: type[ClusterAccess] = FrontCluster   # FrontCluster answers what signalling asks


async def room_lost(request: web.Request) -> web.Response:
    """``POST /_front/cluster-lost`` on a worker (its front only): another node's older claim
    won ``room``; its participants here are moved there, as one process moves them."""
    from ..cluster.placement import NodeRecord
    from ..sfu.cluster_link import move_room
    from ..sfu.signalling import SFU_CONTEXT

    try:
        body = await request.json()
        room = str(body["room"])
        winner = NodeRecord.from_json(body["node"]) if body.get("node") is not None else None
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text="room and node expected") from None
    return web.json_response({"moved": move_room(request.app[SFU_CONTEXT], room, winner)})
