"""Room and participant names: one normal form, whole-string checks, one identity key.

Names come from clients and end up in log lines, file names, Redis keys and other
people's screens, so they are checked as a whole (``re.fullmatch``: ``$`` would also
match before a final newline) and brought to one form first:

- room names are ASCII (``A-Z a-z 0-9 _ . -``, 1-64, starting with a letter or digit)
  and are not rewritten: ``Lobby`` and ``lobby`` are two rooms;
- an identity is normalised with NFKC (full-width ``ｂｏｂ`` -> ``bob``, ligatures,
  no-break spaces), stripped of surrounding white space, inner runs of white space
  become one space; control and format characters (newline, tab, zero-width space,
  bidi overrides) are refused, never silently removed;
- two identities collide when their ``identity_key`` (NFKC casefold) is equal: ``Bob``
  and ``bob`` cannot be in one room at the same time.

Confusables across scripts (Latin ``a`` and Cyrillic ``а``) are not folded: that needs
Unicode's confusables table, which this module does not carry.
"""

from __future__ import annotations

import re
import unicodedata

ROOM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
IDENTITY_RE = re.compile(r"[\w][\w .@\-]{0,63}")
MAX_RAW = 256  # characters looked at before normalising (NFKC can lengthen a string)

ROOM_RULE = "room name must be 1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)"
IDENTITY_RULE = "identity must be 1-64 word characters, space . @ - (no control characters)"


class BadName(ValueError):
    """A room or identity that is not acceptable; ``field`` is ``room`` or ``identity``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_room(value: object) -> str:
    """Return ``value`` if it is a valid room name, else raise ``BadName``."""
    if not isinstance(value, str) or not ROOM_RE.fullmatch(value):
        raise BadName("room", ROOM_RULE)
    return value


def normalise_identity(value: object) -> str:
    """The identity in normal form (see the module docstring); raise ``BadName`` if invalid."""
    if not isinstance(value, str) or not value or len(value) > MAX_RAW:
        raise BadName("identity", IDENTITY_RULE)
    text = unicodedata.normalize("NFKC", value)
    if any(unicodedata.category(ch)[0] == "C" for ch in text):
        raise BadName("identity", IDENTITY_RULE)
    text = " ".join(text.split())
    if not IDENTITY_RE.fullmatch(text):
        raise BadName("identity", IDENTITY_RULE)
    return text


def identity_key(identity: str) -> str:
    """What two identities must differ in to share a room: NFKC of the NFKC casefold."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", identity).casefold())
