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

import numpy as np

DEFAULT_MAX_DEPTH = 32

_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_STEP = np.zeros(256, np.int8)   # byte -> change of depth
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class JsonTooDeep(ValueError):
    """The document nests arrays/objects deeper than allowed."""


def nesting_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of ``text``, brackets inside strings not counted.

    Linear time in C (one regex pass to drop strings, then a numpy running sum), no
    recursion: a few ms at most for a 64 KiB message. For malformed text the result may differ from what a parser would
    reach before failing; the parser rejects such text anyway.
    """
    data = _STRING.sub("", text).encode("utf-8", "surrogatepass")
    if not data:
        return 0
    depth = np.cumsum(_STEP[np.frombuffer(data, np.uint8)], dtype=np.int32)
    return max(0, int(depth.max()))


def loads_bounded(text: str | bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """``json.loads`` that raises ``ValueError`` (``JsonTooDeep``) instead of recursing deeply."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    # fast path: fewer opening brackets than the bound cannot nest deeper than it
    if text.count("[") + text.count("{") > max_depth and (depth := nesting_depth(text)) > max_depth:
        raise JsonTooDeep(f"JSON nested {depth} deep (at most {max_depth})")
    try:
        return json.loads(text)
    except RecursionError:  # a bound set above the interpreter's own limit
        raise JsonTooDeep(f"JSON nested too deep for the parser (at most {max_depth})") from None
