"""Opus in-band FEC follows the loss receivers report (issue 15 §3): no FEC bits on a clean
link (they cost ~0.4 PESQ-WB per pass at 32 kb/s), FEC as soon as a receiver reports loss.

* ``ExpectedLoss``: the worst fraction reported in the hold window, in percent; 0 after it.
* ``LossFeedback`` (server): each publisher's Opus encoder expects the worst loss its
  subscribers' senders get reported, and really emits LBRR then (checked on the packets).
* ``mediaserver client`` (publisher): with ``--loss 0.1`` the server's receiver reports make
  it turn FEC on, so the server recovers frames from FEC; on a clean link none.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from aiortc.stats import RTCRemoteInboundRtpStreamStats, RTCStatsReport

from mediaserver.media.opus import ExpectedLoss, OpusEncoder, packet_has_fec
from mediaserver.sfu.mediaclock import ClockStream
from mediaserver.sfu.outbound import LossFeedback, PublisherEncoders

from conftest import SPEECH_TEXT, client_summary, espeak_speech, start_client, wait_participants


def test_expected_loss_is_the_worst_recent_report_and_zero_when_clean() -> None:
    e = ExpectedLoss(hold_s=10.0)
    assert e.percent(now_s=0.0) == 0
    e.report(0.0, now_s=1.0)
    assert e.percent(now_s=1.0) == 0           # clean reports: no FEC
    e.report(26 / 256, now_s=2.0)              # RTCP's 8-bit fraction: 10.2 %
    e.report(5 / 256, now_s=3.0)
    assert e.percent(now_s=3.0) == 11          # the worst, rounded up
    assert e.percent(now_s=11.9) == 11
    assert e.percent(now_s=12.5) == 2          # the 10 % report is older than 10 s now
    assert e.percent(now_s=13.5) == 0
    e.report(1.0, now_s=20.0)
    assert e.percent(now_s=20.0) == 50         # capped


class ReportingSender:
    """An RTCRtpSender's stats side: the last receiver report of its stream (aiortc's types)."""

    def __init__(self, fraction_8bit: int) -> None:
        self.fraction_8bit = fraction_8bit

    async def getStats(self) -> RTCStatsReport:
        report = RTCStatsReport()
        report["r"] = RTCRemoteInboundRtpStreamStats(
            timestamp=None, type="remote-inbound-rtp", id="r", ssrc=1, kind="audio",
            transportId="t", packetsReceived=100, packetsLost=0, jitter=0, roundTripTime=None,
            fractionLost=self.fraction_8bit)
        return report


class Subscriber:
    def __init__(self, streams: list) -> None:
        self.streams = streams

    def sent_streams(self) -> list:
        return self.streams


def _publisher(name: str) -> ClockStream:
    return ClockStream(room="r", identity=name, inbound=None, encoder=PublisherEncoders())


def _lbrr_share(encoders: PublisherEncoders) -> float:
    t = np.arange(48000) / 48000
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    tick = [encoders.encode_packet(x[i:i + 960], i).packet("opus") for i in range(0, 48000, 960)]
    return float(np.mean([packet_has_fec(bytes(p)) for p in tick[10:]]))


def test_publishers_encoders_expect_what_their_subscribers_report() -> None:
    lossy, clean = _publisher("lossy"), _publisher("clean")
    # lossy's audio reaches one subscriber with 10 % loss and another without; clean's only clean
    subs = [Subscriber([(lossy, ReportingSender(26)), (clean, ReportingSender(0))]),
            Subscriber([(lossy, ReportingSender(0))])]
    feedback = LossFeedback(lambda: subs, hold_s=10.0)
    asyncio.run(feedback.poll(now_s=1.0))
    assert lossy.encoder.expected_loss_perc == 11 and clean.encoder.expected_loss_perc == 0
    assert _lbrr_share(lossy.encoder) > 0.4     # the Opus encoder really spends bits on FEC
    assert _lbrr_share(clean.encoder) == 0.0
    subs[0].streams[0][1].fraction_8bit = 0     # the lossy link heals
    asyncio.run(feedback.poll(now_s=5.0))
    assert lossy.encoder.expected_loss_perc == 11   # held for the window
    asyncio.run(feedback.poll(now_s=12.0))
    assert lossy.encoder.expected_loss_perc == 0
    assert _lbrr_share(lossy.encoder) == 0.0


def test_client_turns_fec_on_when_the_server_reports_loss(sfu_server, tmp_path: Path) -> None:
    """Publisher A drops 10 % of its packets; the server's receiver reports make A's encoder
    add FEC, so the server recovers lost frames from it. B publishes cleanly: no FEC."""
    speech_wav = espeak_speech(tmp_path / "speech.wav", SPEECH_TEXT, seconds=12.0)
    listener = start_client(sfu_server.url, "fec", "L", "--duration", "40",
                            log=tmp_path / "L.log")
    wait_participants(sfu_server, 1)
    a = start_client(sfu_server.url, "fec", "A", "--send", str(speech_wav), "--loss", "0.1",
                     "--seed", "3", "--duration", "16", log=tmp_path / "A.log")
    b = start_client(sfu_server.url, "fec", "B", "--send", str(speech_wav), "--duration", "16",
                     log=tmp_path / "B.log")
    sa, sb = client_summary(a), client_summary(b)
    listener.terminate()
    listener.wait(timeout=60)
    view_a, view_b = sa["server_view"], sb["server_view"]
    print("A", {k: view_a[k] for k in ("packets_lost", "fec_recovered")},
          "B", {k: view_b[k] for k in ("packets_lost", "fec_recovered")})
    assert view_a["packets_lost"] >= 15
    assert view_a["fec_recovered"] >= 0.15 * view_a["packets_lost"]  # none without the feedback
    assert view_b["packets_lost"] == 0 and view_b["fec_recovered"] == 0
