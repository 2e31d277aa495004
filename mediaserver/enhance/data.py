"""Training mixtures made on the fly, on whatever device trains (CPU or CUDA), from ``train`` splits.

Audio lives in :class:`AudioBank`s: every clip of a split concatenated into one float tensor on
the training device, with per-clip start, length and speaker. :class:`TensorMixer` draws a whole
batch at once with tensor operations (no per-example Python loop), so a GPU mixes as fast as it
trains. What one example holds, each part with its own probability (:class:`MixConfig`):

* speech: a random crop of a clip, with a random spectral tilt and shelf EQ applied to input and
  target alike (so neither microphone colour nor voice colour can be memorised), sometimes a
  pause cut into it, sometimes reverberated (the target keeps the direct path and the first
  50 ms: the model learns to remove late reverb, not to invent a dry voice);
* noise: a recorded noise crop, a second one on top (two-noise mixtures), babble made of 3–6
  other clips that never come from the target's speaker, or synthetic coloured noise (white to
  brown); the noise gets its own random EQ and is sometimes reverberated;
* about 10 % clean-only clips (no noise: the model must leave clean speech alone);
* SNR drawn uniformly in ``snr_db``, level in ``level_dbfs``, peaks kept below full scale;
* band limiting (telephone and narrow-band codecs) of input and target alike.

Not done here: the Opus round trip (a per-example libopus call would stall a GPU; see the model
card's gaps). Data never leaves the folders given on the command line, except as the
size-capped pack that :func:`write_pack` makes for a GPU machine (a git-ignored folder).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from ..audio import read_audio, resample
from .model import MODEL_RATE

logger = logging.getLogger(__name__)

# Held out of training for validation (model selection), by speaker/language and noise family:
# validation must be out of domain, like the audio the server meets.
VALID_LIBRISPEECH_SPEAKERS = 10  # the first ten LibriSpeech training speakers (sorted names)
VALID_LANGUAGES = ("el", "ca")  # Greek and Catalan lines of the extra speech set
VALID_NOISE = re.compile(r"(stk_radio_static|tux_vacuum_cleaner|qabcs_keyboard|etw_crowd_17|freesound_.*rain|speechcmd_.*)\.wav$")


@dataclass
class MixConfig:
    """Probabilities and ranges of :class:`TensorMixer` (per example)."""

    seconds: float = 3.0
    snr_db: tuple[float, float] = (-5.0, 20.0)
    level_dbfs: tuple[float, float] = (-45.0, -10.0)
    p_clean_only: float = 0.1
    p_reverb: float = 0.3
    p_noise_reverb: float = 0.3
    p_babble: float = 0.15  # babble instead of recorded noise
    p_synthetic: float = 0.1  # coloured noise instead of recorded noise
    p_second_noise: float = 0.3  # a second recorded noise on top
    p_bandlimit: float = 0.15
    p_silence_gap: float = 0.3  # a pause inside the speech, so noise-only frames are common
    eq_db: float = 6.0  # shelf gains and tilt (per octave) drawn in ±eq_db/2 … see _random_eq


# ---- banks ---------------------------------------------------------------------------------------
@dataclass
class AudioBank:
    """Clips concatenated: audio [N] float32, starts/lengths/speakers [K] int64 (one device)."""

    audio: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor
    speakers: torch.Tensor

    @classmethod
    def from_clips(cls, clips: Sequence[np.ndarray], speakers: Sequence[int], device: torch.device | str = "cpu") -> "AudioBank":
        if not clips:
            raise ValueError("an audio bank needs at least one clip")
        lengths = np.array([len(c) for c in clips], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        dev = torch.device(device)
        return cls(
            torch.from_numpy(np.concatenate(clips).astype(np.float32)).to(dev),
            torch.from_numpy(starts).to(dev),
            torch.from_numpy(lengths).to(dev),
            torch.as_tensor(np.asarray(speakers, dtype=np.int64)).to(dev),
        )

    @property
    def clips(self) -> int:
        return int(self.lengths.numel())

    @property
    def seconds(self) -> float:
        return float(self.audio.numel()) / MODEL_RATE

    def to(self, device: torch.device | str) -> "AudioBank":
        return AudioBank(self.audio.to(device), self.starts.to(device), self.lengths.to(device), self.speakers.to(device))

    def crop(self, idx: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
        """Random crops of clips ``idx`` [B] → [B, length]; short clips are repeated (tiled)."""
        lens = self.lengths[idx]  # [B]
        room = (lens - length).clamp_min(0)
        offset = (torch.rand(idx.shape, generator=gen, device=idx.device) * (room + 1)).long()
        pos = (offset[:, None] + torch.arange(length, device=idx.device)[None]) % lens[:, None]
        return self.audio[self.starts[idx][:, None] + pos]

    def pick(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """Clip indices [B], chosen in proportion to length (every second equally likely)."""
        weights = self.lengths.float()
        return torch.multinomial(weights, batch, replacement=True, generator=gen)


def _speaker_of(path: Path) -> str:
    """LibriSpeech files are ls_<speaker>-<chapter>-<utt>; others: one speaker per package+language."""
    name = path.stem
    if name.startswith("ls_"):
        return name.split("-")[0]
    return name.rsplit("_", 1)[0]


def _extra_languages(extra: Path) -> dict[str, str]:
    """name → language, from the extra speech set's MANIFEST.tsv."""
    manifest = extra / "MANIFEST.tsv"
    langs: dict[str, str] = {}
    if manifest.is_file():
        for line in manifest.read_text().splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 5:
                langs[Path(parts[0]).stem] = parts[4]
    return langs


