"""Which media worker hosts a room (sans-I/O: the front's bookkeeping, no sockets).

A room lives on exactly one worker. The first ``/ws`` that joins a room places it on the
live worker with the least load (:func:`load_rank`): its *publishers* (participants that send
audio, the ``publishers`` of its last ``/healthz``) plus the sockets the front relayed to it
since that report (each may be a publisher: a burst of joins between two polls spreads), then
its rooms (the rooms the front placed there and has not forgotten: its own bookkeeping, exact
at once, where the worker's report may not count a room whose join it has not read yet), then
the smaller index. Listeners and joined participants without an answered
offer are no publishers, so a worker full of listeners is not "loaded". Every later socket of
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
    publishers: int = 0   # participants that send audio (its last /healthz ``publishers``)
    pending: int = 0      # sockets relayed to it since that report (not counted there yet)


def load_rank(index: int, load: WorkerLoad, rooms: int) -> tuple[int, int, int]:
    """Worker ``index``'s place in the order new rooms go to, smaller first: publishers plus
    pending sockets, then ``rooms`` (placed on it), then the index."""
    return (load.publishers + load.pending, rooms, index)


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

    def load_of(self, index: int) -> dict[str, int]:
        """What placement compares for worker ``index`` (the front's ``/healthz`` ``load``)."""
        load = self.loads[index]
        return {"publishers": load.publishers, "pending": load.pending,
                "rooms": len(self.rooms_of(index))}

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
        """The live worker first in :func:`load_rank` (fewest publishers and pending sockets,
        then rooms placed on it, then index)."""
        live = [i for i, load in enumerate(self.loads) if load.alive]
        if not live:
            raise NoWorker("no media worker is running (restarting)")
        rooms = [0] * len(self.loads)
        for w in self._room_worker.values():
            rooms[w] += 1
        return min(live, key=lambda i: load_rank(i, self.loads[i], rooms[i]))

    def report(self, index: int, *, publishers: int) -> None:
        """A fresh /healthz of worker ``index`` (its ``publishers``): it counts everything
        relayed so far."""
        load = self.loads[index]
        load.alive, load.publishers, load.pending = True, publishers, 0

    def lost(self, index: int) -> list[str]:
        """Worker ``index`` died: it takes no new room; returns the rooms it had (forgotten)."""
        self.loads[index] = WorkerLoad(alive=False)
        rooms = self.rooms_of(index)
        for room in rooms:
            del self._room_worker[room]
            self._room_sockets.pop(room, None)
        return rooms
