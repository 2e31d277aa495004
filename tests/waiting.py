"""Wait on a condition, not on the clock: poll with a generous deadline, then the caller asserts."""

from __future__ import annotations

import asyncio
from typing import Callable


async def until(condition: Callable[[], bool], *, timeout: float = 60.0, what: str = "") -> None:
    """Return as soon as ``condition()`` holds; raise AssertionError after ``timeout`` seconds.

    The deadline only bounds a hang: nothing is asserted about how long it took.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"still waiting after {timeout} s: {what or condition}")
        await asyncio.sleep(0.01)
