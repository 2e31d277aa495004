"""Take RTP packets from an aiortc receiver before its jitter buffer and decoder.

aiortc's audio path (count-based jitter buffer, no PLC/FEC, one decoder thread)
adds 80-300 ms and cannot conceal loss, so the receiver's packet handler is
replaced per instance: RTCP statistics are still fed (receiver reports keep
telling the sender its loss rate, which drives its FEC), then the packet goes to
our callback and aiortc's buffer and decoder never see it.

``SrtpRestartGuard`` lets a sender that restarts its sequence numbers on the same SSRC
through libsrtp's replay check (see its docstring); the jitter buffer then re-bases the
new numbering.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Callable

import pylibsrtp
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtp import RtpPacket, is_rtcp

logger = logging.getLogger(__name__)

PacketCallback = Callable[[RtpPacket, float], None]
UnusableCallback = Callable[[RtpPacket, str], None]
DECODED = {"audio/opus": "opus", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}


def tap_receiver(receiver: RTCRtpReceiver, on_packet: PacketCallback,
                 clock_ms: Callable[[], float],
                 on_unusable: UnusableCallback | None = None) -> Callable[[int], str]:
    """Route ``receiver``'s RTP packets to ``on_packet(packet, arrival_ms)``.

    ``clock_ms`` gives the arrival time on the caller's timeline (the loop clock).
    Packets the media path cannot decode go to ``on_unusable(packet, reason)`` (reason
    "payload-type" or "codec") and are logged once per SSRC and payload type.
    Returns ``codec_of(payload_type)``: "opus", "pcmu" or "pcma" for a packet it passed on.
    """
    streams: dict = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    codecs: dict = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
    logged: set[tuple[int, int]] = set()

    def unusable(packet: RtpPacket, reason: str) -> None:
        key = (packet.ssrc, packet.payload_type)
        if key not in logged and len(logged) < 64:
            logged.add(key)
            logger.warning("dropping RTP the media path cannot use: ssrc %d payload type %d (%s); "
                           "Opus, PCMU and PCMA are decoded", packet.ssrc, packet.payload_type,
                           "not negotiated" if reason == "payload-type"
                           else codecs[packet.payload_type].mimeType)
        if on_unusable is not None:
            on_unusable(packet, reason)

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        if not receiver._enabled:
            return
        codec = codecs.get(packet.payload_type)
        if codec is None or codec.mimeType.lower() not in DECODED:
            unusable(packet, "codec" if codec is not None else "payload-type")
            return
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        try:
            on_packet(packet, clock_ms())
        except Exception:
            logger.exception("RTP tap callback failed")

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]
    _report_unrouted(receiver, unusable)
    guard_srtp_restarts(receiver.transport)

    def codec_of(payload_type: int) -> str:
        return DECODED[codecs[payload_type].mimeType.lower()]

    return codec_of


def _report_unrouted(receiver: RTCRtpReceiver, unusable: Callable[[RtpPacket, str], None]) -> None:
    """aiortc's RTP router silently discards a packet whose payload type was not negotiated;
    report those that belong to ``receiver`` (by SSRC or MID) as unusable."""
    router = getattr(receiver.transport, "_rtp_router", None)
    if router is None:
        return
    route = router.route_rtp

    def route_rtp(packet: RtpPacket) -> Any:
        target = route(packet)
        owner = router.ssrc_table.get(packet.ssrc) or router.mid_table.get(packet.extensions.mid)
        if owner is None and len(router.receivers) == 1:
            owner = next(iter(router.receivers))  # one receiving m-line: it is the sender's
        if target is None and owner is receiver:
            unusable(packet, "payload-type")
        return target

    router.route_rtp = route_rtp


class SrtpRestartGuard:
    """Wraps the receive ``pylibsrtp.Session`` of one DTLS transport.

    libsrtp drops every packet whose index it has seen (or that is older than its replay
    window), so a gateway that restarts its sequence numbers on the same SSRC (hold/resume,
    transfer) would be silent until the new numbers pass the old ones: minutes. When
    ``restart_run`` packets in a row with consecutive sequence numbers fail only the replay
    check, and the latest authenticates on a fresh session with the same key (``policy``),
    the SSRC's stream is re-created at that packet. A forged packet changes nothing. The
    cost is replay protection across that one restart: an attacker who recorded this
    sender's packets could replay a run of them to have that older audio accepted again.
    The packet that started the run is lost (the next one's FEC covers it).
    """

    def __init__(self, session: pylibsrtp.Session, policy: pylibsrtp.Policy, *,
                 restart_run: int = 2) -> None:
        self._session = session
        self._policy = policy
        self._restart_run = restart_run
        self._runs: dict[int, tuple[int, int]] = {}  # ssrc -> (last failed seq, run length)
        self.restarts = 0

    def unprotect(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect(data)
        except pylibsrtp.Error as exc:
            if "replay" not in str(exc) or len(data) < 12 or is_rtcp(data):
                raise
            seq, ssrc = struct.unpack_from("!H", data, 2)[0], struct.unpack_from("!I", data, 8)[0]
            last, run = self._runs.get(ssrc, (-2, 0))
            run = run + 1 if seq == (last + 1) & 0xFFFF else 1
            self._runs[ssrc] = (seq, run)
            if run < self._restart_run:
                raise
            pylibsrtp.Session(self._policy).unprotect(data)  # raises if it does not authenticate
            self._session.remove_stream(ssrc)
            clear = self._session.unprotect(data)
            del self._runs[ssrc]
            self.restarts += 1
            logger.info("SRTP stream of ssrc %d re-created: the sender restarted its sequence "
                        "numbers at %d", ssrc, seq)
            return clear

    def unprotect_rtcp(self, data: bytes) -> bytes:
        return self._session.unprotect_rtcp(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _rx_policy(dtls: Any) -> pylibsrtp.Policy | None:
    """The receive policy ``dtls`` built its session from (same derivation as aiortc's
    ``RTCDtlsTransport._setup_srtp``); None if no SRTP profile was negotiated."""
    selected = dtls._ssl.get_selected_srtp_profile()
    profile = next((p for p in dtls._srtp_profiles if p.openssl_profile == selected), None)
    if profile is None:
        return None
    view = dtls._ssl.export_keying_material(
        b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length))
    key = profile.get_key_and_salt(view, 0 if dtls._role == "server" else 1)
    return pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                            srtp_profile=profile.libsrtp_profile)


def guard_srtp_restarts(dtls: Any) -> None:
    """Install ``SrtpRestartGuard`` on ``dtls`` (an ``RTCDtlsTransport``) once its SRTP
    keys exist (now, or when it connects). Idempotent."""
    if dtls is None or getattr(dtls, "_mediaserver_srtp_guard", False):
        return
    dtls._mediaserver_srtp_guard = True

    def wrap() -> None:
        session = getattr(dtls, "_rx_srtp", None)
        if session is None or isinstance(session, SrtpRestartGuard):
            return
        try:
            policy = _rx_policy(dtls)
        except Exception:  # an aiortc whose internals moved: keep plain libsrtp behaviour
            logger.exception("cannot derive the SRTP receive key; sequence restarts stay blocked")
            return
        if policy is not None:
            dtls._rx_srtp = SrtpRestartGuard(session, policy)

    wrap()
    dtls.on("statechange", wrap)


def tolerate_consent_stalls(failures: int = 12) -> None:
    """Let ICE consent survive a minute of unanswered checks instead of 30 s.

    aioice sends each RFC 7675 consent check once with a 0.5 s timeout, so on a
    CPU-starved host (measured: load 9 on 2 cores) six late answers in a row drop a
    healthy call. Twelve keeps a dead peer detected within about a minute.
    """
    import aioice.ice

    aioice.ice.CONSENT_FAILURES = max(aioice.ice.CONSENT_FAILURES, failures)
