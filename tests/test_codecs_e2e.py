"""A caller that prefers G.711 (``m=audio … 0 8 96``), through the real server.

The server answers only codecs its media path serves (Opus first, PCMU, PCMA); the caller
sends its preferred G.711 codec, which the server decodes, upsamples to 48 kHz and forwards
as Opus: the listener hears the tone. RTP the server cannot use is counted in /metrics and
logged once per stream.
"""

from __future__ import annotations

import asyncio
import json
import re
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from mediaserver.audio import read_audio

from conftest import client_summary, server_metric, start_client, stop_client, wait_participants

pytestmark = pytest.mark.timeout(300)
RATE = 48000
UNUSABLE = 25  # first media packets sent with payload type 9 (G.722), never negotiated


class Tone(AudioStreamTrack):
    """440 Hz at -12 dBFS, 20 ms frames on aiortc's own schedule."""

    def __init__(self) -> None:
        super().__init__()
        self._n = 0

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()  # paces at real time and sets pts
        t = (self._n + np.arange(frame.samples)) / frame.sample_rate
        self._n += frame.samples
        pcm = (0.25 * np.sin(2 * np.pi * 440.0 * t) * 32767).astype(np.int16)
        out = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts, out.time_base = frame.sample_rate, frame.pts, Fraction(1, frame.sample_rate)
        return out


def rewrite_first_payload_types(pc: RTCPeerConnection, count: int, pt: int) -> None:
    """Send the first ``count`` media packets with payload type ``pt`` (clear RTP, before SRTP)."""
    dtls = pc.getTransceivers()[0].sender.transport
    send = dtls._send_rtp
    left = [count]

    async def wrapped(data: bytes) -> None:
        if left[0] > 0 and len(data) >= 12 and not 192 <= data[1] <= 223:
            left[0] -= 1
            data = data[:1] + bytes([(data[1] & 0x80) | pt]) + data[2:]
        await send(data)

    dtls._send_rtp = wrapped


