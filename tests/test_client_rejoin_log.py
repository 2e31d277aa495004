"""The headless client's connection failures are one clear line each: what failed, where,
and when it tries again, never an exception's repr.

A fresh user's trial: while a restarted server was down, every rejoin attempt logged
``rejoin 2 through ws://... failed: ClientConnectorError(ConnectionKey(host='127.0.0.1',
port=..., is_ssl=False, ssl=True, proxy=None, ...), ConnectionRefusedError(111, ...))``; the
first join through a dead URL the same (``cannot join through ...: %r``).
"""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import pytest

from conftest import ServerProcess, start_client, wait_participants
from waiting import poll

pytestmark = pytest.mark.timeout(300)

REPR = re.compile(r"[A-Z]\w+(Error|Exception)\(|ConnectionKey")   # an exception's repr


def _free_port() -> int:
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rejoin_attempts_log_one_line_each_with_cause_and_next_try(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server.log", "--no-enhance")
    port = server.port
    log = tmp_path / "client.log"
    client = start_client(server.url, "r", "a", "--duration", "120", log=log)
    try:
        wait_participants(server, 1)
        server.proc.send_signal(signal.SIGTERM)   # drain: server-shutdown, then nobody listens
        assert server.proc.wait(30) == 0
        text = poll(lambda: log.read_text(errors="replace")
                    if log.read_text(errors="replace").count("rejoin attempt") >= 2 else None,
                    timeout=60, interval=0.1, what="two rejoin attempts logged")
    finally:
        server.stop()
        if client.poll() is None:
            client.send_signal(signal.SIGTERM)
        client.communicate(timeout=60)
    attempts = [line for line in text.splitlines() if "rejoin attempt" in line]
    for number, line in enumerate(attempts[:2], start=1):
        assert f"rejoin attempt {number} through ws://127.0.0.1:{port}/ws failed: " \
               f"connection refused (127.0.0.1:{port}); retry in " in line, line
        assert re.search(r"retry in \d+\.\d s$", line) and not REPR.search(line), line


def test_a_first_join_through_a_dead_url_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Fresh-user trial of 2026-12-02: stderr had an INFO line for the ICE pin and a WARNING
    per server before the error line; now the error line is all of stderr."""
    port = _free_port()
    log = tmp_path / "client.log"
    client = start_client(f"http://127.0.0.1:{port}/", "r", "a", "--duration", "5", log=log)
    out, _ = client.communicate(timeout=120)
    text = log.read_text(errors="replace")
    assert client.returncode == 1, text[-2000:]
    assert text.splitlines() == [f"mediaserver client: error: cannot join room r: connection "
                                 f"refused (127.0.0.1:{port})"], text[-2000:]
    # fresh-user gaps of 2026-12-02 §4: stdout had {"error": ...} here, nothing for a usage
    # error; now it carries a summary only when a call ran, errors go to stderr
    assert out == b"", out


def test_a_first_join_through_several_dead_urls_names_each_reason_in_one_line(
        tmp_path: Path) -> None:
    """With ``--url A,B`` the error named only B's reason (A's was a WARNING line above it)."""
    a, b = _free_port(), _free_port()
    log = tmp_path / "client.log"
    client = start_client(f"http://127.0.0.1:{a}/,http://127.0.0.1:{b}/", "r", "a",
                          "--duration", "5", "--no-reconnect", log=log)
    out, _ = client.communicate(timeout=120)
    text = log.read_text(errors="replace")
    assert client.returncode == 1, text[-2000:]
    assert text.splitlines() == [
        f"mediaserver client: error: cannot join room r: "
        f"ws://127.0.0.1:{a}/ws: connection refused (127.0.0.1:{a}); "
        f"ws://127.0.0.1:{b}/ws: connection refused (127.0.0.1:{b})"], text[-2000:]
    assert not REPR.search(text) and out == b"", text[-2000:]
