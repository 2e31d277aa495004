"""Candidate models for registry, canary and telemetry tests, made in the test's temp folder.

A "broken" candidate is the shipped model with its output layer scaled down: the mask it
produces is tiny, so it removes speech along with the noise (what an over-suppressing release
would do). Nothing here is committed weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from mediaserver.enhance.registry import DEFAULT_MODEL, MANIFEST, write_entry

MODELS = Path(__file__).resolve().parent.parent / "models"


def shipped_model_names() -> list[str]:
    """The names of the models shipped in ``models/`` (each folder's model.json), sorted as
    the registry lists them, read from the files (not through the registry under test) so a
    newly shipped model needs no test edit. The default is always among them."""
    names = sorted(json.loads(p.read_text())["name"] for p in MODELS.glob(f"*/{MANIFEST}"))
    assert DEFAULT_MODEL in names, (DEFAULT_MODEL, names)
    return names
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
