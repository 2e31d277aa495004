"""What the shared inference process and its media workers agree on: the slot table in shared
memory and the framing of the small control messages on the Unix socket. No torch, no asyncio
state: both sides import it (a media worker never imports torch for the shared enhancer).

Shared memory is a ``memfd`` (``os.memfd_create``) that the inference process creates once, at
start, with a fixed number of slots, and hands to every worker in the connection's first message
(``SCM_RIGHTS``; the name is unlinked from the start, so a killed process leaks nothing in
``/dev/shm`` and no ``resource_tracker`` of any worker can unlink it under the others). It is
never regrown: a full table refuses ``open`` (the stream is then passed through unenhanced).

Layout for ``capacity`` slots, every array slot-major, 64-byte aligned::

    inp      float32 [capacity, 960]   the worker's input frame        (worker writes)
    raw      float32 [capacity, 960]   input delayed by 480 samples    (inference writes)
    enh      float32 [capacity, 960]   enhanced, aligned with raw      (inference writes)
    speech   uint8   [capacity]        VAD speech flag of the frame    (inference writes)
    enabled  uint8   [capacity]        the stream's enhancement switch (worker writes)
    atten    float32 [capacity]        attenuation limit, dB 0..100    (worker writes)

A slot belongs to one stream of one worker between ``opened`` and ``close``. Ownership moves
only with messages (tick → done), so no lock is needed: a worker writes its slots' ``inp``,
``enabled``, ``atten`` before it sends ``tick`` and reads ``raw``/``enh``/``speech`` after ``done``.

Messages: a 4-byte big-endian length, then UTF-8 JSON (at most :data:`MAX_MESSAGE` bytes). Audio
never travels in them.
"""

from __future__ import annotations

import json
import mmap
from typing import Any, Optional

import numpy as np

FRAME = 960  # samples per slot frame: 20 ms at 48 kHz, the media clock's frame
MAX_MESSAGE = 1 << 20  # bytes: a tick of 1000 streams is ~20 kB
_ALIGN = 64
_HEADER = 4


class ProtocolError(ValueError):
    """A malformed or oversized control message."""


def encode(message: dict[str, Any]) -> bytes:
    """One framed message: length prefix + compact JSON."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return len(body).to_bytes(_HEADER, "big") + body


def body_length(header: bytes) -> int:
    """The body length a 4-byte header announces; ProtocolError if it is out of bounds."""
    n = int.from_bytes(header, "big")
    if n > MAX_MESSAGE:
        raise ProtocolError(f"peer announced a message of {n} bytes (limit {MAX_MESSAGE})")
    return n


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"bad message: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError(f"bad message: {body[:80]!r}")
    return message


class FrameParser:
    """Sans-I/O reader of the framed messages: ``feed(bytes)`` returns the messages completed
    by them, in order (a message may span any number of feeds). ProtocolError for an
    oversized or malformed one; the parser is then unusable (close the connection)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._buffer
        buf += data
        messages: list[dict[str, Any]] = []
        start = 0
        while len(buf) - start >= _HEADER:
            end = start + _HEADER + body_length(bytes(buf[start : start + _HEADER]))
            if len(buf) < end:
                break
            messages.append(decode(bytes(buf[start + _HEADER : end])))
            start = end
        del buf[:start]
        return messages


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class SlotTable:
    """Typed numpy views of the slot arrays over one shared ``mmap`` (see the module docstring).

    Args:
        buffer: the mapping, at least :meth:`size` (capacity) bytes.
        capacity: number of slots.
    """

    def __init__(self, buffer: mmap.mmap, capacity: int) -> None:
        if len(buffer) < self.size(capacity):
            raise ValueError(f"shared block of {len(buffer)} bytes is too small for {capacity} slots")
        self.capacity = capacity
        self._buffer = buffer
        offset = 0
        views = {}
        for name, dtype, shape in self._fields(capacity):
            count = int(np.prod(shape))
            views[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += _aligned(count * np.dtype(dtype).itemsize)
        self.inp: np.ndarray = views["inp"]
        self.raw: np.ndarray = views["raw"]
        self.enh: np.ndarray = views["enh"]
        self.speech: np.ndarray = views["speech"]
        self.enabled: np.ndarray = views["enabled"]
        self.atten: np.ndarray = views["atten"]

    @staticmethod
    def _fields(capacity: int) -> list[tuple[str, type, tuple[int, ...]]]:
        return [("inp", np.float32, (capacity, FRAME)), ("raw", np.float32, (capacity, FRAME)),
                ("enh", np.float32, (capacity, FRAME)), ("speech", np.uint8, (capacity,)),
                ("enabled", np.uint8, (capacity,)), ("atten", np.float32, (capacity,))]

    @classmethod
    def size(cls, capacity: int) -> int:
        """Bytes needed for ``capacity`` slots (~11.5 kB per slot)."""
        return sum(_aligned(int(np.prod(shape)) * np.dtype(dtype).itemsize)
                   for _, dtype, shape in cls._fields(capacity))

    def close(self) -> None:
        """Drop the views and unmap (outputs handed out are copies, so nothing still points in)."""
        for name in ("inp", "raw", "enh", "speech", "enabled", "atten"):
            setattr(self, name, None)
        try:
            self._buffer.close()
        except BufferError:  # a view still alive somewhere: the mapping goes with it
            pass


class SlotPool:
    """Free list of slot indices; a slot freed while a batch holds it waits for that batch to end."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = list(range(capacity - 1, -1, -1))  # pop() hands out 0, 1, 2, ...
        self._held: set[int] = set()  # slots in the batch being collected or run
        self._deferred: list[int] = []
        self.high_water = 0

    @property
    def in_use(self) -> int:
        return self.capacity - len(self._free)

    def take(self) -> Optional[int]:
        if not self._free:
            return None
        slot = self._free.pop()
        self.high_water = max(self.high_water, self.in_use)
        return slot

    def give_back(self, slot: int) -> None:
        if slot in self._held:
            self._deferred.append(slot)
        else:
            self._free.append(slot)

    def hold(self, slots: set[int]) -> None:
        self._held = slots

    def release_held(self) -> None:
        self._held = set()
        self._free.extend(self._deferred)
        self._deferred.clear()
