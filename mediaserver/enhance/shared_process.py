"""Start and stop ``python -m mediaserver.enhance.shared`` as a child process (no torch here:
the front or a test that spawns it never loads the model itself)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..config import UsageError


# A model flag the inference process cannot use (a file there but no checkpoint): it prints
# ``USAGE_LINE`` + "--model: reason" on stdout and exits with USAGE_EXIT; start() raises it as
# the front's UsageError (one line, exit 2), as one process says it (sfu/server.py).
USAGE_EXIT = 3
USAGE_LINE = "usage "


class InferenceProcess:
    """``python -m mediaserver.enhance.shared --socket PATH [stage flags]`` as a child process.

    ``start()`` returns once it listens (its ``ready`` line); ``stop()`` sends SIGTERM and waits.
    ``log_level``: its logging level (``mediaserver --log-level``), set before its first line."""

    def __init__(self, socket_path: str, stage_args: Sequence[str] = (), *, slots: int = 512,
                 window_ms: float = 5.0, stderr: Any = None, env: Optional[dict[str, str]] = None,
                 metrics_port: int = 0, log_level: str = "INFO") -> None:
        self.socket_path = socket_path
        self.metrics_port = metrics_port
        # its own session (a Ctrl-C at the terminal reaches the front, which stops it last) and
        # tied to this process (it stops by itself if this one is killed)
        self.argv = [sys.executable, "-m", "mediaserver.enhance.shared", "--socket", socket_path,
                     "--slots", str(slots), "--batch-window-ms", str(window_ms),
                     "--parent-pid", str(os.getpid()), "--metrics-port", str(metrics_port),
                     "--log-level", log_level, *stage_args]   # (the front's level from its first line)
        self._stderr, self._env = stderr, env
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 180.0) -> None:
        """Start and wait for ``ready``; RuntimeError if it exits first or takes over ``timeout_s``,
        :class:`~mediaserver.config.UsageError` (naming the flag) if a model flag is unusable."""
        env = dict(os.environ if self._env is None else self._env)
        package_root = str(Path(__file__).resolve().parents[2])  # this checkout or site-packages
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        usage: Optional[str] = None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(USAGE_LINE.encode()):
                usage = line[len(USAGE_LINE):].decode(errors="replace").strip()
                continue
            if not line:
                code = self.proc.wait()
                if code == USAGE_EXIT and usage:
                    raise UsageError(usage)
                raise RuntimeError(f"inference process exited with {code} before it was ready")
            if re.match(rb"ready ", line):
                return
        self.stop()
        raise RuntimeError(f"inference process not ready after {timeout_s:g} s")

    def stop(self, timeout_s: float = 30.0) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode
