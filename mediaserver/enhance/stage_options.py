"""The enhancer stage's command-line flags, without torch: ``mediaserver serve`` parses them in
every process (the front of ``--workers N`` and its media workers never load the model)."""

from __future__ import annotations

import argparse
import math
from typing import Optional

from ..config import add_option, no_effect, number_in
from .registry import add_registry_options


def add_stage_options(parser: argparse.ArgumentParser) -> None:
    """Flags for the server (``mediaserver serve``) that configure the stage."""
    add_option(parser, "--model", default=None,
               help="default enhancer model: a registry name (mediaserver models list), a model folder "
                    "or a weights file (default: msenh-v2)")
    add_registry_options(parser)
    from .canary import add_canary_options

    add_canary_options(parser)
    add_option(parser, "--dnsmos-sample-s", type=number_in(9, or_zero=True), default=0.0,
               help="score one 9 s window per stream every N s with DNSMOS, raw and enhanced, on a "
                    "background thread (0: off; needs pip install mediaserver[mos])")
    add_option(parser, "--worker-id", default=None,
               help="the worker label of the enhancer metrics (default: host name)")
    add_option(parser, "--enhancer-device", default="cpu", help="torch device for the enhancer (cpu, cuda)")
    add_option(parser, "--enhancer-threads", type=number_in(1, kind=int), default=1, help="torch threads for the enhancer")
    add_option(parser, "--vad-gate", type=int, default=1, help="1: skip the network while no speech; 0: always run it")
    add_option(parser, "--vad-mode", type=number_in(0, 3, kind=int), default=2, help="webrtcvad aggressiveness 0..3")
    add_option(parser, "--vad-hangover-ms", type=number_in(0, kind=int), default=300, help="keep enhancing this long after speech")
    add_option(parser, "--vad-atten-db", type=number_in(0, 100), default=20.0, help="broadband cut (dB) of a closed gate until the network has measured the stream's noise")


def stage_argv(args: argparse.Namespace) -> list[str]:
    """The stage flags of ``args`` that differ from their defaults, as a command line (what
    ``serve --workers N`` hands the shared inference process; ``MEDIASERVER_*`` variables
    reach it through the environment)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_stage_options(parser)
    argv: list[str] = []
    for action in parser._actions:
        value = getattr(args, action.dest, None) if action.option_strings else None
        if value is None or value == action.default:
            continue
        flag = action.option_strings[0]
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def check_atten_lim_db(value: float) -> float:
    """A stream's attenuation limit in dB: finite and >= 0, capped at 100 (no limit).
    Raises ValueError otherwise."""
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"atten_lim_db must be a finite number >= 0, got {value}")
    return min(value, 100.0)


def validate_stage_args(args: argparse.Namespace, *, probe_device: bool = True) -> Optional[str]:
    """The error for stage flags that cannot work here, naming the flag, or None.
    ``probe_device``: ask torch whether ``--enhancer-device`` is usable (``devices.py``; False
    in a media worker of ``--workers N``, whose front asked already)."""
    if not probe_device:
        return None
    problem = roots_problem(args)
    if problem or getattr(args, "no_enhance", False):
        return problem
    problem = model_problem(args)
    if problem:
        return problem
    from ..devices import torch_device_problem

    problem = torch_device_problem(args.enhancer_device)
    return f"--enhancer-device {args.enhancer_device}: {problem}" if problem else None


def roots_problem(args: argparse.Namespace) -> Optional[str]:
    """Why a ``--model-root`` folder cannot be used (none there, not a folder), or None: a
    mistyped root was taken silently and its models were then "unknown"."""
    from pathlib import Path

    from .registry import roots_from_args

    for root in roots_from_args(args):
        if not Path(root).is_dir():
            return f"--model-root {root}: {'not a folder' if Path(root).exists() else 'no such folder'}"
    return None


def model_problem(args: argparse.Namespace) -> Optional[str]:
    """Why ``--model`` / ``--canary-model`` name no weights file here (an unknown name, a
    path with no file), or None; asked before anything starts, without torch. A file that is
    there but is no enhancer checkpoint is found when it loads."""
    from pathlib import Path

    from .registry import ModelRegistry, RegistryError, roots_from_args

    registry = ModelRegistry(roots_from_args(args))
    resolved: dict[str, tuple[str, Path]] = {}
    for flag, spec in (("--model", getattr(args, "model", None)),
                       ("--canary-model", getattr(args, "canary_model", None))):
        if spec is None and flag == "--canary-model":
            continue
        try:
            resolved[flag] = registry.resolve(spec)
        except RegistryError as exc:   # its text starts "--model SPEC: ..."
            return f"{flag} {str(exc).removeprefix('--model ')}"
        if not resolved[flag][1].is_file():
            return f"{flag} {spec}: enhancer weights not found: {resolved[flag][1]}"
    if "--canary-model" in resolved:   # (Canary refused it once the server was starting: a traceback)
        stable, candidate = resolved["--model"][0], resolved["--canary-model"][0]
        if stable == candidate:   # by name, as the canary tells its two models apart
            return (f"--canary-model {args.canary_model}: is the stable model ({stable}, --model); "
                    f"a canary needs another one ({', '.join(n for n in registry.names() if n != stable)})")
    return None


STAGE_FLAGS = ("--model", "--enhancer-device", "--enhancer-threads", "--vad-gate", "--vad-mode",
               "--vad-hangover-ms", "--vad-atten-db", "--dnsmos-sample-s", "--atten-lim-db",
               "--canary-model", "--canary-share", "--canary-window-s", "--canary-min-speech-s",
               "--canary-max-distorted-share", "--canary-distorted-margin",
               "--canary-max-extra-suppression-db", "--canary-max-mos-drop")


CANARY_SETTINGS = tuple(f for f in STAGE_FLAGS if f.startswith("--canary-") and f != "--canary-model")


def enhancer_flags_without_effect(args: argparse.Namespace) -> list[str]:
    """A warning naming the enhancer flags set (``args._changed``, see ``config.changed_flags``)
    while ``--no-enhance`` turns the enhancer off, or the canary's settings set without
    ``--canary-model``; empty otherwise."""
    changed = getattr(args, "_changed", frozenset())
    if not getattr(args, "no_enhance", False):
        idle = [f for f in CANARY_SETTINGS if f in changed]
        if idle and not getattr(args, "canary_model", None):
            return [no_effect(idle, "without --canary-model")]
        return []
    idle = [f for f in STAGE_FLAGS if f in changed]
    return [no_effect(idle, "with --no-enhance")] if idle else []
