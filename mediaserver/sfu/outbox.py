"""Per-socket send queue: nothing the server sends waits on one client's socket.

Every signalling message to a client goes through that socket's ``Outbox``: ``post()``
serialises the message, appends it to a bounded queue and returns at once; one writer task
per socket writes the queue to the WebSocket in order. A broadcast therefore costs one
append per participant, whatever state their sockets are in.

A client that does not read its socket fills the kernel's buffers, then aiohttp's, and then
the writer's ``send_str`` stops making progress. That client is a *slow consumer* and is
dropped (its transport aborted, which ends its session and removes its participant) when
either bound is crossed:

- ``queue-full``: more than ``max_messages`` messages, or more than ``max_messages`` times
  16 KiB, are waiting (an SDP offer is a few KiB, events are tens of bytes);
- ``stalled``: one message has not been written within ``stall_s`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any, Awaitable, Callable, Optional, Protocol

logger = logging.getLogger(__name__)


class TextSocket(Protocol):
    """What the outbox needs of ``aiohttp.web.WebSocketResponse``."""

    async def send_str(self, data: str) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class Outbox:
    """Bounded, ordered queue of text frames to one socket, written by one owned task.

    :param ws: the prepared WebSocket.
    :param abort: closes the connection at once, unsent data discarded (``transport.abort``).
    :param on_slow: called once, with ``"queue-full"`` or ``"stalled"``, before the abort.
    :param max_messages: messages that may wait before the consumer counts as slow.
    :param max_bytes: characters of JSON that may wait before the consumer counts as slow
        (default ``max_messages * AVERAGE_BOUND``).
    :param stall_s: seconds one message may take to be written, in seconds.
    """

    AVERAGE_BOUND = 16 * 1024   # characters per waiting message, on average, before it is too much

    def __init__(self, ws: TextSocket, *, abort: Callable[[], None], on_slow: Callable[[str], None],
                 max_messages: int = 256, max_bytes: Optional[int] = None,
                 stall_s: float = 10.0) -> None:
        if max_bytes is None:
            max_bytes = max_messages * self.AVERAGE_BOUND
        if max_messages < 1 or max_bytes < 1 or stall_s <= 0:
            raise ValueError("outbox bounds must be positive")
        self._ws = ws
        self._abort = abort
        self._on_slow = on_slow
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.stall_s = stall_s
        self._queue: deque[str] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        # requested close, after the queue: code, reason, what to await just before it
        self._close: Optional[tuple[int, bytes, Optional[Callable[[], Awaitable[None]]]]] = None
        self._task: Optional[asyncio.Task] = None
        self.dropped: Optional[str] = None   # the reason, once dropped as a slow consumer
        self.sent = 0

    # -- producer side (never blocks) --------------------------------------------------------
    @property
    def accepting(self) -> bool:
        return self._close is None and self.dropped is None

    def __len__(self) -> int:
        """Messages waiting to be written."""
        return len(self._queue)

    def post(self, message: dict[str, Any]) -> None:
        """Queue ``message`` (JSON-serialisable); raises ``ConnectionError`` once closing."""
        if not self.accepting:
            raise ConnectionError(f"socket closing ({self.dropped or 'closed'})")
        text = json.dumps(message)
        self._queue.append(text)
        self._bytes += len(text)
        if len(self._queue) > self.max_messages or self._bytes > self.max_bytes:
            self._drop("queue-full")
            raise ConnectionError("socket dropped: slow consumer (queue-full)")
        self._wake.set()

    def close(self, code: int = 1000, message: bytes = b"", *,
              before: Optional[Callable[[], Awaitable[None]]] = None) -> None:
        """Close the socket after what is already queued (the writer sends the close frame);
        ``before`` is awaited by the writer just before it closes (within ``stall_s``)."""
        if self.accepting:
            self._close = (code, message, before)
            self._wake.set()

    # -- writer task -------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ws-outbox")

    async def finish(self) -> None:
        """Flush what is queued, send the close frame, stop the writer.

        Takes at most ``stall_s`` in all; a consumer that does not take the rest in that
        time is dropped as ``stalled``.
        """
        self.close()
        task = self._task
        if task is None:
            return
        try:
            if self.dropped is None:   # a dropped consumer's writer may be stuck in a write
                done, _ = await asyncio.wait({task}, timeout=self.stall_s)
                if not done:
                    self._drop("stalled")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._close is not None or self.dropped is not None:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                text = self._queue[0]
                if not await self._bounded(self._ws.send_str(text)):
                    return
                self._queue.popleft()
                self._bytes -= len(text)
                self.sent += 1
            if self.dropped is None and self._close is not None:
                code, message, before = self._close
                try:   # aiohttp waits for the client's close frame; a silent one is cut off
                    await asyncio.wait_for(self._close_socket(code, message, before), self.stall_s)
                except asyncio.TimeoutError:
                    self._abort()
        except (ConnectionError, RuntimeError) as exc:
            # the peer went away (reset, or aiohttp refusing writes after close): nothing to flush
            logger.debug("outbox writer ended: %r", exc)
            self._queue.clear()
            self._bytes = 0

    async def _close_socket(self, code: int, message: bytes,
                            before: Optional[Callable[[], Awaitable[None]]]) -> None:
        if before is not None:
            await before()
        await self._ws.close(code=code, message=message)

    async def _bounded(self, write: Any) -> bool:
        """Await one write for at most ``stall_s``; a stall drops the consumer (False)."""
        try:
            await asyncio.wait_for(write, self.stall_s)
            return True
        except asyncio.TimeoutError:
            self._drop("stalled")
            return False

    def _drop(self, reason: str) -> None:
        if self.dropped is not None:
            return
        self.dropped = reason
        self._queue.clear()
        self._bytes = 0
        self._wake.set()
        try:
            self._on_slow(reason)
        finally:
            self._abort()
