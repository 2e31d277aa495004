"""Streaming captions for one talker, sans-I/O: which audio to decode when, and what to show.

While a segment is open the growing utterance is re-decoded as soon as the previous partial
decode of the talker finished and at least ``partial_interval_ms`` of new audio arrived (the
cadence follows the decode time); the words two consecutive decodes agree on (the *stable
prefix*, "local agreement") become a partial caption and never shrink until the final
replaces them. Each partial also carries the newest decode's words past the stable prefix
(``Caption.unstable``, up to ``unstable_end_ms``): shown as provisional, they may change.

Early finals: when the open segment has ``early_final_ms`` of trailing silence (the pause
the segmenter will close it on after its hangover; half that hangover when it is shorter, as
the soft hangover of a long segment is), the utterance so far is decoded as its final at
once (an *early* final job). If the segmenter then closes the segment with no
speech in between, that result is the final (published as soon as both happened); if speech
resumes first, it is discarded (a later pause starts another). A segment cut for length, or
one whose early decode had not started when it closed, gets its final decoded as before. Every decode gets the talker's previous final text as a prompt
(context across cuts) and the newest partial hypothesis as a *draft*, which an engine may
check in one step instead of decoding it token by token (Moonshine does: same words, a final
of a long utterance in a third of the time). A segment the segmenter cut for *length* (no pause) may end inside a
word: its final keeps only the words before the last one the recogniser reports, and the
audio from that word's start on is carried into the next segment (cut at a reported word
boundary, with overlap), so no word is split between two decodes.

Superseded decodes: a decode in flight whose result would be thrown away (a partial whose
segment closed, an early final whose pause ended in speech or whose segment closed without
it) or that holds the talker's worker while the talker's final waits (a partial, once an
early or final decode of its segment is queued) is *superseded* (:meth:`TalkerStream.superseded`);
the sink then aborts it (``abort.py``) so the final does not wait for it, and
:meth:`TalkerStream.aborted` lets the talker ask for a partial again. A final, and an early
decode its segment adopted, are never superseded.

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

    partial_interval_ms: int = 300    # at least this much new audio between two partial decodes
    min_partial_ms: int = 1000        # no partial decode of less audio than this
    early_final_ms: int = 200         # trailing silence that starts the early final (0: off)
    context_chars: int = 200          # previous final text passed as the prompt
    carry_max_ms: int = 4000          # at most this much audio is carried over a length cut
    partials: bool = True
    drafts: bool = True               # decodes get the newest partial hypothesis as a draft
    early_before_cut: bool = True     # early final at half a shorter hangover (False: never
                                      # before early_final_ms; both switches: benchmark A/B)
    aborts: bool = True               # a decode in flight that is superseded (see
                                      # TalkerStream.superseded) is aborted (False: it runs
                                      # to its end holding the worker; benchmark A/B)
    preempt_partials: bool = False    # a final queued while every worker decodes partials
                                      # aborts the newest of them (another talker's, still
                                      # wanted). Off: 8 talkers on one worker, 3 rounds, finals
                                      # p95 0.43 s with it vs 0.22 s without (no aborts at all:
                                      # 2.76 s), partials p95 1.4-2.2 s both (benchmarks/
                                      # results/asr_aborts_talkers_moonshine.json)

    def __post_init__(self) -> None:
        if self.partial_interval_ms < 100 or self.min_partial_ms < 0:
            raise ValueError("partial interval must be >= 100 ms and min partial >= 0 ms")
        if self.context_chars < 0 or self.carry_max_ms < 0 or self.early_final_ms < 0:
            raise ValueError("context_chars, carry_max_ms and early_final_ms must be >= 0")


@dataclass(frozen=True)
class DecodeJob:
    """Audio to decode for one talker. ``final``: the closing decode of segment ``seq``;
    ``early``: a final decoded speculatively at a pause while the segment is still open
    (decoded exactly like a final; ``early_id`` tells it from an older one)."""

    room: str
    identity: str
    seq: int
    final: bool
    pcm: np.ndarray           # int16 [T] 16 kHz
    prompt: str
    start_ms: float           # call-clock time of pcm[0]
    end_ms: float             # call-clock time just after pcm[-1]
    word_times: bool = False  # the result must carry word times (length cut)
    early: bool = False
    early_id: int = 0
    prefix: str = ""          # a partial's stable prefix: the decode may start from it
    draft: str = ""           # the talker's newest hypothesis: the decode may check it at once

    @property
    def key(self) -> tuple[str, str]:
        return (self.room, self.identity)


@dataclass(frozen=True)
class Caption:
    """A partial (``final`` False) or final caption: ``end_ms`` is how far the audio of
    ``text`` reaches. A partial's ``text`` is the stable prefix; ``unstable`` the newest
    decode's further words (may change), whose audio reaches ``unstable_end_ms``."""

    room: str
    identity: str
    text: str
    start_ms: float
    end_ms: float
    final: bool
    unstable: str = ""
    unstable_end_ms: Optional[float] = None


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
    """One talker's streaming state: open-utterance audio, agreement, context, carry-over,
    early finals."""

    def __init__(self, room: str, identity: str, config: StreamConfig | None = None) -> None:
        self.room, self.identity = room, identity
        self.cfg = config or StreamConfig()
        self._seq = -1                 # open segment, -1: none
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._start_ms = 0.0
        self._silence_ms = 0.0         # trailing unvoiced audio of the open segment
        self._hangover_ms = 0.0        # the pause that closes it now (0: unknown)
        self._carry: Optional[tuple[float, np.ndarray]] = None   # (start_ms, pcm)
        self._context = ""
        self._asked_end_ms = -1e18     # audio end of the last partial decode asked for
        self._partial_in_flight = False
        self._prev: Optional[tuple[list[Word], float]] = None   # last partial hypothesis, its audio end
        self._shown: list[Word] = []   # stable prefix shown so far in this utterance
        self._shown_end_ms = 0.0       # how far the audio of the stable prefix reaches
        self._last_partial: tuple[str, str] = ("", "")
        # early finals: the open segment's current early job (None: none or speech resumed),
        # whether a worker took it, its words once decoded
        self._early_ids = 0
        self._early: Optional[DecodeJob] = None
        self._early_started = False
        self._early_words: Optional[list[Word]] = None
        # a closed segment whose final is the early decode still running: (early_id, final job)
        self._adopted: Optional[tuple[int, DecodeJob]] = None
        self.early_used = 0
        self.early_discarded = 0

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
        self._silence_ms = chunk.silence_ms
        self._hangover_ms = chunk.hangover_ms
        if chunk.silence_ms <= 0 and self._early is not None:
            self._drop_early()     # speech resumed: the early decode missed it

    @property
    def open_ms(self) -> float:
        """Audio (ms) of the open utterance, carry-over included."""
        return 1000.0 * self._samples / RATE

    def _pcm(self) -> np.ndarray:
        pcm = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks = [pcm]
        return pcm

    def partial_job(self) -> Optional[DecodeJob]:
        """A partial decode of the open utterance when one is due, else None."""
        if (not self.cfg.partials or self._seq < 0 or self._partial_in_flight
                or self._early is not None):
            return None
        if self.cfg.early_final_ms and self._silence_ms >= self.early_after_ms / 2:
            return None          # a pause is beginning: keep the worker free for the early final
        end_ms = self._start_ms + self.open_ms
        if self.open_ms < self.cfg.min_partial_ms:
            return None
        if end_ms - self._asked_end_ms < self.cfg.partial_interval_ms:
            return None
        self._asked_end_ms = end_ms
        self._partial_in_flight = True
        return DecodeJob(self.room, self.identity, self._seq, False, self._pcm(), self._prompt(),
                         self._start_ms, end_ms)

    def begin_partial(self, job: DecodeJob) -> Optional[DecodeJob]:
        """Call when a worker takes the partial job: the audio up to now (it may have waited
        in the queue), or None when its segment closed meanwhile (skip it)."""
        if job.seq != self._seq:
            return None
        end_ms = self._start_ms + self.open_ms
        self._asked_end_ms = end_ms
        return replace(job, pcm=self._pcm(), start_ms=self._start_ms, end_ms=end_ms,
                       prompt=self._prompt(), prefix=join(self._shown), draft=self._draft())

    def partial_dropped(self, job: DecodeJob) -> None:
        """A partial job was superseded or dropped before it ran."""
        if job.seq == self._seq:
            self._partial_in_flight = False

    # -- superseded decodes ----------------------------------------------------------------
    def superseded(self, job: DecodeJob) -> bool:
        """Whether ``job``, being decoded, is no longer worth its worker: a partial of a
        segment that closed, or of the open one once its early final was queued; an early
        decode that is neither the open segment's current one nor adopted by its closed
        segment. Finals never are."""
        if job.early:
            if self._adopted is not None and self._adopted[0] == job.early_id:
                return False
            return self._early is None or self._early.early_id != job.early_id or job.seq != self._seq
        if job.final:
            return False
        return job.seq != self._seq or self._early is not None

    def aborted(self, job: DecodeJob) -> None:
        """``job`` was aborted before its result (superseded, or a final of another talker
        took its worker): a partial of the open segment may be asked for again at once (its
        audio counts as not decoded). A superseded early decode's state was already dropped;
        the open segment's current one is treated as failed (its final is decoded at the
        close). Never call it for an adopted early decode (never superseded)."""
        if job.early and self._early is not None and self._early.early_id == job.early_id:
            self._early_started = False
            return
        if job.final or job.seq != self._seq:
            return
        self._partial_in_flight = False
        self._asked_end_ms = self._prev[1] if self._prev is not None else -1e18

    def partial_done(self, job: DecodeJob, words: list[Word]) -> Optional[Caption]:
        """Result of a partial decode: a caption when the stable prefix grew or the newest
        hypothesis past it changed."""
        if job.seq != self._seq:
            return None          # the segment closed meanwhile: its final supersedes this
        self._partial_in_flight = False
        prev, self._prev = self._prev, (words, job.end_ms)
        if prev is not None:
            n = agreed_prefix(prev[0], words)
            if n > len(self._shown):
                self._shown = words[:n]
                # the agreed words lie in the audio both decodes heard: up to the earlier one's end
                self._shown_end_ms = prev[1]
        tail = join(words[len(self._shown):])
        text = join(self._shown)
        if (text, tail) == self._last_partial or not (text or tail):
            return None
        self._last_partial = (text, tail)
        return Caption(self.room, self.identity, text, self._start_ms,
                       self._shown_end_ms if self._shown else self._start_ms, False,
                       unstable=tail, unstable_end_ms=job.end_ms if tail else None)

    # -- early finals ----------------------------------------------------------------------
    @property
    def early_state(self) -> str:
        """The open segment's early final: "none", "queued", "running" or "done"; or
        "adopted" when a closed segment waits for its early decode to finish."""
        if self._early is None:
            return "adopted" if self._adopted is not None else "none"
        if self._early_words is not None:
            return "done"
        return "running" if self._early_started else "queued"

    @property
    def early_after_ms(self) -> float:
        """The trailing pause that starts the early final: ``early_final_ms``, or half the
        hangover that will close the segment when that is sooner (a long segment's soft
        hangover: the decode still starts before the cut)."""
        if self._hangover_ms > 0 and self.cfg.early_before_cut:
            return min(float(self.cfg.early_final_ms), self._hangover_ms / 2)
        return float(self.cfg.early_final_ms)

    def early_job(self) -> Optional[DecodeJob]:
        """An early final of the open utterance when its trailing pause just reached
        :attr:`early_after_ms` (queue it like a final, after the talker's earlier finals)."""
        if (not self.cfg.early_final_ms or self._seq < 0 or self._early is not None
                or self._silence_ms < self.early_after_ms):
            return None
        self._early_ids += 1
        end_ms = self._start_ms + self.open_ms
        self._early = DecodeJob(self.room, self.identity, self._seq, True, self._pcm(), "",
                                self._start_ms, end_ms, early=True, early_id=self._early_ids)
        return self._early

    def begin_early(self, job: DecodeJob) -> Optional[DecodeJob]:
        """Call when a worker takes an early job: the job with the context as prompt and any
        carry-over in front, or None when it is stale (speech resumed, or its segment closed
        before it started: the final is decoded instead)."""
        if self._early is None or job.early_id != self._early.early_id or job.seq != self._seq:
            return None
        self._early_started = True
        # the carry of a previous length cut may have been put in front since the job was made
        n = int(round((job.end_ms - self._start_ms) * RATE / 1000.0))
        return replace(job, pcm=self._pcm()[:n], start_ms=self._start_ms, prompt=self._prompt(),
                       draft=self._draft())

    def early_done(self, job: DecodeJob, words: Optional[list[Word]]) -> Optional[Caption]:
        """Result of an early decode: the final caption when its segment already closed
        without new speech, else kept for :meth:`close` (or discarded when stale)."""
        if self._adopted is not None and self._adopted[0] == job.early_id:
            final = self._adopted[1]
            self._adopted = None
            self.early_used += 1
            return self._finish_early(final, words)
        if self._early is not None and self._early.early_id == job.early_id and job.seq == self._seq:
            if words is None:        # failed: no retry in this pause, the final is decoded
                self._early_started = False
            else:
                self._early_words = list(words)
        return None                  # stale: counted when it was dropped

    def _finish_early(self, final: DecodeJob, words: Optional[list[Word]]) -> Optional[Caption]:
        """The early decode's words as the final of segment ``final`` (its carry is in them)."""
        self._carry = None
        return self.final_done(final, words)

    def _drop_early(self) -> None:
        if self._early is not None and (self._early_started or self._early_words is not None):
            self.early_discarded += 1
        self._early, self._early_started, self._early_words = None, False, None

    # -- finals ----------------------------------------------------------------------------
    def close(self, segment: Segment) -> DecodeJob | Caption | None:
        """The segmenter closed ``segment``: its final decode job (see :meth:`begin_final`);
        or, when an early decode heard all of its speech, that decode's result as the final
        caption (already decoded) or None (still decoding: :meth:`early_done` returns it)."""
        length_cut = segment.meta.get("cut") == "length"
        job = DecodeJob(self.room, self.identity, segment.seq, True, segment.pcm, "",
                        segment.start_ms, segment.end_ms, word_times=length_cut)
        if segment.seq != self._seq:
            return job
        job = replace(job, draft=self._draft())
        early, started, words = self._early, self._early_started, self._early_words
        adopt = early is not None and not length_cut and (started or words is not None)
        if adopt:
            self._early, self._early_started, self._early_words = None, False, None
        self._reset_open()      # an early decode not adopted is dropped here
        if not adopt:
            return job
        assert early is not None
        final = replace(job, start_ms=early.start_ms)
        if words is not None:
            self.early_used += 1
            return self._finish_early(final, words)
        self._adopted = (early.early_id, final)
        return None

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
    def _draft(self) -> str:
        """The newest partial hypothesis of the open utterance ("": none): a decode of more
        of its audio may check these words at once instead of decoding them one by one."""
        return join(self._prev[0]) if self._prev is not None and self.cfg.drafts else ""

    def _prompt(self) -> str:
        return self._context if self.cfg.context_chars else ""

    def _reset_open(self) -> None:
        if self._early is not None:
            self._drop_early()
        self._seq = -1
        self._chunks, self._samples = [], 0
        self._silence_ms = 0.0
        self._hangover_ms = 0.0
        self._asked_end_ms = -1e18
        self._partial_in_flight = False
        self._prev = None
        self._shown = []
        self._shown_end_ms = 0.0
        self._last_partial = ("", "")