@dataclass
class Split:
    speech: list[Path]
    noise: list[Path]
    rir: list[Path]


def training_files(data: Path, extra: Optional[Path], role: str) -> Split:
    """The ``train``-split files of ``role`` "train" or "valid" (held-out speakers, languages, noises).

    data: the shared data folder (speech/, noise/, rir/ with train/ splits); extra: the folder
    that ``build_speech.py`` wrote (speech/train and MANIFEST.tsv), or None. The extra noises
    and rooms are read from ``data/extra`` when present.
    """
    ls = sorted((data / "speech" / "train").glob("*.wav"))
    ls_speakers = sorted({_speaker_of(p) for p in ls})
    held = set(ls_speakers[:VALID_LIBRISPEECH_SPEAKERS])
    speech = [p for p in ls if (_speaker_of(p) in held) == (role == "valid")]
    if extra is not None:
        langs = _extra_languages(extra)
        for p in sorted((extra / "speech" / "train").glob("*.wav")):
            if (langs.get(p.stem, "") in VALID_LANGUAGES) == (role == "valid"):
                speech.append(p)
    noise_dirs = [data / "noise" / "train", data / "extra" / "noise" / "train"]
    all_noise = [p for d in noise_dirs for p in sorted(d.glob("*.wav"))]
    noise = [p for p in all_noise if bool(VALID_NOISE.search(p.name)) == (role == "valid")]
    if not noise and role == "valid":  # a data folder without the held-out families
        logger.warning("no held-out noise families under %s: validating on training noises", data)
        noise = all_noise
    rir_dirs = [data / "rir" / "train", data / "extra" / "rir" / "train"]
    rir = [p for d in rir_dirs for p in sorted(d.glob("*.wav"))]
    if not speech or not noise or not rir:
        raise FileNotFoundError(f"no {role} speech/noise/rir .wav files under {data} (extra: {extra})")
    return Split(speech, noise, rir)


def _read(paths: Iterable[Path], max_seconds: Optional[float] = None) -> list[tuple[Path, np.ndarray]]:
    """(path, clip at 16 kHz) of each file at least 0.1 s long (shorter ones are left out)."""
    clips = []
    for path in paths:
        audio, sr = read_audio(path)
        audio = resample(audio, sr, MODEL_RATE).astype(np.float32)
        if max_seconds:
            audio = audio[: int(max_seconds * MODEL_RATE)]
        if len(audio) >= MODEL_RATE // 10:
            clips.append((path, audio))
    return clips


