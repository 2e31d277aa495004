"""Reading a test server's /metrics (Prometheus text) with the tests' metrics token."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import METRICS_TOKEN, ServerProcess


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """One sample from /metrics (0 when the series does not exist yet)."""
    request = urllib.request.Request(server.url + "metrics",
                                     headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def metric_async(server: ServerProcess, name: str, **labels: str) -> float:
    return await asyncio.to_thread(metric, server, name, **labels)


async def wait_metric(server: ServerProcess, name: str, *, at_least: float | None = None,
                      equal: float | None = None, timeout: float = 60.0, **labels: str) -> float:
    """Poll until the sample is ``>= at_least`` (or ``== equal``); AssertionError after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await metric_async(server, name, **labels)
        if (at_least is not None and value >= at_least) or (equal is not None and value == equal):
            return value
        if loop.time() > deadline:
            want = f">= {at_least}" if at_least is not None else f"== {equal}"
            raise AssertionError(f"{name}{labels} is {value}, expected {want} within {timeout} s")
        await asyncio.sleep(0.1)
