"""Bad settings are one line on stderr, exit 2, naming the flag, before anything starts.

A fresh user met three faults of one kind: ``serve``'s config errors went to stdout (argparse's
to stderr, with a 60-line usage), ``--asr-device cuda`` without a usable GPU ended in a 60-line
traceback from the model load (``--enhancer-device cuda`` too), and ASR flags that do nothing
(``--asr-engine moonshine`` without ``--asr local``) were silently accepted. Each table below
covers the kind across sub-commands; the GPU cases hide every GPU (``CUDA_VISIBLE_DEVICES=``)
so they hold on a machine with one too.
"""

from __future__ import annotations

import ast
import logging
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT
from mediaserver import cli
from mediaserver.config import changed_flags

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """``mediaserver ARGV`` in this process: (exit code, stdout, stderr)."""
    for name in [n for n in os.environ if n.startswith("MEDIASERVER_")]:
        monkeypatch.delenv(name)
    term = signal.getsignal(signal.SIGTERM)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            rc = cli.main(list(argv))
        except SystemExit as exc:   # argparse's own errors
            rc = exc.code if isinstance(exc.code, int) else 1
        finally:
            signal.signal(signal.SIGTERM, term)   # serve makes SIGTERM a KeyboardInterrupt
        out, err = capsys.readouterr()
        return rc, out, err

    return run


BAD = [
    (("serve", "--port", "70000"), "--port"),
    (("serve", "--port", "x"), "--port"),                      # argparse's own
    (("serve", "--max-participants", "1"), "--max-participants"),
    (("serve", "--workers", "0"), "--workers"),
    (("serve", "--drain-s", "0"), "--drain-s"),
    (("serve", "--max-rooms", "0"), "--max-rooms"),
    (("serve", "--asr", "tape"), "--asr"),
    (("serve", "--asr-feed", "loud"), "--asr-feed"),           # argparse's own
    (("serve", "--asr", "local", "--asr-mix-raw-share", "3"), "--asr-mix-raw-share"),
    (("serve", "--asr", "ws"), "--asr-ws-url"),
    (("serve", "--asr", "local", "--asr-window-tail", "1"), "--asr-window-tail"),
    # contradictory: Moonshine and pocketsphinx run on the CPU only
    (("serve", "--asr", "local", "--asr-engine", "moonshine", "--asr-device", "cuda"), "--asr-device"),
    (("serve", "--asr", "local", "--asr-engine", "pocketsphinx", "--asr-device", "cuda"), "--asr-device"),
    (("cluster",), "--redis-url"),
    (("eval", "--data", "/nonexistent", "--systems", "ours,bogus"), "--systems"),
    (("transcribe", "x.wav", "--asr-feed", "loud"), "--asr-feed"),
    (("serve", "--no-such-flag"), "--no-such-flag"),
    (("token", "--room", "r"), "--identity"),
    ((), "COMMAND"),                                           # no sub-command at all
]