def load_banks(split: Split, device: torch.device | str = "cpu") -> tuple[AudioBank, AudioBank, AudioBank]:
    """(speech, noise, rir) banks of a :class:`Split`; RIRs are cut to 1 s."""
    speech_clips = _read(split.speech)
    names = [_speaker_of(p) for p, _ in speech_clips]  # after short clips are left out
    ids = {n: i for i, n in enumerate(sorted(set(names)))}
    speech = AudioBank.from_clips([c for _, c in speech_clips], [ids[n] for n in names], device)
    noise_clips = [c for _, c in _read(split.noise)]
    noise = AudioBank.from_clips(noise_clips, list(range(len(noise_clips))), device)
    rir_clips = [c for _, c in _read(split.rir, max_seconds=1.0)]
    rir = AudioBank.from_clips(rir_clips, list(range(len(rir_clips))), device)
    return speech, noise, rir


# ---- packs for a GPU machine -------------------------------------------------------------------
def write_pack(split: Split, out: Path, max_mb: float, seed: int = 0) -> dict[str, float]:
    """Write a size-capped copy of a training split as FLAC banks (for a machine without the data).

    Every speaker and noise keeps at least one clip; clips are drawn at random until the FLAC
    files reach ``max_mb`` (speech gets 70 % of it). Returns the seconds written per bank.
    """
    import soundfile as sf

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, float] = {}
    budgets = {"speech": 0.70 * max_mb, "noise": 0.27 * max_mb, "rir": 0.03 * max_mb}
    for bank, paths in (("speech", split.speech), ("noise", split.noise), ("rir", split.rir)):
        order = list(rng.permutation(len(paths)))
        by_speaker: dict[str, int] = {}
        for i in order:  # one clip per speaker first, then the rest
            by_speaker.setdefault(_speaker_of(paths[i]), i)
        first = list(by_speaker.values())
        order = first + [i for i in order if i not in set(first)]
        budget_samples = int(budgets[bank] * 1e6 / 1.1)  # FLAC ≈ 0.55 × 16-bit PCM = 1.1 byte/sample
        clips, speakers, total = [], [], 0
        max_s = {"speech": 8.0, "noise": 20.0, "rir": 1.0}[bank]
        for i in order:
            read = _read([paths[i]], max_seconds=max_s)
            if not read or (clips and total + len(read[0][1]) > budget_samples):  # the first always fits
                continue
            clips.append(read[0][1])
            speakers.append(_speaker_of(paths[i]))
            total += len(read[0][1])
        audio = np.concatenate(clips)
        peak = float(np.max(np.abs(audio))) or 1.0
        scale = min(1.0, 0.999 / peak)
        sf.write(out / f"{bank}.flac", audio * scale, MODEL_RATE, subtype="PCM_16")
        (out / f"{bank}.json").write_text(json.dumps({"lengths": [len(c) for c in clips], "speakers": speakers}))
        written[bank] = total / MODEL_RATE
    return written


