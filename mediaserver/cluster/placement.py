"""Placement rules of the cluster, without I/O: who should host a room, who wins a double claim.

The records are what the nodes keep in Redis (cluster/registry.py):

- a *node record* ``{"id", "url", "ws_url", "load": {...}, "started_ms"}`` under a lease the
  node renews by heartbeat; its key vanishing is how the others learn the node is gone;
- a *room claim* ``{"node", "since_ms"}`` under a lease its owner renews while the room has
  participants on it.

Room placement follows LiveKit's rule (a room lives on exactly one node at a time, the first
join places it on the least loaded live node); a room claimed twice (both nodes served it
locally while Redis was away) keeps the *older* claim, ties broken by node id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class NodeRecord:
    """One live node as registered in Redis."""

    id: str
    url: str                    # HTTP base, e.g. http://10.0.0.5:8080
    ws_url: str                 # signalling URL, e.g. ws://10.0.0.5:8080/ws
    load: dict[str, float] = field(default_factory=dict)
    started_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "ws_url": self.ws_url, "load": self.load,
                "started_ms": self.started_ms}

    @staticmethod
    def from_json(data: dict[str, Any]) -> "NodeRecord":
        """Raises KeyError/TypeError/ValueError on a malformed record."""
        return NodeRecord(id=str(data["id"]), url=str(data["url"]), ws_url=str(data["ws_url"]),
                          load={str(k): float(v) for k, v in dict(data.get("load") or {}).items()},
                          started_ms=int(data.get("started_ms") or 0))


@dataclass(frozen=True)
class Claim:
    """A room's owner and when it claimed the room (ms since the Unix epoch)."""

    node: str
    since_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "since_ms": self.since_ms}

    @staticmethod
    def from_json(data: dict[str, Any]) -> "Claim":
        return Claim(node=str(data["node"]), since_ms=int(data["since_ms"]))

    def wins_over(self, other: "Claim") -> bool:
        """The older claim keeps the room; at the same millisecond the smaller node id."""
        return (self.since_ms, self.node) < (other.since_ms, other.node)


CPU_STEP = 0.2   # CPU shares within one step count as equal (the reading is noisy)


def load_score(node: NodeRecord) -> tuple[float, float, float]:
    """Smaller is less loaded: publishers, then rooms, then CPU share in steps of CPU_STEP."""
    load = node.load
    return (load.get("publishers", 0.0), load.get("rooms", 0.0),
            float(int(load.get("cpu", 0.0) / CPU_STEP)))


def least_loaded(nodes: list[NodeRecord], prefer: Optional[str] = None) -> Optional[NodeRecord]:
    """The node a new room goes to: the least loaded; among equals the node ``prefer`` (the one
    the join reached: no redirect hop), else the smallest id. None when the list is empty."""
    if not nodes:
        return None
    return min(nodes, key=lambda n: (load_score(n), n.id != prefer, n.id))