@pytest.mark.parametrize("argv,flag", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_setting_is_one_line_on_stderr_naming_the_flag(run_cli, argv, flag) -> None:
    rc, out, err = run_cli("--log-level", "WARNING", *argv)
    assert rc == 2, (rc, out, err)
    assert out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert flag in lines[0] and "error" in lines[0] and "Traceback" not in err, lines[0]


def test_no_error_message_of_the_package_goes_to_stdout() -> None:
    """Every ``print("error ...")`` in mediaserver/ names its stream (stderr): the kind, not the
    cases above (a new sub-command that prints its errors to stdout fails here)."""
    offenders = []
    for path in sorted((ROOT / "mediaserver").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
                    and node.args):
                continue
            first = node.args[0]
            text = (first.value if isinstance(first, ast.Constant) else
                    first.values[0].value if isinstance(first, ast.JoinedStr) and first.values
                    and isinstance(first.values[0], ast.Constant) else None)
            if isinstance(text, str) and text.lower().startswith("error") and \
                    not any(k.arg == "file" for k in node.keywords):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


NO_GPU = [
    (("serve", "--no-enhance", "--asr", "local", "--asr-device", "cuda"), "--asr-device"),
    (("serve", "--enhancer-device", "cuda"), "--enhancer-device"),
    (("serve", "--enhancer-device", "gpu0"), "--enhancer-device"),
    (("transcribe", "x.wav", "--asr-device", "cuda"), "--asr-device"),
    (("enhance", "--out-dir", "unused", "--device", "cuda", "x.wav"), "--device"),
    (("bench", "enhancer", "--device", "cuda"), "--device"),
]


@pytest.mark.parametrize("argv,flag", NO_GPU, ids=[" ".join(a) for a, _ in NO_GPU])
def test_an_unusable_gpu_is_one_line_naming_the_flag_not_a_traceback(argv, flag, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASERVER_")}
    env["CUDA_VISIBLE_DEVICES"] = ""   # no GPU, whatever the machine has
    proc = subprocess.run([sys.executable, "-m", "mediaserver", *argv, "--port", "0"]
                          if argv[0] == "serve" else [sys.executable, "-m", "mediaserver", *argv],
                          cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "listening" not in proc.stdout   # refused before anything started


def _serve_args(*argv: str):
    parser = cli.build_parser("serve")
    args = parser.parse_args(["serve", *argv])
    args._changed = changed_flags(args._parser, args)
    return args


def _warnings(caplog, *argv: str) -> list[str]:
    from mediaserver.sfu.server import check_args

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mediaserver.sfu.server"):
        check_args(_serve_args(*argv))
    return [r.getMessage() for r in caplog.records if r.name == "mediaserver.sfu.server"]


def test_flags_without_effect_are_warned_once_each(caplog, monkeypatch) -> None:
    for name in [n for n in os.environ if n.startswith("MEDIASERVER_")]:
        monkeypatch.delenv(name)
    assert _warnings(caplog, "--no-enhance") == []           # defaults: nothing to say
    assert _warnings(caplog, "--no-enhance", "--asr-redis-audio", "--asr", "redis",
                     "--redis-url", "redis://127.0.0.1:1") == []   # each flag with its feature on
    warned = _warnings(caplog, "--no-enhance", "--asr-engine", "moonshine", "--asr-device", "cuda",
                       "--asr-ws-mode", "segment", "--asr-feed", "enhanced")
    assert len(warned) == 3, warned
    assert any("--asr-engine, --asr-device have no effect" in w and "--asr local" in w
               for w in warned), warned
    assert any("--asr-ws-mode" in w and "--asr ws" in w for w in warned), warned
    assert any("--asr-feed" in w and "without --asr" in w for w in warned), warned
    # a local sink on the CPU with a Whisper-only flag on another engine
    warned = _warnings(caplog, "--no-enhance", "--asr", "local", "--asr-engine", "moonshine",
                       "--asr-window-tail", "5")
    assert len(warned) == 1 and "--asr-window-tail" in warned[0] and "whisper" in warned[0], warned
    # an enhanced (or mixed) feed with the enhancer off: the sinks get raw audio
    for feed in ("enhanced", "mix"):
        warned = _warnings(caplog, "--no-enhance", "--asr", "local", "--asr-feed", feed)
        assert len(warned) == 1 and "--asr-feed" in warned[0] and "--no-enhance" in warned[0], warned
    assert _warnings(caplog, "--asr", "local", "--asr-feed", "enhanced") == []
    # enhancer flags with the enhancer off; a variable counts as given
    monkeypatch.setenv("MEDIASERVER_ENHANCER_THREADS", "2")
    warned = _warnings(caplog, "--no-enhance", "--vad-mode", "3", "--canary-model", "msenh-v3")
    assert len(warned) == 1 and "--enhancer-threads, --vad-mode" in warned[0], warned
    assert "--canary-model" in warned[0], warned
    assert "--no-enhance" in warned[0]
