"""``pip install .`` (not editable) must give a server that finds the browser client and the model.

The wheel is built from a copy of only what an sdist carries, installed with ``--target`` into a
temporary folder, and run from a folder where the checkout is not importable: the installed
``mediaserver serve`` must serve static/ and, when the checkout has trained weights, load them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import pytest

from requires import require

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "mediaserver", "static", "models"]

pytestmark = pytest.mark.timeout(300)


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


def _copy_source(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp")
    for name in SHIPPED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pkg")
    src, wheels, site = base / "src", base / "wheels", base / "site"
    src.mkdir()
    _copy_source(src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels)], check=True, cwd=base)
    (wheel,) = wheels.glob("mediaserver-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", str(wheel), "--no-deps", "-q",
                    "--target", str(site)], check=True, cwd=base)
    return site


def test_wheel_carries_client_and_models(installed: Path) -> None:
    pkg = installed / "mediaserver"
    for rel in ["index.html", "style.css", "js/app.js", "js/call.js", "js/signalling.js"]:
        assert (pkg / "static" / rel).is_file(), rel
    shipped = sorted((ROOT / "models").glob("**/*.pt"))
    require(bool(shipped), "no trained weights under models/ (the wheel must carry the default model)")
    for weights in shipped:
        rel = weights.relative_to(ROOT / "models")
        assert (pkg / "models" / rel).is_file(), f"{rel} missing from the wheel"
    script = installed / "bin" / "mediaserver"
    assert script.is_file() and "mediaserver.cli" in script.read_text()


def test_entry_point_runs(installed: Path, tmp_path: Path) -> None:
    out = subprocess.run([str(installed / "bin" / "mediaserver"), "serve", "--help"], cwd=tmp_path,
                         env=_env(installed), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--ice-host" in out.stdout and "MEDIASERVER_PORT" in out.stdout


def test_installed_resources_point_into_the_package(installed: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c",
         "import mediaserver, mediaserver.resources as r; "
         "print(mediaserver.__file__); print(r.static_dir()); print(r.models_dir())"],
        cwd=tmp_path, env=_env(installed),
        check=True, capture_output=True, text=True,
    ).stdout.split("\n")
    module, static, models = (Path(line) for line in out[:3])
    assert module.is_relative_to(installed), "imported the checkout, not the installed copy"
    assert static == installed / "mediaserver" / "static"
    assert (static / "index.html").is_file()
    require(any((ROOT / "models").glob("**/*.pt")), "no trained weights under models/")
    assert models == installed / "mediaserver" / "models"


async def test_installed_server_serves_the_client(installed: Path, tmp_path: Path) -> None:
    require(any((ROOT / "models").glob("**/*.pt")), "no trained weights under models/")
    extra: list[str] = []   # the default model, loaded from the installed package
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediaserver", "serve", "--host", "127.0.0.1", "--port", "0",
        "--ice-host", "127.0.0.1", *extra,
        cwd=tmp_path, env=_env(installed),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen = b""
    try:
        port = None
        while port is None:
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            seen += line
            if not line:
                pytest.fail(f"installed server exited:\n{seen.decode(errors='replace')[-3000:]}")
            match = re.search(rb"http://127\.0\.0\.1:(\d+)/", line)
            if match:
                port = int(match.group(1))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/") as resp:
                assert resp.status == 200
                assert '<script type="module" src="js/app.js">' in await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/js/app.js") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                health = await resp.json()
                assert health["status"] == "ok"
                assert health["enhancement"] is True
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
