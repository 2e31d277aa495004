"""Saving and loading enhancer weights: a checkpoint rebuilds its model without the training config.

A wrong or corrupt file must fail at server start with a message naming the file, never
mid-call, so :func:`load_model` checks format, architecture and tensor shapes eagerly and runs
one frame through the network.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from torch import nn

from .model import N_BINS, build_model

FORMAT = "mediaserver-enhancer"
FORMAT_VERSION = 1
WEIGHTS_FILE = "enhancer.pt"
DEFAULT_MODEL_NAME = "msenh-v2"

PathLike = Union[str, Path]


class WeightsError(RuntimeError):
    """The weights file is missing, corrupt or not an enhancer checkpoint."""


def sha256_of(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(model: nn.Module, path: PathLike, meta: Optional[dict[str, Any]] = None) -> None:
    """Write atomically (tmp then rename) so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def resolve_weights_path(path: Optional[PathLike] = None) -> Path:
    """A file, a model folder holding enhancer.pt, a shipped model's name (``msenh-v3-s8250``,
    as ``serve --model`` and ``enhance --model`` take it: ``bench`` and ``transcribe`` looked
    for a file of that name), or None for the shipped default model."""
    if path is None:
        from ..resources import models_dir  # packaging knows where models/ lives

        return models_dir() / DEFAULT_MODEL_NAME / WEIGHTS_FILE
    path = Path(path)
    if path.is_dir():
        return path / WEIGHTS_FILE
    if not path.exists() and len(path.parts) == 1:   # no such file here: a registry name?
        from .registry import ModelRegistry

        registry = ModelRegistry()
        if path.name in registry:
            return registry.get(path.name).weights
    return path


def _load_failure(exc: Exception) -> str:
    """``torch.load``'s failure as one short clause. Its own message for a file the safe
    unpickler refuses advises re-running with ``weights_only=False``, which would execute code
    from the file: never advice to pass on for weights we did not write; keep only the reason."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = next((ln.strip() for ln in text.split(marker, 1)[1].splitlines() if ln.strip()), "")
        return f"not a safe torch checkpoint ({detail or type(exc).__name__})"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return first or type(exc).__name__


def load_model(path: Optional[PathLike] = None, device: str = "cpu") -> nn.Module:
    """Load and validate a checkpoint; raise :class:`WeightsError` with the reason."""
    file = resolve_weights_path(path)
    if not file.is_file():
        if path is not None and len(Path(path).parts) == 1:   # a bare word: say which names exist
            from .registry import ModelRegistry

            names = ", ".join(ModelRegistry().names())
            raise WeightsError(f"enhancer weights not found: {file} (neither a file nor a model name: {names})")
        raise WeightsError(f"enhancer weights not found: {file}")
    try:
        data = file.read_bytes()
        with warnings.catch_warnings():   # (its protocol notes on a foreign pickle: the error says it)
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"enhancer weights {file} are unreadable or corrupt: {_load_failure(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{file} is not a mediaserver enhancer checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise WeightsError(
            f"{file} has checkpoint format {payload.get('format_version')}, expected {FORMAT_VERSION}"
        )
    try:
        model = build_model(payload["config"])
        model.load_state_dict(payload["state_dict"], strict=True)
    except Exception as exc:
        raise WeightsError(f"{file} does not match the enhancer architecture: {exc}") from None
    model.eval()
    with torch.no_grad():
        mask, _ = model(torch.zeros(1, 1, N_BINS, dtype=torch.complex64))
    if not torch.isfinite(torch.view_as_real(mask)).all():
        raise WeightsError(f"{file} produces non-finite output (corrupt weights)")
    return model.to(device)
