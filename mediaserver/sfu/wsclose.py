"""Closing a WebSocket that another task reads, with the close handshake completed.

aiohttp's ``close()`` (aiohttp 3.9-3.14, ``web_ws.py``), called while another task waits in
``receive()`` on the same socket, sends the close frame, ends that ``receive()`` with
``CLOSING`` and closes the transport at once: it does not wait for the peer's close frame.
The stop of the server (``sfu/drain.py``) needs that wait. A peer answers a close frame only
after it has read every message before it, so what the server does after the answer comes
after the client has read ``server-shutdown``; closing the peer connection before it (DTLS
close_notify, by UDP, straight from the media worker) can reach the client first, which then
reports its media failed instead of the server's stop (2 of 8 stops under load, issue 14).

:class:`Reader` reads the socket for its owner's loop (``async for msg in reader``) and can be
stopped between messages from another task (:meth:`Reader.stop`); a ``close()`` called after
the stop waits for the peer's close frame (the socket's close timeout), as aiohttp does when
nothing else reads.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Protocol

from aiohttp import WSMessage, WSMsgType

_ENDS = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


class ReadableSocket(Protocol):
    """What the reader needs of ``aiohttp.web.WebSocketResponse``."""

    async def receive(self, timeout: Optional[float] = None) -> Any: ...


class Reader:
    """The messages of one WebSocket for one consuming task, until the socket closes or
    :meth:`stop` is called (``async for`` ends as it does over the socket itself)."""

    def __init__(self, ws: ReadableSocket) -> None:
        self._ws = ws
        self._stopped = asyncio.get_running_loop().create_future()
        self._receive: Optional[asyncio.Future[WSMessage]] = None

    @property
    def stopped(self) -> bool:
        return self._stopped.done()

    async def stop(self) -> None:
        """Stop reading: the consumer's loop ends after the message it is handling (if any);
        returns once no ``receive()`` waits on the socket any more, so the caller's
        ``close()`` completes the close handshake. A message that arrives meanwhile stays
        unread (the close reads past it)."""
        if not self._stopped.done():
            self._stopped.set_result(None)
        receive = self._receive
        if receive is not None and not receive.done():
            receive.cancel()
        if receive is not None:
            await asyncio.gather(receive, return_exceptions=True)

    def __aiter__(self) -> "Reader":
        return self

    async def __anext__(self) -> WSMessage:
        if self._stopped.done():
            raise StopAsyncIteration
        receive = self._receive = asyncio.ensure_future(self._ws.receive())
        try:
            await asyncio.wait({receive, self._stopped}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            receive.cancel()
            raise
        if receive.done() and not receive.cancelled():
            self._receive = None
            msg = receive.result()   # (read as the stop came: handed over, the next call ends)
            if msg.type in _ENDS:
                raise StopAsyncIteration
            return msg
        await self.stop()   # (the stop came first: no receive() is left waiting)
        raise StopAsyncIteration
