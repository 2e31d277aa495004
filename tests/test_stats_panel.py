"""The page's connection panel (static/js/stats.js, run in Node) on a real InboundAudio stats
entry: a DTX pause shows as its own row, not as concealment; the jitter buffer's time scaling
(``accelerate``, ``expand``, ``trimmed_ms``) has rows (a fresh user's trial found them only in
the reply and ``mediaserver client``'s ``server_view``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from mediaserver.media.inbound import InboundAudio
from mediaserver.media.opus import OpusEncoder

from requires import require_program

STATS_JS = Path(__file__).resolve().parent.parent / "static" / "js" / "stats.js"


def dtx_stream_stats() -> dict:
    """A WebRTC-like DTX sender (tone, 2 s pause, tone): packets of <= 2 bytes after the first
    are not sent; the receiver's stats after playing it all."""
    enc = OpusEncoder(dtx=True)
    t = np.arange(48000) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    pcm = np.concatenate([tone, np.zeros(96000, np.float32), tone])
    ib, seq, prev_small = InboundAudio(), 0, False
    for tick in range(len(pcm) // 960):
        p = enc.encode(pcm[tick * 960:(tick + 1) * 960])
        small = len(p) <= 2
        if not small or not prev_small:
            ib.push(p, seq=seq, timestamp=tick * 960, ssrc=3, arrival_ms=tick * 20.0)
            seq += 1
        prev_small = small
        ib.pull(now_ms=tick * 20.0 + 0.3)
    return ib.stats()


def panel_rows(reply: dict, identity: str) -> list[list]:
    node = require_program("node", "apt-get install nodejs")
    script = (f"import {{ serverStatsRows }} from {json.dumps(STATS_JS.as_uri())};\n"
              f"console.log(JSON.stringify(serverStatsRows({json.dumps(reply)}, {json.dumps(identity)})));")
    out = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_dtx_pause_has_its_own_row_in_the_connection_panel() -> None:
    stats = dtx_stream_stats()
    assert stats["dtx_ms"] >= 1500 and stats["concealed_frames"] == 0
    rows = {label: (value, unit) for label, value, unit in
            panel_rows({"type": "stats", "participants": {"me": stats}}, "me")}
    assert rows["Silent pauses (DTX)"] == (stats["dtx_ms"], " ms")
    assert rows["Concealed frames"] == (0, "")


def test_my_quality_telemetry_has_rows_in_the_connection_panel() -> None:
    """The server's `quality` of my stream (enhance/telemetry.py snapshot) and my model."""
    from mediaserver.enhance.telemetry import StreamTelemetry, Telemetry

    tel, rng = StreamTelemetry(), np.random.default_rng(0)
    raw = (0.1 * rng.standard_normal((1, 960))).astype(np.float32)
    for i in range(100):
        Telemetry().update([tel], raw, 0.1 * raw, np.array([i % 2 == 0]), ["plc" if i % 4 == 0 else "normal"])
    quality = tel.snapshot()
    entry = {"model": "msenh-v2", "quality": quality}
    rows = {label: (value, unit) for label, value, unit in
            panel_rows({"type": "stats", "participants": {"me": entry, "other": {"model": "x"}}}, "me")}
    assert rows["Model"] == ("msenh-v2", "")
    assert rows["Suppression applied"] == (quality["suppression_db"], " dB") and quality["suppression_db"] > 15
    noise = [float(v) for v in rows["Noise floor in / out"][0].split(" / ")]
    assert noise == [quality["noise_in_dbfs"], quality["noise_out_dbfs"]] and noise[0] - noise[1] > 15
    assert rows["SNR in / out"][1] == " dB"
    assert rows["Concealed / FEC / DTX"][0].startswith(f"{round(quality['concealed_pct'])} / 0 / 0")
    assert rows["Over-suppression events"] == (0, "")
    assert rows["Input level"] == (quality["level_dbfs"], " dBFS")


def spike_stream_stats() -> dict:
    """Tone bursts over a faint noise floor whose packets 150..159 are held 200 ms and then
    arrive at once (a stalled sender): the buffer gives the delay back by playing faster and
    trimming; the receiver's stats after playing it all."""
    enc, rng = OpusEncoder(), np.random.default_rng(0)
    t = np.arange(48000 * 8) / 48000
    pcm = (0.3 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
           + 0.003 * rng.standard_normal(len(t))).astype(np.float32)
    packets = [enc.encode(pcm[i * 960:(i + 1) * 960]) for i in range(len(pcm) // 960)]
    arrivals = sorted((159 * 20.0 + 200.0 if 150 <= i < 160 else i * 20.0, i) for i in range(len(packets)))
    ib, j = InboundAudio(), 0
    for tick in range(len(packets) + 50):
        while j < len(arrivals) and arrivals[j][0] <= tick * 20.0:
            at, i = arrivals[j]
            ib.push(packets[i], seq=i, timestamp=i * 960, ssrc=1, arrival_ms=at)
            j += 1
        ib.pull(now_ms=tick * 20.0 + 0.3)
    return ib.stats()


def test_time_scaling_of_my_stream_has_rows_in_the_connection_panel() -> None:
    stats = spike_stream_stats()
    assert stats["accelerate"] > 0 and stats["trimmed_ms"] > 0, stats   # the spike was given back
    rows = {label: (value, unit) for label, value, unit in
            panel_rows({"type": "stats", "participants": {"me": stats}}, "me")}
    assert rows["Sped up (accelerate)"] == (stats["accelerate"], " frames")
    assert rows["Slowed down (expand)"] == (stats["expand"], " frames")
    assert rows["Delay given back (trimmed)"] == (stats["trimmed_ms"], " ms")


def panel_cells(reply: dict, identity: str) -> dict[str, str]:
    """The server rows' text as the page shows it (``serverStatsCells``: value and unit)."""
    node = require_program("node", "apt-get install nodejs")
    script = (f"import {{ serverStatsCells }} from {json.dumps(STATS_JS.as_uri())};\n"
              f"console.log(JSON.stringify(serverStatsCells({json.dumps(reply)}, {json.dumps(identity)})));")
    out = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True,
                         text=True, timeout=60, check=True)
    return dict(json.loads(out.stdout))


def test_paired_rows_show_their_unit_and_a_missing_part_as_a_dash() -> None:
    """A fresh user's trial read "Noise floor in / out | -34.2 / -34.2" with no unit (a pair is
    text, and text lost its unit), and a share missing after the first shown as a dash only
    because the first was there (a missing first hid the whole row)."""
    quality = {"noise_in_dbfs": -34.2, "noise_out_dbfs": -61.5, "snr_in_db": 16.6, "snr_out_db": 30.4,
               "concealed_pct": 2.0, "dtx_pct": 7.0, "level_dbfs": -26.0}
    cells = panel_cells({"type": "stats", "participants": {"me": {"quality": quality, "model": "m",
                                                                   "enhancement": True}}}, "me")
    assert cells["Noise floor in / out"] == "-34.2 / -61.5 dBFS"
    assert cells["SNR in / out"] == "16.6 / 30.4 dB"
    assert cells["Concealed / FEC / DTX"] == "2 / – / 7 %"
    assert cells["Input level"] == "-26 dBFS" and cells["Model"] == "m" and cells["Enhancement"] == "on"
    only_fec = panel_cells({"type": "stats", "participants": {"me": {"quality": {"fec_pct": 3.0}}}}, "me")
    assert only_fec["Concealed / FEC / DTX"] == "– / 3 / – %"
