"""The ``mediaserver`` command: one sub-command per module, imported only when used.

Each sub-command module exposes ``add_arguments(parser)`` and ``main(args) -> int``.
Keeping the imports lazy means ``mediaserver token`` never loads torch and
``mediaserver enhance`` never loads aiortc.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import os
import sys
from typing import NoReturn, Optional, Sequence

from .config import UsageError, changed_flags, check_env, name_sources
from .logsetup import configure_logging, worker_process_name

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("mediaserver.sfu.server", "run the media server"),
    "client": ("mediaserver.client", "headless participant: send a WAV, record the others"),
    "token": ("mediaserver.sfu.tokens", "mint a signed join token"),
    "enhance": ("mediaserver.enhance.offline", "enhance WAV files through the streaming path"),
    "eval": ("mediaserver.enhance.evaluate", "evaluate the enhancer against peers on test mixtures"),
    "bench": ("mediaserver.enhance.bench", "benchmark the enhancer step time"),
    "models": ("mediaserver.enhance.registry", "list, show or verify the enhancer models (models/)"),
    "transcribe": ("mediaserver.asr.transcribe", "offline transcription through the ASR feed"),
    "cluster": ("mediaserver.cluster.view", "print the cluster's nodes, load and rooms from Redis"),
}


class _CommandParser(argparse.ArgumentParser):
    """A sub-command's parser whose errors are one line on stderr (exit 2), like ours
    (:class:`~mediaserver.config.UsageError`): the flag list is one ``--help`` away."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    """The argparse ``type`` of ``--log-level``: a level name in any case, upper-cased; any
    other word is refused as the flag is parsed (it was a ValueError traceback from
    ``logging``), and the children of ``serve --workers N`` get a valid one."""
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return text.upper()


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    parser = _CommandParser(prog="mediaserver", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--log-level", type=log_level, default="INFO",
                        help=f"logging level: {', '.join(LOG_LEVELS)} (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_module=module, _parser=sub_parser)
    return parser


# Sub-commands for which SIGINT/SIGTERM at any moment is a normal stop (exit 0, no traceback):
# from the first line here, not only once the server's own handlers are in (sfu/startup.py).
STOPPED_BY_SIGNAL = frozenset({"serve"})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command in ``argv``; without ``argv`` (``sys.argv``) this is the program itself,
    and the process ends when it returns (:func:`_process_ends`)."""
    program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    front = os.environ.get("MEDIASERVER_FRONT_PID") if program else None
    if front and front.isdigit():   # a media worker of serve --workers N: it ends with its front
        from .workers.lifeline import end_with_parent

        end_with_parent(int(front))
    if command in STOPPED_BY_SIGNAL:
        from .sfu.startup import remember_stop_signals

        # a signal before serve's handlers: the program exits at once (nothing to undo yet); a
        # caller's own process records it, acted on once serve can (never lost in an import)
        remember_stop_signals(exit_at_once=program)
    try:
        code = _run(argv, command)
    except KeyboardInterrupt:   # a stop signal before the command installed its own handling
        if command in STOPPED_BY_SIGNAL:
            _exit_now(0)
        code = 130
    if program:
        _process_ends(code, command)
    return code


def _process_ends(code: int, command: Optional[str]) -> None:
    """The program's command returned and the process exits next; make that quick.

    Every object goes to the permanent generation, so the interpreter's shutdown does not walk
    them all again in its final collections (that walk was most of an idle ``serve``'s stop:
    0.5 s after "drained" at load 1, 1.6-1.9 s at load 6). A server that stopped (``serve``:
    its stop closed everything it had opened, in :class:`~mediaserver.sfu.drain.Drain`) skips
    the interpreter's teardown too, which frees every module and object one by one (0.15-0.35 s
    more with torch loaded): the atexit handlers run, then it exits with ``code`` at once.
    ``benchmarks/stop.py`` measures both (``benchmarks/results/stop.json``)."""
    gc.freeze()
    if command in STOPPED_BY_SIGNAL:
        atexit._run_exitfuncs()
        _exit_now(code)


def _exit_now(code: int) -> None:
    """Exit with ``code`` now. CPython ends a process whose import saw a KeyboardInterrupt go
    through ``exec`` (dataclasses, namedtuples) by SIGINT, even when the interrupt was caught:
    measured, one stop of three in the first seconds exited -2. Nothing runs yet to clean up."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def misplaced_command(argv: Sequence[str], command: Optional[str]) -> Optional[str]:
    """The command name written as ``command``'s first argument (``mediaserver enhance eval
    --help``: ``eval`` is ``mediaserver eval``, not a sub-command or an input of ``enhance``),
    or None. A file of that name is an argument like any other (``mediaserver enhance bench``
    with ``./bench`` there)."""
    if command is None:
        return None
    after = argv[argv.index(command) + 1:]
    if after and after[0] in COMMANDS and not os.path.exists(after[0]):
        return after[0]
    return None


def _run(argv: list[str], command: Optional[str]) -> int:
    other = misplaced_command(argv, command)
    if other is not None:   # before parsing: --help after it printed command's help, no hint
        print(f"mediaserver {command}: error: {other} is a command of its own, not an argument "
              f"of {command}: run mediaserver {other} (see mediaserver {other} --help)", file=sys.stderr)
        return 2
    parser = build_parser(command)
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.error(f"a COMMAND is required: {', '.join(COMMANDS)}")
    if extra:   # named by the sub-command (its --help lists its flags), not by mediaserver
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # a media worker of serve --workers N names itself on every line (logsetup.py)
    configure_logging(args.log_level, process_name=worker_process_name(getattr(args, "worker_id", None)))
    args._argv = argv   # the whole command line (serve --workers hands it to each worker)
    args._changed = changed_flags(args._parser, args)   # flags not at their built-in default
    try:
        check_env(args._parser, args)   # a variable's text that is no value for its flag
        return int(args._module.main(args) or 0)
    except UsageError as exc:   # one line on stderr, as argparse's own errors
        message = " ".join(str(exc).split())   # one line, whatever a library's reason holds
        print(f"{args._parser.prog}: error: {name_sources(message, args)}", file=sys.stderr)
        return 2
