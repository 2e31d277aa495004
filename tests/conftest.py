"""Shared fixtures: a real ``mediaserver serve`` on 127.0.0.1, espeak-ng speech, clients.

Everything stays on loopback (ICE pinned to 127.0.0.1 in server and clients).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest

from mediaserver.audio import read_audio, resample, write_audio

import ci_guard
import loopback_guard
from requires import require_program


def pytest_configure(config: pytest.Config) -> None:
    ci_guard.pytest_configure(config)   # CI=true: any skip fails the run
    loopback_guard.pytest_configure(config)   # in-process ICE off 127.0.0.1 fails the test


@pytest.fixture
def ice_on_loopback() -> Iterator[None]:
    """This test's in-process peer connections gather ICE on 127.0.0.1 only, and answer
    nothing from elsewhere (``rtc_peer.loopback_ice``; undone after the test). A module whose
    every test makes peers says ``pytestmark = pytest.mark.usefixtures("ice_on_loopback")``."""
    from rtc_peer import loopback_ice

    with loopback_ice():
        yield


# Every server the suite starts (ServerProcess, and each test's own ``mediaserver serve``) runs in
# one process, serve's --workers 1, unless the test passes --workers itself (the flag wins over
# its variable): the default, one media worker per core, is the multi-process path that
# tests/test_workers*.py start by name and test_workers_default.py checks as the default.
os.environ.setdefault("MEDIASERVER_WORKERS", "1")

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000
METRICS_TOKEN = "test-metrics-token"   # given with --secret: /metrics and a detailed /healthz


class ServerProcess:
    """``mediaserver serve --host 127.0.0.1 --port 0 --ice-host 127.0.0.1`` in a subprocess."""

    def __init__(self, log_path: Path, *extra: str, env: Optional[dict] = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mediaserver", "serve", "--host", "127.0.0.1", "--port", "0",
             "--ice-host", "127.0.0.1",
             *(["--metrics-token", METRICS_TOKEN] if "--secret" in extra else []), *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, env=env)
        self.port = 0
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError(f"server exited early:\n{self.tail()}")
            m = re.search(rb"http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                return
        self.stop()
        raise RuntimeError("server did not start in time")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 4000) -> str:
        if not self._log.closed:   # (closed once stopped; an early exit reports its log too)
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """Factory: ``start_server("--no-enhance", ...)`` -> running ServerProcess (stopped after)."""
    started: list[ServerProcess] = []

    def start(*extra: str) -> ServerProcess:
        server = ServerProcess(tmp_path / f"server{len(started)}.log", *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def sfu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server without enhancement shared by a test module (fast to start)."""
    server = ServerProcess(tmp_path_factory.mktemp("sfu") / "server.log", "--no-enhance")
    yield server
    server.stop()


SPEECH_TEXT = ("The quick brown fox jumps over the lazy dog. "
               "Packet loss concealment keeps the voice smooth when the network drops audio.")


def espeak_speech(path: Path, text: str, *, seconds: Optional[float] = None,
                  voice: str = "en") -> Path:
    """espeak-ng speech at 48 kHz mono 16-bit, padded/repeated to ``seconds`` if given."""
    espeak = require_program("espeak-ng", "apt-get install -y espeak-ng")
    raw = path.with_suffix(".raw.wav")
    subprocess.run([espeak, "-v", voice, "-s", "150", "-w", str(raw), text], check=True,
                   capture_output=True)
    audio, rate = read_audio(raw)
    audio = resample(audio, rate, RATE)
    audio = 0.5 * audio / (np.max(np.abs(audio)) + 1e-9)
    if seconds is not None:
        n = int(seconds * RATE)
        gap = np.zeros(int(0.3 * RATE), np.float32)
        unit = np.concatenate([audio, gap])
        audio = np.tile(unit, n // len(unit) + 1)[:n]
    write_audio(path, audio, RATE)
    raw.unlink(missing_ok=True)
    return path.resolve()


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 4 s of clean espeak-ng speech (48 kHz mono WAV)."""
    return espeak_speech(tmp_path_factory.mktemp("speech") / "speech.wav",
                         "The quick brown fox jumps over the lazy dog. "
                         "Please call Stella and ask her to bring these things.", seconds=4.0)


def start_client(url: str, room: str, identity: str, *extra: str,
                 log: Optional[Path] = None) -> subprocess.Popen:
    """Start ``mediaserver client`` pinned to 127.0.0.1; its stdout is the JSON summary."""
    return subprocess.Popen(
        [sys.executable, "-m", "mediaserver", "client", "--url", url, "--room", room,
         "--identity", identity, "--ice-host", "127.0.0.1", *extra],
        cwd=ROOT, stdout=subprocess.PIPE,
        stderr=open(log, "wb") if log else subprocess.DEVNULL)


def client_summary(proc: subprocess.Popen, timeout: float = 120) -> dict:
    """Wait for a client and parse its JSON summary."""
    out, _ = proc.communicate(timeout=timeout)
    text = out.decode()
    start = text.find("{")
    assert proc.returncode == 0 and start >= 0, f"client failed ({proc.returncode}): {text[-2000:]}"
    return json.loads(text[start:])


def wait_participants(server: ServerProcess, count: int, timeout: float = 60.0) -> None:
    """Poll /healthz until ``count`` participants are connected (process start is slow here)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        request = urllib.request.Request(server.url + "healthz",
                                         headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            seen = json.loads(resp.read())["participants"]
        if seen == count:
            return
        time.sleep(0.2)
    raise AssertionError(f"expected {count} participants, server has {seen}")


def stop_client(proc: subprocess.Popen) -> dict:
    """End a client early (SIGTERM: it leaves and still prints its summary)."""
    proc.send_signal(signal.SIGTERM)
    return client_summary(proc)


def server_metric(server: ServerProcess, name: str, **labels: str) -> float:
    """One sample of the server's own ``/metrics`` (0 when the series has no sample yet)."""
    from metrics_probe import metric  # it imports this module

    return metric(server, name, **labels)


def wait_metric_grows(server: ServerProcess, name: str, by: float, timeout: float = 120.0) -> None:
    """Poll ``/metrics`` until ``name`` has grown by ``by`` from now (deadline ``timeout`` s)."""
    start = server_metric(server, name)
    deadline = time.monotonic() + timeout
    value = start
    while time.monotonic() < deadline:
        value = server_metric(server, name)
        if value - start >= by:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} grew by {value - start}, expected {by} within {timeout} s")
