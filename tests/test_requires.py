"""tests/requires.py: a missing dependency skips locally and fails, at its line, under CI=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

CASES = '''
from requires import require, require_module, require_program

def test_module():
    require_module("no_such_extra_package", "pip install it")

def test_program():
    require_program("no-such-program-here", "apt-get install it")

def test_present():
    assert require_module("json").dumps(1) == "1"
    assert require_program("sh")
    require(True, "never said")
'''


@pytest.mark.parametrize("ci", ["", "true"])
def test_missing_dependency_skips_locally_and_fails_in_ci(tmp_path: Path, ci: str) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_cases.py").write_text(CASES)
    env = dict(os.environ, PYTHONPATH=str(HERE), CI=ci)
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q",
                        "--rootdir", str(tmp_path), str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    if ci:
        assert r.returncode == 1, r.stdout
        assert "2 failed, 1 passed" in r.stdout, r.stdout
        assert "no_such_extra_package" in r.stdout and "no-such-program-here" in r.stdout
        assert "nothing may skip in CI" in r.stdout
    else:
        assert r.returncode == 0, r.stdout
        assert "1 passed, 2 skipped" in r.stdout, r.stdout
        assert "pip install it" in r.stdout and "apt-get install it" in r.stdout
