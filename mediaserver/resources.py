"""Where the browser client (static/) and the default model (models/) live.

A source checkout keeps them at the repository root; ``pip install .`` copies them
into the package (``mediaserver/static``, ``mediaserver/models``, see setup.py).
Looking in the checkout first means an editable install serves the files being edited.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _find(name: str, marker: str) -> Path:
    """Return the checkout's ``name`` folder if it holds ``marker``, else the installed copy."""
    for base in (_CHECKOUT, _PACKAGE):
        candidate = base / name
        if (candidate / marker).exists() if marker else candidate.is_dir():
            return candidate
    return _PACKAGE / name


def static_dir() -> Path:
    """Folder with the browser client (index.html and its ES modules)."""
    return _find("static", "index.html")


def models_dir() -> Path:
    """Folder holding one sub-folder per model (``msenh-v2/enhancer.pt`` and its card)."""
    for base in (_CHECKOUT, _PACKAGE):
        candidate = base / "models"
        if candidate.is_dir() and any(candidate.glob("**/*.pt")):
            return candidate
    checkout = _CHECKOUT / "models"
    return checkout if checkout.is_dir() else _PACKAGE / "models"
