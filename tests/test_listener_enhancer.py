"""A listener (``mediaserver client --listen-only``: a dispatch console that only monitors, a
recorder) holds no enhancer stream: no model state in one process, and with ``--workers N`` none
of the inference process's shared-memory slots (512 for the whole machine by default), so a
centre with many monitoring consoles cannot take the slots its talkers need. The stream is
opened when the participant's microphone goes on the media clock (``ClockStream.ready``).

Through a real server, in one process and with two media workers: a console listens, alice
talks; while her call lasts the enhancer never has more than her stream open, and the server
still counts two participants.
"""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import METRICS_TOKEN, ServerProcess, client_summary, start_client, stop_client, wait_participants
from test_workers import healthz


def _enhancer_streams(server: ServerProcess, state: dict) -> int:
    """Streams open at the enhancer: each worker's at the shared inference process with
    ``--workers N`` (``/healthz`` ``shared_enhancer.last``, one entry per worker); in one
    process the stage's opened handles (``mediaserver_enhancer_streams``: its batch takes a
    row only at a stream's first frame, so ``/healthz`` ``enhancer.streams`` would not tell)."""
    if state.get("shared_enhancer") is not None:
        return sum(int(w.get("streams", 0)) for w in state["shared_enhancer"]["last"] or [])
    request = urllib.request.Request(server.url + "metrics",
                                     headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        text = resp.read().decode()
    return int(sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples if sample.name == "mediaserver_enhancer_streams"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_listener_opens_no_enhancer_stream(start_server, speech_wav, tmp_path, workers: str) -> None:
    server = start_server("--workers", workers)
    console = start_client(server.url, "ward", "console", "--listen-only", "--duration", "240",
                           log=tmp_path / "console.log")
    try:
        wait_participants(server, 1, timeout=120)
        alice = start_client(server.url, "ward", "alice", "--send", str(speech_wav),
                             log=tmp_path / "alice.log")
        seen: list[tuple[int, int]] = []   # (participants, enhancer streams) while alice talks
        while alice.poll() is None:
            state = healthz(server)
            seen.append((state["participants"], _enhancer_streams(server, state)))
        summary = client_summary(alice, 120)
        heard = stop_client(console)
    finally:
        if console.poll() is None:
            console.kill()
    assert (2, 1) in seen, seen[-20:]                          # alice's stream was opened ...
    assert all(streams <= 1 for _, streams in seen), seen      # ... and never the console's
    assert summary["sent_frames"] > 100, summary["sent_frames"]
    assert heard["remote"]["alice"]["frames_received"] > 100, heard["remote"]


async def test_a_listener_asking_for_enhancement_is_told_its_audio_is_receive_only(start_server) -> None:
    """Its stream has no enhancer state to set: a clear error (not "publish before"), while a
    talker of the same room gets its settings back; its ``stats`` say it sends no audio."""
    import aiohttp

    from rtc_peer import RtcPeer, loopback_ice

    server = start_server()
    with loopback_ice():
        async with aiohttp.ClientSession() as session:
            talker = RtcPeer(server.ws_url, "ward", "talker")
            console = RtcPeer(server.ws_url, "ward", "console", listen_only=True)
            try:
                for peer in (talker, console):
                    await peer.connect(session)
                    await peer.join()
                    await peer.publish(read_after=False)
                await console.send({"type": "enhancement", "atten_lim_db": 12})
                error = await console.expect("error")
                assert error["code"] == "bad-request" and "receive-only" in error["message"], error
                await talker.send({"type": "enhancement", "atten_lim_db": 12})
                settings = await talker.expect("enhancement")
                assert settings["atten_lim_db"] == 12.0, settings
                # its stats say it sends no audio, with no jitter-buffer figures of a stream it
                # does not have (they read as a broken stream: 0 packets, a 20 ms target)
                views = {}
                for peer in (console, talker):
                    await peer.send({"type": "stats"})
                    views[peer.identity] = (await peer.expect("stats"))["participants"][peer.identity]
                assert views["console"]["sends_audio"] is False, views["console"]
                assert "packets_received" not in views["console"], views["console"]
                assert views["talker"]["sends_audio"] is True, views["talker"]
                assert "packets_received" in views["talker"], views["talker"]
            finally:
                for peer in (console, talker):
                    await peer.close()
