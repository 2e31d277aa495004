"""tests/ci_guard.py: under CI=true any skip fails the run, and says which tests skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

CASES = '''
import pytest

def test_ok():
    pass

def test_skipped():
    pytest.skip("widget not installed")

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False
'''


def _pytest(folder: Path, *, ci: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(HERE), CI=ci)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_guard", "-p", "no:cacheprovider",
                           "-rs", "-q", "--rootdir", str(folder), str(folder)],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=120)


@pytest.mark.parametrize("module_level", [False, True])
def test_a_skip_fails_under_ci_only(tmp_path: Path, module_level: bool) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    if module_level:  # importorskip of an absent extra: a collection-time skip
        (tmp_path / "test_cases.py").write_text(CASES)
        (tmp_path / "test_extra.py").write_text(
            "import pytest\npytest.importorskip('no_such_extra_package')\n\ndef test_x():\n    pass\n")
        skipped = "test_extra.py"
    else:
        (tmp_path / "test_cases.py").write_text(CASES)
        skipped = "test_cases.py::test_skipped"
    local = _pytest(tmp_path, ci="")
    assert local.returncode == 0, local.stdout
    assert "SKIPPED" in local.stdout   # -rs: the reason is shown
    ci = _pytest(tmp_path, ci="true")
    assert ci.returncode == 1, ci.stdout
    assert "nothing may skip in CI" in ci.stdout and f"  {skipped}" in ci.stdout
    assert "test_xfail" not in ci.stdout.split("nothing may skip in CI")[1].split("short test summary")[0]


def test_no_skip_passes_under_ci(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_fine.py").write_text("def test_ok():\n    pass\n")
    r = _pytest(tmp_path, ci="true")
    assert r.returncode == 0, r.stdout
    assert "nothing may skip" not in r.stdout
