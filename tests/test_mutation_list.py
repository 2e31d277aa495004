"""The mutation list (``tests/mutations.py``) follows the code.

The mutation check takes about an hour and a half, so it runs outside CI; this test keeps its
list honest in every CI run: each breakage's text occurs exactly once in its file (an edit
that no longer matches breaks nothing, and the check would report it stale only when someone
runs it), each named test file and test function exists, and names are unique.
"""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT
from mutations import MUTATIONS, Mutation


def test_names_are_unique() -> None:
    names = [m.name for m in MUTATIONS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_every_breakage_still_applies_and_names_real_tests(mutation: Mutation) -> None:
    for edit in mutation.edits:
        text = (ROOT / edit.path).read_text()
        assert text.count(edit.old) == 1, f"{edit.path}: {edit.old[:80]!r} occurs {text.count(edit.old)} times"
        assert edit.new != edit.old
    assert mutation.tests
    for node in mutation.tests:
        file, _, name = node.partition("::")
        path = ROOT / file
        assert path.exists(), file
        if name:
            function = name.split("[")[0]
            defined = {n.name for n in ast.walk(ast.parse(path.read_text()))
                       if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            assert function in defined, node
