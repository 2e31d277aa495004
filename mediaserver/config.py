"""One way to configure: every CLI flag has an environment variable twin.

``--ice-host`` reads ``MEDIASERVER_ICE_HOST`` when the flag is absent. The flag wins. The
name comes from the flag alone, whatever the sub-command: a setting two sub-commands share
has one flag name and so one variable (``--asr-engine`` in ``serve`` and ``transcribe``).

Bad settings raise :class:`UsageError`; ``mediaserver`` prints it as one line on stderr and
exits 2, as argparse does for its own errors.
"""

from __future__ import annotations

import argparse
import os
from typing import Any


class UsageError(ValueError):
    """A bad flag value or combination; the message names the flag (``--port must be ...``).
    ``mediaserver`` prints ``mediaserver CMD: error: MESSAGE`` on stderr and exits 2."""


def env_name(flag: str) -> str:
    return "MEDIASERVER_" + flag.lstrip("-").replace("-", "_").upper()


def add_option(parser: argparse.ArgumentParser, flag: str, *aliases: str,
               **kwargs: Any) -> argparse.Action:
    """Add ``flag`` whose default comes from its ``MEDIASERVER_*`` variable when set.

    ``aliases``: older spellings still accepted on the command line (the variable is named
    after ``flag`` only). The action's ``builtin_default`` keeps the default before the
    variable (:func:`changed_flags`).
    """
    name = env_name(flag)
    builtin = kwargs.get("default", False if kwargs.get("action") == "store_true" else None)
    raw = os.environ.get(name)
    if raw is not None:
        if kwargs.get("action") in ("store_true", argparse.BooleanOptionalAction):
            kwargs["default"] = raw.strip().lower() in ("1", "true", "yes", "on")
        elif kwargs.get("action") == "append":
            # a list, as if the flag had been given once (comma lists stay one string)
            kwargs["default"] = [kwargs.get("type", str)(raw)]
        else:
            convert = kwargs.get("type", str)
            kwargs["default"] = convert(raw)
    help_text = kwargs.get("help", "")
    kwargs["help"] = f"{help_text} [env {name}]".strip()
    action = parser.add_argument(flag, *aliases, **kwargs)
    action.builtin_default = builtin  # type: ignore[attr-defined]
    return action


def changed_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> frozenset[str]:
    """The flags (first spelling) of ``parser`` whose value in ``args`` is not their built-in
    default: given on the command line or by their variable."""
    changed = set()
    for action in parser._actions:
        if not action.option_strings or not hasattr(action, "builtin_default"):
            continue
        if getattr(args, action.dest, None) != action.builtin_default:
            changed.add(action.option_strings[0])
    return frozenset(changed)
