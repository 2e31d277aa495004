"""The server's side of the cluster (``serve --redis-url``): options, start/stop, redirects,
``GET /cluster``. The rules and the Redis work live in ``mediaserver/cluster``.

A join for a room that lives on another node gets, instead of ``joined``::

    {"type": "redirect", "url": "ws://node-a:8080/ws", "node": "node-a",
     "reconnect": {"ticket": "...", "expires_in_s": 300}}

and the socket closes (code 4307). The client joins at ``url`` sending the ticket as
``reconnect`` (sfu/tickets.py: signed with a key derived from ``--secret``, so every node of
the cluster accepts it; the join token is spent cluster-wide by the redirect, see
``ClusterNode.spend_once``). The same message
moves a room's participants mid-call when another node's older claim wins the room after a
Redis outage.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import TYPE_CHECKING, Any, Optional

from aiohttp import web

from ..cluster.metrics import ClusterMetrics
from ..cluster.node import ClusterNode, default_node_id, now_ms
from ..cluster.placement import NodeRecord
from ..cluster.registry import RedisRegistry
from ..config import add_option, redis_url, usable_cores
from .room import count_publishers

if TYPE_CHECKING:
    from .signalling import SfuContext, SignallingSession

logger = logging.getLogger(__name__)

REDIRECT_CLOSE_CODE = 4307


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    if "--redis-url" not in parser._option_string_actions:
        add_option(parser, "--redis-url", default=None, type=redis_url,
                   help="Redis shared by the nodes of a cluster (and the redis ASR sink); "
                        "without it the server is one node and uses no Redis")
    add_option(parser, "--node-id", default=None,
               help="this node's name in the cluster (default: hostname-port)")
    add_option(parser, "--advertise-url", default=None,
               help="this node's HTTP URL as clients reach it, e.g. http://10.0.0.5:8080 "
                    "(default: the address it listens on)")


def redirect_message(ctx: "SfuContext", node: NodeRecord, room: str, identity: str) -> dict:
    return {"type": "redirect", "url": node.ws_url, "node": node.id,
            "reconnect": {"ticket": ctx.tickets.mint(room=room, identity=identity),
                          "expires_in_s": ctx.tickets.ttl_s}}


class ClusterLink:
    """Builds, starts and stops this server's ClusterNode once its port is known."""

    def __init__(self, args: argparse.Namespace, ctx: "SfuContext") -> None:
        self.args = args
        self.ctx = ctx
        self.metrics = ClusterMetrics(ctx.metrics.registry)
        self.node: Optional[ClusterNode] = None
        self._cpu = (time.monotonic(), time.process_time())
        # the cores this process may use (affinity, cgroup quota), as --workers auto counts
        # them: a 2-CPU container on a 64-core host at full tilt reports cpu 1.0, not 0.03
        self._cores = usable_cores()

    async def start(self, host: str, port: int) -> None:
        args = self.args
        me = node_record(args, host, port)
        self.node = ClusterNode(RedisRegistry(args.redis_url), me,
                                local_rooms=lambda: set(self.ctx.manager.rooms),
                                load=self._load, metrics=self.metrics, on_lost=self._on_lost)
        await self.node.start()
        self.ctx.cluster = self.node
        node = self.node   # pages served by any live node may open /ws here (sfu/origin.py)
        self.ctx.origins.peers = lambda: [n.url for n in node.nodes]
        logger.info("cluster node %s (%s) on %s: %d live node(s)%s", me.id, me.ws_url,
                    args.redis_url, len(self.node.nodes), " (degraded: Redis unreachable)"
                    if self.node.degraded else "")

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop()

    def _load(self) -> dict[str, float]:
        rooms = self.ctx.manager.rooms
        wall, cpu = time.monotonic(), time.process_time()
        share = (cpu - self._cpu[1]) / max(1e-6, wall - self._cpu[0]) / self._cores
        self._cpu = (wall, cpu)
        clock = self.ctx.manager.clock
        return {"rooms": float(len(rooms)),
                "participants": float(sum(len(r.participants) for r in rooms.values())),
                "publishers": float(count_publishers(rooms.values())),
                "cpu": round(share, 3), "late_ticks": float(getattr(clock, "late", 0)),
                "enhancer_cuda": float(str(getattr(self.args, "enhancer_device", "cpu")).startswith("cuda"))}

    def _on_lost(self, room: str, winner: Optional[NodeRecord]) -> None:
        """Another node's older claim won ``room``: move its participants there."""
        move_room(self.ctx, room, winner)


def node_record(args: argparse.Namespace, host: str, port: int) -> NodeRecord:
    """This node's record: ``--node-id`` (default hostname-port) and its URLs from
    ``--advertise-url`` or the address it listens on (one process or a ``--workers`` front)."""
    url = (args.advertise_url or f"http://{host}:{port}").rstrip("/")
    ws = ("wss" + url[5:] if url.startswith("https") else "ws" + url[4:]) + "/ws"
    return NodeRecord(id=args.node_id or default_node_id(port), url=url, ws_url=ws,
                      started_ms=now_ms())


def move_room(ctx: "SfuContext", room: str, winner: Optional[NodeRecord]) -> int:
    """Move the joined participants of ``room`` here to ``winner`` (None: its record is not
    visible yet, a plain reconnect); returns how many were told."""
    told = 0
    for session in list(ctx.sessions):
        p = session.participant
        if p is None or p.room != room:
            continue
        told += 1
        if winner is None:
            session.error("room-moved", "the room moved to another node; reconnect")
            session.close(1012, "room moved")
            continue
        move(session, winner)
    return told


def move(session: "SignallingSession", node: NodeRecord) -> None:
    """Tell one joined session to rejoin on ``node`` and close it."""
    p = session.participant
    assert p is not None
    try:
        session.send(redirect_message(session.ctx, node, p.room, p.identity))
    except ConnectionError:
        return
    session.close(REDIRECT_CLOSE_CODE, "redirect")


async def cluster_view(request: web.Request) -> web.Response:
    """``GET /cluster``: nodes, their load and rooms (guarded like /metrics)."""
    from .signalling import SFU_CONTEXT

    node = request.app[SFU_CONTEXT].cluster
    return await view_response(node if isinstance(node, ClusterNode) else None)


async def view_response(node: Optional[ClusterNode]) -> web.Response:
    """The ``GET /cluster`` reply of ``node`` (a single process's or a ``--workers`` front's)."""
    if node is None:
        raise web.HTTPNotFound(text="this server is not in a cluster (no --redis-url)")
    try:
        return web.json_response(await node.view())
    except Exception as exc:   # Redis away: say so, the node itself is fine
        return web.json_response({"node": node.me.id, "degraded": True, "error": str(exc)},
                                 status=503)
