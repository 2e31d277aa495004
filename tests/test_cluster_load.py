"""The load a node reports to the cluster is a share of the cores it may use.

Placement (cluster/placement.py) compares the nodes' ``cpu`` figure: one process
(sfu/cluster_link.py) reports its CPU time over wall time, a ``--workers N`` front
(workers/cluster_front.py) the load average; both divided by the host's ``os.cpu_count()``,
so a server in a 2-CPU container on a 64-core host looked 32 times idler than it was. They
divide by :func:`mediaserver.config.usable_cores` (affinity and cgroup quota), as ``--workers
auto`` does. Here the host has 64 cores and the server may use 2.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from mediaserver.sfu import cluster_link
from mediaserver.workers import cluster_front


@pytest.fixture
def two_of_64_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(cluster_link, "usable_cores", lambda: 2)
    monkeypatch.setattr(cluster_front, "usable_cores", lambda: 2)


def test_one_process_reports_its_cpu_over_its_usable_cores(two_of_64_cores: None) -> None:
    manager = SimpleNamespace(rooms={}, clock=None)
    ctx = SimpleNamespace(metrics=SimpleNamespace(registry=CollectorRegistry()), manager=manager)
    link = cluster_link.ClusterLink(SimpleNamespace(enhancer_device="cpu"), ctx)  # type: ignore[arg-type]
    # as if the last report was 10 s ago and the process used 10 s of CPU since: one core of two
    wall, cpu = time.monotonic(), time.process_time()
    link._cpu = (wall - 10.0, cpu - 10.0)
    share = link._load()["cpu"]
    assert 0.49 <= share <= 0.51, share   # 1/64 = 0.016 with the host's count


def test_a_front_reports_the_load_average_over_its_usable_cores(two_of_64_cores: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))   # one core's worth runnable
    front = SimpleNamespace(metrics=SimpleNamespace(registry=CollectorRegistry()),
                            reports={0: {"rooms": 1, "participants": 2}}, live=lambda: [0])
    node = cluster_front.FrontNode(front, SimpleNamespace(enhancer_device="cpu"))  # type: ignore[arg-type]
    load = node._load()
    assert load["cpu"] == 0.5, load   # 1/64 = 0.016 with the host's count
    assert load["rooms"] == 1.0 and load["workers"] == 1.0
