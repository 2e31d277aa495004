"""pytest plugin: every ICE host candidate gathered in the test process is on loopback.

The suite's network rule is 127.0.0.1 only. A peer connection made in the test process (aiortc
directly, ``rtc_peer.RtcPeer``, the ``Caller`` harnesses around a server-side ``Participant``)
gathers its host candidates through aioice, which skips loopback and offers the machine's other
interfaces unless ``mediaserver.patches.pin_host_addresses(["127.0.0.1"])`` is in force (the
``ice_on_loopback`` fixture, ``rtc_peer.loopback_ice()``). Nothing failed without the pin: the
calls connected over the machine's own address, so three test files ran off loopback unseen.

Wrapped: ``aioice.Connection.gather_candidates`` notes every host candidate whose address is
not loopback, and a STUN or TURN server that is not on loopback (a bare ``RTCPeerConnection()``
asks Google's public STUN server). A test

- fails if its setup or call gathered such a candidate (the addresses are named); gathered in
  its teardown (a fixture's), it errors there;
- errors at its teardown (its fixtures finalized) if it left the pin in force: a pin leaked by
  one test made the next file's unpinned peers look pinned, so a file passed in the suite and
  went off loopback alone (``test_impair.py`` pinned for ``test_load_publishers.py`` that
  way). The leaked pin is undone.

A test that gathered also has the cyclic garbage collected at its teardown. The peer
connections leave cycles (closed transports, finished tasks); a finalizer among them that
formats a traceback (asyncio's "exception was never retrieved" log, pytest's unraisable hook)
runs ``ast.parse`` on CPython 3.11 (the traceback's caret anchors). When the collection that
runs it is triggered inside another ``ast.parse`` (pytest rewriting a module imported later,
e.g. hypothesis's at the session's end), 3.11 corrupts the outer parse's recursion counter and
raises ``SystemError: AST constructor recursion depth mismatch``: a session that passed dies.
Collected at the teardown, no parse is running.

Subprocesses (``mediaserver serve``/``client``) are not seen here: they get ``--ice-host
127.0.0.1`` where they are started (conftest.ServerProcess, start_client).
conftest.py registers the plugin; alone it loads with ``-p loopback_guard``.
"""

from __future__ import annotations

import gc
import ipaddress
from typing import Any, Callable, Coroutine, Generator, Optional

import aioice
import pytest

from mediaserver import patches


def is_loopback(address: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``; a scoped IPv6 address (``fe80::1%eth0``) or
    another name (``stun.l.google.com``, aiortc's default STUN server) is not loopback."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


class LoopbackGuard:
    """Notes gathered host candidates off loopback; fails the test that gathered them."""

    def __init__(self) -> None:
        self.off_loopback: list[str] = []   # addresses since the last check, in gathering order
        self.gatherings = 0                 # gatherings since the last check
        self._original: Callable[..., Coroutine[Any, Any, None]] = aioice.Connection.gather_candidates

    def install(self) -> None:
        original = self._original
        guard = self

        async def gather_candidates(connection: aioice.Connection) -> None:
            servers = [f"{kind} server {server[0]}:{server[1]}" for kind, server in
                       (("STUN", connection.stun_server), ("TURN", connection.turn_server))
                       if server is not None and not is_loopback(server[0])]
            await original(connection)
            guard.gatherings += 1
            guard.off_loopback += servers + [c.host for c in connection.local_candidates
                                             if c.type == "host" and not is_loopback(c.host)]

        aioice.Connection.gather_candidates = gather_candidates  # type: ignore[method-assign]

    def uninstall(self) -> None:
        aioice.Connection.gather_candidates = self._original  # type: ignore[method-assign]

    def _off_loopback(self, item: pytest.Item) -> Optional[str]:
        """What was gathered off loopback since the last look (None: nothing); forgets it."""
        off, self.off_loopback = list(dict.fromkeys(self.off_loopback)), []
        if not off:
            return None
        return (f"{item.nodeid}: gathered ICE off loopback: {', '.join(off)} (the rule is 127.0.0.1 "
                "only: use the ice_on_loopback fixture or rtc_peer.loopback_ice(), and "
                "RTCConfiguration(iceServers=[]))")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
            self, item: pytest.Item, call: pytest.CallInfo[None],
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """The test's own call (with its setup) gathered off loopback: the test fails."""
        report = yield
        if call.when == "call":
            problem = self._off_loopback(item)
            if problem and report.passed:
                report.outcome, report.longrepr = "failed", problem
            elif problem:
                report.sections.append(("loopback guard", problem))
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        """After the fixtures' teardown: gathered there, or the pin left in force, is an error."""
        yield
        gathered, self.gatherings = self.gatherings, 0
        leaked = patches.describe()["pin_host_addresses"]
        if leaked:
            patches.pin_host_addresses([])
        if gathered:
            gc.collect()   # this test's peer garbage finalized now, not inside a later ast.parse
        problems = [p for p in [self._off_loopback(item)] if p]
        if leaked:
            problems.append(f"{item.nodeid}: left ICE host addresses pinned after its teardown (pin "
                            "with the ice_on_loopback fixture or `with rtc_peer.loopback_ice():`, "
                            "which undo it)")
        if problems:
            pytest.fail("; ".join(problems), pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("loopback-guard"):
        guard = LoopbackGuard()
        guard.install()
        config.pluginmanager.register(guard, "loopback-guard")
        config.add_cleanup(guard.uninstall)
