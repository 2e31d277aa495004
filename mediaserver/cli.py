"""The ``mediaserver`` command: one sub-command per module, imported only when used.

Each sub-command module exposes ``add_arguments(parser)`` and ``main(args) -> int``.
Keeping the imports lazy means ``mediaserver token`` never loads torch and
``mediaserver enhance`` never loads aiortc.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

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


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediaserver", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        # aioice logs every candidate-pair state change at INFO: noise unless debugging ICE
        logging.getLogger("aioice").setLevel(logging.WARNING)
    args._argv = argv   # the whole command line (serve --workers hands it to each worker)
    return int(args._module.main(args) or 0)
