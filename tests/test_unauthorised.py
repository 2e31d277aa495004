"""Every 401 says everything its route accepts (a fresh user's trial 4: ``/models``' 401 named
only the server secret, though the metrics token reads it too; ``/cluster``'s said
``/metrics needs ...``).

The server's own guards in one process, on an aiohttp app built as ``serve`` builds them
(``websec.attach``, the model admin, the debug view), asked without a credential and with a
wrong one; and the kind: no module but ``sfu/websec.py`` builds a 401 itself.
"""

from __future__ import annotations

import ast
import asyncio
from types import SimpleNamespace
from typing import Optional

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from mediaserver.cli import build_parser
from mediaserver.enhance.canary import ModelRouter
from mediaserver.sfu import websec
from mediaserver.sfu.debug_view import attach_debug
from mediaserver.sfu.models_admin import ModelsAdmin

from conftest import ROOT

SECRET, TOKEN = "the-secret", "the-metrics-token"
BOTH = "needs Authorization: Bearer <server secret> or Bearer <metrics token>"
SECRET_ONLY = "needs Authorization: Bearer <server secret>"
TOKEN_ONLY = "needs Authorization: Bearer <metrics token>"

CASES = [
    ("GET", "/models", BOTH),
    ("POST", "/admin/rooms/r1/model", SECRET_ONLY),
    ("DELETE", "/admin/rooms/r1/model", SECRET_ONLY),
    ("POST", "/admin/canary/rollback", SECRET_ONLY),
    ("GET", "/debug/rooms", SECRET_ONLY),
    ("GET", "/metrics", TOKEN_ONLY),
    ("GET", "/cluster", TOKEN_ONLY),
]


def _app(*, metrics_token: Optional[str]) -> web.Application:
    argv = ["serve", "--secret", SECRET] + (["--metrics-token", metrics_token] if metrics_token else [])
    args = build_parser("serve").parse_args(argv)
    app = web.Application()
    websec.attach(app, args)
    ModelsAdmin(stage=None, router=ModelRouter("stable"), room_handles=lambda room: [],
                registry=CollectorRegistry(), secret=SECRET, metrics_token=metrics_token).attach(app)
    attach_debug(app, stage=SimpleNamespace(frame_sinks=[]), manager=SimpleNamespace(rooms={}), secret=SECRET)

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/metrics", plain)
    app.router.add_get("/cluster", plain)
    return app


async def _refusals(app: web.Application, authorization: Optional[str]) -> list[tuple[int, str, str, str]]:
    headers = {"Authorization": authorization} if authorization else {}
    async with TestClient(TestServer(app)) as client:
        out = []
        for method, path, _ in CASES:
            async with client.request(method, path, headers=headers, data=b"{}") as resp:
                out.append((resp.status, await resp.text(), resp.headers.get("WWW-Authenticate", ""), path))
        return out


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic eDp5"])
def test_every_401_says_everything_its_route_accepts(authorization: Optional[str]) -> None:
    answers = asyncio.run(_refusals(_app(metrics_token=TOKEN), authorization))
    for (status, text, challenge, path), (method, _, wanted) in zip(answers, CASES):
        assert status == 401 and challenge == "Bearer", (path, status, text, challenge)
        assert text == f"{method} {path} {wanted}", (path, text)


def test_without_a_metrics_token_models_names_the_secret_alone() -> None:
    """No ``--metrics-token``: only the secret reads ``/models``, and its 401 says so."""
    answers = asyncio.run(_refusals(_app(metrics_token=None), None))
    status, text, _, _ = answers[0]
    assert (status, text) == (401, f"GET /models {SECRET_ONLY}")


def test_no_module_builds_a_401_but_websec() -> None:
    """The kind: a new guard that builds its own ``HTTPUnauthorized`` (and names part of what
    it takes) fails here; it should use ``websec.unauthorised``."""
    offenders = []
    for path in sorted((ROOT / "mediaserver").rglob("*.py")):
        if path.name == "websec.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "HTTPUnauthorized":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], offenders
