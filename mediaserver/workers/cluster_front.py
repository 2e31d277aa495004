"""The front of ``serve --workers N --redis-url URL`` as the machine's cluster node.

One node per machine: the front holds the :class:`~mediaserver.cluster.node.ClusterNode`
(the same driver and rules as one process, mediaserver/cluster), built from the same record
(``--node-id``, ``--advertise-url`` or the front's address, sfu/cluster_link.node_record):

- **rooms**: the node's rooms are the rooms the front has placed on its workers
  (workers/placement.py): the heartbeat renews their claims, and a room is dropped from the
  claims when its last socket closes or its worker dies (its lease lapses within the lease
  time, as in one process; a participant who reconnects before that finds it still owned);
- **joins**: the worker runs the single process's signalling and asks the node through a
  small loopback API served here (workers/cluster_client.py): ``POST /cluster/spend``,
  ``/cluster/unspend``, ``/cluster/place``, ``/cluster/events``, ``GET /cluster/nodes``, each
  guarded by the front's token. A room on another node: the worker sends ``redirect`` and
  closes with 4307, relayed unchanged;
- **tokens**: spent in Redis (cluster-wide) and in the front's own memory, so while Redis is
  away a token still admits one join on the whole machine, not one per worker;
- **a lost room** (another node's older claim won it after a Redis outage): the front asks the
  room's worker (``POST /_front/cluster-lost``) to move its participants, as one process does;
- ``GET /cluster`` is answered here from Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional

import aiohttp
from aiohttp import web

from ..cluster.metrics import ClusterMetrics
from ..cluster.node import ClusterNode
from ..cluster.placement import NodeRecord
from ..cluster.registry import RedisRegistry
from ..config import usable_cores
from ..sfu.cluster_link import node_record, view_response
from ..sfu.tokens import Grant, ReplayGuard, TokenError
from ..sfu.websec import FRONT_HEADER
from .cluster_client import LOST_PATH

if TYPE_CHECKING:
    from .front import Front

logger = logging.getLogger(__name__)

class FrontNode:
    """The front's cluster side (see the module docstring); ``open()`` before the workers
    start (they get its URL), ``start()`` once the front listens (its port names the node)."""

    def __init__(self, front: "Front", args: argparse.Namespace) -> None:
        self.front = front
        self.args = args
        self.metrics = ClusterMetrics(front.metrics.registry)
        self.node: Optional[ClusterNode] = None
        self.machine = ReplayGuard()   # tokens spent on this machine (any worker)
        self.url: Optional[str] = None
        self._runner: Optional[web.AppRunner] = None
        self._tasks: set[asyncio.Task[None]] = set()
        # the cores the workers may use (affinity, cgroup quota), as --workers auto counts them:
        # the load average is shared by them, not by every core of the host
        self._cores = usable_cores()

    # -- lifecycle -----------------------------------------------------------------------
    async def open(self) -> str:
        """Serve the workers' API on 127.0.0.1 and a free port; returns its base URL."""
        app = web.Application(client_max_size=1024 * 1024)
        app.middlewares.append(self._guard)
        app.router.add_post("/cluster/spend", self._spend)
        app.router.add_post("/cluster/unspend", self._unspend)
        app.router.add_post("/cluster/place", self._place)
        app.router.add_post("/cluster/events", self._publish)
        app.router.add_get("/cluster/nodes", self._nodes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def start(self, host: str, port: int) -> None:
        me = node_record(self.args, host, port)
        self.node = ClusterNode(RedisRegistry(self.args.redis_url), me,
                                local_rooms=lambda: set(self.front.placement.rooms()),
                                load=self._load, metrics=self.metrics, on_lost=self._on_lost)
        await self.node.start()
        node = self.node   # pages served by any live node may open /ws here (sfu/origin.py)
        self.front.origins.peers = lambda: [n.url for n in node.nodes]
        logger.info("cluster node %s (%s, %d media workers) on %s: %d live node(s)%s", me.id,
                    me.ws_url, self.front.workers_n, self.args.redis_url, len(node.nodes),
                    " (degraded: Redis unreachable)" if node.degraded else "")

    async def stop(self) -> None:
        """Deregister (the other nodes may take this machine's rooms over), then close."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.node is not None:
            await self.node.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- node ----------------------------------------------------------------------------
    def node_urls(self) -> list[str]:
        return self.node.node_urls() if self.node is not None else []

    def _load(self) -> dict[str, float]:
        """The machine's load (all workers, from their last ``/healthz``): the figures
        placement compares between nodes (cluster/placement.load_score): ``publishers`` is the
        sum of the workers' ``publishers`` (participants that send audio), not of their
        ``participants``, as one process counts it (sfu/cluster_link.py)."""
        reports = list(self.front.reports.values())
        return {"rooms": float(sum(int(r.get("rooms", 0)) for r in reports)),
                "participants": float(sum(int(r.get("participants", 0)) for r in reports)),
                "publishers": float(sum(int(r.get("publishers", 0)) for r in reports)),
                "cpu": round(min(1.0, os.getloadavg()[0] / self._cores), 3),
                "late_ticks": float(sum(int(r.get("late_ticks", 0)) for r in reports)),
                "workers": float(len(self.front.live())),
                "enhancer_cuda": float(str(getattr(self.args, "enhancer_device", "cpu")).startswith("cuda"))}

    def _on_lost(self, room: str, winner: Optional[NodeRecord]) -> None:
        """Another node's older claim won ``room``: its worker moves the participants."""
        index = self.front.placement.worker_of(room)
        url = self.front.url(index, LOST_PATH) if index is not None else None
        if url is None or self.front.session is None:
            return   # no socket of the room here any more
        session = self.front.session
        body = {"room": room, "node": winner.to_json() if winner is not None else None}

        async def tell() -> None:
            try:
                async with session.post(url, json=body, headers={FRONT_HEADER: self.front.token}) as resp:
                    await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                logger.warning("could not tell worker %s to move room %s: %s", index, room, exc)

        task = asyncio.get_running_loop().create_task(tell(), name=f"cluster-lost-{room}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the workers' API ----------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        given = request.headers.get(FRONT_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.front.token.encode()):
            raise web.HTTPForbidden(text="the front's workers only")
        if self.node is None:
            raise web.HTTPServiceUnavailable(text="the cluster node is starting")
        return await handler(request)

    def _reply(self, **data: Any) -> web.Response:
        node = self.node
        assert node is not None
        return web.json_response({**data, "nodes": node.node_urls(),
                                  "peers": [n.url for n in node.nodes]})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="JSON object expected") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="JSON object expected")
        return body

    async def _spend(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        jti, expires = str(body.get("jti") or ""), float(body.get("expires") or 0.0)
        assert self.node is not None
        try:   # the machine's memory first: no Redis round trip for a replay on this machine
            self.machine.use(Grant(room="", identity="", expires=expires, jti=jti), now=time.time())
        except TokenError:
            self.metrics.spent.labels("replayed").inc()
            return self._reply(first=False)
        first = await self.node.spend_once(jti, expires)
        return self._reply(first=first)

    async def _unspend(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        jti = str(body.get("jti") or "")
        assert self.node is not None
        self.machine.release(Grant(room="", identity="", expires=0.0, jti=jti))
        await self.node.unspend(jti)
        return self._reply()

    async def _place(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        room = body.get("room")
        if not isinstance(room, str):
            raise web.HTTPBadRequest(text="room expected")
        assert self.node is not None
        placement = await self.node.place(room)
        return self._reply(placement=placement.to_json())

    async def _publish(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        assert self.node is not None
        for item in body.get("events") or []:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict):
                self.node.publish_event(str(item[0]), item[1])
        return self._reply()

    async def _nodes(self, request: web.Request) -> web.Response:
        return self._reply()

    async def view(self, request: web.Request) -> web.Response:
        """``GET /cluster`` on the front (guarded like /metrics)."""
        return await view_response(self.node)
