"""Owned asyncio tasks: a component that starts a task cancels and awaits it on stop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Optional


async def cancel_and_wait(task: Optional["asyncio.Task[Any]"]) -> None:
    """Cancel ``task`` (if any) and wait until it has really finished."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
