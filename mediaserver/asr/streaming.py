"""Streaming captions for one talker, sans-I/O: which audio to decode when, and what to show.

While a segment is open the growing utterance is re-decoded about once a second
(``partial_interval_ms`` of new audio); the words two consecutive decodes agree on (the
*stable prefix*, "local agreement") become a partial caption and never shrink until the
final replaces them. When the segmenter closes the segment, the whole utterance is decoded
once more for the final. Every decode gets the talker's previous final text as a prompt
(context across cuts). A segment the segmenter cut for *length* (no pause) may end inside a
word: its final keeps only the words before the last one the recogniser reports, and the
audio from that word's start on is carried into the next segment (cut at a reported word
boundary, with overlap), so no word is split between two decodes.

Nothing here touches asyncio, threads or a clock: the sink passes audio, segments and
decode results in and gets jobs and captions out. Times are milliseconds on the call clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from .segmenter import RATE, Segment
from .sink import LiveChunk

_WORD = re.compile(r"[^a-z0-9']+")


@dataclass(frozen=True)
class Word:
    """One recognised word; ``start_s``/``end_s`` are seconds into the decoded audio, or None."""

    text: str
    start_s: Optional[float] = None
    end_s: Optional[float] = None


@dataclass(frozen=True)
class StreamConfig:
    """Knobs of the streaming recogniser (milliseconds, characters)."""

    partial_interval_ms: int = 1000   # new audio between two partial decodes of one talker
    min_partial_ms: int = 1000        # no partial decode of less audio than this
    context_chars: int = 200          # previous final text passed as the prompt
    carry_max_ms: int = 4000          # at most this much audio is carried over a length cut
    partials: bool = True

    def __post_init__(self) -> None:
        if self.partial_interval_ms < 100 or self.min_partial_ms < 0:
            raise ValueError("partial interval must be >= 100 ms and min partial >= 0 ms")
        if self.context_chars < 0 or self.carry_max_ms < 0:
            raise ValueError("context_chars and carry_max_ms must be >= 0")


@dataclass(frozen=True)
class DecodeJob:
    """Audio to decode for one talker. ``final``: the closing decode of segment ``seq``."""

    room: str
    identity: str
    seq: int
    final: bool
    pcm: np.ndarray           # int16 [T] 16 kHz
    prompt: str
    start_ms: float           # call-clock time of pcm[0]
    end_ms: float             # call-clock time just after pcm[-1]
    word_times: bool = False  # the result must carry word times (length cut)

    @property
    def key(self) -> tuple[str, str]:
        return (self.room, self.identity)


@dataclass(frozen=True)
class Caption:
    """A partial (``final`` False) or final caption: ``end_ms`` is how far its audio reaches."""

    room: str
    identity: str
    text: str
    start_ms: float
    end_ms: float
    final: bool


def norm(word: str) -> str:
    """Case- and punctuation-blind form used to compare words of two decodes."""
    return _WORD.sub("", word.lower())


def agreed_prefix(a: list[Word], b: list[Word]) -> int:
    """Number of leading words two hypotheses share (compared by :func:`norm`)."""
    n = 0
    for x, y in zip(a, b):
        if norm(x.text) != norm(y.text):
            break
        n += 1
    return n


def join(words: list[Word]) -> str:
    return " ".join(w.text.strip() for w in words if w.text.strip())


class TalkerStream:
    """One talker's streaming state: open-utterance audio, agreement, context, carry-over."""

    def __init__(self, room: str, identity: str, config: StreamConfig | None = None) -> None:
        self.room, self.identity = room, identity
        self.cfg = config or StreamConfig()
        self._seq = -1                 # open segment, -1: none
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._start_ms = 0.0
        self._carry: Optional[tuple[float, np.ndarray]] = None   # (start_ms, pcm)
        self._context = ""
        self._asked_end_ms = -1e18     # audio end of the last partial decode asked for
        self._partial_in_flight = False
        self._prev: Optional[tuple[list[Word], float]] = None   # last partial hypothesis, its audio end
        self._shown: list[Word] = []   # stable prefix shown so far in this utterance

    # -- audio in --------------------------------------------------------------------------
    def add_live(self, chunk: LiveChunk) -> None:
        """Audio that joined the open segment ``chunk.seq`` (or a discard notice)."""
        if chunk.discarded:
            if chunk.seq == self._seq:
                self._reset_open()
            return
        if chunk.seq != self._seq:
            self._reset_open()
            self._seq = chunk.seq
            self._start_ms = chunk.start_ms
            if self._carry is not None:
                c_start, c_pcm = self._carry
                self._chunks.append(c_pcm)
                self._samples += len(c_pcm)
                self._start_ms = c_start
        self._chunks.append(chunk.pcm)
        self._samples += len(chunk.pcm)

    @property
    def open_ms(self) -> float:
        """Audio (ms) of the open utterance, carry-over included."""
        return 1000.0 * self._samples / RATE

    def partial_job(self) -> Optional[DecodeJob]:
        """A partial decode of the open utterance when one is due, else None."""
        if not self.cfg.partials or self._seq < 0 or self._partial_in_flight:
            return None
        end_ms = self._start_ms + self.open_ms
        if self.open_ms < self.cfg.min_partial_ms:
            return None
        if end_ms - self._asked_end_ms < self.cfg.partial_interval_ms:
            return None
        self._asked_end_ms = end_ms
        self._partial_in_flight = True
        pcm = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks = [pcm]
        return DecodeJob(self.room, self.identity, self._seq, False, pcm, self._prompt(),
                         self._start_ms, end_ms)

    def begin_partial(self, job: DecodeJob) -> Optional[DecodeJob]:
        """Call when a worker takes the partial job: the audio up to now (it may have waited
        in the queue), or None when its segment closed meanwhile (skip it)."""
        if job.seq != self._seq:
            return None
        pcm = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks = [pcm]
        end_ms = self._start_ms + self.open_ms
        self._asked_end_ms = end_ms
        return replace(job, pcm=pcm, start_ms=self._start_ms, end_ms=end_ms, prompt=self._prompt())

    def partial_dropped(self, job: DecodeJob) -> None:
        """A partial job was superseded or dropped before it ran."""
        if job.seq == self._seq:
            self._partial_in_flight = False

    def partial_done(self, job: DecodeJob, words: list[Word]) -> Optional[Caption]:
        """Result of a partial decode: a caption when the stable prefix grew."""
        if job.seq != self._seq:
            return None          # the segment closed meanwhile: its final supersedes this
        self._partial_in_flight = False
        prev, self._prev = self._prev, (words, job.end_ms)
        if prev is None:
            return None
        n = agreed_prefix(prev[0], words)
        if n <= len(self._shown):
            return None
        self._shown = words[:n]
        # the agreed words lie in the audio both decodes heard: up to the earlier one's end
        return Caption(self.room, self.identity, join(self._shown), self._start_ms, prev[1], False)

    # -- finals ----------------------------------------------------------------------------
    def close(self, segment: Segment) -> DecodeJob:
        """The segmenter closed ``segment``: its final decode job (see :meth:`begin_final`)."""
        length_cut = segment.meta.get("cut") == "length"
        job = DecodeJob(self.room, self.identity, segment.seq, True, segment.pcm, "",
                        segment.start_ms, segment.end_ms, word_times=length_cut)
        if segment.seq == self._seq:
            self._reset_open()
        return job

    def begin_final(self, job: DecodeJob) -> DecodeJob:
        """Call when the final job starts (after the talker's earlier finals finished): puts
        the carry-over of a previous length cut in front and the context as prompt."""
        pcm, start_ms = job.pcm, job.start_ms
        if self._carry is not None:
            c_start, c_pcm = self._carry
            pcm, start_ms = np.concatenate([c_pcm, pcm]), c_start
            self._carry = None
        return replace(job, pcm=pcm, start_ms=start_ms, prompt=self._prompt())

    def final_done(self, job: DecodeJob, words: Optional[list[Word]]) -> Optional[Caption]:
        """Result of a final decode (None: it failed); carries a length cut's last word on."""
        words = list(words or [])
        if job.word_times and words and words[-1].start_s is not None:
            last = words.pop()
            cut = max(0, int(last.start_s * RATE))
            keep = int(self.cfg.carry_max_ms * RATE / 1000)
            cut = max(cut, len(job.pcm) - keep)
            if cut < len(job.pcm):
                self._carry = (job.start_ms + 1000.0 * cut / RATE, job.pcm[cut:])
                if self._seq >= 0 and self._seq > job.seq:
                    # the next segment opened before this result: put the carry in front of it
                    self._chunks.insert(0, self._carry[1])
                    self._samples += len(self._carry[1])
                    self._start_ms = self._carry[0]
        text = join(words)
        if not text:
            return None
        self._context = (self._context + " " + text).strip()[-self.cfg.context_chars:]
        end_ms = job.end_ms if self._carry is None else self._carry[0]
        return Caption(self.room, self.identity, text, job.start_ms, end_ms, True)

    # -- internals -------------------------------------------------------------------------
    def _prompt(self) -> str:
        return self._context if self.cfg.context_chars else ""

    def _reset_open(self) -> None:
        self._seq = -1
        self._chunks, self._samples = [], 0
        self._asked_end_ms = -1e18
        self._partial_in_flight = False
        self._prev = None
        self._shown = []
