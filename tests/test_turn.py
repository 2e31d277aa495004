"""Per-join TURN credentials (``--turn-secret``) against a real coturn on 127.0.0.1.

coturn runs with ``use-auth-secret``; the media server mints one TURN REST pair per join.
A client that may use relay candidates only (ICE transport policy relay) must reach the
room through coturn with the pair it was handed, and coturn must refuse an expired pair,
one signed with another secret, and one whose expiry was edited.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import aiohttp
import numpy as np
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from conftest import ServerProcess, client_summary, espeak_speech, start_client
from mediaserver.audio import read_audio
from mediaserver.sfu.turn import IceServers, rest_credential

IN_CI = os.environ.get("CI", "").lower() == "true"
TURNSERVER = shutil.which("turnserver")
SECRET = "coturn-test-secret"
ROOM = "relayed"


class Coturn:
    """``turnserver`` with use-auth-secret on 127.0.0.1, relaying to loopback peers."""

    def __init__(self, workdir: Path, secret: str) -> None:
        if TURNSERVER is None:
            if IN_CI:
                raise RuntimeError("coturn is missing (apt-get install -y coturn)")
            pytest.skip("coturn is not installed (apt-get install -y coturn)")
        self.port = _free_udp_port()
        low = random.randrange(50000, 60000, 200)
        self.log_path = workdir / "coturn.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [TURNSERVER, "-n", "--listening-ip=127.0.0.1", f"--listening-port={self.port}",
             "--relay-ip=127.0.0.1", f"--min-port={low}", f"--max-port={low + 199}",
             "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=mediaserver.test",
             "--no-tls", "--no-dtls", "--no-cli", "--no-tcp-relay", "--allow-loopback-peers",
             "--log-file=stdout", "--simple-log", "--verbose",
             f"--pidfile={workdir / 'coturn.pid'}", f"--db={workdir / 'coturn.sqlite'}"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Poll with STUN Binding requests until coturn answers (generous deadline)."""
        request = stun.Message(message_method=stun.Method.BINDING,
                               message_class=stun.Class.REQUEST)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"coturn exited:\n{self.log()[-3000:]}")
                sock.sendto(bytes(request), ("127.0.0.1", self.port))
                try:
                    data, _ = sock.recvfrom(2048)
                except (socket.timeout, ConnectionRefusedError):
                    continue
                if stun.parse_message(data).transaction_id == request.transaction_id:
                    return
        raise RuntimeError(f"coturn did not answer STUN:\n{self.log()[-3000:]}")

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    server = Coturn(tmp_path, SECRET)
    yield server
    server.stop()


async def allocate(port: int, username: str, password: str) -> tuple[str, int]:
    """One TURN allocation over UDP; returns the relayed address (raises if refused)."""
    transport, _ = await asyncio.wait_for(create_turn_endpoint(
        asyncio.DatagramProtocol, server_addr=("127.0.0.1", port), username=username,
        password=password), 20)
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()


def refused(port: int, username: str, password: str) -> str:
    """The STUN error of an allocation that must fail."""
    with pytest.raises(Exception) as info:
        asyncio.run(allocate(port, username, password))
    return str(info.value)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64))))) if x.size else 0.0


# -- the minting, without a network ----------------------------------------------------
def test_rest_credential_is_coturns_hmac_of_the_username() -> None:
    import base64
    import hashlib
    import hmac

    cred = rest_credential("s3", expires=1_900_000_000, user_id="abc")
    assert cred.username == "1900000000:abc"
    want = base64.b64encode(hmac.new(b"s3", b"1900000000:abc", hashlib.sha1).digest()).decode()
    assert cred.credential == want
    with pytest.raises(ValueError):
        rest_credential("s3", expires=1, user_id="a:b")  # would shift coturn's split
    with pytest.raises(ValueError):
        rest_credential("", expires=1, user_id="a")


def test_every_join_gets_its_own_pair_and_the_server_none() -> None:
    ice = IceServers(stun=["stun:127.0.0.1:3478"], turn=["turn:127.0.0.1:3478"], secret="s",
                     ttl_s=600)
    first, second = ice.for_join(now=1000.0), ice.for_join(now=1000.0)
    assert first[0] == {"urls": ["stun:127.0.0.1:3478"]}
    a, b = first[1], second[1]
    assert a["username"] != b["username"] and a["credential"] != b["credential"]
    assert a["username"].startswith("1600:")  # expiry = now + ttl
    assert ice.for_server() == [{"urls": ["stun:127.0.0.1:3478"]}]
    static = IceServers(stun=[], turn=["turn:t"], username="u", credential="c")
    assert static.for_join(now=0) == [{"urls": ["turn:t"], "username": "u", "credential": "c"}]
    assert static.for_server() == static.for_join(now=0)


