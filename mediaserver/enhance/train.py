"""Train the enhancer, on CPU or CUDA, resumable across sessions on one learning-rate schedule.

    python -m mediaserver.enhance.train --data ../shared/data --extra .data/extra16 --out models/NAME
    python -m mediaserver.enhance.train --pack .gpu/pack --device cuda --bf16 --batch 256 ...

Reads only ``train`` splits (data.training_files): speakers, two languages and several noise
families are held out of them for validation, so model selection is out of domain; the
``test`` splits are never touched here. Mixtures are made on the training device
(data.TensorMixer).

Schedule: the learning rate is a function of the *hours of mixtures seen* out of
``--budget-hours`` (linear warm-up over the first 2 %, then cosine down to 5 %), so runs with
different batch sizes, on CPU or GPU, in any number of sessions, continue one schedule. The
checkpoint (``--ckpt-dir``/checkpoint.pt) holds weights, optimiser, hours seen, step, the mixing
generator's state and the history; rerunning the same command continues from it.

Validation scores a fixed set of held-out mixtures by PESQ-WB (when the ``pesq`` package is
there) and SI-SDR, never by loss; the best score, PESQ + SI-SDR/20, is exported to
``OUT/enhancer.pt`` (weights.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import data
from .model import (
    MODEL_RATE,
    BandEnhancer,
    EnhancerModel,
    MaskNetwork,
    apply_mask,
    count_parameters,
    hop_size,
    istft,
    macs_per_second,
    stft,
    window_size,
)
from .weights import WEIGHTS_FILE, load_model, save_model

logger = logging.getLogger(__name__)

ALIGN = window_size(MODEL_RATE) - hop_size(MODEL_RATE)  # istft output delay in samples
BASE_BATCH = 16  # --lr is for this batch; larger batches scale it by sqrt(batch / 16), capped


# ---- losses --------------------------------------------------------------------------------------
def compressed_spectral_loss(est: torch.Tensor, ref: torch.Tensor, c: float = 0.3, lam: float = 0.3) -> torch.Tensor:
    """Power-law compressed magnitude + complex loss on matching STFT frames [B, T, F]."""
    est_mag, ref_mag = est.abs().clamp_min(1e-8), ref.abs().clamp_min(1e-8)
    est_c, ref_c = est_mag.pow(c), ref_mag.pow(c)
    mag_loss = (est_c - ref_c).square().mean()
    cplx_loss = (est * (est_c / est_mag) - ref * (ref_c / ref_mag)).abs().square().mean()
    return (1 - lam) * cplx_loss + lam * mag_loss


def multires_loss(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Compressed magnitude loss at three more resolutions (16/32/64 ms), on waveforms [B, T]."""
    total = y.new_zeros(())
    for n_fft in (256, 512, 1024):
        win = torch.hann_window(n_fft, device=y.device)
        ys = torch.stft(y, n_fft, n_fft // 4, window=win, return_complex=True)
        ss = torch.stft(s, n_fft, n_fft // 4, window=win, return_complex=True)
        total = total + (ys.abs().clamp_min(1e-8).pow(0.3) - ss.abs().clamp_min(1e-8).pow(0.3)).square().mean()
    return total / 3


def si_sdr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SDR in dB per item, [B, T] → [B] (Le Roux et al., ICASSP 2019)."""
    ref = ref - ref.mean(dim=-1, keepdim=True)
    est = est - est.mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.square().sum(-1, keepdim=True) + 1e-8)
    target = alpha * ref
    return 10 * torch.log10(target.square().sum(-1) / ((est - target).square().sum(-1) + 1e-8) + 1e-8)


def enhance_batch(model: MaskNetwork, noisy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """noisy [B, T] at 16 kHz → (enhanced spectrum [B, frames, F], waveform [B, T'] aligned with noisy)."""
    spec = stft(noisy, MODEL_RATE)  # [B, frames, F]
    mask, _ = model(spec)
    est_spec = apply_mask(spec, mask.to(spec.dtype))
    return est_spec, istft(est_spec, MODEL_RATE)[:, ALIGN:]


def compute_loss(
    model: MaskNetwork, noisy: torch.Tensor, clean: torch.Tensor, sisdr_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """noisy, clean [B, T] at 16 kHz → (loss, SI-SDR [B] of the output).

    Level-normalised: each example's spectra and waveforms are divided by g = max(rms(clean),
    0.1·rms(noisy)) before the loss, so a quiet talker weighs as much as a loud one (without it
    a −12 dBFS clip weighs ~48× a −40 dBFS one) and a noise-only clip still counts.
    The compressed spectral terms favour what PESQ hears; ``sisdr_weight`` adds waveform fidelity.
    """
    est_spec, y = enhance_batch(model, noisy)
    g = torch.maximum(clean.square().mean(-1).sqrt(), 0.1 * noisy.square().mean(-1).sqrt()).clamp_min(1e-5)  # [B]
    clean_spec = stft(clean, MODEL_RATE)
    s = clean[:, : y.shape[-1]]
    loss = compressed_spectral_loss(est_spec / g[:, None, None], clean_spec / g[:, None, None])
    loss = loss + multires_loss(y / g[:, None], s / g[:, None])
    sdr = si_sdr(y, s)
    if sisdr_weight:
        loss = loss - sisdr_weight * sdr.clamp_max(40.0).mean()
    return loss, sdr


# ---- schedule ------------------------------------------------------------------------------------
def learning_rate(lr_max: float, hours_seen: float, budget_hours: float, warmup: float = 0.02) -> float:
    """Warm-up then cosine to 5 % of ``lr_max``, as a function of the fraction of the budget seen."""
    p = min(hours_seen / budget_hours, 1.0)
    if p < warmup:
        return lr_max * max(p / warmup, 0.01)
    q = (p - warmup) / (1 - warmup)
    return lr_max * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * q)))


# ---- command line --------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="data folder with speech/noise/rir train splits (and extra/)")
    src.add_argument("--pack", type=Path, help="a folder written by --write-pack (for a machine without the data)")
    parser.add_argument("--extra", type=Path, default=None, help="folder build_speech.py wrote (more languages)")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write enhancer.pt into")
    parser.add_argument("--ckpt-dir", type=Path, default=None, help="resumable checkpoint (default checkpoints/<out name>)")
    parser.add_argument("--write-pack", type=Path, default=None, help="write a size-capped pack of --data and exit")
    parser.add_argument("--pack-mb", type=float, default=50.0)
    parser.add_argument("--arch", choices=("band", "gru"), default="band")
    parser.add_argument("--channels", type=int, default=32, help="band: feature width")
    parser.add_argument("--time-hidden", type=int, default=48, help="band: per-band GRU width")
    parser.add_argument("--blocks", type=int, default=2, help="band: dual-path blocks")
    parser.add_argument("--hidden", type=int, default=224, help="gru: GRU width")
    parser.add_argument("--layers", type=int, default=2, help="gru: stacked GRUs")
    parser.add_argument("--steps", type=int, default=0, help="stop this run after this many steps (0: budget/time)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="training segment length")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate at batch 16")
    parser.add_argument("--budget-hours", type=float, default=4000.0, help="hours of mixtures the schedule spans")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast the network to bfloat16 (for CUDA)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--valid-every", type=int, default=500, help="validate every N steps")
    parser.add_argument("--valid-count", type=int, default=32, help="validation mixtures (4 s each)")
    parser.add_argument("--ckpt-every-s", type=float, default=300.0, help="write the checkpoint at least this often")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--snr-db", type=float, nargs=2, default=(-5.0, 20.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--sisdr-weight", type=float, default=0.0, help="weight of the -SI-SDR (dB) loss term")
    parser.add_argument("--init", type=Path, default=None, help="start from these enhancer weights (fine-tuning)")
    parser.add_argument("--max-minutes", type=float, default=0, help="stop (checkpointed) after this long")


def build_network(args: argparse.Namespace) -> nn.Module:
    if args.init is not None:
        return load_model(args.init)  # its own architecture wins over the flags
    if args.arch == "band":
        return BandEnhancer(channels=args.channels, time_hidden=args.time_hidden, blocks=args.blocks)
    return EnhancerModel(hidden=args.hidden, layers=args.layers)


class Trainer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.ckpt_dir = args.ckpt_dir or Path("checkpoints") / args.out.name
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.model = build_network(args).to(self.device)
        self.lr_max = args.lr * min(math.sqrt(args.batch / BASE_BATCH), 2.5)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr_max, weight_decay=1e-4)
        self.step = 0
        self.hours = 0.0
        self.best = -float("inf")
        self.history: list[dict] = []
        self.gen = torch.Generator(device=self.device).manual_seed(args.seed)
        cfg = data.MixConfig(seconds=args.seconds, snr_db=tuple(args.snr_db))
        if args.pack is not None:
            train_banks = data.read_pack(args.pack / "train", self.device)
            valid_banks = data.read_pack(args.pack / "valid", "cpu")
        else:
            train_banks = data.load_banks(data.training_files(args.data, args.extra, "train"), self.device)
            valid_banks = data.load_banks(data.training_files(args.data, args.extra, "valid"), "cpu")
        self.mixer = data.TensorMixer(*train_banks, cfg)
        self.valid = data.validation_set(*valid_banks, count=args.valid_count, seconds=4.0)
        logger.info(
            "train: %.1f min speech (%d clips), %.1f min noise (%d), %d rooms; valid: %d mixtures",
            train_banks[0].seconds / 60, train_banks[0].clips, train_banks[1].seconds / 60, train_banks[1].clips,
            train_banks[2].clips, args.valid_count,
        )

    # ---- checkpointing -------------------------------------------------------------------------
    @property
    def ckpt_file(self) -> Path:
        return self.ckpt_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        tmp = self.ckpt_file.with_suffix(".tmp")
        torch.save(
            {
                "config": dict(self.model.config),
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(),
                "step": self.step,
                "hours": self.hours,
                "best": self.best,
                "history": self.history,
                "gen": self.gen.get_state(),
                "args": {k: str(v) for k, v in vars(self.args).items()},
            },
            tmp,
        )
        os.replace(tmp, self.ckpt_file)

    def maybe_resume(self) -> None:
        if not self.ckpt_file.exists():
            return
        state = torch.load(self.ckpt_file, map_location=self.device, weights_only=False)
        if state.get("config", self.model.config) != self.model.config:
            raise SystemExit(f"{self.ckpt_file} holds a {state['config']} network, not {self.model.config}")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.best, self.history = state["step"], state["best"], state["history"]
        self.hours = state.get("hours", 0.0)
        if "gen" in state:
            try:
                self.gen.set_state(state["gen"].cpu())
            except (RuntimeError, TypeError):  # CPU generator state into a CUDA run or back
                self.gen.manual_seed(self.args.seed + self.step)
        logger.info("resumed %s at step %d, %.1f h seen (best score %.3f)", self.ckpt_file, self.step, self.hours, self.best)

    # ---- validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PESQ-WB (if available) and SI-SDR of the fixed held-out set; score = PESQ + SI-SDR/20."""
        self.model.eval()
        noisy, clean = self.valid
        outs = []
        for i in range(0, len(noisy), 16):
            _, y = enhance_batch(self.model, noisy[i : i + 16].to(self.device))
            outs.append(y.float().cpu())
        y = torch.cat(outs)
        s = clean[:, : y.shape[-1]]
        result = {"si_sdr_in": float(si_sdr(noisy[:, : y.shape[-1]], s).mean()), "si_sdr": float(si_sdr(y, s).mean())}
        try:
            from pesq import pesq
        except ImportError:
            pesq = None
        if pesq is not None:
            scores = []
            for est, ref in zip(y.numpy(), s.numpy()):
                try:
                    scores.append(pesq(MODEL_RATE, ref, est, "wb"))
                except Exception:  # PESQ refuses silent references; skip such an item
                    continue
            result["pesq"] = float(np.mean(scores)) if scores else 1.0
        result["score"] = result.get("pesq", 0.0) + result["si_sdr"] / 20.0
        self.model.train()
        return result

    def export(self, result: dict[str, float]) -> None:
        meta = {
            "step": self.step,
            "hours_seen": round(self.hours, 2),
            "validation": result,
            "seed": self.args.seed,
            "batch": self.args.batch,
            "segment_seconds": self.args.seconds,
            "parameters": count_parameters(self.model),
            "macs_per_second": macs_per_second(self.model),
            "trained_on": "train splits of shared/data, data/extra and build_speech.py, minus held-out validation speakers, languages and noise families",
        }
        save_model(self.model, self.args.out / WEIGHTS_FILE, meta)

    def validate_and_export(self) -> None:
        result = self.validate()
        improved = result["score"] > self.best
        self.history.append({"step": self.step, "hours": round(self.hours, 2), **result})
        logger.info(
            "valid step %d (%.1f h): PESQ %s SI-SDR %.2f → %.2f dB%s", self.step, self.hours,
            f"{result['pesq']:.3f}" if "pesq" in result else "n/a", result["si_sdr_in"], result["si_sdr"],
            " (best, exported)" if improved else "",
        )
        if improved:
            self.best = result["score"]
            self.export(result)
        (self.args.out / "history.json").write_text(json.dumps(self.history, indent=1))

    # ---- loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        args = self.args
        self.maybe_resume()
        logger.info(
            "training %s: %d params, %.1f M MAC/s, on %s from step %d (%.1f of %.0f h), batch %d, peak lr %.2e",
            self.model.config, count_parameters(self.model), macs_per_second(self.model) / 1e6, self.device,
            self.step, self.hours, args.budget_hours, args.batch, self.lr_max,
        )
        started = last_ckpt = time.monotonic()
        first_step = self.step
        window: list[float] = []
        hours_per_step = args.batch * args.seconds / 3600.0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(args.bf16))
        self.model.train()
        while self.hours < args.budget_hours:
            if args.steps and self.step - first_step >= args.steps:
                break
            lr = learning_rate(self.lr_max, self.hours, args.budget_hours)
            for group in self.opt.param_groups:
                group["lr"] = lr
            with torch.no_grad():
                noisy, clean = self.mixer.draw(args.batch, self.gen)
            with autocast:
                loss, _ = compute_loss(self.model, noisy, clean, args.sisdr_weight)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 3.0)
            self.opt.step()
            self.step += 1
            self.hours += hours_per_step
            window.append(float(loss.detach()))
            if self.step % args.log_every == 0:
                rate = (self.step - first_step) / max(time.monotonic() - started, 1e-6)
                logger.info("step %d loss %.4f lr %.2e (%.2f steps/s, %.1f h seen)", self.step, np.mean(window), lr, rate, self.hours)
                window.clear()
            if self.step % args.valid_every == 0:
                self.validate_and_export()
                self.save_checkpoint()
                last_ckpt = time.monotonic()
            elif time.monotonic() - last_ckpt > args.ckpt_every_s:
                self.save_checkpoint()
                last_ckpt = time.monotonic()
            if args.max_minutes and time.monotonic() - started > args.max_minutes * 60:
                logger.info("time budget reached at step %d", self.step)
                break
        if self.step % args.valid_every:
            self.validate_and_export()
        self.save_checkpoint()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.write_pack is not None:
        if args.data is None:
            parser.error("--write-pack needs --data")
        for role, share in (("train", 0.9), ("valid", 0.1)):
            split = data.training_files(args.data, args.extra, role)
            written = data.write_pack(split, args.write_pack / role, args.pack_mb * share, seed=args.seed)
            logger.info("pack %s: %s", role, {k: f"{v / 60:.1f} min" for k, v in written.items()})
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    Trainer(args).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