def read_pack(folder: Path, device: torch.device | str = "cpu") -> tuple[AudioBank, AudioBank, AudioBank]:
    """(speech, noise, rir) banks from a folder that :func:`write_pack` wrote."""
    import soundfile as sf

    banks = []
    for bank in ("speech", "noise", "rir"):
        audio, _ = sf.read(folder / f"{bank}.flac", dtype="float32")
        meta = json.loads((folder / f"{bank}.json").read_text())
        bounds = np.cumsum([0] + meta["lengths"])
        clips = [audio[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        ids = {n: i for i, n in enumerate(sorted(set(meta["speakers"])))}
        banks.append(AudioBank.from_clips(clips, [ids[n] for n in meta["speakers"]], device))
    return banks[0], banks[1], banks[2]


# ---- the mixer -----------------------------------------------------------------------------------
def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean(dim=-1, keepdim=True).add(1e-10).sqrt()


class TensorMixer:
    """Batches of (noisy [B, T], clean [B, T]) at 16 kHz, made with tensor ops on the banks' device.

    Deterministic for a given ``torch.Generator`` state (which a checkpoint stores).
    """

    def __init__(self, speech: AudioBank, noise: AudioBank, rir: AudioBank, cfg: MixConfig) -> None:
        self.speech, self.noise, self.rir, self.cfg = speech, noise, rir, cfg
        self.device = speech.audio.device
        self.length = int(cfg.seconds * MODEL_RATE)
        n_fft = self.length + MODEL_RATE  # room for a 1 s RIR tail
        self.n_fft = 1 << math.ceil(math.log2(n_fft))
        freqs = torch.fft.rfftfreq(self.length, 1.0 / MODEL_RATE, device=self.device)
        self.log2f = torch.log2(freqs.clamp_min(20.0) / 1000.0)  # octaves from 1 kHz
        self.freqs = freqs
        rir_len = int(self.rir.lengths.max())
        rirs = torch.zeros(self.rir.clips, rir_len, device=self.device)
        for k in range(self.rir.clips):
            s, n = int(self.rir.starts[k]), int(self.rir.lengths[k])
            rirs[k, :n] = self.rir.audio[s : s + n]
        peak = rirs.abs().argmax(dim=1)
        rirs = rirs / rirs.gather(1, peak[:, None]).abs().clamp_min(1e-6)
        early = rirs.clone()
        cut = peak + int(0.05 * MODEL_RATE)
        early[torch.arange(rir_len, device=self.device)[None] >= cut[:, None]] = 0
        self.rir_peak = peak
        self.rir_full = torch.fft.rfft(rirs, n=self.n_fft)
        self.rir_early = torch.fft.rfft(early, n=self.n_fft)

    def _u(self, gen: torch.Generator, b: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, 1, generator=gen, device=self.device)

    def _coin(self, gen: torch.Generator, b: int, p: float) -> torch.Tensor:
        return torch.rand(b, 1, generator=gen, device=self.device) < p

    def _random_eq(self, gen: torch.Generator, b: int) -> torch.Tensor:
        """Random smooth magnitude responses [B, F]: tilt (dB/octave) + low and high shelves."""
        half = self.cfg.eq_db
        tilt = self._u(gen, b, -half / 2, half / 2)
        low = self._u(gen, b, -half, half)
        high = self._u(gen, b, -half, half)
        lo_f = self._u(gen, b, -2.0, 0.0)  # shelf corners, octaves from 1 kHz: 250 Hz…1 kHz
        hi_f = self._u(gen, b, 1.0, 2.5)  # 2…5.7 kHz
        db = tilt * self.log2f + low * torch.sigmoid(2 * (lo_f - self.log2f)) + high * torch.sigmoid(2 * (self.log2f - hi_f))
        return torch.pow(10.0, db / 20.0)

    def _filter(self, x: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft(torch.fft.rfft(x) * response, n=x.shape[-1])

    def _reverb(self, x: torch.Tensor, idx: torch.Tensor, early: bool) -> torch.Tensor:
        """Convolve with RIR ``idx`` (full or early part), aligned so the direct path lands at 0."""
        spec = torch.fft.rfft(x, n=self.n_fft) * (self.rir_early if early else self.rir_full)[idx]
        y = torch.fft.irfft(spec, n=self.n_fft)
        pos = self.rir_peak[idx][:, None] + torch.arange(self.length, device=self.device)[None]
        return y.gather(1, pos)

    def _babble(self, gen: torch.Generator, target_speakers: torch.Tensor) -> torch.Tensor:
        b = target_speakers.shape[0]
        out = torch.zeros(b, self.length, device=self.device)
        talkers = torch.randint(3, 7, (b, 1), generator=gen, device=self.device)
        for k in range(6):
            idx = self.speech.pick(b, gen)
            other = self.speech.speakers[idx] != target_speakers  # never the target's own voice
            t = self.speech.crop(idx, self.length, gen)
            use = (other[:, None] & (talkers > k)).float()
            out = out + use * t / _rms(t)
        return out

    def _synthetic(self, gen: torch.Generator, b: int) -> torch.Tensor:
        """Coloured noise: white (0) to brown (−6 dB/octave), with a random EQ."""
        white = torch.randn(b, self.length, generator=gen, device=self.device)
        slope = self._u(gen, b, -6.0, 0.0)
        response = torch.pow(10.0, slope * self.log2f / 20.0) * self._random_eq(gen, b)
        return self._filter(white, response)

    def draw(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, b, dev = self.cfg, batch, self.device
        idx = self.speech.pick(b, gen)
        s = self.speech.crop(idx, self.length, gen)
        s = self._filter(s, self._random_eq(gen, b))
        # a pause: zero a span of 10–33 % with 10 ms ramps
        gap = self._coin(gen, b, cfg.p_silence_gap)
        span = (self._u(gen, b, 0.1, 0.33) * self.length).long()
        start = (self._u(gen, b) * (self.length - span)).long()
        pos = torch.arange(self.length, device=dev)[None]
        ramp = (torch.minimum((pos - start).abs(), (pos - start - span).abs()).float() / 160.0).clamp(0, 1)
        inside = (pos >= start) & (pos < start + span)
        envelope = torch.where(inside, torch.zeros_like(ramp), ramp)
        s = torch.where(gap, s * envelope, s)
        # reverberation
        rev = self._coin(gen, b, cfg.p_reverb)
        ridx = torch.randint(0, self.rir.clips, (b,), generator=gen, device=dev)
        s_in = torch.where(rev, self._reverb(s, ridx, early=False), s)
        target = torch.where(rev, self._reverb(s, ridx, early=True), s)
        # noise: recorded (+ a second one), babble or synthetic
        n = self.noise.crop(self.noise.pick(b, gen), self.length, gen)
        n = n / _rms(n)
        second = self.noise.crop(self.noise.pick(b, gen), self.length, gen)
        n = torch.where(self._coin(gen, b, cfg.p_second_noise), n + self._u(gen, b, 0.3, 1.0) * second / _rms(second), n)
        n = torch.where(self._coin(gen, b, cfg.p_babble), self._babble(gen, self.speech.speakers[idx]), n)
        n = torch.where(self._coin(gen, b, cfg.p_synthetic), self._synthetic(gen, b), n)
        n = self._filter(n, self._random_eq(gen, b))
        nidx = torch.randint(0, self.rir.clips, (b,), generator=gen, device=dev)
        n = torch.where(self._coin(gen, b, cfg.p_noise_reverb), self._reverb(n, nidx, early=False), n)
        # SNR, clean-only examples, level
        snr = self._u(gen, b, *cfg.snr_db)
        n = n * _rms(s_in) / _rms(n) * torch.pow(10.0, -snr / 20.0)
        n = torch.where(self._coin(gen, b, cfg.p_clean_only), torch.zeros_like(n), n)
        mix = s_in + n
        level = torch.pow(10.0, self._u(gen, b, *cfg.level_dbfs) / 20.0)
        gain = level / _rms(mix)
        peak = mix.abs().amax(dim=-1, keepdim=True) * gain
        gain = torch.where(peak > 0.99, gain * 0.99 / peak, gain)
        mix, target = mix * gain, target * gain
        # band limiting (telephone / narrow-band codecs): input and target alike
        cutoff = torch.tensor([3400.0, 4000.0, 5500.0, 7000.0], device=dev)[
            torch.randint(0, 4, (b,), generator=gen, device=dev)
        ][:, None]
        lowpass = torch.sigmoid((cutoff - self.freqs[None]) / 100.0)
        limited = self._coin(gen, b, cfg.p_bandlimit)
        mix = torch.where(limited, self._filter(mix, lowpass), mix)
        target = torch.where(limited, self._filter(target, lowpass), target)
        return mix, target


def validation_set(
    speech: AudioBank, noise: AudioBank, rir: AudioBank, count: int, seconds: float, seed: int = 10_000
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of held-out mixtures (noisy, clean) [count, T] at −5…15 dB SNR, CPU tensors."""
    cfg = MixConfig(seconds=seconds, snr_db=(-5.0, 15.0), p_clean_only=0.0, p_bandlimit=0.0, level_dbfs=(-35.0, -20.0))
    mixer = TensorMixer(speech, noise, rir, cfg)
    gen = torch.Generator(device=mixer.device).manual_seed(seed)
    noisy, clean = mixer.draw(count, gen)
    return noisy.cpu(), clean.cpu()
