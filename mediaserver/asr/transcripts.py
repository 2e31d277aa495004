"""Transcript so far, per room, bounded so a long call cannot grow memory without limit."""

from __future__ import annotations

from collections import deque

from .sink import Transcript


class TranscriptLog:
    def __init__(self, max_entries: int = 2000, max_rooms: int = 1000) -> None:
        self._max = max_entries
        self._max_rooms = max_rooms
        self._rooms: dict[str, deque[Transcript]] = {}  # insertion order: oldest room first

    def add(self, transcript: Transcript) -> None:
        self.open(transcript.room).append(transcript)

    def open(self, name: str) -> deque[Transcript]:
        """The room's log, created empty when a segment of it goes to the recognisers: its
        transcript exists (maybe still empty) while the finals are on their way."""
        room = self._rooms.get(name)
        if room is None:
            while len(self._rooms) >= self._max_rooms:
                self._rooms.pop(next(iter(self._rooms)))
            room = self._rooms[name] = deque(maxlen=self._max)
        return room

    def room(self, room: str) -> list[dict]:
        """Entries ordered by start time (recognisers may finish out of order)."""
        entries = sorted(self._rooms.get(room, ()), key=lambda t: (t.start_ms, t.identity))
        return [t.as_json() for t in entries]

    def has_room(self, room: str) -> bool:
        return room in self._rooms

    def drop_room(self, room: str) -> None:
        self._rooms.pop(room, None)
