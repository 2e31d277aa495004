"""Speech-quality metrics for evaluation: PESQ-WB, STOI, SI-SDR (intrusive) and DNSMOS.

All take 16 kHz mono float signals of equal length. A metric that cannot be computed for a
clip (PESQ finds no utterance in near-silence) returns NaN instead of aborting the run.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

RATE = 16000


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), zero-mean signals."""
    ref = ref.astype(np.float64) - ref.mean()
    est = est.astype(np.float64) - est.mean()
    energy = float(np.dot(ref, ref))
    if energy <= 0.0:
        return math.nan
    target = (np.dot(est, ref) / energy) * ref
    noise = est - target
    return float(10.0 * np.log10((np.dot(target, target) + 1e-12) / (np.dot(noise, noise) + 1e-12)))


def pesq_wb(ref: np.ndarray, est: np.ndarray) -> float:
    from pesq import pesq

    try:
        return float(pesq(RATE, ref.astype(np.float64), est.astype(np.float64), "wb"))
    except Exception as exc:  # pesq.NoUtterancesError, buffer errors on degenerate clips
        logger.warning("PESQ failed: %s", exc)
        return math.nan


def stoi(ref: np.ndarray, est: np.ndarray) -> float:
    from pystoi import stoi as _stoi

    return float(_stoi(ref.astype(np.float64), est.astype(np.float64), RATE, extended=False))


class Dnsmos:
    """DNSMOS P.835 (SIG/BAK/OVRL) with the ONNX models that ship in ``speechmos``.

    Sessions are created once with one thread each (the machine is shared).
    """

    def __init__(self) -> None:
        import onnxruntime as ort
        from speechmos import dnsmos

        base = os.path.dirname(os.path.abspath(dnsmos.__file__))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._impl = dnsmos.DNSMOS.__new__(dnsmos.DNSMOS)
        self._impl.primary_model_path = os.path.join(base, "dnsmos_models", "sig_bak_ovr.onnx")
        self._impl.onnx_sess = ort.InferenceSession(self._impl.primary_model_path, opts,
                                                    providers=["CPUExecutionProvider"])
        self._impl.p808_onnx_sess = ort.InferenceSession(os.path.join(base, "dnsmos_models", "model_v8.onnx"),
                                                         opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> dict[str, float]:
        x = np.clip(x.astype(np.float32), -1.0, 1.0)
        if not np.any(x):
            return {"dnsmos_sig": math.nan, "dnsmos_bak": math.nan, "dnsmos_ovrl": math.nan}
        r = self._impl(x, RATE, False)
        return {"dnsmos_sig": float(r["sig_mos"]), "dnsmos_bak": float(r["bak_mos"]),
                "dnsmos_ovrl": float(r["ovrl_mos"])}


def load_dnsmos() -> tuple[Optional[Dnsmos], str]:
    try:
        return Dnsmos(), ""
    except Exception as exc:
        return None, f"DNSMOS skipped: {type(exc).__name__}: {exc} (pip install speechmos)"


def intrusive(ref: np.ndarray, est: np.ndarray) -> dict[str, float]:
    return {"pesq_wb": pesq_wb(ref, est), "stoi": stoi(ref, est), "si_sdr": si_sdr(ref, est)}
