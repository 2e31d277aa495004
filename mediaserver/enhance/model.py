"""The causal speech enhancer: a frame-wise complex-mask GRU network on a 20 ms STFT.

Design (see models/*/MODEL_CARD.md for the measured figures):

* Analysis: causal STFT, 20 ms sqrt-Hann window, 10 ms hop. At 16 kHz that is 320/160
  samples, at 48 kHz 960/480. The low 161 bins (0–8 kHz, 50 Hz apart) are the same at both
  rates once scaled by 16000/rate, so the network trained on 16 kHz speech runs unchanged on
  the server's 48 kHz stream without any resampler (and without a resampler's delay).
* Network: per frame, features = log power and power-compressed real/imag of the 161 bins
  → Linear → 2 GRUs (causal, one frame of state each) → Linear → complex ratio mask
  (magnitude bounded to 1.2 by tanh). Algorithmic latency = one window = 20 ms; no look-ahead.
* Above 8 kHz (48 kHz input only): the bins get one real gain per frame, the mean mask
  magnitude over 4–8 kHz, clamped by the attenuation limit. Noise up there is removed whenever
  the upper speech band is judged noise; fricative energy is kept when the 4–8 kHz band is
  speech. The network never sees > 8 kHz (the training data is 16 kHz).
* Suppression strength: the mask magnitude is floored at 10^(-atten_lim_db/20) per stream.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

MODEL_RATE = 16000
WINDOW_MS = 20
HOP_MS = 10
N_BINS = 161  # 0..8 kHz at 50 Hz spacing
HIGH_BAND_REF = (80, 161)  # bins 4..8 kHz used to extend the gain above 8 kHz
EPS = 1e-10
MASK_MAX = 1.2


def window_size(rate: int) -> int:
    return rate * WINDOW_MS // 1000


def hop_size(rate: int) -> int:
    return rate * HOP_MS // 1000


def analysis_window(rate: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """sqrt-periodic-Hann: with 50 % overlap analysis·synthesis windows sum to one."""
    return torch.hann_window(window_size(rate), periodic=True, device=device).sqrt()


def stft(x: torch.Tensor, rate: int) -> torch.Tensor:
    """Causal STFT. x [B, T] → spec [B, frames, bins] complex, frames = T // hop.

    Frame k covers samples (k-1)·hop … (k+1)·hop - 1 (zeros before the start), so frame k
    is complete as soon as sample (k+1)·hop - 1 has arrived: no look-ahead.
    """
    win, hop = window_size(rate), hop_size(rate)
    frames = x.shape[-1] // hop
    padded = torch.nn.functional.pad(x[..., : frames * hop], (win - hop, 0))
    chunks = padded.unfold(-1, win, hop)  # [B, frames, win]
    spec = torch.fft.rfft(chunks * analysis_window(rate, x.device), dim=-1)
    return spec * (MODEL_RATE / rate)


def istft(spec: torch.Tensor, rate: int) -> torch.Tensor:
    """Inverse of :func:`stft` by overlap-add. spec [B, frames, bins] → y [B, frames·hop].

    Output sample n of frame k lands at k·hop + n - (win - hop): y is delayed by
    win - hop samples relative to x; with the frame's own hop of waiting that makes the
    algorithmic latency exactly one window (20 ms).
    """
    win, hop = window_size(rate), hop_size(rate)
    frames = spec.shape[-2]
    chunks = torch.fft.irfft(spec * (rate / MODEL_RATE), n=win, dim=-1)
    chunks = chunks * analysis_window(rate, spec.device)  # [B, frames, win]
    first, second = chunks[..., :hop], chunks[..., hop:]
    # sample block k = second half of frame k-1 + first half of frame k
    prev = torch.nn.functional.pad(second, (0, 0, 1, 0))[..., :frames, :]
    return (first + prev).reshape(*spec.shape[:-2], frames * hop)


class EnhancerModel(nn.Module):
    """Complex-ratio-mask GRU enhancer.

    Args:
        hidden: GRU width.
        layers: number of stacked GRUs.
    """

    def __init__(self, hidden: int = 224, layers: int = 2) -> None:
        super().__init__()
        self.hidden = hidden
        self.layers = layers
        self.config = {"hidden": hidden, "layers": layers}
        in_features = 3 * N_BINS
        self.encoder = nn.Sequential(nn.Linear(in_features, hidden), nn.PReLU())
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.Linear(2 * hidden, 2 * N_BINS)

    # ---- state -------------------------------------------------------------------------
    @property
    def state_size(self) -> int:
        """Floats of recurrent state per stream (flattened GRU hidden states)."""
        return self.layers * self.hidden

    def initial_state(self, batch: int, device: Optional[torch.device] = None) -> torch.Tensor:
        return torch.zeros(batch, self.state_size, device=device)

    # ---- network -----------------------------------------------------------------------
    @staticmethod
    def features(spec: torch.Tensor) -> torch.Tensor:
        """spec [..., F] complex → [..., 3F]: log power, and real/imag compressed to |X|^0.3.

        No per-frame normalisation: the level of a frame against the frames before it is
        the main cue for speech vs. noise floor, and the GRU needs to see it. The fixed
        affine on log power only brings it to roughly −1…1.
        """
        power = spec.real.square() + spec.imag.square()
        mag = power.add(EPS).sqrt()
        scale = mag.pow(0.3) / mag
        return torch.cat(
            [0.2 * power.add(EPS).log10() + 1.0, spec.real * scale, spec.imag * scale], dim=-1
        )

    def _mask(self, feats: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B, T, 3F], h0 [layers, B, H] → (mask [B, T, F] complex, h [layers, B, H])."""
        e = self.encoder(feats)  # [B, T, H]
        g, h = self.gru(e, h0)  # [B, T, H]
        raw = self.decoder(torch.cat([g, e], dim=-1))  # [B, T, 2F]
        re, im = raw[..., :N_BINS], raw[..., N_BINS:]
        mag = (re.square() + im.square() + EPS).sqrt()
        scale = MASK_MAX * torch.tanh(mag) / mag
        return torch.complex(re * scale, im * scale), h

    def forward(self, spec: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """spec [B, T, F] complex (low 161 bins) → (mask [B, T, F] complex, state [B, S])."""
        batch = spec.shape[0]
        if state is None:
            state = self.initial_state(batch, spec.device)
        h0 = state.view(batch, self.layers, self.hidden).transpose(0, 1).contiguous()
        mask, h = self._mask(self.features(spec), h0)
        return mask, h.transpose(0, 1).reshape(batch, self.state_size)


def apply_mask(
    spec: torch.Tensor, mask: torch.Tensor, atten_lim_db: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Apply the low-band mask, and its extension above 8 kHz when spec has more bins.

    spec [B, T, Fall] complex, mask [B, T, 161] complex, atten_lim_db [B] or None.
    """
    if atten_lim_db is not None:
        floor = torch.pow(10.0, -atten_lim_db / 20.0).to(spec.real.dtype)[:, None, None]  # [B,1,1]
        mag = mask.abs()
        mask = mask * (torch.maximum(mag, floor) / mag.clamp_min(EPS))
    low = spec[..., :N_BINS] * mask
    if spec.shape[-1] == N_BINS:
        return low
    lo, hi = HIGH_BAND_REF
    gain = mask[..., lo:hi].abs().mean(dim=-1, keepdim=True).clamp_max(1.0)  # [B, T, 1]
    if atten_lim_db is not None:
        gain = torch.maximum(gain, floor)
    return torch.cat([low, spec[..., N_BINS:] * gain], dim=-1)


def enhance_offline(
    model: EnhancerModel, x: torch.Tensor, rate: int, atten_lim_db: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Whole-utterance enhancement. x [B, T] → y [B, frames·hop], delayed by one window - hop.

    The streaming path (streaming.Enhancer) must reproduce this output sample for sample.
    """
    spec = stft(x, rate)
    mask, _ = model(spec[..., :N_BINS])
    return istft(apply_mask(spec, mask, atten_lim_db), rate)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_second(model: EnhancerModel) -> int:
    """Multiply-accumulates per second of audio (network only; the FFTs are counted apart)."""
    f, h, n = 3 * N_BINS, model.hidden, model.layers
    per_frame = f * h + n * 3 * (h * h + h * h) + 2 * h * 2 * N_BINS
    frames_per_second = 1000 // HOP_MS
    return per_frame * frames_per_second


def fft_macs_per_second(rate: int) -> int:
    """Approximate real-FFT cost (analysis + synthesis) per second: 2 · (N/2)·log2(N) per frame."""
    n = window_size(rate)
    return int(2 * (n / 2) * math.log2(n) * 2 * (1000 // HOP_MS))
