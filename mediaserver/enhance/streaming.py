"""Batched streaming inference: many independent streams through one model call per tick.

Each stream owns a *slot*: one row of preallocated tensors holding everything the causal
STFT and the GRU remember between hops (GRU state, the last ``win - hop`` input samples,
the pending overlap-add half frame). A call gathers the rows of the streams it is given,
runs the network once for the whole batch, and scatters the rows back, so streams that are
not in this call (gated off, disabled) keep their state untouched and no stream can see
another's audio.

Timing: output block ``k`` (``hop`` samples) is the enhanced input block ``k - 1``, i.e. the
output is the input delayed by :attr:`Enhancer.latency` = ``hop`` = 480 samples (10 ms).
Counting the hop the input has to be buffered before its frame is complete, the algorithmic
latency is one window, 20 ms. ``process`` reproduces :func:`model.enhance_offline`.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch

from .model import N_BINS, EnhancerModel, analysis_window, apply_mask, hop_size, window_size

logger = logging.getLogger(__name__)

RATE = 48000


class Enhancer:
    """Per-stream state in slots plus one batched model step per call.

    Not thread-safe: one thread (the stage's worker) owns an instance.

    Args:
        model: the network (moved to ``device`` and put in eval mode).
        device: ``"cpu"`` or ``"cuda"``/``"cuda:N"``.
        capacity: initial number of slots; doubles when full.
        num_threads: if given, ``torch.set_num_threads`` (process-wide: torch has one pool).
    """

    sample_rate = RATE
    hop = hop_size(RATE)  # 480
    window = window_size(RATE)  # 960
    latency = hop  # output[n] is enhanced input[n - latency]

    def __init__(
        self,
        model: EnhancerModel,
        *,
        device: str | torch.device = "cpu",
        capacity: int = 64,
        num_threads: Optional[int] = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if num_threads is not None:
            torch.set_num_threads(max(1, int(num_threads)))
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._scale_in = 16000.0 / RATE  # stft() scaling, so the 161 bins match 16 kHz training
        self._scale_out = RATE / 16000.0
        self._win = analysis_window(RATE, self.device)  # [win]
        self._win_sq = (self._win * self._win).cpu().numpy()
        self._capacity = 0
        self._state = torch.zeros(0, model.state_size, device=self.device)
        self._in_tail = torch.zeros(0, self.window - self.hop, device=self.device)
        self._ola_tail = torch.zeros(0, self.hop, device=self.device)
        self._free: list[int] = []
        self._used: set[int] = set()
        self._grow(capacity)

    # ---- slots -------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def active(self) -> int:
        return len(self._used)

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity
        if extra <= 0:
            return
        dev = self.device
        self._state = torch.cat([self._state, torch.zeros(extra, self._state.shape[1], device=dev)])
        self._in_tail = torch.cat([self._in_tail, torch.zeros(extra, self._in_tail.shape[1], device=dev)])
        self._ola_tail = torch.cat([self._ola_tail, torch.zeros(extra, self.hop, device=dev)])
        # hand out low slot numbers first (keeps gathers local)
        self._free.extend(range(capacity - 1, self._capacity - 1, -1))
        self._capacity = capacity
        logger.debug("enhancer capacity now %d slots", capacity)

    def allocate(self) -> int:
        """Reserve a slot with zeroed state (a reused slot forgets its previous stream)."""
        if not self._free:
            self._grow(self._capacity * 2)
        slot = self._free.pop()
        self._state[slot].zero_()
        self._in_tail[slot].zero_()
        self._ola_tail[slot].zero_()
        self._used.add(slot)
        return slot

    def free(self, slot: int) -> None:
        if slot not in self._used:
            raise ValueError(f"slot {slot} is not allocated")
        self._used.remove(slot)
        self._free.append(slot)

    def reset(self, slot: int) -> None:
        """Zero one slot's state (e.g. after a long gap in its input)."""
        self._check_slots([slot])
        self._state[slot].zero_()
        self._in_tail[slot].zero_()
        self._ola_tail[slot].zero_()

    def _check_slots(self, slots: Sequence[int]) -> None:
        for s in slots:
            if s not in self._used:
                raise ValueError(f"slot {s} is not allocated")
        if len(set(slots)) != len(slots):
            raise ValueError("a slot appears twice in one call")

    def _index(self, slots: Sequence[int]) -> torch.Tensor:
        idx = torch.from_numpy(np.fromiter(slots, dtype=np.int64, count=len(slots)))
        return idx if self.device.type == "cpu" else idx.to(self.device)

    def _check_audio(self, slots: Sequence[int], audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[0] != len(slots) or audio.shape[1] % self.hop or audio.shape[1] == 0:
            raise ValueError(
                f"audio must be [len(slots)={len(slots)}, k*{self.hop}] float32, got {audio.shape}"
            )
        self._check_slots(slots)
        return audio

    # ---- processing --------------------------------------------------------------------
    def process(
        self,
        slots: Sequence[int],
        audio: np.ndarray,
        atten_lim_db: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """Enhance ``k`` hops of ``N`` streams: audio [N, k·hop] → [N, k·hop] delayed by ``latency``."""
        audio = self._check_audio(slots, audio)
        if len(slots) == 0:
            return audio.copy()
        n, total = audio.shape
        k, hop = total // self.hop, self.hop
        idx = self._index(slots)
        with torch.inference_mode():
            x = torch.from_numpy(audio).to(self.device, non_blocking=True)
            padded = torch.cat([self._in_tail.index_select(0, idx), x], dim=1)  # [N, hop + k·hop]
            frames = padded.unfold(1, self.window, hop)  # [N, k, win]
            spec = torch.fft.rfft(frames * self._win, dim=-1) * self._scale_in  # [N, k, 481]
            mask, state = self.model(spec[..., :N_BINS], self._state.index_select(0, idx))
            lim = None
            if atten_lim_db is not None:
                lim = torch.as_tensor(np.asarray(atten_lim_db, dtype=np.float32), device=self.device)
                if lim.shape != (n,):
                    raise ValueError(f"atten_lim_db must have shape ({n},), got {tuple(lim.shape)}")
            out_spec = apply_mask(spec, mask, lim)
            chunks = torch.fft.irfft(out_spec * self._scale_out, n=self.window, dim=-1) * self._win
            first, second = chunks[..., :hop], chunks[..., hop:]  # [N, k, hop]
            prev = torch.cat([self._ola_tail.index_select(0, idx)[:, None], second[:, :-1]], dim=1)
            out = (first + prev).reshape(n, total)
            self._state.index_copy_(0, idx, state)
            self._in_tail.index_copy_(0, idx, padded[:, -(self.window - hop):])
            self._ola_tail.index_copy_(0, idx, second[:, -1])
            return out.cpu().numpy()

    def skip(self, slots: Sequence[int], audio: np.ndarray, gain: Optional[np.ndarray] = None) -> np.ndarray:
        """Advance streams *without* the network (gate closed, enhancement off, overload).

        audio [N, k·hop] float32 → [N, k·hop], delayed by ``latency`` like :meth:`process`.
        ``gain``: None = unity (the output is the delayed input), or [N, window//2 + 1] real
        per-bin gains (0..1) applied on the same STFT frames the network uses (two FFTs per hop,
        no network) — e.g. the network's own recent gain on noise, so the background sounds the
        same whether the network runs or not.

        Every path ends in the same overlap-add synthesis: the first output block adds the
        pending half frame of whatever ran before (network or skip), so a switch between the
        network and either skip mode, at any hop, is a 10 ms sqrt-Hann² (= Hann) cross-fade of
        the two paths, never a jump. The GRU state is kept as it was (the last frames the
        network saw); the STFT tails move on, so the network resumes without stale audio.
        Raises ValueError on a bad shape, an unallocated or repeated slot.
        """
        audio = self._check_audio(slots, audio)
        if len(slots) == 0:
            return audio.copy()
        n, total = audio.shape
        hop = self.hop
        if gain is not None:
            gain = np.asarray(gain, dtype=np.float32)
            if gain.shape != (n, self.window // 2 + 1):
                raise ValueError(f"gain must be [{n}, {self.window // 2 + 1}], got {gain.shape}")
        idx = self._index(slots)
        with torch.inference_mode():
            tail = self._in_tail.index_select(0, idx).cpu().numpy()
            ola_in = self._ola_tail.index_select(0, idx).cpu().numpy()  # [N, hop]
            padded = np.concatenate([tail, audio], axis=1)  # [N, hop + k·hop]
            if gain is None:
                # unity mask: each windowed chunk is frame·win², so the output is the delayed
                # input except the first block, which finishes the previous path's last frame
                out = padded[:, :total].copy()
                out[:, :hop] = ola_in + padded[:, :hop] * self._win_sq[:hop]
                ola = padded[:, -hop:] * self._win_sq[hop:]
            else:
                x = torch.from_numpy(padded).to(self.device)
                frames = x.unfold(1, self.window, hop)  # [N, k, win]
                spec = torch.fft.rfft(frames * self._win, dim=-1)
                g = torch.from_numpy(gain).to(self.device)[:, None, :]
                chunks = (torch.fft.irfft(spec * g, n=self.window, dim=-1) * self._win).cpu().numpy()
                first, second = chunks[..., :hop], chunks[..., hop:]
                prev = np.concatenate([ola_in[:, None], second[:, :-1]], axis=1)
                out = (first + prev).reshape(n, total)
                ola = second[:, -1]
            self._in_tail.index_copy_(0, idx, torch.from_numpy(np.ascontiguousarray(audio[:, -hop:])).to(self.device))
            self._ola_tail.index_copy_(0, idx, torch.from_numpy(np.ascontiguousarray(ola, dtype=np.float32)).to(self.device))
        return out.astype(np.float32, copy=False)
