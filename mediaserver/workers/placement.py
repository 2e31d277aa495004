"""Which media worker hosts a room (sans-I/O: the front's bookkeeping, no sockets).

A room lives on exactly one worker. The first ``/ws`` that joins a room places it on the
live worker with the least load (streams, then rooms, as last reported by the workers'
``/healthz``, plus the sockets the front relayed since that report); every later socket of
that room goes to the same worker. The room is forgotten when its last relayed socket closes
(the worker drops an empty room too), or at once when its worker is lost, so a participant
who reconnects after a crash is placed on a live worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class WorkerLoad:
    """One worker's load as the front knows it. ``alive``: its process runs and answered."""

    alive: bool = False
    streams: int = 0      # publishing participants (from the worker's /healthz)
    rooms: int = 0
    pending: int = 0      # sockets relayed to it since that report (not counted there yet)


class NoWorker(Exception):
    """Every worker is down (restarting): the front answers 503 with Retry-After."""


@dataclass
class Placement:
    """Room → worker index, and the number of relayed sockets per room."""

    workers: int
    loads: list[WorkerLoad] = field(default_factory=list)
    _room_worker: dict[str, int] = field(default_factory=dict)
    _room_sockets: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.loads:
            self.loads = [WorkerLoad() for _ in range(self.workers)]

    def worker_of(self, room: str) -> Optional[int]:
        return self._room_worker.get(room)

    def rooms(self) -> list[str]:
        """Every room placed on a worker now (a ``--redis-url`` front's rooms to claim)."""
        return list(self._room_worker)

    def rooms_of(self, index: int) -> list[str]:
        return [r for r, w in self._room_worker.items() if w == index]

    def acquire(self, room: str) -> int:
        """A socket joins ``room``: its worker (placing the room if new). Raises NoWorker."""
        index = self._room_worker.get(room)
        if index is None:
            index = self.least_loaded()
            self._room_worker[room] = index
        self._room_sockets[room] = self._room_sockets.get(room, 0) + 1
        self.loads[index].pending += 1
        return index

    def release(self, room: str, index: int) -> None:
        """A socket of ``room`` relayed to worker ``index`` closed."""
        if self._room_worker.get(room) != index:
            return   # the room was re-placed after its worker was lost
        left = self._room_sockets.get(room, 1) - 1
        if left <= 0:
            self._room_sockets.pop(room, None)
            del self._room_worker[room]
        else:
            self._room_sockets[room] = left

    def least_loaded(self) -> int:
        """The live worker with the fewest streams (pending sockets count as streams), then rooms."""
        live = [i for i, load in enumerate(self.loads) if load.alive]
        if not live:
            raise NoWorker("no media worker is running (restarting)")
        return min(live, key=lambda i: (self.loads[i].streams + self.loads[i].pending,
                                        self.loads[i].rooms, i))

    def report(self, index: int, *, streams: int, rooms: int) -> None:
        """A fresh /healthz of worker ``index``: it counts everything relayed so far."""
        load = self.loads[index]
        load.alive, load.streams, load.rooms, load.pending = True, streams, rooms, 0

    def lost(self, index: int) -> list[str]:
        """Worker ``index`` died: it takes no new room; returns the rooms it had (forgotten)."""
        self.loads[index] = WorkerLoad(alive=False)
        rooms = self.rooms_of(index)
        for room in rooms:
            del self._room_worker[room]
            self._room_sockets.pop(room, None)
        return rooms
