"""The causal speech enhancers: complex-ratio-mask networks on a 20 ms STFT.

Two architectures share the STFT, the mask application and the streaming wrapper
(``streaming.Enhancer``); a checkpoint's ``config["arch"]`` picks one (:func:`build_model`):

* ``band`` (:class:`BandEnhancer`, msenh-v3 and later): structure across frequency. A strided
  convolutional encoder folds the 161 bins into 21 bands, dual-path blocks alternate a GRU
  across the bands of one frame (no latency) with a GRU over time per band (weights shared by
  all bands), and a decoder with skip connections unfolds back to a per-bin complex mask.
* ``gru`` (:class:`EnhancerModel`, msenh-v1/v2): one shared vector per frame, no structure
  across frequency; kept so those checkpoints still load.

Common design (see models/*/MODEL_CARD.md for the measured figures):

* Analysis: causal STFT, 20 ms sqrt-Hann window, 10 ms hop. At 16 kHz that is 320/160
  samples, at 48 kHz 960/480. The low 161 bins (0–8 kHz, 50 Hz apart) are the same at both
  rates once scaled by 16000/rate, so the network trained on 16 kHz speech runs unchanged on
  the server's 48 kHz stream without any resampler (and without a resampler's delay).
* Features per bin: log power and power-compressed real/imag; output: complex ratio mask with
  magnitude bounded to 1.2 by tanh. Only the GRUs over time hold state, one frame of it, so
  the algorithmic latency is one window = 20 ms with no look-ahead, and streaming one hop at
  a time reproduces the offline output.
* Above 8 kHz (48 kHz input only): the bins get one real gain per frame, the mean mask
  magnitude over 4–8 kHz, clamped by the attenuation limit. Noise up there is removed whenever
  the upper speech band is judged noise; fricative energy is kept when the 4–8 kHz band is
  speech. The network never sees > 8 kHz (the training data is 16 kHz).
* Suppression strength: the mask magnitude is floored at 10^(-atten_lim_db/20) per stream.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Protocol

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
        return spec_features(spec).transpose(-3, -2).flatten(-2)  # [B, 3, T, F] → [B, T, 3F]

    def _mask(self, feats: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B, T, 3F], h0 [layers, B, H] → (mask [B, T, F] complex, h [layers, B, H])."""
        e = self.encoder(feats)  # [B, T, H]
        g, h = self.gru(e, h0)  # [B, T, H]
        raw = self.decoder(torch.cat([g, e], dim=-1))  # [B, T, 2F]
        return bounded_complex_mask(raw[..., :N_BINS], raw[..., N_BINS:]), h

    def forward(self, spec: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """spec [B, T, F] complex (low 161 bins) → (mask [B, T, F] complex, state [B, S])."""
        batch = spec.shape[0]
        if state is None:
            state = self.initial_state(batch, spec.device)
        h0 = state.view(batch, self.layers, self.hidden).transpose(0, 1).contiguous()
        mask, h = self._mask(self.features(spec), h0)
        return mask, h.transpose(0, 1).reshape(batch, self.state_size)


class MaskNetwork(Protocol):
    """What the streaming wrapper, training and weights files need of a network."""

    config: dict[str, Any]

    @property
    def state_size(self) -> int: ...

    def initial_state(self, batch: int, device: Optional[torch.device] = None) -> torch.Tensor: ...

    def __call__(self, spec: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]: ...


def spec_features(spec: torch.Tensor) -> torch.Tensor:
    """spec [B, T, F] complex → [B, 3, T, F]: log power, and real/imag compressed to |X|^0.3."""
    power = spec.real.square() + spec.imag.square()
    mag = power.add(EPS).sqrt()
    scale = mag.pow(0.3) / mag
    return torch.stack([0.2 * power.add(EPS).log10() + 1.0, spec.real * scale, spec.imag * scale], dim=-3)


def bounded_complex_mask(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """Raw real/imag → complex mask whose magnitude is MASK_MAX·tanh(|raw|) (≤ 1.2)."""
    mag = (re.square() + im.square() + EPS).sqrt()
    scale = MASK_MAX * torch.tanh(mag) / mag
    return torch.complex(re * scale, im * scale)


def _freq_out(bins: int, stride: int = 2, kernel: int = 5) -> int:
    pad = kernel // 2
    return (bins + 2 * pad - kernel) // stride + 1


class DualPathBlock(nn.Module):
    """Across bands within a frame (a band-mixing layer, no latency), then over time per band.

    x [B·T, C, Fb] → [B·T, C, Fb]; state [B, Fb, H] (the time GRU's hidden state per band).
    The band path mixes all bands of one frame with one learned [Fb, Fb] matrix (MLP-Mixer's
    token mixing) followed by a channel layer; the time path is a GRU shared by all bands.
    Both paths are residual with a LayerNorm over channels.
    """

    def __init__(self, channels: int, time_hidden: int, bands: int) -> None:
        super().__init__()
        self.band_mix = nn.Linear(bands, bands)
        self.freq_proj = nn.Sequential(nn.Linear(channels, channels), nn.PReLU())
        self.freq_norm = nn.LayerNorm(channels)
        self.time_gru = nn.GRU(channels, time_hidden, batch_first=True)
        self.time_proj = nn.Linear(time_hidden, channels)
        self.time_norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B·T, C, Fb], h0 [B, Fb, H] → (x [B·T, C, Fb], h [B, Fb, H])."""
        bt, c, f = x.shape
        t = bt // batch
        y = x.transpose(1, 2)  # [B·T, Fb, C]
        y = y + self.freq_norm(self.freq_proj(self.band_mix(x).transpose(1, 2)))
        y = y.view(batch, t, f, c).transpose(1, 2).reshape(batch * f, t, c)  # [B·Fb, T, C]
        g, h = self.time_gru(y, h0.reshape(1, batch * f, -1))
        y = y + self.time_norm(self.time_proj(g))
        out = y.view(batch, f, t, c).permute(0, 2, 3, 1).reshape(bt, c, f)  # [B·T, C, Fb]
        return out, h.view(batch, f, -1)


class BandEnhancer(nn.Module):
    """Band-structured complex-mask enhancer (arch ``band``).

    Shapes: spec [B, T, 161] complex → features [B·T, 3, 161] → encoder (three convs over
    frequency, stride 2: 161 → 81 → 41 → 21 bands, ``channels`` wide) → ``blocks`` dual-path
    blocks on [B·T, C, 21] → decoder (transposed convs, each adding its encoder skip:
    21 → 41 → 81 → 161) → raw [B·T, 2, 161] → bounded complex mask [B, T, 161].
    The convolutions see one frame (kernel 1 in time), so all memory across time is the time
    GRUs' state: [B, blocks·21·time_hidden] floats.

    Args:
        channels: feature width C of the encoder, blocks and decoder.
        time_hidden: hidden size of each band's GRU over time.
        blocks: number of dual-path blocks.
    """

    def __init__(self, channels: int = 32, time_hidden: int = 48, blocks: int = 2) -> None:
        super().__init__()
        self.channels, self.time_hidden, self.blocks_n = channels, time_hidden, blocks
        self.config = {"arch": "band", "channels": channels, "time_hidden": time_hidden, "blocks": blocks}
        widths = [N_BINS]
        for _ in range(3):
            widths.append(_freq_out(widths[-1]))
        self.widths = widths  # [161, 81, 41, 21]
        self.bands = widths[-1]
        c = channels
        self.encoder = nn.ModuleList(
            nn.Sequential(nn.Conv1d(cin, c, 5, stride=2, padding=2), nn.BatchNorm1d(c), nn.PReLU(c))
            for cin in (3, c, c)
        )
        self.blocks = nn.ModuleList(DualPathBlock(c, time_hidden, self.bands) for _ in range(blocks))
        self.decoder = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose1d(c, c, 5, stride=2, padding=2), nn.BatchNorm1d(c), nn.PReLU(c))
            for _ in range(2)
        )
        self.head = nn.ConvTranspose1d(c, 2, 5, stride=2, padding=2)

    @property
    def state_size(self) -> int:
        return self.blocks_n * self.bands * self.time_hidden

    def initial_state(self, batch: int, device: Optional[torch.device] = None) -> torch.Tensor:
        return torch.zeros(batch, self.state_size, device=device)

    def forward(self, spec: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """spec [B, T, 161] complex → (mask [B, T, 161] complex, state [B, S])."""
        b, t, _ = spec.shape
        if state is None:
            state = self.initial_state(b, spec.device)
        h = state.view(b, self.blocks_n, self.bands, self.time_hidden)
        # frames are independent outside the time GRUs: convolve over frequency on [B·T, C, F]
        x = spec_features(spec).transpose(1, 2).reshape(b * t, 3, N_BINS)
        skips = []
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)  # [B·T, C, 81 / 41 / 21]
        new_state = []
        for i, block in enumerate(self.blocks):
            x, hi = block(x, h[:, i], b)
            new_state.append(hi)
        for layer, skip, width in zip(self.decoder, skips[:0:-1], self.widths[-2:0:-1]):
            x = layer(x + skip)[..., :width]  # 21 → 41 → 81 (transposed conv gives 2·F − 1)
        x = self.head(x + skips[0])  # [B·T, 2, 161]
        x = x.float().view(b, t, 2, N_BINS)  # fp32 even when the network ran in bf16
        mask = bounded_complex_mask(x[:, :, 0], x[:, :, 1])  # [B, T, F]
        return mask, torch.stack(new_state, dim=1).reshape(b, self.state_size)

    def macs_per_frame(self) -> int:
        c, h, f = self.channels, self.time_hidden, self.bands
        enc = self.widths[1] * c * 3 * 5 + (self.widths[2] + self.widths[3]) * c * c * 5
        freq_gru = c * f * f + f * c * c
        time_gru = f * 3 * (c * h + h * h) + f * h * c
        dec = (self.widths[2] + self.widths[1]) * c * c * 5 + N_BINS * c * 2 * 5
        return enc + self.blocks_n * (freq_gru + time_gru) + dec


def build_model(config: dict[str, Any]) -> nn.Module:
    """Rebuild a network from a checkpoint's config (``arch`` absent: the v1/v2 GRU net)."""
    config = dict(config)
    arch = config.pop("arch", "gru")
    if arch == "band":
        return BandEnhancer(**config)
    if arch == "gru":
        return EnhancerModel(**config)
    raise ValueError(f"unknown enhancer architecture {arch!r}")


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
    model: MaskNetwork, x: torch.Tensor, rate: int, atten_lim_db: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Whole-utterance enhancement. x [B, T] → y [B, frames·hop], delayed by one window - hop.

    The streaming path (streaming.Enhancer) must reproduce this output sample for sample.
    """
    spec = stft(x, rate)
    mask, _ = model(spec[..., :N_BINS])
    return istft(apply_mask(spec, mask, atten_lim_db), rate)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_second(model: nn.Module) -> int:
    """Multiply-accumulates per second of audio (network only; the FFTs are counted apart)."""
    if isinstance(model, BandEnhancer):
        return model.macs_per_frame() * (1000 // HOP_MS)
    assert isinstance(model, EnhancerModel)
    f, h, n = 3 * N_BINS, model.hidden, model.layers
    per_frame = f * h + n * 3 * (h * h + h * h) + 2 * h * 2 * N_BINS
    frames_per_second = 1000 // HOP_MS
    return per_frame * frames_per_second


def fft_macs_per_second(rate: int) -> int:
    """Approximate real-FFT cost (analysis + synthesis) per second: 2 · (N/2)·log2(N) per frame."""
    n = window_size(rate)
    return int(2 * (n / 2) * math.log2(n) * 2 * (1000 // HOP_MS))
