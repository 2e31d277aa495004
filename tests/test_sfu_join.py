"""Joining a real server over /ws: room size, names, joining twice, ICE servers, env twins.

Signalling only (no media): each case is a WebSocket ``join`` and the server's reply.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Optional

import aiohttp
import pytest

from conftest import ServerProcess

pytestmark = pytest.mark.timeout(240)

STUN = ["stun:stun-a.example.org:3478", "stun:stun-b.example.org:3478"]
TURN = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]


class Socket:
    """One /ws connection and its replies."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session, self.ws = session, ws

    @classmethod
    async def open(cls, server: ServerProcess) -> "Socket":
        session = aiohttp.ClientSession()
        return cls(session, await session.ws_connect(server.ws_url))

    async def join(self, room: str, identity: str) -> dict:
        await self.ws.send_str(json.dumps({"type": "join", "room": room, "identity": identity}))
        return await self.reply("joined", "error")

    async def reply(self, *types: str) -> dict:
        """The next message of one of ``types`` (others, e.g. participant-joined, are passed over)."""
        while True:
            msg = await self.ws.receive(timeout=30)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if data["type"] in types:
                return data

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def joined_or_error(server: ServerProcess, room: str, identity: str,
                          sockets: list[Socket]) -> dict:
    sock = await Socket.open(server)
    sockets.append(sock)
    return await sock.join(room, identity)


def serve(tmp_path: Path, name: str, *extra: str, env: Optional[dict[str, str]] = None) -> ServerProcess:
    return ServerProcess(tmp_path / f"{name}.log", "--no-enhance", *extra,
                         env=dict(os.environ, **(env or {})))


async def test_room_size_duplicate_identity_and_joining_twice(tmp_path: Path) -> None:
    server = serve(tmp_path, "size", "--max-participants", "2")
    sockets: list[Socket] = []
    try:
        alice = await joined_or_error(server, "lobby", "alice", sockets)
        assert alice["type"] == "joined" and alice["participants"] == []
        bob = await joined_or_error(server, "lobby", "bob", sockets)
        assert bob["type"] == "joined" and [p["identity"] for p in bob["participants"]] == ["alice"]
        full = await joined_or_error(server, "lobby", "carol", sockets)
        assert full["type"] == "error" and full["message"] == "room is full", full
        other_room = await joined_or_error(server, "hall", "carol", sockets)
        assert other_room["type"] == "joined"          # the limit is per room
        twin = await joined_or_error(server, "hall", "carol", sockets)
        assert twin["type"] == "error" and "already in the room" in twin["message"], twin
        again = await sockets[0].join("hall", "dave")   # alice's socket, already in lobby
        assert again["type"] == "error" and again["message"] == "already joined", again
        await sockets[1].close()                          # bob leaves: a slot frees up
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            reply = await joined_or_error(server, "lobby", "carol2", sockets)
            if reply["type"] == "joined" or asyncio.get_running_loop().time() > deadline:
                break
            assert reply["message"] == "room is full", reply
            await asyncio.sleep(0.1)   # poll: the server handles bob's close on its own time
        assert reply["type"] == "joined", reply
        assert [p["identity"] for p in reply["participants"]] == ["alice"]
    finally:
        for s in sockets:
            await s.close()
        server.stop()


async def test_stun_and_turn_flags_reach_joined(tmp_path: Path) -> None:
    flags = [a for url in STUN for a in ("--stun", url)] + [a for url in TURN for a in ("--turn", url)]
    server = serve(tmp_path, "ice", *flags, "--turn-username", "user", "--turn-credential", "pw")
    sockets: list[Socket] = []
    try:
        joined = await joined_or_error(server, "lobby", "alice", sockets)
        assert joined["iceServers"] == [{"urls": STUN},
                                        {"urls": TURN, "username": "user", "credential": "pw"}]
    finally:
        for s in sockets:
            await s.close()
        server.stop()


async def test_environment_twins_and_flags_win(tmp_path: Path) -> None:
    env = {"MEDIASERVER_STUN": ",".join(STUN), "MEDIASERVER_TURN": ",".join(TURN),
           "MEDIASERVER_TURN_USERNAME": "user", "MEDIASERVER_TURN_CREDENTIAL": "pw",
           "MEDIASERVER_MAX_PARTICIPANTS": "2", "MEDIASERVER_ROOMS": "alpha,beta"}
    sockets: list[Socket] = []
    server = serve(tmp_path, "env", env=env)
    try:
        first = await joined_or_error(server, "alpha", "a", sockets)
        assert first["iceServers"] == [{"urls": STUN},
                                       {"urls": TURN, "username": "user", "credential": "pw"}]
        assert (await joined_or_error(server, "alpha", "b", sockets))["type"] == "joined"
        full = await joined_or_error(server, "alpha", "c", sockets)
        assert full["type"] == "error" and full["message"] == "room is full", full
        unknown = await joined_or_error(server, "gamma", "c", sockets)
        assert unknown["type"] == "error" and unknown["code"] == "unknown-room", unknown
    finally:
        for s in sockets:
            await s.close()
        sockets.clear()
        server.stop()
    # a flag given as well wins over its variable
    server = serve(tmp_path, "env-flag", "--max-participants", "3", "--rooms", "gamma", env=env)
    try:
        for name in ("a", "b", "c"):
            reply = await joined_or_error(server, "gamma", name, sockets)
            assert reply["type"] == "joined", reply
    finally:
        for s in sockets:
            await s.close()
        server.stop()