async def g711_first_caller(url: str, seconds: float, first: str) -> tuple[str, str]:
    """Join as A offering ``first`` (PCMU or PCMA), the other G.711, then Opus; send a tone.

    Returns the answer SDP and the codec the caller sent with.
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))   # (aiortc's default: Google's STUN server)
    transceiver = pc.addTransceiver(Tone(), direction="sendrecv")
    caps = {c.mimeType.lower(): c for c in RTCRtpSender.getCapabilities("audio").codecs}
    other = "audio/pcma" if first == "audio/pcmu" else "audio/pcmu"
    transceiver.setCodecPreferences([caps[first], caps[other], caps["audio/opus"]])
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url.replace("http", "ws") + "ws") as ws:
            await ws.send_json({"type": "join", "room": "g711", "identity": "A"})
            offer = await pc.createOffer()
            await pc.setLocalDescription(offer)
            assert re.search(r"m=audio \d+ \S+ (0 8|8 0) ", pc.localDescription.sdp)
            answer_sdp = ""
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            sent_offer = False
            while loop.time() < end:
                try:
                    msg = await ws.receive(timeout=max(0.1, end - loop.time()))
                except asyncio.TimeoutError:
                    break
                data = json.loads(msg.data)
                if data["type"] == "joined" and not sent_offer:
                    sent_offer = True
                    await ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
                elif data["type"] == "answer":
                    answer_sdp = data["sdp"]
                    await pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
                    rewrite_first_payload_types(pc, UNUSABLE, 9)
                elif data["type"] == "offer":
                    await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
                    await pc.setLocalDescription(await pc.createAnswer())
                    await ws.send_json({"type": "answer", "sdp": pc.localDescription.sdp})
                elif data["type"] == "error":
                    raise AssertionError(f"server error: {data}")
            await ws.send_json({"type": "leave"})
    sent_with = transceiver._codecs[0].mimeType.lower()  # what aiortc's sender used
    await pc.close()
    return answer_sdp, sent_with


@pytest.mark.parametrize("first", ["audio/pcmu", "audio/pcma"])
@pytest.mark.usefixtures("ice_on_loopback")   # as the servers and clients in these tests
def test_g711_first_caller_is_decoded_and_heard(start_server, tmp_path: Path, first: str) -> None:
    server = start_server("--no-enhance")
    b = start_client(server.url, "g711", "B", "--duration", "40", "--record-dir",
                     str(tmp_path / "rec"), log=tmp_path / "B.log")
    wait_participants(server, 1)
    answer, sent_with = asyncio.run(g711_first_caller(server.url, 6.0, first))
    audio_line = next(line for line in answer.split("\r\n") if line.startswith("m=audio"))
    rtpmaps = [c.lower() for c in re.findall(r"a=rtpmap:\d+ ([^/\s]+)/", answer)]
    assert rtpmaps and rtpmaps[0] == "opus" and set(rtpmaps) <= {"opus", "pcmu", "pcma"}, audio_line
    assert sent_with == first  # the caller really published G.711
    assert server_metric(server, "mediaserver_rtp_unusable_total", reason="payload-type") >= UNUSABLE - 5
    summary = stop_client(b)
    recording, _ = read_audio(summary["remote"]["A"]["file"])
    win = RATE // 50
    n = len(recording) // win
    rms = np.sqrt(np.mean(recording[: n * win].reshape(n, win) ** 2, axis=1))
    loud_s = np.count_nonzero(rms > 0.25 * 0.25 / np.sqrt(2)) / 50
    print(f"tone heard for {loud_s:.2f} s; answer {audio_line}")
    assert loud_s >= 4.0, f"the caller's tone was heard for only {loud_s:.2f} s"
    log = server.log_path.read_text(errors="replace")
    assert log.count("dropping RTP the media path cannot use") == 1, "logged once per stream"


# ---- mediaserver client --codec: publish and receive with one codec through the server ----------
TONES = {"A": ("pcmu", 500.0), "B": ("pcma", 700.0), "C": ("opus", 900.0)}
TONE_AMP = 0.3


def tone_heard(recording: np.ndarray) -> tuple[float, float, float]:
    """(seconds loud, peak Hz, rms) of the loud 20 ms windows of a recording."""
    win = RATE // 50
    n = len(recording) // win
    frames = recording[: n * win].reshape(n, win)
    loud = frames[np.sqrt(np.mean(frames ** 2, axis=1)) > 0.5 * TONE_AMP / np.sqrt(2)]
    if len(loud) < 10:
        return len(loud) / 50, 0.0, 0.0
    body = loud[2:-2].reshape(-1)
    spectrum = np.abs(np.fft.rfft(body * np.hanning(len(body))))
    return len(loud) / 50, float(np.argmax(spectrum) * RATE / len(body)), float(np.sqrt(np.mean(body ** 2)))


def test_clients_publish_and_receive_with_their_codec(start_server, tmp_path: Path) -> None:
    """A (PCMU only), B (PCMA only) and C (Opus only) each send a tone; each hears the other
    two in its own codec: G.711-only offers are accepted, and the server encodes each
    publisher once per codec its subscribers take (Opus -> G.711, G.711 -> Opus and G.711)."""
    from mediaserver.audio import write_audio

    server = start_server("--no-enhance")
    seconds = 16.0   # long enough that each pair is negotiated well before the tone ends
    clients = {}
    for who, (codec, hz) in TONES.items():
        wav = tmp_path / f"{who}.wav"
        t = np.arange(int(RATE * seconds)) / RATE
        write_audio(wav, TONE_AMP * np.sin(2 * np.pi * hz * t), RATE)
        env_codec = ("--codec", codec) if codec != "opus" else ()  # opus: the default
        clients[who] = start_client(server.url, "codecs", who, *env_codec, "--send", str(wav),
                                    "--duration", "40", "--record-dir", str(tmp_path / who),
                                    log=tmp_path / f"{who}.log")
    wait_participants(server, 3)
    summaries = {}
    for who, proc in clients.items():
        summaries[who] = client_summary(proc, timeout=120)
    for who, (codec, _hz) in TONES.items():
        summary = summaries[who]
        assert summary["codec"] == codec and not summary["errors"], summary
        for other, (_c, hz) in TONES.items():
            if other == who:
                continue
            remote = summary["remote"][other]
            assert remote["codecs"] == [codec], (who, other, remote)  # received in its own codec
            recording, _ = read_audio(remote["file"])
            loud_s, peak, rms = tone_heard(recording)
            print(f"{who} ({codec}) hears {other}: {loud_s:.2f} s at {peak:.0f} Hz, rms {rms:.3f}")
            assert loud_s >= 2.0, f"{who} heard {other}'s tone for only {loud_s:.2f} s"  # (load-dependent start)
            assert abs(peak - hz) < 10 and abs(rms - TONE_AMP / np.sqrt(2)) < 0.03, (who, other, peak, rms)