# -- against coturn --------------------------------------------------------------------
def test_coturn_refuses_expired_forged_and_edited_credentials(coturn: Coturn) -> None:
    now = int(time.time())
    good = rest_credential(SECRET, expires=now + 600, user_id="control")
    relayed = asyncio.run(allocate(coturn.port, good.username, good.credential))
    assert relayed[0] == "127.0.0.1"  # the control: this coturn accepts a fresh pair

    expired = rest_credential(SECRET, expires=now - 5, user_id="late")
    assert "401" in refused(coturn.port, expired.username, expired.credential)
    forged = rest_credential("another-secret", expires=now + 600, user_id="forged")
    assert "401" in refused(coturn.port, forged.username, forged.credential)
    # an expired pair whose expiry was pushed forward: the HMAC no longer matches
    edited = f"{now + 600}:late"
    assert "401" in refused(coturn.port, edited, expired.credential)


def test_server_minted_credential_expires_after_turn_ttl(coturn: Coturn, start_server) -> None:
    server: ServerProcess = start_server("--no-enhance", "--turn", coturn.url,
                                         "--turn-secret", SECRET, "--turn-ttl", "1")

    async def join() -> dict:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.ws_url) as ws:
                await ws.send_json({"type": "join", "room": ROOM, "identity": "short"})
                joined = await ws.receive_json(timeout=30)
                await ws.send_json({"type": "leave"})
                return joined

    before = time.time()
    joined = asyncio.run(join())
    assert joined["type"] == "joined", joined
    (turn,) = [s for s in joined["iceServers"] if "username" in s]
    assert turn["urls"] == [coturn.url]
    expiry = int(turn["username"].split(":")[0])
    assert int(before) <= expiry <= int(time.time()) + 1
    while time.time() <= expiry + 1:   # past the expiry by coturn's clock too
        time.sleep(0.2)
    assert "401" in refused(coturn.port, turn["username"], turn["credential"])


def test_relay_only_client_talks_through_coturn_with_its_minted_pair(
        coturn: Coturn, start_server, tmp_path: Path) -> None:
    server: ServerProcess = start_server("--no-enhance", "--turn", coturn.url,
                                         "--turn-secret", SECRET)
    relay_voice = espeak_speech(tmp_path / "relay.wav", "This voice goes through the relay.",
                                seconds=6.0)
    direct_voice = espeak_speech(tmp_path / "direct.wav", "And this one goes straight there.",
                                 seconds=6.0)
    relay_dir, direct_dir = tmp_path / "relay_rec", tmp_path / "direct_rec"
    direct = start_client(server.url, ROOM, "direct", "--send", str(direct_voice),
                          "--record-dir", str(direct_dir), "--duration", "14",
                          log=tmp_path / "direct.log")
    relay = start_client(server.url, ROOM, "relay", "--relay", "--send", str(relay_voice),
                         "--record-dir", str(relay_dir), "--duration", "12",
                         log=tmp_path / "relay.log")
    relay_summary = client_summary(relay, timeout=180)
    direct_summary = client_summary(direct, timeout=180)

    # relay only: the client offered no host or server-reflexive candidate at all
    assert relay_summary["local_candidate_types"] == ["relay"], relay_summary
    assert direct_summary["local_candidate_types"] == ["host"]
    assert relay_summary["remote"]["direct"]["frames_received"] > 150, relay_summary
    assert direct_summary["remote"]["relay"]["frames_received"] > 150, direct_summary
    heard, rate = read_audio(direct_dir / "relay.wav")
    assert rms(heard) > 0.01, "the relayed voice did not arrive"
    heard, rate = read_audio(relay_dir / "direct.wav")
    assert rms(heard) > 0.01, "the voice sent to the relayed client did not arrive"

    # coturn authenticated exactly the pair the server minted for this join, and relayed
    # the call's bytes for it
    minted = dict(re.findall(r"TURN credential (\S+) for \S+/(\S+)", server.tail(200_000)))
    names = {identity: username for username, identity in minted.items()}
    assert set(names) == {"relay", "direct"} and names["relay"] != names["direct"]
    deadline = time.monotonic() + 60
    usage: list[tuple[int, int]] = []
    while time.monotonic() < deadline and not usage:
        usage = [(int(rb), int(sb)) for user, rb, sb in re.findall(
            r"usage: realm=<[^>]*>, username=<([^>]*)>, rp=\d+, rb=(\d+), sp=\d+, sb=(\d+)",
            coturn.log()) if user == names["relay"]]
        time.sleep(0.5)
    assert usage, f"coturn never reported a session of {names['relay']}:\n{coturn.log()[-3000:]}"
    received, sent = map(sum, zip(*usage))
    assert received > 20_000 and sent > 20_000, usage   # ~6 s of Opus each way, plus ICE
    assert names["direct"] not in coturn.log()   # the host-path client never touched it
