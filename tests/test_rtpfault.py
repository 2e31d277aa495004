"""RTP numbering faults (client side) and the server's SRTP guard for sequence restarts."""

from __future__ import annotations

import os
import struct

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from mediaserver.client import parse_discontinuities
from mediaserver.media.rtpfault import SEQ_JUMP, TS_JUMP, RtpDiscontinuity, RtpRewriter
from mediaserver.patches import SrtpRestartGuard


def test_parse_kinds_and_errors():
    got = parse_discontinuities(["seq-restart@3", "ts-back@1.5,ssrc-change@0"])
    assert got == [RtpDiscontinuity("seq-restart", 3.0), RtpDiscontinuity("ts-back", 1.5),
                   RtpDiscontinuity("ssrc-change", 0.0)]
    for bad in ["seq-restart", "warp@3", "ts-back@x", "ts-back@-1", "ts-back@nan"]:
        with pytest.raises(ValueError):
            RtpDiscontinuity.parse(bad)


def _send(rewriter, n, t0=100.0):
    return [rewriter.rewrite(seq=(500 + i) & 0xFFFF, ts=(9000 + i * 960) & 0xFFFFFFFF, ssrc=42,
                             now_s=t0 + i * 0.02) for i in range(n)]


def test_rewriter_applies_each_kind_at_its_time():
    faults = [RtpDiscontinuity(k, t) for k, t in [("seq-restart", 1.0), ("seq-jump", 2.0),
                                                   ("ts-back", 3.0), ("ts-forward", 4.0),
                                                   ("ssrc-change", 5.0)]]
    r = RtpRewriter(faults, seed=1)
    out = _send(r, 300)
    assert [(o.seq, o.ts, o.ssrc) for o in out[:50]] == [(500 + i, 9000 + i * 960, 42) for i in range(50)]
    assert out[50].seq == 0 and out[50].new_sequence and out[51].seq == 1 and not out[51].new_sequence
    assert out[100].seq == (out[99].seq + 1 + SEQ_JUMP) & 0xFFFF
    assert out[150].ts == out[149].ts + 960 - TS_JUMP
    assert out[200].ts == out[199].ts + 960 + TS_JUMP
    assert out[249].ssrc == 42 and out[250].ssrc != 42 and out[299].ssrc == out[250].ssrc
    assert [f.kind for f in r.applied] == ["seq-restart", "seq-jump", "ts-back", "ts-forward",
                                           "ssrc-change"]


def _rtp(seq: int, ssrc: int = 5) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq & 0xFFFF, seq * 960, ssrc) + bytes(range(40))


def _pair():
    key = os.urandom(30)
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND)
    rx = SrtpRestartGuard(Session(policy), policy)
    return tx, rx


def test_srtp_guard_lets_a_sequence_restart_through_after_one_packet():
    tx, rx = _pair()
    for s in range(300):
        assert rx.unprotect(tx.protect(_rtp(s))) == _rtp(s)
    tx.remove_stream(5)  # the sender restarts its numbering (and its SRTP stream)
    with pytest.raises(pylibsrtp.Error):
        rx.unprotect(tx.protect(_rtp(0)))
    for s in range(1, 50):
        assert rx.unprotect(tx.protect(_rtp(s))) == _rtp(s)
    assert rx.restarts == 1


def test_srtp_guard_still_refuses_single_replays_and_forgeries():
    tx, rx = _pair()
    sent = [tx.protect(_rtp(s)) for s in range(100)]
    for p in sent:
        rx.unprotect(p)
    for p in (sent[10], sent[40], sent[10]):  # replays, not consecutive
        with pytest.raises(pylibsrtp.Error):
            rx.unprotect(p)
    forged = bytearray(sent[51])
    forged[-1] ^= 1
    with pytest.raises(pylibsrtp.Error):
        rx.unprotect(sent[50])
    with pytest.raises(pylibsrtp.Error):
        rx.unprotect(bytes(forged))  # consecutive to the replay, but does not authenticate
    assert rx.restarts == 0
    with pytest.raises(pylibsrtp.Error):
        rx.unprotect(sent[20])  # the stream's replay state survived the forgery
    assert rx.unprotect(tx.protect(_rtp(100))) == _rtp(100)
