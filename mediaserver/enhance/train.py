"""Train the enhancer.

    python -m mediaserver.enhance.train --data ../shared/data --out models/NAME [--init models/msenh-v2]

Reads only ``speech/train``, ``noise/train`` and ``rir/train``. Ten training speakers are held
out for validation (model selection); the ``test`` splits are never touched here. Resumable:
``--ckpt-dir`` keeps the optimiser state; rerunning the same command continues from it.
The best validation model is written to ``OUT/enhancer.pt`` (see weights.py) as it improves.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .data import MixConfig, MixtureStream
from .model import (
    MODEL_RATE,
    N_BINS,
    EnhancerModel,
    apply_mask,
    count_parameters,
    istft,
    macs_per_second,
    stft,
    window_size,
    hop_size,
)
from .weights import WEIGHTS_FILE, load_model, save_model

logger = logging.getLogger(__name__)

ALIGN = window_size(MODEL_RATE) - hop_size(MODEL_RATE)  # istft output delay in samples


def compressed_spectral_loss(est: torch.Tensor, ref: torch.Tensor, c: float = 0.3, lam: float = 0.3) -> torch.Tensor:
    """Power-law compressed magnitude + complex loss on matching STFT frames [B, T, F]."""
    est_mag, ref_mag = est.abs().clamp_min(1e-8), ref.abs().clamp_min(1e-8)
    est_c, ref_c = est_mag.pow(c), ref_mag.pow(c)
    mag_loss = (est_c - ref_c).square().mean()
    cplx_loss = (est * (est_c / est_mag) - ref * (ref_c / ref_mag)).abs().square().mean()
    return (1 - lam) * cplx_loss + lam * mag_loss


def multires_loss(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Compressed magnitude loss at two more resolutions, on waveforms [B, T]."""
    total = y.new_zeros(())
    for n_fft in (512, 1024):
        win = torch.hann_window(n_fft, device=y.device)
        ys = torch.stft(y, n_fft, n_fft // 4, window=win, return_complex=True)
        ss = torch.stft(s, n_fft, n_fft // 4, window=win, return_complex=True)
        total = total + (ys.abs().clamp_min(1e-8).pow(0.3) - ss.abs().clamp_min(1e-8).pow(0.3)).square().mean()
    return total / 2


def si_sdr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SDR in dB per item, [B, T] → [B]."""
    ref = ref - ref.mean(dim=-1, keepdim=True)
    est = est - est.mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.square().sum(-1, keepdim=True) + 1e-8)
    target = alpha * ref
    return 10 * torch.log10(target.square().sum(-1) / ((est - target).square().sum(-1) + 1e-8) + 1e-8)


def compute_loss(
    model: EnhancerModel, noisy: torch.Tensor, clean: torch.Tensor, sisdr_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """noisy, clean [B, T] at 16 kHz → (loss, SI-SDR [B] of the output).

    The compressed spectral losses favour what PESQ hears; ``sisdr_weight`` adds the
    waveform fidelity that the compression de-emphasises (loud low-frequency noise).
    """
    noisy_spec = stft(noisy, MODEL_RATE)  # [B, frames, F]
    clean_spec = stft(clean, MODEL_RATE)
    mask, _ = model(noisy_spec)
    est_spec = apply_mask(noisy_spec, mask)
    y = istft(est_spec, MODEL_RATE)[:, ALIGN:]  # undo the window delay
    s = clean[:, : y.shape[-1]]
    sdr = si_sdr(y, s)
    loss = compressed_spectral_loss(est_spec, clean_spec) + multires_loss(y, s)
    if sisdr_weight:
        loss = loss - sisdr_weight * sdr.clamp_max(40.0).mean()
    return loss, sdr


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="data folder with speech/noise/rir train splits")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write enhancer.pt into")
    parser.add_argument("--ckpt-dir", type=Path, default=None, help="resumable checkpoints (default checkpoints/<out name>)")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="training segment length")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=224)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=1, help="data worker processes")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--valid-every", type=int, default=250)
    parser.add_argument("--valid-batches", type=int, default=4)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--snr-db", type=float, nargs=2, default=(-5.0, 20.0), metavar=("LOW", "HIGH"),
                        help="training SNR range (validation always uses the default -5..20 dB)")
    parser.add_argument("--sisdr-weight", type=float, default=0.0, help="weight of the -SI-SDR (dB) loss term")
    parser.add_argument("--init", type=Path, default=None, help="start from these enhancer weights (fine-tuning)")
    parser.add_argument("--max-minutes", type=float, default=0, help="stop (checkpointed) after this long")


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.ckpt_dir = args.ckpt_dir or Path("checkpoints") / args.out.name
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if args.init is not None:
            self.model = load_model(args.init).to(self.device)  # its own width/depth win over --hidden
        else:
            self.model = EnhancerModel(hidden=args.hidden, layers=args.layers).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=1e-4)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05, final_div_factor=20
        )
        self.step = 0
        self.best = float("inf")
        self.history: list[dict] = []
        self.cfg = MixConfig(seconds=args.seconds, snr_db=tuple(args.snr_db))

    # ---- checkpointing -----------------------------------------------------------------
    @property
    def ckpt_file(self) -> Path:
        return self.ckpt_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        tmp = self.ckpt_file.with_suffix(".tmp")
        torch.save(
            {
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(),
                "step": self.step,
                "best": self.best,
                "history": self.history,
                "args": {k: str(v) for k, v in vars(self.args).items()},
            },
            tmp,
        )
        os.replace(tmp, self.ckpt_file)

    def maybe_resume(self) -> None:
        if not self.ckpt_file.exists():
            return
        state = torch.load(self.ckpt_file, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.step, self.best, self.history = state["step"], state["best"], state["history"]
        logger.info("resumed from %s at step %d (best valid loss %.4f)", self.ckpt_file, self.step, self.best)

    # ---- loop --------------------------------------------------------------------------
    def validation_set(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cfg = MixConfig(seconds=self.args.seconds)  # default SNRs, whatever --snr-db trains on
        stream = MixtureStream(self.args.data, cfg, self.args.batch, seed=10_000, role="valid")
        it = iter(stream)
        return [next(it) for _ in range(self.args.valid_batches)]

    @torch.no_grad()
    def validate(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float, float]:
        self.model.eval()
        losses, sdr_in, sdr_out = [], [], []
        for noisy, clean in batches:
            noisy, clean = noisy.to(self.device), clean.to(self.device)
            loss, sdr = compute_loss(self.model, noisy, clean)
            losses.append(loss.item())
            sdr_out.append(sdr.mean().item())
            sdr_in.append(si_sdr(noisy, clean).mean().item())
        self.model.train()
        return float(np.mean(losses)), float(np.mean(sdr_in)), float(np.mean(sdr_out))

    def export(self, valid_loss: float) -> None:
        meta = {
            "step": self.step,
            "valid_loss": valid_loss,
            "seed": self.args.seed,
            "batch": self.args.batch,
            "segment_seconds": self.args.seconds,
            "parameters": count_parameters(self.model),
            "macs_per_second": macs_per_second(self.model),
            "trained_on": "speech/train (minus 10 validation speakers), noise/train, rir/train",
        }
        save_model(self.model, self.args.out / WEIGHTS_FILE, meta)

    def run(self) -> None:
        args = self.args
        self.maybe_resume()
        valid = self.validation_set()
        loader = torch.utils.data.DataLoader(
            MixtureStream(args.data, self.cfg, args.batch, seed=args.seed + self.step, role="train"),
            batch_size=None,
            num_workers=args.workers,
            prefetch_factor=4 if args.workers else None,
            persistent_workers=bool(args.workers),
        )
        logger.info(
            "training %d params, %.1f M MAC/s, on %s from step %d to %d",
            count_parameters(self.model), macs_per_second(self.model) / 1e6, self.device, self.step, args.steps,
        )
        started = time.monotonic()
        window: list[float] = []
        self.model.train()
        for noisy, clean in loader:
            if self.step >= args.steps:
                break
            noisy, clean = noisy.to(self.device), clean.to(self.device)
            loss, _ = compute_loss(self.model, noisy, clean, self.args.sisdr_weight)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 3.0)
            self.opt.step()
            self.sched.step()
            self.step += 1
            window.append(loss.item())
            if self.step % args.log_every == 0:
                rate = self.step / max(time.monotonic() - started, 1e-6)
                logger.info("step %d loss %.4f lr %.2e (%.2f steps/s)", self.step, np.mean(window), self.sched.get_last_lr()[0], rate)
                window.clear()
            if self.step % args.valid_every == 0 or self.step == args.steps:
                v_loss, sdr_in, sdr_out = self.validate(valid)
                improved = v_loss < self.best
                self.history.append({"step": self.step, "valid_loss": v_loss, "si_sdr_in": sdr_in, "si_sdr_out": sdr_out})
                logger.info(
                    "valid step %d loss %.4f SI-SDR %.2f → %.2f dB%s", self.step, v_loss, sdr_in, sdr_out,
                    " (best, exported)" if improved else "",
                )
                if improved:
                    self.best = v_loss
                    self.export(v_loss)
                self.save_checkpoint()
                (self.args.out / "history.json").write_text(json.dumps(self.history, indent=1))
            if args.max_minutes and time.monotonic() - started > args.max_minutes * 60:
                logger.info("time budget reached at step %d", self.step)
                break
        self.save_checkpoint()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    Trainer(args).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
