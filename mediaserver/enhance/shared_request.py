"""One request to the shared inference process from outside the media path: the front of
``serve --workers N`` relays the model admin with it (``workers/admin_relay.py``).

A connection per request (admin calls are rare, and a connection never outlives an inference
process that the front restarts): connect, take the hello (the shared-memory descriptor that
comes with it is closed at once: no audio here), send one message, read until the reply with
the same ``req``, close. No torch, no numpy.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

from .shared_client import SharedStageError, handshake
from .shared_wire import ProtocolError, body_length, decode, encode

_reqs = itertools.count(1)


async def ask(path: str, message: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """Send ``message`` (a ``t`` and its fields; ``req`` is added) to the inference process
    listening on ``path``; return its reply. Raises SharedStageError when it is not there, closes
    the connection or does not answer within ``timeout_s``."""
    sock, _hello, fd = await asyncio.to_thread(handshake, path, min(timeout_s, 5.0))
    os.close(fd)
    req = next(_reqs)
    reader, writer = await asyncio.open_unix_connection(sock=sock)

    async def reply() -> dict[str, Any]:
        while True:
            msg = decode(await reader.readexactly(body_length(await reader.readexactly(4))))
            if msg.get("req") == req:
                return msg

    try:
        writer.write(encode({**message, "req": req}))
        await writer.drain()
        return await asyncio.wait_for(reply(), timeout_s)
    except (asyncio.IncompleteReadError, ConnectionError, ProtocolError) as exc:
        raise SharedStageError(f"the inference process at {path} did not answer: {exc!r}") from None
    except asyncio.TimeoutError:
        raise SharedStageError(f"the inference process at {path} did not answer within {timeout_s:g} s") from None
    finally:
        writer.close()
