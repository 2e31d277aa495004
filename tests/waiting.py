"""Wait on a condition, not on the clock: poll with a generous deadline, then the caller asserts.

``until`` in a test's event loop, ``poll`` where the test (or a benchmark) is plain blocking code.
The deadline only bounds a hang: nothing is asserted about how long it took.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar

T = TypeVar("T")


async def until(condition: Callable[[], object], *, timeout: float = 60.0, what: str = "",
                interval: float = 0.01) -> None:
    """Return as soon as ``condition()`` holds; raise AssertionError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"still waiting after {timeout:g} s: {what or condition}")
        await asyncio.sleep(interval)


def poll(condition: Callable[[], T], *, timeout: float = 120.0, what: str = "",
         interval: float = 0.2) -> T:
    """Blocking: return ``condition()``'s first truthy value; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout:g} s: {what or condition}")
        time.sleep(interval)
