"""The cluster's state in Redis: node leases, room claims, room events (all I/O, no policy).

Keys (``{room}`` is a Redis Cluster hash tag, as in asr/redis_sink.py):

- ``mediaserver:node:<id>``: the node's JSON record (placement.NodeRecord), ``PX`` lease;
- ``mediaserver:room:{<room>}:owner``: the room's claim (placement.Claim), ``PX`` lease;
- ``mediaserver:room:{<room>}:events``: a capped stream of join/leave events, so a consumer
  needs no node affinity (transcripts go to ``…:asr`` through the redis ASR sink).

Every compare-and-set is a Lua script (atomic in Redis): a claim is only renewed, taken over or
overwritten by the node whose view of it is still current.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.asyncio.retry import Retry

from .placement import Claim, NodeRecord

NODE_PREFIX = "mediaserver:node:"


def node_key(node_id: str) -> str:
    return NODE_PREFIX + node_id


def owner_key(room: str) -> str:
    return f"mediaserver:room:{{{room}}}:owner"


def spent_key(jti: str) -> str:
    """A join token's or reconnect ticket's id, once used anywhere in the cluster."""
    return f"mediaserver:spent:{jti}"


def events_key(room: str) -> str:
    return f"mediaserver:room:{{{room}}}:events"


# Renew our claim; if it has lapsed, claim again; if another node holds it, the older claim
# keeps the room. Returns the claim in force afterwards (JSON).
_RENEW = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
local cur = cjson.decode(v)
local mine = cjson.decode(ARGV[1])
if cur.node == mine.node then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return v
end
if tonumber(mine.since_ms) < tonumber(cur.since_ms)
   or (tonumber(mine.since_ms) == tonumber(cur.since_ms) and mine.node < cur.node) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return v
"""

# Replace the claim only if it is still exactly the one we read (a dead owner's).
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class RedisRegistry:
    """Node leases, room claims and room events in one Redis (``url``).

    Every method raises ``redis.exceptions.RedisError`` (or ``OSError``) when Redis is
    unreachable; the caller (cluster/node.py) turns that into degraded operation.
    ``ops`` counts Redis commands sent (for the benchmark's operations per second)."""

    def __init__(self, url: str, *, timeout_s: float = 0.5) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"Redis URL must start with redis://, rediss:// or unix://, got {url!r}")
        self.url = url
        # one retry on a broken connection: after a Redis restart the pool's sockets are dead
        self.redis = aioredis.Redis.from_url(url, socket_timeout=timeout_s,
                                             socket_connect_timeout=timeout_s,
                                             retry=Retry(NoBackoff(), 1),
                                             retry_on_error=[RedisConnectionError])
        self._renew = self.redis.register_script(_RENEW)
        self._take_over = self.redis.register_script(_TAKE_OVER)
        self.ops = 0

    async def close(self) -> None:
        await self.redis.aclose()

    # -- nodes ---------------------------------------------------------------------------
    async def register(self, node: NodeRecord, lease_ms: int) -> None:
        self.ops += 1
        await self.redis.set(node_key(node.id), json.dumps(node.to_json()), px=lease_ms)

    async def deregister(self, node_id: str) -> None:
        self.ops += 1
        await self.redis.delete(node_key(node_id))

    async def nodes(self) -> list[NodeRecord]:
        """Every node whose lease is live (malformed records are skipped)."""
        keys = [k async for k in self.redis.scan_iter(match=NODE_PREFIX + "*", count=100)]
        self.ops += 1 + (1 if keys else 0)
        if not keys:
            return []
        out = []
        for raw in await self.redis.mget(keys):
            if raw is None:
                continue   # expired between SCAN and MGET
            try:
                out.append(NodeRecord.from_json(json.loads(raw)))
            except (ValueError, KeyError, TypeError):
                continue
        return sorted(out, key=lambda n: n.id)

    async def node(self, node_id: str) -> Optional[NodeRecord]:
        self.ops += 1
        raw = await self.redis.get(node_key(node_id))
        return None if raw is None else NodeRecord.from_json(json.loads(raw))

    # -- room claims ---------------------------------------------------------------------
    async def owner(self, room: str) -> tuple[Optional[Claim], Optional[bytes]]:
        """The room's claim and its raw value (for :meth:`take_over`), or (None, None)."""
        self.ops += 1
        raw = await self.redis.get(owner_key(room))
        return (None, None) if raw is None else (Claim.from_json(json.loads(raw)), raw)

    async def claim(self, room: str, claim: Claim, lease_ms: int) -> bool:
        """Claim an unclaimed room (``SET NX``): True for exactly one of concurrent callers."""
        self.ops += 1
        return bool(await self.redis.set(owner_key(room), json.dumps(claim.to_json()),
                                         px=lease_ms, nx=True))

    async def take_over(self, room: str, seen: bytes, claim: Claim, lease_ms: int) -> bool:
        """Replace the claim ``seen`` (its owner is dead) by ``claim``, if nobody did first."""
        self.ops += 1
        return bool(await self._take_over(keys=[owner_key(room)],
                                          args=[seen, json.dumps(claim.to_json()), lease_ms]))

    async def renew(self, claims: dict[str, Claim], lease_ms: int) -> dict[str, Claim]:
        """Renew our claims in one pipeline; returns each room's claim in force afterwards
        (another node's older claim where ours lost)."""
        if not claims:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        rooms = list(claims)
        for room in rooms:
            await self._renew(keys=[owner_key(room)],   # queued on the pipeline
                              args=[json.dumps(claims[room].to_json()), lease_ms], client=pipe)
        self.ops += len(rooms)
        results = await pipe.execute()
        return {room: Claim.from_json(json.loads(raw)) for room, raw in zip(rooms, results)}

    async def rooms(self) -> dict[str, Claim]:
        """Every claimed room and its claim (for the cluster view)."""
        keys = [k async for k in self.redis.scan_iter(match="mediaserver:room:{*}:owner", count=200)]
        self.ops += 1 + (1 if keys else 0)
        if not keys:
            return {}
        out: dict[str, Claim] = {}
        for key, raw in zip(keys, await self.redis.mget(keys)):
            if raw is None:
                continue
            name = key.decode() if isinstance(key, bytes) else str(key)
            out[name[len("mediaserver:room:{"):-len("}:owner")]] = Claim.from_json(json.loads(raw))
        return dict(sorted(out.items()))

    # -- single-use join tokens and tickets ---------------------------------------------
    async def spend(self, jti: str, expires_unix: float, node_id: str) -> bool:
        """Mark ``jti`` used until it expires (``SET NX``): True for the first use cluster-wide."""
        self.ops += 1
        ttl_ms = max(1000, int((expires_unix - time.time()) * 1000))
        return bool(await self.redis.set(spent_key(jti), node_id, px=ttl_ms, nx=True))

    async def unspend(self, jti: str) -> None:
        """Undo :meth:`spend` for a join refused after it (room full...)."""
        self.ops += 1
        await self.redis.delete(spent_key(jti))

    # -- events --------------------------------------------------------------------------
    async def publish_event(self, room: str, event: dict[str, Any], maxlen: int = 1000) -> None:
        self.ops += 1
        await self.redis.xadd(events_key(room), {k: str(v) for k, v in event.items()},
                              maxlen=maxlen, approximate=True)
