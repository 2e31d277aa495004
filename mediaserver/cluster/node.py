"""This server as one node of a cluster sharing a Redis (``serve --redis-url``).

``ClusterNode`` is the asyncio driver around the registry (cluster/registry.py) and the rules
(cluster/placement.py):

- **presence**: a heartbeat task renews this node's record (lease ``lease_ms``, every
  ``lease_ms / 4``) with its load, and refreshes the list of live nodes;
- **placement** (:meth:`place`, on every join of a room not already here): an owned room is
  served here; a room owned by a live node is a redirect there; a room whose owner's lease
  has lapsed (the node died) is taken over; an unclaimed room is claimed (``SET NX``) for the
  least loaded live node;
- **claims**: the heartbeat renews the claim of every room with participants here; a claim
  that lapsed (Redis was away) is claimed again, and where another node holds an *older* claim
  the room's participants here are told to move there (``on_lost``);
- **Redis trouble**: any Redis error makes the node *degraded*: it keeps serving its rooms,
  serves joins for unknown rooms locally (counted), and re-registers and reconciles as soon as
  Redis answers again. Redis alone never ends a call.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from redis.exceptions import RedisError

from .metrics import ClusterMetrics
from .placement import Claim, NodeRecord, least_loaded
from .registry import RedisRegistry

logger = logging.getLogger(__name__)

LEASE_MS = 2000          # node and room leases: a dead node's rooms move within this
PLACEMENT_LEASE_MS = 10_000   # a claim made for another node, until its first participant arrives


class LoadSource(Protocol):
    def __call__(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class Placement:
    """Where a join goes: ``node`` is None when this node serves it."""

    node: Optional[NodeRecord] = None
    outcome: str = "local"   # local | owned | claimed | taken-over | redirect | degraded

    @property
    def local(self) -> bool:
        return self.node is None

    def to_json(self) -> dict[str, Any]:
        """The wire form between a ``--workers`` front and its workers (workers/cluster_*.py)."""
        return {"node": self.node.to_json() if self.node is not None else None,
                "outcome": self.outcome}

    @staticmethod
    def from_json(data: dict[str, Any]) -> "Placement":
        """Raises KeyError/TypeError/ValueError on a malformed reply."""
        node = data.get("node")
        return Placement(node=NodeRecord.from_json(node) if node is not None else None,
                         outcome=str(data["outcome"]))


class ClusterAccess(Protocol):
    """What a server's signalling asks of the cluster (sfu/signalling.py): a
    :class:`ClusterNode` in a single process, or in a media worker of ``serve --workers N``
    its front's node reached over loopback (workers/cluster_client.py). Never raises."""

    async def spend_once(self, jti: str, expires_unix: float) -> bool: ...

    async def unspend(self, jti: str) -> None: ...

    async def place(self, room: str) -> Placement: ...

    def node_urls(self) -> list[str]: ...

    def publish_event(self, room: str, event: dict[str, Any]) -> None: ...


def now_ms() -> int:
    return int(time.time() * 1000)


