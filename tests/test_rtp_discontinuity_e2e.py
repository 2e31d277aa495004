"""End to end through the real server: a publisher whose RTP numbering breaks mid-call.

``mediaserver client --rtp-discontinuity`` rewrites the sender's clear RTP headers before
SRTP (sequence restart, sequence jump, timestamp back / forward, SSRC change, and a
restart of both numberings at once). The sender sends a continuous harmonic tone, so any
audio the server drops or conceals past its 60 ms of packet-loss concealment shows up in
the subscriber's recording as a quiet stretch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mediaserver.audio import read_audio, write_audio

from conftest import client_summary, start_client, stop_client, wait_participants

pytestmark = pytest.mark.timeout(300)

RATE = 48000
FAULTS = ["seq-restart@2", "ts-back@3", "ts-forward@4", "seq-jump@5", "ssrc-change@6",
          "seq-restart@7", "ts-back@7"]  # the last two: both numberings at once


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 190.0 + 10.0 * np.sin(2 * np.pi * 0.5 * t)  # slow vibrato: no exact repeats
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    return (0.25 * x / np.max(np.abs(x))).astype(np.float32)


def quiet_runs_ms(x: np.ndarray, *, floor_rms: float) -> tuple[float, float, float]:
    """(start s, end s, longest quiet stretch in ms) of the tone in recording ``x``."""
    win = RATE // 100  # 10 ms
    n = len(x) // win
    rms = np.sqrt(np.mean(x[: n * win].reshape(n, win) ** 2, axis=1))
    loud = np.flatnonzero(rms >= floor_rms)
    assert len(loud) > 0, "no tone in the recording at all"
    first, last = int(loud[0]), int(loud[-1])
    longest = run = 0
    for r in rms[first:last + 1]:
        run = run + 1 if r < floor_rms else 0
        longest = max(longest, run)
    return first / 100, last / 100, longest * 10.0


def test_numbering_breaks_leave_no_gap_longer_than_100ms(start_server, tmp_path: Path) -> None:
    source = tmp_path / "tone.wav"
    write_audio(source, tone(9.0), RATE)
    server = start_server("--no-enhance")  # measure the receive path, not the enhancer
    b = start_client(server.url, "breaks", "B", "--duration", "30", "--record-dir",
                     str(tmp_path / "rec"), log=tmp_path / "B.log")
    wait_participants(server, 1)
    args = [a for f in FAULTS for a in ("--rtp-discontinuity", f)]
    a = start_client(server.url, "breaks", "A", "--send", str(source), "--duration", "12", *args,
                     log=tmp_path / "A.log")
    sent = client_summary(a)
    summary = stop_client(b)
    assert [f"{d['kind']}@{d['at_s']:g}" for d in sent["rtp_discontinuities_sent"]] == FAULTS
    recording, _ = read_audio(summary["remote"]["A"]["file"])
    tone_rms = float(np.sqrt(np.mean(tone(9.0) ** 2)))
    start, end, longest = quiet_runs_ms(recording, floor_rms=0.25 * tone_rms)
    print(f"tone {start:.2f}..{end:.2f} s, longest quiet stretch {longest:.0f} ms, {summary['remote']['A']}")
    assert end - start >= 8.5, (start, end)  # the tone lasts to the end: nothing cut off
    assert longest <= 100.0, f"a {longest:.0f} ms gap after a numbering break"
