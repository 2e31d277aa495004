"""The page's connection panel (static/js/stats.js, run in Node) on a real InboundAudio stats
entry: a DTX pause shows as its own row, not as concealment."""

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