class ClusterNode:
    """One node's presence, placement and claims (see the module docstring).

    Args:
        registry: the Redis side.
        me: this node's record (its ``load`` is replaced at every heartbeat).
        local_rooms: the names of rooms that have participants here now.
        load: current load figures (rooms, publishers, cpu, late_ticks, ...).
        on_lost: called with (room, winner node) when another node's older claim wins a
            room this node also serves; the caller redirects that room's participants.
    """

    def __init__(self, registry: RedisRegistry, me: NodeRecord, *,
                 local_rooms: Callable[[], set[str]], load: LoadSource,
                 metrics: ClusterMetrics,
                 on_lost: Callable[[str, Optional[NodeRecord]], None] = lambda room, node: None,
                 lease_ms: int = LEASE_MS) -> None:
        self.registry = registry
        self.me = me
        self.local_rooms = local_rooms
        self.load = load
        self.metrics = metrics
        self.on_lost = on_lost
        self.lease_ms = lease_ms
        self.nodes: list[NodeRecord] = []   # live nodes at the last heartbeat
        self.degraded = False
        self._claims: dict[str, Claim] = {}   # rooms this node holds (or held before Redis left)
        self._task: Optional[asyncio.Task] = None
        self._events: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=1000)
        self._ops_reported = 0
        self._stopping = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self._beat()   # registered (or degraded) before the first join
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        try:
            await self.registry.deregister(self.me.id)
        except (RedisError, OSError):
            pass
        await self.registry.close()

    async def _heartbeat(self) -> None:
        interval = self.lease_ms / 4000.0
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)
            except asyncio.TimeoutError:
                await self._beat()

    async def _beat(self) -> None:
        me = NodeRecord(id=self.me.id, url=self.me.url, ws_url=self.me.ws_url,
                        load=self.load(), started_ms=self.me.started_ms)
        try:
            await self.registry.register(me, self.lease_ms)
            self.nodes = await self.registry.nodes()
            await self._renew_claims()
            while self._events:
                room, event = self._events[0]
                await self.registry.publish_event(room, event)
                self._events.popleft()
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return
        finally:
            self.metrics.redis_commands.inc(self.registry.ops - self._ops_reported)
            self._ops_reported = self.registry.ops
        if self.degraded:
            logger.warning("Redis is back: node %s re-registered, %d room claims reconciled",
                           self.me.id, len(self._claims))
        self.degraded = False
        self.metrics.redis_up.set(1)
        self.metrics.nodes.set(len(self.nodes))

    async def _renew_claims(self) -> None:
        local = self.local_rooms()
        for room in list(self._claims):
            if room not in local:
                del self._claims[room]   # empty here: the lease lapses by itself
        for room in local - set(self._claims):
            self._claims[room] = Claim(self.me.id, now_ms())   # served while Redis was away
        in_force = await self.registry.renew(dict(self._claims), self.lease_ms)
        for room, claim in in_force.items():
            if claim.node != self.me.id:
                del self._claims[room]
                winner = next((n for n in self.nodes if n.id == claim.node), None)
                logger.warning("room %s is also claimed by node %s since %d (older): moving its "
                               "participants there", room, claim.node, claim.since_ms)
                self.metrics.placements.labels("lost").inc()
                self.on_lost(room, winner)

    def _redis_failed(self, exc: BaseException) -> None:
        self.metrics.redis_errors.inc()
        self.metrics.redis_up.set(0)
        if not self.degraded:
            logger.warning("Redis unreachable (%s): node %s serves its rooms and new joins "
                           "locally until it is back", exc, self.me.id)
        self.degraded = True

    # -- placement -----------------------------------------------------------------------
    async def place(self, room: str) -> Placement:
        """Where a join for ``room`` belongs (see the module docstring). Never raises."""
        if room in self._claims:
            return self._count(Placement(outcome="owned"))
        if self.degraded:
            return self._count(Placement(outcome="degraded"))
        try:
            return self._count(await self._place(room))
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return self._count(Placement(outcome="degraded"))

    async def _place(self, room: str) -> Placement:
        for _ in range(3):   # each pass ends unless another node changed the claim meanwhile
            claim, raw = await self.registry.owner(room)
            if claim is not None and raw is not None:
                if claim.node == self.me.id:
                    self._claims[room] = claim
                    return Placement(outcome="owned")
                owner = await self.registry.node(claim.node)
                if owner is not None:
                    return Placement(node=owner, outcome="redirect")
                mine = Claim(self.me.id, now_ms())
                if await self.registry.take_over(room, raw, mine, self.lease_ms):
                    logger.info("room %s: node %s is gone, taken over", room, claim.node)
                    self._claims[room] = mine
                    return Placement(outcome="taken-over")
                continue
            target = least_loaded(self.nodes, prefer=self.me.id) or self.me
            if all(n.id != self.me.id for n in self.nodes):
                target = self.me   # our own record lapsed: place here rather than guess
            mine = Claim(target.id, now_ms())
            lease = self.lease_ms if target.id == self.me.id else PLACEMENT_LEASE_MS
            if await self.registry.claim(room, mine, lease):
                if target.id == self.me.id:
                    self._claims[room] = mine
                    return Placement(outcome="claimed")
                return Placement(node=target, outcome="redirect")
        return Placement(outcome="degraded")   # the claim kept changing: serve, reconcile later

    async def spend_once(self, jti: str, expires_unix: float) -> bool:
        """A join token or reconnect ticket admits one join in the whole cluster: False when
        ``jti`` was already used on any node. Degraded (Redis away): True, the node's own
        memory (sfu/tokens.ReplayGuard) is then the only check (counted as ``degraded``)."""
        if not self.degraded:
            try:
                first = await self.registry.spend(jti, expires_unix, self.me.id)
                self.metrics.spent.labels("first" if first else "replayed").inc()
                return first
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
        self.metrics.spent.labels("degraded").inc()
        return True

    async def unspend(self, jti: str) -> None:
        """Give back a use taken by :meth:`spend_once` (the join was refused after it)."""
        if self.degraded:
            return
        try:
            await self.registry.unspend(jti)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)

    def _count(self, placement: Placement) -> Placement:
        self.metrics.placements.labels(placement.outcome).inc()
        return placement

    # -- views ---------------------------------------------------------------------------
    def node_urls(self) -> list[str]:
        """Signalling URLs of the live nodes, this one first (for ``joined.nodes``)."""
        others = [n.ws_url for n in self.nodes if n.id != self.me.id]
        return [self.me.ws_url, *others]

    async def view(self) -> dict[str, Any]:
        """Nodes, their load and their rooms, from Redis (``GET /cluster``)."""
        return {"node": self.me.id, "degraded": self.degraded, **await snapshot(self.registry)}

    def publish_event(self, room: str, event: dict[str, Any]) -> None:
        """Queue a join/leave for the room's Redis stream (sent by the next heartbeat; the
        oldest are dropped beyond 1,000 while Redis is away). Never waits on Redis."""
        self._events.append((room, {**event, "node": self.me.id, "ts_ms": now_ms()}))


async def snapshot(registry: RedisRegistry) -> dict[str, Any]:
    """The live nodes (each with its rooms) and every room's claim, as Redis holds them."""
    nodes = await registry.nodes()
    rooms = await registry.rooms()
    return {"nodes": [{**n.to_json(), "rooms": sorted(r for r, c in rooms.items() if c.node == n.id)}
                      for n in nodes],
            "rooms": {r: c.to_json() for r, c in rooms.items()}}


def default_node_id(port: int) -> str:
    return f"{os.uname().nodename}-{port}"
