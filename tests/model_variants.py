"""Candidate models for registry, canary and telemetry tests, made in the test's temp folder.

A "broken" candidate is the shipped model with its output layer scaled down: the mask it
produces is tiny, so it removes speech along with the noise (what an over-suppressing release
would do). Nothing here is committed weights.
"""

from __future__ import annotations

from pathlib import Path

from mediaserver.enhance.registry import write_entry
from mediaserver.enhance.weights import load_model, save_model


def scaled_model(root: Path, name: str, scale: float) -> Path:
    """``root/name/`` = msenh-v2 with its decoder (output layer) scaled by ``scale``, registered
    under ``name`` (model.json with its sha256 and a one-line card quoting it)."""
    model = load_model(None)
    model.decoder.weight.data *= scale
    model.decoder.bias.data *= scale
    folder = root / name
    save_model(model, folder / "enhancer.pt", meta={"derived_from": "msenh-v2", "decoder_scale": scale})
    entry = write_entry(folder, name, card="MODEL_CARD.md")
    (folder / "MODEL_CARD.md").write_text(
        f"# {name}\n\nTest candidate: msenh-v2 with the output layer scaled by {scale}.\n"
        f"sha256 `{entry.sha256}`\n")
    return folder
