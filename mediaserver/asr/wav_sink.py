"""Opt-in recorder: each segment as a 16 kHz WAV under ``DIR/room/identity/``.

Room and identity come from clients, so they are reduced to a safe file-name
alphabet (no path separators, no dot-dot) before they touch the file system, and
distinct names get distinct folders (``folder_name``): ``José`` and ``Josè`` both
reduce to ``jos_`` but land in ``jos_+<hash of José>`` and ``jos_+<hash of Josè>``.
Writes run in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

from .segmenter import Segment
from .sink import Item, QueuedSink

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_KEPT = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,79}")


def safe_name(name: str) -> str:
    cleaned = _SAFE.sub("_", name)[:80].lstrip(".")
    return cleaned or "_"


def folder_name(name: str) -> str:
    """A file-system-safe folder name, one per distinct ``name`` (case-insensitive file
    systems included).

    Lower-case names of ``a-z 0-9 _ . -`` (not starting with ``.`` or ``-``) are kept
    as they are; any other name becomes its lower-cased ``safe_name`` plus ``+`` and 16
    hex digits of its SHA-256. Kept names never hold ``+``, so the two kinds cannot meet.
    """
    if _KEPT.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{safe_name(name).lower()[:60]}+{digest}"


class WavRecorderSink(QueuedSink):
    def __init__(self, directory: str | Path, *, queue_size: int = 32) -> None:
        super().__init__("wav", queue_size=queue_size)
        self.directory = Path(directory)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-wav")
        self.written: list[Path] = []

    async def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _write(self, seg: Segment) -> Path:
        folder = self.directory / folder_name(seg.room) / folder_name(seg.identity)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{int(round(seg.start_ms)):010d}-{int(round(seg.end_ms)):010d}.wav"
        sf.write(str(path), seg.pcm, seg.sample_rate, subtype="PCM_16")
        path.with_suffix(".json").write_text(json.dumps(
            {"room": seg.room, "identity": seg.identity, "start_ms": seg.start_ms,
             "end_ms": seg.end_ms, "feed": seg.feed, "sample_rate": seg.sample_rate}))
        return path

    async def handle(self, item: Item) -> None:
        if isinstance(item, Segment):
            path = await asyncio.get_running_loop().run_in_executor(self._executor, self._write, item)
            self.written.append(path)
            if len(self.written) > 1000:
                del self.written[:500]
