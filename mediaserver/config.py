"""One way to configure: every CLI flag has an environment variable twin.

``--ice-host`` reads ``MEDIASERVER_ICE_HOST`` when the flag is absent. The flag wins.
"""

from __future__ import annotations

import argparse
import os
from typing import Any


def env_name(flag: str) -> str:
    return "MEDIASERVER_" + flag.lstrip("-").replace("-", "_").upper()


def add_option(parser: argparse.ArgumentParser, flag: str, **kwargs: Any) -> argparse.Action:
    """Add ``flag`` whose default comes from its ``MEDIASERVER_*`` variable when set."""
    name = env_name(flag)
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
    return parser.add_argument(flag, **kwargs)
