"""Is a compute device usable? Asked before anything starts, so a missing GPU is one line that
names the flag (``--asr-device cuda: ...``) instead of a traceback from deep in a model load.

Both functions return None when ``device`` is usable, else why not (no flag in the text: the
caller adds its own). ``cpu`` is always usable and costs nothing to check.

- :func:`torch_device_problem`: for the enhancer (``serve --enhancer-device``, ``enhance
  --device``, ``bench --device``). Torch is asked in a short-lived child process, so the caller
  does not load torch (the front of ``serve --workers N`` never does) nor create a CUDA
  context before it forks its workers.
- :func:`ctranslate2_device_problem`: for Whisper (``--asr-device``); CTranslate2 is light to
  import and is asked in this process.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Optional

_TORCH_PROBE = r"""
import sys
import torch
device = sys.argv[1]
try:
    dev = torch.device(device)
except (RuntimeError, ValueError) as exc:
    print(f"not a torch device ({exc})")
    raise SystemExit(0)
if dev.type == "cuda":
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no CUDA GPU usable"
        print(f"torch {torch.__version__} sees no usable CUDA GPU ({build})")
    elif dev.index is not None and dev.index >= torch.cuda.device_count():
        print(f"torch sees {torch.cuda.device_count()} CUDA GPU(s), not index {dev.index}")
elif dev.type != "cpu":
    print(f"only cpu and cuda[:N] are supported, not {dev.type}")
"""


def torch_device_problem(device: str, *, timeout_s: float = 180.0) -> Optional[str]:
    """Why torch cannot run on ``device`` (``cpu``, ``cuda``, ``cuda:N``), or None."""
    if device == "cpu":
        return None
    try:
        probe = subprocess.run([sys.executable, "-c", _TORCH_PROBE, device], capture_output=True,
                               text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"torch did not answer within {timeout_s:g} s whether {device} is usable"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"torch could not be asked about {device}: {last}"
    answer = probe.stdout.strip()
    return answer or None


def ctranslate2_device_problem(device: str) -> Optional[str]:
    """Why CTranslate2 (faster-whisper) cannot run on ``device`` (``cpu``, ``cuda``), or None.
    Without CTranslate2 installed: None (the missing package is reported on its own)."""
    if device == "cpu":
        return None
    try:
        import ctranslate2
    except ImportError:
        return None
    if device != "cuda":
        return f"only cpu and cuda are supported, not {device}"
    if ctranslate2.get_cuda_device_count() < 1:
        return f"CTranslate2 {ctranslate2.__version__} sees no CUDA GPU"
    try:
        kinds = ctranslate2.get_supported_compute_types("cuda")
    except (RuntimeError, ValueError) as exc:   # driver or CUDA libraries missing or too old
        return f"CTranslate2 cannot use the GPU: {exc}"
    if "float16" not in kinds:
        return f"this GPU has no float16 support in CTranslate2 (it has {', '.join(sorted(kinds))})"
    return None
