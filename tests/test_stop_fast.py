"""An idle ``mediaserver serve`` stops without waiting on nothing (the times are measured by
``benchmarks/stop.py``, not asserted here).

A fresh user's trial: with no call, SIGTERM/Ctrl-C took 1.7-1.9 s after "drained", and 3-4 s
when it came while the server was still importing ("not starting"). The first was the
interpreter's shutdown collecting every object of the process once more (gc: 0.5 s at load 1,
1.6-1.9 s at load 6; the objects now go to the permanent generation as the program ends); the
second, the rest of the imports and flag checks that ran after the signal had been recorded
(the program now exits at once: nothing before the event loop needs undoing).
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

# Sends itself SIGTERM when mediaserver.sfu.server is about to be imported (serve's imports
# have begun; its handlers come much later), then says so. --vad-mode with --no-enhance is
# warned about by serve's flag checks, which come after those imports: the warning shows that
# the start-up went on after the signal.
SIGNAL_DURING_IMPORTS = r"""
import importlib.abc, os, signal, sys
sys.argv = ["mediaserver", "serve", "--host", "127.0.0.1", "--port", "0", "--no-enhance",
            "--vad-mode", "3"]

class SignalOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "mediaserver.sfu.server":
            sys.meta_path.remove(self)
            print("signalled", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SignalOnImport())
from mediaserver.cli import main
rc = main()
print("main returned", rc, flush=True)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_")}
    return {**env, "PYTHONPATH": str(ROOT)}


def test_a_signal_while_serve_imports_ends_it_at_once() -> None:
    proc = subprocess.run([sys.executable, "-c", SIGNAL_DURING_IMPORTS], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-2000:])
    assert "signalled" in proc.stdout, proc.stdout
    assert "main returned" not in proc.stdout and "listening" not in proc.stdout, proc.stdout
    assert "SIGTERM before start-up: not starting" in proc.stderr, proc.stderr[-2000:]
    assert "no effect" not in proc.stderr, proc.stderr[-2000:]   # the flag checks never ran


def test_the_program_freezes_its_objects_before_the_interpreter_shuts_down() -> None:
    """``mediaserver`` as the program (no argv given) moves its objects to the permanent
    generation when the command returns; a caller running a command in its own process
    (argv given, as the tests do) keeps its garbage collector as it was."""
    script = ("import gc, sys; from mediaserver.cli import main; "
              "sys.argv = ['mediaserver', 'token', '--room', 'r', '--identity', 'i', '--secret', 's']; "
              "assert gc.get_freeze_count() == 0; main(ARGV); print('frozen', gc.get_freeze_count())")
    program = subprocess.run([sys.executable, "-c", script.replace("ARGV", "")], cwd=ROOT,
                             env=_env(), capture_output=True, text=True, timeout=120)
    caller = subprocess.run([sys.executable, "-c", script.replace("ARGV", "sys.argv[1:]")], cwd=ROOT,
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert program.returncode == 0 and caller.returncode == 0, (program.stderr, caller.stderr)
    assert int(program.stdout.split("frozen")[1]) > 10_000, program.stdout
    assert int(caller.stdout.split("frozen")[1]) == 0, caller.stdout


# A module global whose finaliser says when the interpreter's teardown frees it, an atexit
# handler, and serve refused at once (--port 70000: exit 2, nothing started).
TEARDOWN_WITNESS = r"""
import atexit, sys

class Witness:
    def __del__(self):
        print("torn down", flush=True)

witness = Witness()
atexit.register(lambda: print("atexit ran", flush=True))
sys.argv = ["mediaserver", "serve", "--port", "70000"]
from mediaserver.cli import main
print("main returned", main(), flush=True)
"""


def test_a_stopped_server_runs_its_atexit_handlers_and_skips_the_teardown() -> None:
    """After ``serve`` returns, the program runs the atexit handlers (logging's flush among
    them) and exits with the command's code, without the interpreter freeing every module and
    object one by one (0.15-0.35 s with torch loaded)."""
    proc = subprocess.run([sys.executable, "-c", TEARDOWN_WITNESS], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--port" in proc.stderr, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.splitlines() == ["atexit ran"], proc.stdout


def test_a_caller_running_serve_in_its_own_process_gets_its_early_signal_acted_on() -> None:
    """``cli.main(argv)`` from a caller's own process: a SIGTERM while serve imports is only
    recorded (nothing is exited under the caller), and serve acts on it as soon as its loop's
    handlers are in: main returns 0 and the server never listened. A recorded signal that is
    never acted on would leave the server running (this test's timeout)."""
    script = SIGNAL_DURING_IMPORTS.replace("rc = main()", "rc = main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-2000:])
    assert "signalled" in proc.stdout and "main returned 0" in proc.stdout, proc.stdout
    assert "listening" not in proc.stdout, proc.stdout


# The inference process of --workers N run as its program (``python -m``), with a module
# global whose finaliser says when the interpreter's teardown frees it and an atexit handler.
INFERENCE_TEARDOWN_WITNESS = r"""
import atexit, runpy, sys

class Witness:
    def __del__(self):
        print("torn down", flush=True)

witness = Witness()
atexit.register(lambda: print("atexit ran", flush=True))
sys.argv = ["shared", "--socket", sys.argv[1], "--enhancer-threads", "1", "--log-level", "WARNING"]
runpy.run_module("mediaserver.enhance.shared", run_name="__main__")
print("the module returned", flush=True)
"""


def test_a_stopped_inference_process_runs_its_atexit_handlers_and_skips_the_teardown(tmp_path) -> None:
    """A fresh user's trial: an idle ``serve --workers 2`` took 1.4-1.6 s to stop (one process:
    0.04 s), most of it the shared inference process's interpreter teardown with torch loaded
    (0.55 s at load 0.8, after the workers had exited; the front waits for it). Stopped by
    SIGTERM, it now runs its atexit handlers (logging's flush) and exits 0 at once, as
    ``serve`` does (``cli._process_ends``); ``benchmarks/stop.py --servers workers`` times it."""
    import signal

    proc = subprocess.Popen([sys.executable, "-c", INFERENCE_TEARDOWN_WITNESS, str(tmp_path / "e.sock")],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("ready "), (first, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, (proc.returncode, err[-2000:])
    assert out.splitlines() == ["atexit ran"], out
