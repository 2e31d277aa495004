"""End to end through the real server with 10 % bursty loss injected on the publisher's leg.

The subscriber's recording must stay time-aligned (one global lag fits the whole call, so
concealment did not shift or drop time), intelligible (STOI against the clean speech above a
floor) and the delay must stay bounded (no aiortc-style ratchet to 300 ms after a loss).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import correlate, resample_poly

from mediaserver.audio import read_audio

from conftest import client_summary, espeak_speech, start_client, stop_client, wait_participants

pytestmark = pytest.mark.timeout(300)


def stoi16(ref48: np.ndarray, deg48: np.ndarray) -> float:
    from pystoi import stoi

    return float(stoi(resample_poly(ref48, 1, 3), resample_poly(deg48, 1, 3), 16000))


def test_ten_percent_bursty_loss_stays_aligned_intelligible_and_bounded(start_server, tmp_path: Path) -> None:
    clean_path = espeak_speech(
        tmp_path / "clean.wav",
        "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
        "It is easy to tell the depth of a well. These days a chicken leg is a rare dish.",
        seconds=10.0,
    )
    clean, _ = read_audio(clean_path)
    server = start_server("--no-enhance")  # measure the receive path, not the enhancer
    b = start_client(server.url, "lossy", "B", "--duration", "40", "--record-dir",
                     str(tmp_path / "rec"), log=tmp_path / "B.log")
    wait_participants(server, 1)
    a = start_client(server.url, "lossy", "A", "--send", str(clean_path), "--duration", "15",
                     "--loss", "0.1", "--loss-burst", "2", "--seed", "3", log=tmp_path / "A.log")
    client_summary(a)
    summary = stop_client(b)
    remote = summary["remote"]["A"]
    recording, _ = read_audio(remote["file"])

    # one global lag for the whole call: time-aligned means nothing after it needs re-aligning
    padded = np.concatenate([recording, np.zeros(len(clean), np.float32)])
    lag = int(np.argmax(np.abs(correlate(padded, clean, mode="valid", method="fft"))))
    received = padded[lag:lag + len(clean)]
    score = stoi16(clean, received)
    print(f"lag {lag / 48:.1f} ms, STOI {score:.3f}, summary {remote}")
    assert score > 0.6, f"received audio not intelligible / not aligned: STOI {score:.3f}"
    assert remote["frames_received"] > 0.8 * len(clean) / 960
    assert remote["estimated_delay_ms"] < 250.0, remote
