"""JSON from peers with bounded nesting: ``loads_bounded(text, max_depth)``.

``json.loads`` recurses once per ``[`` or ``{``; a 30,000-deep array raises
``RecursionError`` (not ``ValueError``), which escapes handlers that only expect bad
JSON. The depth is measured first, outside strings, without recursion; anything
deeper than ``max_depth`` is refused with ``JsonTooDeep`` (a ``ValueError``) before
the parser sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any

DEFAULT_MAX_DEPTH = 32

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class JsonTooDeep(ValueError):
    """The document nests arrays/objects deeper than allowed."""


def nesting_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of ``text``, brackets inside strings not counted.

    Linear time, no recursion; for malformed text the result is only an upper bound
    of what a parser would reach (the parser then rejects the text anyway).
    """
    if "[" not in text and "{" not in text:
        return 0
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(0, depth - 1)
    return deepest


def loads_bounded(text: str | bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``ValueError`` (``JsonTooDeep``) instead of recursing deeply."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonTooDeep(f"JSON nested {depth} deep (at most {max_depth})")
    try:
        return json.loads(text)
    except RecursionError:  # a bound set above the interpreter's own limit
        raise JsonTooDeep(f"JSON nested too deep for the parser (at most {max_depth})") from None
