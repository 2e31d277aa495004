"""``mediaserver_cluster_*`` series, registered in the server's one registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ClusterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.nodes = Gauge("mediaserver_cluster_nodes", "live nodes seen at the last heartbeat",
                           registry=r)
        self.redis_up = Gauge("mediaserver_cluster_redis_up",
                              "1 while Redis answers, 0 while this node runs degraded", registry=r)
        self.placements = Counter(
            "mediaserver_cluster_placements_total",
            "joins placed, by outcome (owned, claimed, taken-over, redirect, degraded) and rooms "
            "lost to an older claim (lost)", ["outcome"], registry=r)
        self.spent = Counter(
            "mediaserver_cluster_single_use_checks_total",
            "join tokens and reconnect tickets checked against Redis: first use, replayed "
            "(used on some node already: refused), degraded (Redis away: this node's memory only)",
            ["outcome"], registry=r)
        self.redis_errors = Counter("mediaserver_cluster_redis_errors_total",
                                    "Redis calls that failed (timeouts, refused connections)",
                                    registry=r)
        self.redis_commands = Counter("mediaserver_cluster_redis_commands_total",
                                      "Redis commands sent by the cluster layer", registry=r)
