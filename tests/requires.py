"""Dependencies a test needs: a skip on a developer's machine, a failure under ``CI=true``.

CI installs every system package, extra and the shipped weights (``.ci/run``), so a missing
one there is a broken install step, and the test that needed it fails at that line with the
reason, instead of skipping (``ci_guard`` would fail the session anyway, but only at the end
and without pointing at the step). Locally the same call skips with a hint how to install.
Every call works at module level (collection) and inside a test or fixture.
"""

from __future__ import annotations

import importlib
import shutil
from types import ModuleType

import pytest

from ci_guard import in_ci


def require(condition: bool, what: str) -> None:
    """Go on when ``condition`` holds; else skip (locally) or fail (``CI=true``) saying ``what``."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI=true and {what}: the install is broken, nothing may skip in CI",
                    pytrace=False)
    pytest.skip(what, allow_module_level=True)


def require_module(name: str, hint: str = "") -> ModuleType:
    """``pytest.importorskip`` that fails under ``CI=true``; returns the module."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require(False, f"python module {name!r} is not installed ({exc}){'; ' + hint if hint else ''}")
        raise   # unreachable: require() skipped or failed


def require_program(name: str, hint: str = "") -> str:
    """Path of an executable on PATH; skip locally / fail under ``CI=true`` when absent."""
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed{' (' + hint + ')' if hint else ''}")
    assert path is not None
    return path


ASR_HINT = 'pip install -e ".[asr]"'
