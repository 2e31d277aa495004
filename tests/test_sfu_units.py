"""Small pure parts of the SFU: tokens, SDP munging, outbound queue, speaking hysteresis."""

from __future__ import annotations

import asyncio

import av
import pytest

from mediaserver.sfu.mediaclock import SpeakingDetector
from mediaserver.sfu.outbound import PacketTrack
from mediaserver.media.opus import enable_opus_fec
from mediaserver.sfu.sdp import SdpError, align_offer, announce_address, parse_description
from mediaserver.sfu.tokens import TokenError, mint, verify

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\n"
    "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AA"] * 32) + "\r\na=setup:actpass\r\n"
)


def test_token_round_trip_and_every_failure() -> None:
    t = mint("s3cret", room="r1", identity="ann", ttl_s=60, now=1000.0)
    assert verify("s3cret", t, room="r1", identity="ann", now=1010.0).identity == "ann"
    with pytest.raises(TokenError, match="signature"):
        verify("other", t, room="r1", identity="ann", now=1010.0)
    with pytest.raises(TokenError, match="expired"):
        verify("s3cret", t, room="r1", identity="ann", now=1061.0)
    with pytest.raises(TokenError, match="another room"):
        verify("s3cret", t, room="r2", identity="ann", now=1010.0)
    with pytest.raises(TokenError, match="another room or identity"):
        verify("s3cret", t, room="r1", identity="bob", now=1010.0)
    for junk in (None, "", "a.b.c", "!!!.???", 42):
        with pytest.raises(TokenError):
            verify("s3cret", junk, room="r1", identity="ann")
    body, sig = t.split(".")
    with pytest.raises(TokenError):  # payload swapped under a valid signature
        verify("s3cret", mint("s3cret", room="r2", identity="ann").split(".")[0] + "." + sig,
               room="r2", identity="ann")


def test_opus_fec_is_advertised_and_bad_sdp_refused() -> None:
    munged = enable_opus_fec(OFFER)
    assert "a=fmtp:111 minptime=10;useinbandfec=1" in munged
    again = enable_opus_fec(munged.replace("minptime=10;useinbandfec=1", "minptime=10"))
    assert "a=fmtp:111 minptime=10;useinbandfec=1" in again
    assert parse_description(munged, "offer").type == "offer"
    g711_only = OFFER.replace("opus/48000/2", "PCMU/8000")
    assert parse_description(g711_only, "offer").type == "offer"  # a SIP gateway's offer
    for bad in ("", 7, "garbage", "v=0\r\n", OFFER.replace("opus", "G722"), "x" * 70000):
        with pytest.raises(SdpError):
            parse_description(bad, "offer")


def test_public_ip_candidate_is_added() -> None:
    out = announce_address(OFFER, "203.0.113.7")
    assert "203.0.113.7 5000 typ host" in out and "127.0.0.1 5000 typ host" in out


async def test_packet_track_bounded_drop_oldest() -> None:
    drops = []
    track = PacketTrack(max_packets=3, on_drop=lambda: drops.append(1))
    for i in range(5):
        p = av.Packet(bytes([i]))
        p.pts = i * 960
        track.push(p)
    assert track.dropped == 2 and len(drops) == 2
    assert bytes(await track.recv())[0] == 4   # first recv skips what piled up before
    for i in range(5, 8):
        p = av.Packet(bytes([i]))
        track.push(p)
    got = [bytes(await track.recv())[0] for _ in range(3)]
    assert got == [5, 6, 7]
    waiter = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    track.stop()
    with pytest.raises(Exception):
        await waiter


def test_speaking_hysteresis() -> None:
    d = SpeakingDetector(on_frames=3, off_frames=5)
    flips = [d.update(s, 0.1 if s else 0.0) for s in [True, False, True, True, True] + [False] * 5]
    assert flips[:4] == [None] * 4 and flips[4] is True
    assert flips[-1] is False and all(f is None for f in flips[5:-1])
    assert 0.0 <= d.level <= 1.0


# A server re-offer as aiortc writes it (its own numbers) and what the browser had agreed on.
AIORTC_REOFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 96 9 0 8", "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=rtpmap:96 opus/48000/2", "a=rtcp-fb:96 transport-cc", "a=fmtp:96 useinbandfec=1",
    "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
    "m=audio 9 UDP/TLS/RTP/SAVPF 96 111", "a=mid:1",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:7 urn:example:new-extension",
    "a=rtpmap:96 opus/48000/2", "a=rtpmap:111 red/48000/2", "a=candidate:1 1 udp 1 127.0.0.1 5000 typ host",
    "a=candidate:2 1 udp 1 192.0.2.7 5000 typ host", "",
])
BROWSER_AGREED = "\r\n".join([
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8", "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=rtpmap:111 opus/48000/2", "a=rtpmap:63 red/48000/2", "a=rtpmap:9 G722/8000", "",
])


def test_reoffer_keeps_the_agreed_extension_ids_and_payload_types() -> None:
    """aiortc writes its own numbers into every re-offer; the server puts the agreed ones back."""
    aligned = align_offer(AIORTC_REOFFER, BROWSER_AGREED)
    sections = aligned.split("m=audio")
    first, second = sections[1], sections[2]
    # extension ids follow the browser's; a new extension gets an id nobody uses
    assert "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid" in first
    assert "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level" in first
    assert "a=extmap:2 urn:example:new-extension" in second
    # opus keeps 111 on every line that names it; static types stay
    assert first.startswith(" 9 UDP/TLS/RTP/SAVPF 111 9 0 8\r\n")
    for line in ("a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc", "a=fmtp:111 useinbandfec=1"):
        assert line in first
    assert ":96" not in first
    # 111 was red's in that section: red moves to the browser's 63, then opus takes 111
    assert second.startswith(" 9 UDP/TLS/RTP/SAVPF 111 63\r\n")
    assert "a=rtpmap:111 opus/48000/2" in second and "a=rtpmap:63 red/48000/2" in second
    # nothing agreed yet (first exchange): unchanged; aligning twice changes nothing more
    assert align_offer(AIORTC_REOFFER, "") == AIORTC_REOFFER
    assert align_offer(aligned, BROWSER_AGREED) == aligned
