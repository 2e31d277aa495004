"""Every benchmark script still starts against today's code: imports, flag parser, overrides.

The benchmarks (``benchmarks/*.py``) run outside CI, minutes each, so drift from the product's
code surfaced only when someone next ran one: ``loss.py --mode server`` built the client's
settings by hand and its ``StreamRecorder`` subclass missed the ``codec`` argument the client
passes (both found the same day, 695d638); ``cluster.py`` imported ``mediaserver`` only through
an installed copy (its ``--help`` was a ModuleNotFoundError from any checkout whose editable
install points elsewhere). These checks run nothing of a benchmark but its start:

- ``python benchmarks/X.py --help`` from a scratch folder, as a script (``sys.path[0]`` is
  ``benchmarks/``): every module-level import of the product and the whole parser are built;
  exit 0, a usage line, and any ``mediaserver`` it imported is this checkout's (``stop.py
  --root`` and ``transport.py --baseline-tree`` compare checkouts: an installed copy would
  silently run the wrong code);
- a benchmark's subclass of a product class accepts every argument the product's method
  takes (``loss.py``'s TimedRecorder.add against ``client.StreamRecorder.add``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT

BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))

# Runs a benchmark as ``python benchmarks/X.py --help`` would (sys.path[0] is the script's folder,
# not the current one), then reports where ``mediaserver`` came from (None: not imported).
DRIVER = """
import json, runpy, sys
path = sys.argv[1]
sys.path[0] = path.rsplit("/", 1)[0]
sys.argv = [path, "--help"]
code = 0
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
mod = sys.modules.get("mediaserver")
print("\\nDRIVER " + json.dumps({"code": code, "mediaserver": getattr(mod, "__file__", None)}))
"""


def test_there_are_benchmarks() -> None:
    assert len(BENCHMARKS) >= 10, BENCHMARKS


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_help_runs_from_anywhere_with_this_checkouts_code(script: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    head, _, tail = proc.stdout.rpartition("\nDRIVER ")
    assert tail, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(tail)
    assert result["code"] == 0, proc.stderr[-3000:]
    assert "usage:" in head, head[-2000:]
    if result["mediaserver"] is not None:
        assert Path(result["mediaserver"]).resolve().is_relative_to(ROOT.resolve()), result


def _accepts_every_call_of(override: object, base: object) -> list[str]:
    """Parameters of ``base`` that a call valid for ``base`` could pass and ``override`` would
    refuse (positional order and keyword names both count); [] when every call fits."""
    mine = inspect.signature(override).parameters
    kinds = [p.kind for p in mine.values()]
    takes_args = inspect.Parameter.VAR_POSITIONAL in kinds
    takes_kwargs = inspect.Parameter.VAR_KEYWORD in kinds
    positional = [p.name for p in mine.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    missing = []
    for i, p in enumerate(inspect.signature(base).parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            fits = takes_args or (i < len(positional) and positional[i] == p.name)
            if not fits:
                missing.append(p.name)
                continue
        if p.kind != p.POSITIONAL_ONLY and not (p.name in mine or takes_kwargs):
            missing.append(p.name)
    return missing


def _benchmark(name: str) -> Any:
    """benchmarks/NAME.py imported as a module (its parser and helpers, nothing run)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_loss_recorder_takes_every_argument_the_clients_recorder_takes() -> None:
    loss = _benchmark("loss")
    from mediaserver.client import StreamRecorder

    timed = loss._recorder_class()
    assert issubclass(timed, StreamRecorder)
    overridden = [name for name, fn in vars(timed).items()
                  if callable(fn) and not name.startswith("__") and hasattr(StreamRecorder, name)]
    assert "add" in overridden
    for name in overridden:
        assert _accepts_every_call_of(getattr(timed, name), getattr(StreamRecorder, name)) == [], name


def test_the_signature_check_refuses_a_missing_argument() -> None:
    def base(self, payload, ssrc, timestamp, arrival, codec="opus"): ...   # noqa: ANN001, ANN202
    def old(self, payload, ssrc, timestamp, arrival): ...                    # noqa: ANN001, ANN202
    def wide(self, *a, **k): ...                                             # noqa: ANN002, ANN003, ANN202
    assert _accepts_every_call_of(old, base) == ["codec"]
    assert _accepts_every_call_of(wide, base) == []
    assert _accepts_every_call_of(base, base) == []


def test_valid_models_names_the_held_out_languages_only_when_extra_brought_them() -> None:
    valid_models = _benchmark("valid_models")
    from mediaserver.enhance.data import VALID_LANGUAGES

    langs = "/".join(VALID_LANGUAGES)
    assert langs not in valid_models.describe(32, None)
    assert "no --extra" in valid_models.describe(32, None)
    assert langs in valid_models.describe(32, Path(".data/extra16"))


def test_loss_only_refuses_a_name_that_is_no_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt ``--only`` ran zero scenarios, printed an empty table and exited 0."""
    loss = _benchmark("loss")
    with pytest.raises(SystemExit) as exc:
        loss.main(["--only", "clean,cleen"])
    assert exc.value.code == 2
    assert "no scenario 'cleen'" in capsys.readouterr().err
    # any name of the full grid, without --full
    assert [s.name for s in loss.chosen_scenarios("jitter20-loss2%,clean", False)] == ["clean", "jitter20-loss2%"]
    assert loss.chosen_scenarios("", False) == loss.scenarios(False)


def test_loss_refuses_a_variable_that_is_no_value_for_its_flag(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``MEDIASERVER_ONLY='clean,,'`` was ignored: the whole grid ran (40 s of speech each)."""
    loss = _benchmark("loss")
    monkeypatch.setenv("MEDIASERVER_ONLY", "clean,,")
    with pytest.raises(SystemExit) as exc:
        loss.main([])
    assert exc.value.code == 2
    assert "MEDIASERVER_ONLY='clean,,' has an empty entry" in capsys.readouterr().err
