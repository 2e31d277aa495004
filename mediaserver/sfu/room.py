"""Rooms: who is in which room, and wiring every publisher to every other participant."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

from .mediaclock import ClockStream, MediaClock
from .metrics import SfuMetrics
from .names import BadName, check_room, identity_key, normalise_identity
from .participant import Participant

logger = logging.getLogger(__name__)


class RoomError(ValueError):
    """A join that cannot be admitted; ``code`` is the signalling error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Room:
    """Participants of one room; fan-out is every publisher to every other participant."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.participants: dict[str, Participant] = {}

    def others(self, me: Participant) -> list[Participant]:
        return [p for p in self.participants.values() if p is not me]

    def broadcast(self, message: dict, *, exclude: Optional[Participant] = None) -> None:
        """Queue ``message`` to everyone (but ``exclude``); awaits no socket (sfu/outbox.py)."""
        for p in list(self.participants.values()):
            if p is not exclude and not p.closed:
                p.notify(message)


def count_publishers(rooms: Iterable[Room]) -> int:
    """Participants of ``rooms`` that send audio (:attr:`Participant.sends_audio`): the
    ``publishers`` of ``/healthz`` and of a cluster node's load, which placement compares
    first. Listeners and participants without an answered offer are not counted."""
    return sum(1 for room in rooms for p in room.participants.values() if p.sends_audio)


class RoomManager:
    """Admits and removes participants, and keeps the media clock's streams in step."""

    def __init__(self, *, clock: MediaClock, metrics: SfuMetrics, max_participants: int = 16,
                 allowed_rooms: Optional[set[str]] = None, max_rooms: int = 50) -> None:
        self.clock = clock
        self.metrics = metrics
        self.max_participants = max_participants
        self.max_rooms = max_rooms
        self.allowed_rooms = allowed_rooms
        self.rooms: dict[str, Room] = {}
        # a publisher is one once its offer is answered: counted at each scrape, as /healthz does
        metrics.watch_publishers(lambda: count_publishers(self.rooms.values()))

    @staticmethod
    def check_names(room: Any, identity: Any) -> str:
        """Check both names (whole strings, names.py); return the identity in normal form."""
        try:
            check_room(room)
        except BadName as exc:
            raise RoomError("unknown-room", str(exc)) from None
        try:
            return normalise_identity(identity)
        except BadName as exc:
            raise RoomError("bad-request", str(exc)) from None

    def admit(self, participant: Participant) -> Room:
        """Add a participant that has not published yet; raise ``RoomError`` if refused."""
        if self.check_names(participant.room, participant.identity) != participant.identity:
            raise RoomError("bad-request", "identity is not in normal form (names.normalise_identity)")
        if self.allowed_rooms is not None and participant.room not in self.allowed_rooms:
            raise RoomError("unknown-room", f"room {participant.room!r} does not exist")
        room = self.rooms.get(participant.room)
        key = identity_key(participant.identity)
        if room is not None and any(identity_key(o) == key for o in room.participants):
            raise RoomError("bad-request", f"identity {participant.identity!r} is already in the room")
        if room is not None and len(room.participants) >= self.max_participants:
            raise RoomError("bad-request", "room is full")
        if room is None and len(self.rooms) >= self.max_rooms:
            self.metrics.limit_refusals.labels("rooms").inc()
            raise RoomError("server-full", f"the server has its maximum of {self.max_rooms} rooms "
                                           "(--max-rooms); join an existing room or try later")
        if room is None:
            room = self.rooms[participant.room] = Room(participant.room)
        room.participants[participant.identity] = participant
        self._update_gauges()
        return room

    def published(self, participant: Participant) -> None:
        """After the first answer: the newcomer hears every talker of the room, and, if its
        microphone sends (:attr:`Participant.sends_audio`), goes on the media clock and is
        heard by everyone. A listener (audio offered ``recvonly``) takes no place on the clock
        and no slot at the others: it would cost a publisher's pull, enhancement and encode
        per tick, and every other participant an m-line of silence."""
        room = self.rooms[participant.room]
        for other in room.others(participant):
            if self._on_clock(other):
                assert other.stream is not None
                self._subscribe(participant, other.stream)
        self.routed(participant)

    def routed(self, participant: Participant) -> None:
        """Put the participant's stream on the clock and to the others, or take it off, as its
        microphone now sends or not (after the first answer, and after each client re-offer:
        a console that starts or stops talking by renegotiating)."""
        room = self.rooms.get(participant.room)
        stream = participant.stream
        if room is None or stream is None or room.participants.get(participant.identity) is not participant:
            return
        if participant.sends_audio and not self._on_clock(participant):
            stream.ready()
            self.clock.add(stream)
            for other in room.others(participant):
                if other.publishing:
                    self._subscribe(other, stream)
        elif not participant.sends_audio and self._on_clock(participant):
            self.clock.remove(stream)
            for other in room.others(participant):
                other.unsubscribe(stream)

    def _on_clock(self, participant: Participant) -> bool:
        return participant.stream is not None and participant.stream in self.clock.streams

    @staticmethod
    def _subscribe(subscriber: Participant, stream: ClockStream) -> None:
        # one participant's broken connection must not fail the newcomer's join
        try:
            subscriber.subscribe(stream)
        except Exception:
            logger.exception("%s/%s: subscribing to %s failed; the others go on",
                             subscriber.room, subscriber.identity, stream.identity)

    async def remove(self, participant: Participant) -> None:
        """Tear down one participant; the others drop its slot and keep flowing."""
        room = self.rooms.get(participant.room)
        if room is None or room.participants.get(participant.identity) is not participant:
            await participant.close()
            return
        del room.participants[participant.identity]
        stream = participant.stream
        if stream is not None:
            self.clock.remove(stream)
            for other in room.participants.values():
                other.unsubscribe(stream)
            stream.detach_all()
        await participant.close()
        if stream is not None and stream.on_close is not None:
            stream.on_close()
        if not room.participants and self.rooms.get(room.name) is room:
            del self.rooms[room.name]   # (another removal may have got here first)
        self._update_gauges()
        room.broadcast({"type": "participant-left", "identity": participant.identity})

    def _update_gauges(self) -> None:
        self.metrics.rooms.set(len(self.rooms))
        self.metrics.participants.set(sum(len(r.participants) for r in self.rooms.values()))
