"""tests/loopback_guard.py: a test whose in-process ICE leaves 127.0.0.1 fails, naming where; a
test that leaves ICE pinned errors (and is unpinned); a test that gathered has its garbage
collected at its teardown.

The cases run a small test file in a pytest subprocess with only the guard loaded: real aiortc
peer connections that gather (an offer) and close; nothing is sent (no ICE servers, no remote).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aioice.ice
import pytest

from loopback_guard import is_loopback

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CASES = '''
import asyncio
import gc

from aiortc import RTCConfiguration, RTCPeerConnection

from mediaserver.patches import pin_host_addresses
from rtc_peer import loopback_ice


async def offer() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())   # gathers the host candidates
    await pc.close()


class Cycle:
    finalized: list[str] = []

    def __init__(self, name: str) -> None:
        self.name, self.me = name, self

    def __del__(self) -> None:
        Cycle.finalized.append(self.name)


def test_pinned() -> None:
    gc.disable()   # (until the last case) only an explicit collection frees a cycle
    with loopback_ice():
        asyncio.run(offer())
    Cycle("pinned")


def test_the_pinned_peers_garbage_was_collected_at_its_teardown() -> None:
    assert Cycle.finalized == ["pinned"]


def test_unpinned() -> None:
    asyncio.run(offer())


def test_leaks_the_pin() -> None:
    pin_host_addresses(["127.0.0.1"])
    asyncio.run(offer())


def test_after_the_leak() -> None:
    from mediaserver import patches

    gc.enable()
    assert not patches.describe()["pin_host_addresses"]   # the guard undid the leaked pin
'''


def _pytest(folder: Path) -> subprocess.CompletedProcess:
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "test_cases.py").write_text(CASES)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "loopback_guard",
                           "-p", "no:cacheprovider", "-q", "--rootdir", str(folder), str(folder)],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=120)


def test_unpinned_ice_fails_the_test_and_a_leaked_pin_errors(tmp_path: Path) -> None:
    addresses = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)   # unpinned, in order
    if not addresses:
        pytest.skip("this machine has no interface but loopback: an unpinned peer gathers nothing")
    r = _pytest(tmp_path)
    out = r.stdout
    assert r.returncode == 1, out
    summary = [line.split(" - ")[0] for line in out.splitlines()
               if line.startswith(("FAILED ", "ERROR "))]
    assert summary == ["FAILED test_cases.py::test_unpinned",
                       "ERROR test_cases.py::test_leaks_the_pin"], out
    assert "1 failed, 4 passed, 1 error" in out, out   # (the error at teardown follows a pass)
    said = {line.split(":")[2]: line for line in out.splitlines()
            if line.startswith("test_cases.py::")}   # the guard's messages, by test
    assert "gathered ICE off loopback: " + ", ".join(addresses) + " " in said["test_unpinned"], out
    assert "left ICE host addresses pinned" in said["test_leaks_the_pin"], out
    assert "off loopback" not in said["test_leaks_the_pin"], out   # pinned: gathered on loopback

def test_loopback_is_127_8_and_1_and_localhost_only() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["192.0.2.2", "fd00::2", "fe80::1%eth0", "0.0.0.0",
                                     "stun.l.google.com", ""]))
