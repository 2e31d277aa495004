"""pytest plugin: under ``CI=true`` a skipped test fails the run.

Skips hide missing system packages and extras; CI installs everything, so a skip there
means the run did not test what it claims. Locally skips stay skips (``-rs`` lists why).
conftest.py registers it; alone it loads with ``-p ci_guard``.
"""

from __future__ import annotations

import os
from typing import Any, Union

import pytest


def in_ci() -> bool:
    """``CI=true`` (also ``1``/``yes``), as CI services set it."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


class SkipGuard:
    """Collects every skip (collection and tests; xfail is not a skip) and fails the session."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def _record(self, report: Union[pytest.CollectReport, pytest.TestReport]) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append(report.nodeid or str(report.fspath))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)   # module-level skips (importorskip, allow_module_level)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.skipped and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.skipped:
            terminalreporter.write_line(
                f"CI=true: {len(self.skipped)} skipped, and nothing may skip in CI "
                "(reasons in the skip summary, -rs):", red=True, bold=True)
            for nodeid in self.skipped:
                terminalreporter.write_line(f"  {nodeid}", red=True)


def pytest_configure(config: pytest.Config) -> None:
    if in_ci() and not config.pluginmanager.has_plugin("ci-skip-guard"):
        config.pluginmanager.register(SkipGuard(), "ci-skip-guard")
