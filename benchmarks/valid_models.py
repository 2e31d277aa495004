"""Score enhancer weights on the trainer's held-out validation set, all in one run.

The set is the one ``mediaserver.enhance.train`` selects checkpoints by (``data.validation_set``:
32 fixed 4 s mixtures at −5…15 dB of held-out LibriSpeech speakers, the held-out languages and
noise families); the scoring is ``Trainer.validate``'s (PESQ-WB and SI-SDR of the 16 kHz
offline path). Use it to put several exports (and noisy) side by side under the same load::

    python benchmarks/valid_models.py --data ../shared/data --extra .data/extra16 \\
        --model msenh-v2=models/msenh-v2/enhancer.pt --model v3=runs/msenh-v3/enhancer.pt \\
        --json benchmarks/results/enhancer_valid_vX.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mediaserver.enhance import data  # noqa: E402
from mediaserver.enhance.train import MODEL_RATE, enhance_batch, si_sdr  # noqa: E402
from mediaserver.enhance.weights import load_model  # noqa: E402

logger = logging.getLogger(__name__)


def _pesq_wb(est: np.ndarray, ref: np.ndarray) -> Optional[float]:
    """Mean PESQ-WB over rows of [N, T] 16 kHz arrays (None without the ``pesq`` package)."""
    try:
        from pesq import pesq
    except ImportError:
        return None
    scores = []
    for e, r in zip(est, ref):
        try:
            scores.append(pesq(MODEL_RATE, r, e, "wb"))
        except Exception:  # PESQ refuses silent references, as in Trainer.validate
            continue
    return float(np.mean(scores)) if scores else None


@torch.no_grad()
def score(noisy: torch.Tensor, clean: torch.Tensor, weights: Optional[Path]) -> dict[str, Optional[float]]:
    """PESQ-WB / SI-SDR (dB) of ``weights`` on (noisy, clean) [N, T]; None = the noisy input."""
    if weights is None:
        y = noisy
    else:
        model = load_model(weights)
        y = torch.cat([enhance_batch(model, noisy[i : i + 16])[1] for i in range(0, len(noisy), 16)])
    s = clean[:, : y.shape[-1]]
    return {"si_sdr": float(si_sdr(y, s).mean()), "pesq_wb": _pesq_wb(y.numpy(), s.numpy())}


def describe(count: int, extra: Optional[Path]) -> str:
    """What the rows were scored on: the held-out languages only when ``--extra`` brought them."""
    languages = (f", {'/'.join(data.VALID_LANGUAGES)}" if extra is not None
                 else " (no --extra: no other languages)")
    return (f"held-out validation set of mediaserver.enhance.train ({count} mixtures, 4 s, -5..15 dB; "
            f"held-out LibriSpeech speakers{languages}, six noise families)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--extra", type=Path, default=None)
    parser.add_argument("--count", type=int, default=32, help="mixtures (the trainer's --valid-count)")
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=WEIGHTS")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    banks = data.load_banks(data.training_files(args.data, args.extra, "valid"), "cpu")
    noisy, clean = data.validation_set(*banks, count=args.count, seconds=4.0)
    rows: dict[str, dict[str, Optional[float]]] = {"noisy": score(noisy, clean, None)}
    logger.info("noisy: %s", rows["noisy"])
    weights: dict[str, str] = {}
    for spec in args.model:
        label, _, path = spec.partition("=")
        rows[label] = score(noisy, clean, Path(path))
        weights[label] = path
        logger.info("%s: %s", label, rows[label])
    out = {
        "what": describe(args.count, args.extra),
        "extra": str(args.extra) if args.extra is not None else None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": list(os.getloadavg()),
        "weights": weights,
        "rows": rows,
    }
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    logger.info("wrote %s", args.json.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
