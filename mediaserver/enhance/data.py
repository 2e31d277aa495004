"""On-the-fly noisy/clean mixtures for training, built from the ``train`` splits only.

Every example is drawn fresh from a seeded generator: random speech crop (optionally speed
perturbed), optional reverberation with a training RIR (the target keeps the direct path and
the first 50 ms, so the model learns to remove late reverb, not to invent a dry voice), noise
from the noise recordings, babble from other training speakers, or both, mixed at −5…20 dB SNR,
random level, optional band limiting, optional Opus round trip of the mixture (what the server
actually decodes). Data never leaves the data folder given on the command line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

from ..audio import read_audio, resample
from .model import MODEL_RATE

logger = logging.getLogger(__name__)


@dataclass
class MixConfig:
    seconds: float = 3.0
    snr_db: tuple[float, float] = (-5.0, 20.0)
    level_dbfs: tuple[float, float] = (-40.0, -12.0)
    p_reverb: float = 0.3
    p_babble: float = 0.2  # babble instead of recorded noise
    p_babble_extra: float = 0.1  # babble on top of recorded noise
    p_bandlimit: float = 0.15
    p_opus: float = 0.2
    p_speed: float = 0.2
    p_silence_gap: float = 0.3  # insert a pause so the model learns noise-only frames


def load_folder(folder: Path, rate: int = MODEL_RATE) -> list[np.ndarray]:
    clips = []
    for path in sorted(folder.glob("*.wav")):
        audio, sr = read_audio(path)
        clips.append(resample(audio, sr, rate))
    if not clips:
        raise FileNotFoundError(f"no .wav files in {folder}")
    return clips


class OpusRoundTrip:
    """libopus encode→decode at 16 kHz, as the server's receive path sees the voice."""

    def __init__(self) -> None:
        import opuslib_next

        self._lib = opuslib_next

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        frame = MODEL_RATE // 50
        enc = self._lib.Encoder(MODEL_RATE, 1, "voip")
        enc.bitrate = int(rng.choice([12000, 16000, 24000, 32000]))
        dec = self._lib.Decoder(MODEL_RATE, 1)
        n = len(x) // frame * frame
        pcm = (np.clip(x[:n], -1, 1) * 32767).astype(np.int16)
        out = np.zeros(len(x), dtype=np.float32)
        for i in range(0, n, frame):
            packet = enc.encode(pcm[i : i + frame].tobytes(), frame)
            decoded = np.frombuffer(dec.decode(packet, frame), dtype=np.int16)
            out[i : i + frame] = decoded / 32768.0
        # Opus adds 6.5 ms of look-ahead: realign with the clean target
        delay = int(round(0.0065 * MODEL_RATE))
        out = np.concatenate([out[delay:], np.zeros(delay, np.float32)])
        return out


class Mixer:
    """Draws (noisy, clean) pairs; one instance per worker with its own seed."""

    def __init__(self, data: Path, cfg: MixConfig, *, role: str = "train") -> None:
        self.cfg = cfg
        speech = load_folder(data / "speech" / "train")
        held_out = min(10, max(1, len(speech) // 10))  # validation speakers, never trained on
        self.speech = speech[:held_out] if role == "valid" else speech[held_out:] or speech
        self.noise = load_folder(data / "noise" / "train")
        self.rirs = load_folder(data / "rir" / "train")
        self.length = int(cfg.seconds * MODEL_RATE)
        self.opus = OpusRoundTrip()
        self.lowpass = {
            cutoff: butter(8, cutoff, fs=MODEL_RATE, output="sos") for cutoff in (3400, 4000, 5500)
        }

    def _crop(self, clip: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
        if len(clip) < length:
            reps = length // len(clip) + 1
            clip = np.tile(clip, reps)
        start = rng.integers(0, len(clip) - length + 1)
        return clip[start : start + length]

    def _speech(self, rng: np.random.Generator) -> np.ndarray:
        clip = self.speech[rng.integers(len(self.speech))]
        if rng.random() < self.cfg.p_speed:
            up, down = [(10, 11), (11, 10), (20, 19), (19, 20)][rng.integers(4)]
            clip = resample_poly(clip, up, down).astype(np.float32)
        s = self._crop(clip, rng, self.length).copy()
        if rng.random() < self.cfg.p_silence_gap:
            gap = rng.integers(self.length // 10, self.length // 3)
            start = rng.integers(0, self.length - gap)
            ramp = np.linspace(1, 0, 160, dtype=np.float32)
            s[start : start + gap] = 0
            if start >= 160:
                s[start - 160 : start] *= ramp
        return s

    def _reverb(self, s: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        rir = self.rirs[rng.integers(len(self.rirs))]
        peak = int(np.argmax(np.abs(rir)))
        early = rir.copy()
        early[peak + int(0.05 * MODEL_RATE) :] = 0
        norm = np.abs(rir[peak]) + 1e-8
        wet = fftconvolve(s, rir / norm)[peak : peak + self.length].astype(np.float32)
        target = fftconvolve(s, early / norm)[peak : peak + self.length].astype(np.float32)
        return wet, target

    def _babble(self, rng: np.random.Generator) -> np.ndarray:
        talkers = rng.integers(3, 7)
        b = np.zeros(self.length, np.float32)
        for _ in range(talkers):
            t = self._crop(self.speech[rng.integers(len(self.speech))], rng, self.length)
            b += t / (np.std(t) + 1e-6)
        return b

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        s = self._speech(rng)
        if rng.random() < cfg.p_reverb:
            s_in, target = self._reverb(s, rng)
        else:
            s_in, target = s, s
        if rng.random() < cfg.p_babble:
            n = self._babble(rng)
        else:
            n = self._crop(self.noise[rng.integers(len(self.noise))], rng, self.length).copy()
            if rng.random() < cfg.p_babble_extra:
                b = self._babble(rng)
                n = n / (np.std(n) + 1e-6) + 0.5 * b / (np.std(b) + 1e-6)
        snr = rng.uniform(*cfg.snr_db)
        p_s = np.mean(s_in**2) + 1e-10
        p_n = np.mean(n**2) + 1e-10
        n = n * np.sqrt(p_s / (p_n * 10 ** (snr / 10)))
        mix = s_in + n
        level = 10 ** (rng.uniform(*cfg.level_dbfs) / 20)
        gain = level / (np.sqrt(np.mean(mix**2)) + 1e-8)
        peak = np.max(np.abs(mix)) * gain
        if peak > 0.99:
            gain *= 0.99 / peak
        mix, target = mix * gain, target * gain
        if rng.random() < cfg.p_bandlimit:
            sos = self.lowpass[list(self.lowpass)[rng.integers(len(self.lowpass))]]
            mix = sosfilt(sos, mix).astype(np.float32)
            target = sosfilt(sos, target).astype(np.float32)
        if rng.random() < cfg.p_opus:
            mix = self.opus(mix, rng)
        return mix.astype(np.float32), target.astype(np.float32)


class MixtureStream(torch.utils.data.IterableDataset):
    """Endless batches of (noisy [B, T], clean [B, T]) tensors; seeded per worker."""

    def __init__(self, data: Path, cfg: MixConfig, batch: int, seed: int, role: str = "train") -> None:
        self.data, self.cfg, self.batch, self.seed, self.role = data, cfg, batch, seed, role

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, worker])
        mixer = Mixer(self.data, self.cfg, role=self.role)
        while True:
            pairs = [mixer.draw(rng) for _ in range(self.batch)]
            noisy = torch.from_numpy(np.stack([p[0] for p in pairs]))
            clean = torch.from_numpy(np.stack([p[1] for p in pairs]))
            yield noisy, clean
