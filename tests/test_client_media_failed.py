"""``mediaserver client`` exits non-zero when its media connection never connected.

A new user who pinned the client to 127.0.0.1 against a server offering other candidates got
exit 0, no errors and empty recordings. Now the summary carries a ``media-failed`` error and the
exit status is 1. Staying 0 s ends the call before ICE can finish (setRemoteDescription returns
before the checks complete), which makes the failure deterministic on loopback; 4 s connects.
"""

from __future__ import annotations

import json

from conftest import start_client


def _run(server, identity: str, duration: str) -> tuple[int, dict]:
    proc = start_client(server.url, "media-failed", identity, "--duration", duration)
    out, _ = proc.communicate(timeout=120)
    text = out.decode()
    return proc.returncode, json.loads(text[text.find("{"):])


def test_a_call_whose_media_never_connected_fails(start_server) -> None:
    server = start_server("--no-enhance")
    rc, summary = _run(server, "never-connected", "0")
    assert rc == 1
    failed = [e for e in summary["errors"] if e.get("type") == "media-failed"]
    assert failed and "--ice-host" in failed[0]["message"]
    rc, summary = _run(server, "connected", "4")
    assert rc == 0
    assert not any(e.get("type") == "media-failed" for e in summary["errors"])
