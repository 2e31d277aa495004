"""Issue 14: every aiortc/aioice patch lives in ``mediaserver/patches.py`` and is checked at start-up.

* ``check()`` passes on the installed (pinned) aiortc; an internal that moved is named with
  the versions, and ``serve`` / ``client`` refuse to start with that message (exit 2), not a
  ``bad-sdp`` at the first publish.
* ``tap_receiver`` on a real aiortc receiver (two peer connections on 127.0.0.1): every RTP
  packet reaches the callback with its arrival time, in order; aiortc's RTCP statistics are
  still fed (the sender's receiver reports depend on them); aiortc's own jitter buffer and
  decoder never see a packet, so its track yields no frame.
* Layering: ``mediaserver client`` imports nothing from the server (``mediaserver.sfu``), and
  nothing outside ``patches.py`` assigns to an aiortc/aioice internal.
"""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from conftest import ROOT
from mediaserver import patches
from mediaserver.client import FileSource
from rtc_peer import tone
from waiting import until

PACKAGE = ROOT / "mediaserver"


# ---------------------------------------------------------------------------- start-up check
def test_check_passes_on_the_pinned_aiortc() -> None:
    import aiortc

    pin = re.search(r'"aiortc==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin and aiortc.__version__ == pin.group(1)
    patches.check()


def test_check_works_with_no_event_loop_and_inside_one() -> None:
    """``serve`` checks before its loop exists; tests (and an embedding app) call it after an
    ``asyncio.run`` has closed its loop, or from inside a running one."""
    asyncio.run(asyncio.sleep(0))   # leaves the main thread with no current loop
    patches.check()

    async def inside() -> None:
        patches.check()

    asyncio.run(inside())


def test_a_moved_internal_is_named_with_the_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    import aioice
    import aiortc

    monkeypatch.delattr(RTCRtpReceiver, "_handle_rtp_packet")
    monkeypatch.setitem(patches.INSTANCE_INTERNALS, "RTCIceTransport", ("_send", "_gone_in_a_release"))
    with pytest.raises(patches.PatchError) as err:
        patches.check()
    message = str(err.value)
    assert "RTCRtpReceiver._handle_rtp_packet (tap_receiver)" in message
    assert "RTCIceTransport._gone_in_a_release" in message
    assert f"aiortc {aiortc.__version__}" in message and f"aioice {aioice.__version__}" in message


MOVED = ("import aiortc.rtcrtpreceiver as r; del r.RTCRtpReceiver._handle_rtp_packet; "
         "import sys; from mediaserver.__main__ import main; sys.exit(main())")


@pytest.mark.parametrize("command", [
    ["serve", "--host", "127.0.0.1", "--port", "0", "--no-enhance"],
    ["client", "--url", "http://127.0.0.1:9", "--room", "r", "--identity", "x", "--duration", "1"],
])
def test_serve_and_client_refuse_to_start_when_an_internal_moved(command: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", MOVED, *command], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "error: aiortc" in out and "RTCRtpReceiver._handle_rtp_packet (tap_receiver)" in out
    assert "Traceback" not in out


# ---------------------------------------------------------------------------- the RTP tap
@pytest.mark.usefixtures("ice_on_loopback")
async def test_tap_receiver_takes_every_packet_from_a_real_receiver() -> None:
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got: list[tuple[int, float]] = []
    payload_types: set[int] = set()
    decoded: list[object] = []
    clock = {"ms": 0.0}

    def stamp() -> float:
        clock["ms"] += 1.0
        return clock["ms"]

    try:
        sender.addTrack(FileSource(tone(500.0, 4.0), loop=True))

        @receiver.on("track")
        def on_track(track) -> None:
            rx = next(t.receiver for t in receiver.getTransceivers() if t.receiver.track is track)
            def on_packet(packet, arrival_ms: float) -> None:
                got.append((packet.sequence_number, arrival_ms))
                payload_types.add(packet.payload_type)

            codec_of = patches.tap_receiver(rx, on_packet, stamp)
            on_track.codec_of = codec_of   # type: ignore[attr-defined]

            async def drain() -> None:   # aiortc's own path: its track must stay empty
                while True:
                    decoded.append(await track.recv())

            on_track.reader = asyncio.ensure_future(drain())   # type: ignore[attr-defined]

        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        await until(lambda: len(got) >= 50, timeout=30, what="50 tapped RTP packets")
        rx = receiver.getTransceivers()[0].receiver
        stats = [s for s in (await rx.getStats()).values() if s.type == "inbound-rtp"]
    finally:
        reader = getattr(on_track, "reader", None)
        if reader is not None:
            reader.cancel()
        await sender.close()
        await receiver.close()

    seqs = [s for s, _ in got]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == list(range(len(seqs)))   # in order, none lost
    assert [at for _, at in got] == sorted(at for _, at in got)                # stamped on arrival
    assert stats and stats[0].packetsReceived >= 50                            # RTCP stats fed
    assert decoded == []                                                       # aiortc decoded nothing
    assert [on_track.codec_of(pt) for pt in payload_types] == ["opus"]   # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- layering
def _imports(path: Path) -> set[str]:
    """Absolute names of the mediaserver modules ``path`` imports (top level or in functions)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("mediaserver")}


def _closure(start: str) -> set[str]:
    """Every mediaserver module reachable from ``start`` through imports."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = ROOT / Path(*name.split("."))
        file = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
        if not file.exists():
            continue          # an imported name, not a module
        seen.add(name)
        todo.extend(_imports(file))
    return seen


def test_the_client_uses_no_server_internals() -> None:
    reached = _closure("mediaserver.client")
    assert "mediaserver.patches" in reached and "mediaserver.media.opus" in reached
    assert not [m for m in reached if m.startswith("mediaserver.sfu")], sorted(reached)


PRIVATE_ASSIGNMENT = re.compile(
    r"^\s*(?:aioice\.ice\.\w+|RTC\w+\.\w+|\w*(?:transport|receiver|sender|router|dtls)\w*\._\w+"
    r"|\w+\._handle_rtp_packet|\w+\.route_rtp)\s*=[^=]", re.MULTILINE)


def test_no_library_internal_is_patched_outside_patches_py() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "patches.py":
            continue
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}"
                      for m in PRIVATE_ASSIGNMENT.finditer(path.read_text())]
    assert offenders == []
    # and the patterns do find the patches where they live
    assert len(PRIVATE_ASSIGNMENT.findall((PACKAGE / "patches.py").read_text())) >= 6
