"""Model registry: named enhancer versions, each a folder with weights, a card and a sha256.

A registry root (``models/`` of the checkout or the installed package, plus any
``--model-root``) holds one folder per version::

    models/msenh-v2/
        enhancer.pt      weights (weights.py format)
        MODEL_CARD.md    what it is, how it was trained and evaluated
        model.json       {"name": "msenh-v2", "weights": "enhancer.pt", "sha256": "<hex>",
                          "card": "MODEL_CARD.md", "status": "stable",
                          "algorithmic_latency_ms": 20}

``model.json`` is the machine-readable part: the name the server and metrics use
(``model_version``), the sha256 the weights must have, ``status`` (``stable``, ``snapshot``:
what the model is; which one is the default is :data:`DEFAULT_MODEL`, every other is opt-in)
and ``algorithmic_latency_ms``: the delay the model's framing needs (analysis window, hop
buffering and look-ahead), which the stage compares with its own (a model whose framing needs
another delay cannot run in the stage: :meth:`EnhancerStage.load
<mediaserver.enhance.stage.EnhancerStage.load>` refuses it). ``verify`` recomputes the digest
and checks that the card quotes it. Roots are searched in order; a name found in an earlier
root wins (a later root cannot shadow a shipped model).

``mediaserver models list|show NAME|verify [NAME]`` is the command-line face (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..config import UsageError, add_option, comma_list, comma_values, print_problem

logger = logging.getLogger(__name__)

MANIFEST = "model.json"
DEFAULT_MODEL = "msenh-v2"
LATENCY_FIELD = "algorithmic_latency_ms"


class RegistryError(LookupError):
    """Unknown model name, or a folder whose model.json is missing or malformed."""


@dataclass(frozen=True)
class ModelEntry:
    """One version in a registry root."""

    name: str
    folder: Path
    weights: Path
    card: Optional[Path]
    sha256: Optional[str]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    latency_ms: Optional[float] = None   # model.json's algorithmic_latency_ms (None: not declared)

    def role(self, default: str = DEFAULT_MODEL) -> str:
        """``default`` for the model used without ``--model``, else ``opt-in`` and the
        model.json ``status`` (``opt-in snapshot``): what ``models list`` shows."""
        if self.name == default:
            return "default"
        status = self.meta.get("status")
        return f"opt-in {status}" if isinstance(status, str) and status else "opt-in"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder), "weights": str(self.weights),
                "card": str(self.card) if self.card else None, "sha256": self.sha256,
                **{k: v for k, v in self.meta.items() if k not in ("name", "weights", "sha256", "card")}}


@dataclass(frozen=True)
class Verification:
    name: str
    ok: bool
    expected: Optional[str]
    actual: Optional[str]
    problems: tuple[str, ...]


def read_entry(folder: Path) -> ModelEntry:
    """Parse ``folder/model.json``; RegistryError naming the file when it is unusable."""
    path = folder / MANIFEST
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: unreadable model manifest: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise RegistryError(f"{path}: needs a non-empty \"name\"")
    weights = folder / str(meta.get("weights", "enhancer.pt"))
    card = folder / str(meta["card"]) if meta.get("card") else None
    sha = meta.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
        raise RegistryError(f"{path}: \"sha256\" must be 64 hex digits")
    latency = meta.get(LATENCY_FIELD)
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))
                                or not math.isfinite(latency) or latency <= 0):
        raise RegistryError(f"{path}: \"{LATENCY_FIELD}\" must be a positive number of milliseconds, "
                            f"got {latency!r}")
    return ModelEntry(name=meta["name"], folder=folder, weights=weights, card=card,
                      sha256=sha.lower() if sha else None, meta=meta,
                      latency_ms=float(latency) if latency is not None else None)


def write_entry(folder: Path, name: str, *, weights: str = "enhancer.pt", card: Optional[str] = None,
                **extra: Any) -> ModelEntry:
    """Write ``model.json`` for weights already in ``folder`` (sha256 computed here; the
    algorithmic latency is this code's framing, one analysis window, unless ``extra`` says)."""
    from .model import WINDOW_MS
    from .weights import sha256_of

    meta = {"name": name, "weights": weights, "sha256": sha256_of(folder / weights),
            LATENCY_FIELD: WINDOW_MS, **extra}
    if card:
        meta["card"] = card
    (folder / MANIFEST).write_text(json.dumps(meta, indent=2) + "\n")
    return read_entry(folder)


class ModelRegistry:
    """Named model versions from one or more roots (first root wins on a name clash)."""

    def __init__(self, roots: Sequence[Union[str, Path]] = ()) -> None:
        from ..resources import models_dir

        self.roots = [models_dir()] + [Path(r) for r in roots]
        self._entries: dict[str, ModelEntry] = {}
        self.errors: list[str] = []
        for root in self.roots:
            if not root.is_dir():
                self.errors.append(f"{root}: not a folder")
                continue
            for folder in sorted(p for p in root.iterdir() if (p / MANIFEST).is_file()):
                try:
                    entry = read_entry(folder)
                except RegistryError as exc:
                    self.errors.append(str(exc))
                    continue
                if entry.name in self._entries:
                    logger.warning("model %s in %s ignored: already defined in %s", entry.name,
                                   folder, self._entries[entry.name].folder)
                    continue
                self._entries[entry.name] = entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(f"unknown model {name!r} (known: {', '.join(self.names()) or 'none'})") from None

    def resolve(self, spec: Union[str, Path, None]) -> tuple[str, Path]:
        """``--model`` value → (model_version, weights file): a registry name, a model folder
        (its model.json name, else the folder name) or a weights file (its stem); None = default."""
        if spec is None:
            entry = self.get(DEFAULT_MODEL)
            return entry.name, entry.weights
        if isinstance(spec, str) and spec in self._entries:
            return spec, self._entries[spec].weights
        path = Path(spec)
        if path.is_dir():
            if (path / MANIFEST).is_file():
                entry = read_entry(path)
                return entry.name, entry.weights
            return path.name, path / "enhancer.pt"
        if path.is_file() or isinstance(spec, Path) or path.suffix or len(path.parts) > 1:
            # a path (existing or not): loading it says what is wrong (WeightsError "not found")
            return (path.parent.name if path.name == "enhancer.pt" else path.stem), path
        raise RegistryError(f"--model {spec}: neither a model name ({', '.join(self.names())}) nor a file")

    def entry_for(self, spec: Union[str, Path, None]) -> Optional[ModelEntry]:
        """The model.json entry behind a ``--model`` value (as :meth:`resolve` reads it): a
        registry name, None (the default), a model folder with a model.json, or a weights file
        that a model.json beside it names; None for weights with no manifest."""
        if spec is None or (isinstance(spec, str) and spec in self._entries):
            return self.get(DEFAULT_MODEL if spec is None else spec)
        path = Path(spec)
        folder = path if path.is_dir() else path.parent
        if not (folder / MANIFEST).is_file():
            return None
        entry = read_entry(folder)
        if path.is_dir() or entry.weights.resolve() == path.resolve():
            return entry
        return None

    def verify(self, name: str) -> Verification:
        """Recompute the weights' sha256 and compare with model.json and the card."""
        from .weights import sha256_of

        entry = self.get(name)
        problems: list[str] = []
        actual = None
        if not entry.weights.is_file():
            problems.append(f"weights missing: {entry.weights}")
        else:
            actual = sha256_of(entry.weights)
            if entry.sha256 is None:
                problems.append("model.json has no sha256")
            elif actual != entry.sha256:
                problems.append(f"sha256 mismatch: model.json {entry.sha256}, file {actual}")
        if entry.card is None or not entry.card.is_file():
            problems.append("model card missing")
        elif entry.sha256 and entry.sha256 not in entry.card.read_text(errors="replace"):
            problems.append(f"card {entry.card.name} does not quote the sha256")
        return Verification(name, not problems, entry.sha256, actual, tuple(problems))


def add_registry_options(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--model-root", action="append", default=None, type=comma_list(),
               help="extra model registry folder(s) after the shipped models/ (comma list)")


def roots_from_args(args: argparse.Namespace) -> list[str]:
    return comma_values(getattr(args, "model_root", None))


# ---- mediaserver models ---------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "show", "verify"), help="what to do")
    parser.add_argument("name", nargs="?", default=None, help="model name (show; verify: default all)")
    add_registry_options(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    registry = ModelRegistry(roots_from_args(args))
    for problem in registry.errors:
        print_problem(args, problem, "warning")   # stderr: --json output stays JSON
    try:
        if args.action == "list":
            entries = [registry.get(n) for n in registry.names()]
            rows = [{**e.describe(), "default": e.name == DEFAULT_MODEL, "role": e.role()} for e in entries]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                print(f"{'NAME':<20} {'ROLE':<16} {'LATENCY':<8} {'SHA256':<64} FOLDER")
                for e, row in zip(entries, rows):
                    latency = f"{e.latency_ms:g} ms" if e.latency_ms is not None else "-"
                    print(f"{row['name']:<20} {row['role']:<16} {latency:<8} {row['sha256'] or '-':<64} {row['folder']}")
            return 0
        if args.action == "show":
            if not args.name:
                raise UsageError("models show needs NAME (mediaserver models list)")
            entry = registry.get(args.name)
            shown = {**entry.describe(), "default": entry.name == DEFAULT_MODEL, "role": entry.role()}
            if args.json:
                print(json.dumps(shown, indent=2))
            else:
                for k, v in shown.items():
                    print(f"{k}: {v}")
                if entry.card is not None and entry.card.is_file():
                    print()
                    print(entry.card.read_text(errors="replace"))
            return 0
        names = [args.name] if args.name else registry.names()
        results = [registry.verify(n) for n in names]
        if args.json:
            print(json.dumps([r.__dict__ for r in results], indent=2))
        else:
            for r in results:
                print(f"{r.name}: {'OK' if r.ok else 'FAILED'} {r.actual or ''}")
                for p in r.problems:
                    print(f"  {p}")
        return 0 if all(r.ok for r in results) else 1
    except RegistryError as exc:
        raise UsageError(str(exc)) from None
