"""Every change this project makes to a library's internals, in one place, checked at start-up.

aiortc and aioice are used as they come, except for the behaviours below, which they get
wrong for an SFU, for interoperation with other WebRTC stacks, or for a loopback-only test
network. Each patch names the private attributes it relies on in ``INTERNALS`` and
``INSTANCE_INTERNALS``; :func:`check` verifies them all against the installed aiortc and
aioice, and :func:`apply` (called by ``mediaserver serve`` and ``mediaserver client`` before
the first peer connection exists) refuses to start with :class:`PatchError` naming what moved
and the installed versions, so a new release fails loudly at start-up instead of as a
``bad-sdp`` or a silent call.

Process-wide (installed by :func:`apply`, idempotent):

- :func:`answer_as_dtls_server`: aiortc answers every ``a=setup:actpass`` offer with
  ``a=setup:active`` (aiortc as DTLS client), and aiortc as a DTLS client offers only
  ECDHE-ECDSA cipher suites, so a peer with an RSA certificate (GStreamer 1.22 webrtcbin)
  finds no shared cipher. Answered ``a=setup:passive`` instead: the answerer is the DTLS
  server, as most SFUs do, and the peer picks among its own suites.
- :func:`keep_dtls_role`: aiortc applies the ``a=setup`` of every media section of every
  answer to the section's DTLS transport, so with BUNDLE (one transport for all sections) the
  last section wins and a re-answer can flip an association's role before or during its
  handshake (Firefox answers ``passive`` on the first section and ``active`` on a new one:
  both sides ended up DTLS server, nobody sent a ClientHello). The role of a transport is
  set once, by the description that first fixes it (RFC 8842 §5: a renegotiation keeps the
  role of an existing association); later conflicting values are ignored and logged.

Process-wide, by their own call (they take configuration):

- :func:`pin_host_addresses`: aioice skips loopback when it gathers host candidates and
  answers checks from any interface; a server that must announce chosen addresses, and
  every test on 127.0.0.1, pins them (and, when all are loopback, ignores other sources).
- :func:`tolerate_consent_stalls`: aioice's RFC 7675 consent gives up after six unanswered
  0.5 s checks, which drops healthy calls on a CPU-starved host.
- :func:`whisper_tail_windows` (called by the local Whisper recogniser when it is built):
  faster-whisper pads every segment's features to Whisper's 30 s window, so a decode of one
  second of speech costs as much as one of thirty; inside :func:`whisper_window` a thread's
  segments are encoded with a shorter window instead.

Per object:

- :func:`tap_receiver`: replaces an ``RTCRtpReceiver``'s packet handler so RTP goes to our
  jitter buffer (aiortc's count-based buffer adds 80-300 ms and cannot conceal loss), keeps
  aiortc's RTCP statistics, and reports packets aiortc's router would drop unseen.
- :func:`guard_srtp_restarts`: wraps a DTLS transport's SRTP receive session so a sender that
  restarts its sequence numbers on the same SSRC is not muted by libsrtp's replay check.
- :func:`impair_peer_connection`, :func:`rewrite_peer_connection` (fault injection on a
  sending peer: ``mediaserver client --loss/--loss-burst/--jitter-ms/--reorder``,
  ``--rtp-discontinuity`` and the tests): wrap the
  ICE transport's ``_send`` (loss, delay, jitter from ``media.impair.Impairment``) and the
  DTLS transport's ``_send_rtp`` (RTP header rewrites from ``media.rtpfault``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import threading
from typing import Any, Awaitable, Callable, Iterator, Optional, Sequence

import aioice
import aioice.ice
import aiortc
import pylibsrtp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtp import RtpPacket, is_rtcp
from aiortc.sdp import SessionDescription

from .media.impair import is_srtp_media

logger = logging.getLogger(__name__)


class PatchError(RuntimeError):
    """A library internal a patch relies on is missing (a new release moved it)."""


# (object, attribute) pairs that must exist for the patches to do what they say.
INTERNALS: list[tuple[str, object, str]] = [
    ("answer_as_dtls_server / keep_dtls_role", RTCDtlsTransport, "_set_role"),
    ("answer_as_dtls_server", RTCPeerConnection, "createAnswer"),
    ("tap_receiver", RTCRtpReceiver, "_handle_rtp_packet"),
    ("guard_srtp_restarts", RTCDtlsTransport, "_setup_srtp"),
    ("pin_host_addresses", aioice.ice, "get_host_addresses"),
    ("pin_host_addresses", aioice.ice.StunProtocol, "datagram_received"),
    ("tolerate_consent_stalls", aioice.ice, "CONSENT_FAILURES"),
]
# Instance attributes (set in __init__, so looked up on a fresh object).
INSTANCE_INTERNALS = {
    "RTCDtlsTransport": ("_role", "_state", "_rx_srtp", "_tx_srtp", "_srtp_profiles", "_rtp_router",
                         "_send_rtp"),
    "RTCRtpReceiver": ("_RTCRtpReceiver__remote_streams", "_RTCRtpReceiver__codecs", "_enabled"),
    "RTCIceTransport": ("_send",),
}


def check() -> None:
    """Raise :class:`PatchError` naming every patched internal that is missing.

    Works with or without a running event loop (aiortc objects want one to exist: a private
    loop is made for the look when none is running, and closed again)."""
    missing = [f"{owner.__name__ if hasattr(owner, '__name__') else owner}.{name} ({user})"
               for user, owner, name in INTERNALS if not hasattr(owner, name)]
    try:
        asyncio.get_running_loop()
        missing += _missing_on_instances()
    except RuntimeError:   # no loop running: look inside a private one
        loop = asyncio.new_event_loop()
        try:
            missing += loop.run_until_complete(_look_on_instances())
        finally:
            loop.close()
    if missing:
        raise PatchError(f"aiortc {aiortc.__version__} / aioice {aioice.__version__} lack internals "
                         "this server patches: " + ", ".join(missing)
                         + " (install the aiortc version pinned in pyproject.toml)")


async def _look_on_instances() -> list[str]:
    return _missing_on_instances()


def _missing_on_instances() -> list[str]:
    """The INSTANCE_INTERNALS missing on a fresh, never started peer connection's objects."""
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("audio")
    objects = {"RTCDtlsTransport": transceiver.receiver.transport,
               "RTCRtpReceiver": transceiver.receiver,
               "RTCIceTransport": transceiver.receiver.transport.transport}
    return [f"{kind}.{n}" for kind, names in INSTANCE_INTERNALS.items()
            for n in names if not hasattr(objects[kind], n)]


_applied = False


def apply() -> None:
    """Check the internals, then install every patch defined here (once per process)."""
    global _applied
    if _applied:
        return
    check()
    keep_dtls_role()
    answer_as_dtls_server()
    _applied = True


# -- DTLS role ---------------------------------------------------------------------------------
_original_set_role: Callable[[RTCDtlsTransport, str], None] = RTCDtlsTransport._set_role
_original_create_answer: Callable[[RTCPeerConnection], Awaitable[RTCSessionDescription]] = (
    RTCPeerConnection.createAnswer)


def _sticky_set_role(self: RTCDtlsTransport, role: str) -> None:
    current = getattr(self, "_role", "auto")
    if current in ("client", "server") and role != current:
        if not getattr(self, "_mediaserver_role_warned", False):
            self._mediaserver_role_warned = True  # type: ignore[attr-defined]
            logger.warning("ignoring a description that would make this DTLS transport %s: it is "
                           "%s since its first negotiation (RFC 8842; with BUNDLE one section's "
                           "a=setup must not flip the shared transport)", role, current)
        return
    _original_set_role(self, role)


def keep_dtls_role() -> None:
    """Fix each DTLS transport's role at the first description that sets it."""
    RTCDtlsTransport._set_role = _sticky_set_role  # type: ignore[method-assign]


def restore_dtls_role() -> None:
    """Undo :func:`keep_dtls_role` (tests, mutation checks)."""
    RTCDtlsTransport._set_role = _original_set_role  # type: ignore[method-assign]


async def _answer_passive(self: RTCPeerConnection) -> RTCSessionDescription:
    remote = self.remoteDescription
    if remote is not None and remote.type == "offer":
        offered = {m.rtp.muxId: m.dtls.role for m in SessionDescription.parse(remote.sdp).media
                   if m.dtls is not None}
        transports: list[tuple[Any, Any]] = [(t.mid, t.receiver.transport)
                                               for t in self.getTransceivers()]
        if self.sctp is not None:
            transports.append((getattr(self.sctp, "mid", None), self.sctp.transport))
        for mid, transport in transports:
            # "auto" = actpass: the offerer lets us choose; a fixed role is kept as it is
            if transport._role == "auto" and offered.get(mid, "auto") == "auto":
                transport._set_role("server")
    return await _original_create_answer(self)


def answer_as_dtls_server() -> None:
    """Answer ``a=setup:actpass`` offers with ``a=setup:passive`` (this side: DTLS server)."""
    RTCPeerConnection.createAnswer = _answer_passive  # type: ignore[method-assign]


def answer_as_dtls_client() -> None:
    """Undo :func:`answer_as_dtls_server` (aiortc's own ``a=setup:active``)."""
    RTCPeerConnection.createAnswer = _original_create_answer  # type: ignore[method-assign]


def describe() -> dict[str, Any]:
    """Which process-wide patches are in force (for logs and tests)."""
    return {"keep_dtls_role": RTCDtlsTransport._set_role is _sticky_set_role,
            "answer_as_dtls_server": RTCPeerConnection.createAnswer is _answer_passive,
            "pin_host_addresses": aioice.ice.get_host_addresses is not _original_get_host_addresses,
            "consent_failures": aioice.ice.CONSENT_FAILURES}


# -- ICE: host candidates and consent ----------------------------------------------------------
_original_get_host_addresses = aioice.ice.get_host_addresses
_original_datagram_received = aioice.ice.StunProtocol.datagram_received


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _loopback_only_datagram_received(self: Any, data: bytes, addr: tuple[Any, ...]) -> None:
    """Ignore datagrams from non-loopback sources, so no reply ever leaves loopback.

    A browser allowed onto loopback still sends ICE checks from its other interfaces;
    answering them (as a peer-reflexive candidate) would send traffic off 127.0.0.1.
    """
    if not _is_loopback(addr[0]):
        logger.debug("dropping datagram from non-loopback %s (ICE pinned to loopback)", addr[0])
        return
    _original_datagram_received(self, data, addr)


def pin_host_addresses(addresses: Sequence[str], *, log_level: int = logging.INFO) -> None:
    """Make every later ICE gathering offer exactly ``addresses`` (empty: aioice's own choice).

    When every pinned address is loopback, traffic from other addresses is ignored too. The
    pin is logged at ``log_level``: INFO for ``serve`` (a start-up setting), DEBUG for the
    client, whose stderr at the default level is its problems only.
    """
    pinned = [a for a in addresses if a]
    if not pinned:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        aioice.ice.StunProtocol.datagram_received = _original_datagram_received
        return
    loopback_only = all(_is_loopback(a) for a in pinned)
    aioice.ice.StunProtocol.datagram_received = (
        _loopback_only_datagram_received if loopback_only else _original_datagram_received
    )

    def get_host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        return [a for a in pinned if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
    logger.log(log_level, "ICE host candidates pinned to %s", ", ".join(pinned))


def tolerate_consent_stalls(failures: int = 12) -> None:
    """Let ICE consent survive a minute of unanswered checks instead of 30 s.

    aioice sends each RFC 7675 consent check once with a 0.5 s timeout, so on a
    CPU-starved host (measured: load 9 on 2 cores) six late answers in a row drop a
    healthy call. Twelve keeps a dead peer detected within about a minute.
    """
    aioice.ice.CONSENT_FAILURES = max(aioice.ice.CONSENT_FAILURES, failures)


# -- faster-whisper: the encoder's window ------------------------------------------------------
WHISPER_FRAMES = 3000   # Whisper's window: 30 s of 10 ms mel frames
_whisper_tail = threading.local()   # .frames: this thread's tail in mel frames (None: 30 s)


def whisper_tail_windows() -> None:
    """Let :func:`whisper_window` shorten the encoder's window (idempotent).

    faster-whisper 1.2 pads every segment's mel features to 3000 frames
    (``faster_whisper.transcribe.pad_or_trim``) although CTranslate2 encodes shorter inputs
    (since 3.19, OpenNMT/CTranslate2#1446); the encoder's cost is then the same for 1 s of
    speech as for 30 s (1.2-1.3 s per decode of tiny.en on one core here). The replacement
    pads a segment to its own length plus the calling thread's tail (at most 3000 frames) and
    is the original everywhere else. Whisper needs the tail: with under ~3 s of silence after
    the speech tiny.en often does not stop (repeats, WER over 100 %) — benchmarks/asr.py.

    Raises PatchError when the installed faster-whisper has no such function.
    """
    try:
        import faster_whisper
        import faster_whisper.audio
        import faster_whisper.transcribe as transcribe
    except ImportError as exc:
        raise PatchError(f"faster-whisper is not installed: {exc}") from exc
    current = getattr(transcribe, "pad_or_trim", None)
    if getattr(current, "mediaserver_patch", False):
        return
    if current is not faster_whisper.audio.pad_or_trim:
        raise PatchError("faster_whisper.transcribe.pad_or_trim is not faster_whisper.audio."
                         f"pad_or_trim in faster-whisper {faster_whisper.__version__}: the "
                         "shorter Whisper window cannot be installed")
    original = current

    def pad_or_trim(array: Any, length: int = WHISPER_FRAMES, *, axis: int = -1) -> Any:
        tail: Optional[int] = getattr(_whisper_tail, "frames", None)
        if tail is not None and length == WHISPER_FRAMES:
            length = min(WHISPER_FRAMES, array.shape[axis] + tail)
        return original(array, length, axis=axis)

    pad_or_trim.mediaserver_patch = True  # type: ignore[attr-defined]
    transcribe.pad_or_trim = pad_or_trim


@contextlib.contextmanager
def whisper_window(tail_frames: Optional[int]) -> Iterator[None]:
    """Within the block, this thread's Whisper segments are encoded over their own length
    plus ``tail_frames`` mel frames of padding (10 ms each; None: the full 30 s window).
    Needs :func:`whisper_tail_windows` installed first."""
    before = getattr(_whisper_tail, "frames", None)
    _whisper_tail.frames = tail_frames
    try:
        yield
    finally:
        _whisper_tail.frames = before


# -- RTP receiver tap and SRTP sequence restarts ----------------------------------------------
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


# -- Fault injection on a sending peer (client --loss/--jitter-ms/--rtp-discontinuity, tests) ---
SendFn = Callable[[bytes], Awaitable[None]]


class TransportImpairer:
    """Wraps one ``RTCIceTransport._send``; undo with ``remove()``."""

    def __init__(self, ice_transport: Any, impairment: Any) -> None:
        """``impairment``: a ``media.impair.Impairment`` (``decide()`` -> extra delays in ms)."""
        self._transport = ice_transport
        self._impairment = impairment
        self._orig: SendFn = ice_transport._send
        self._tasks: set[asyncio.Task[None]] = set()
        self._removed = False
        ice_transport._send = self._send
        ice_transport._mediaserver_impairer = self

    async def _send(self, data: bytes) -> None:
        if not is_srtp_media(data):
            await self._orig(data)
            return
        loop = asyncio.get_running_loop()
        for delay in self._impairment.decide():
            if delay <= 0:
                await self._orig(data)
            else:
                loop.call_later(delay / 1000.0, self._fire, data)

    def _fire(self, data: bytes) -> None:
        if self._removed:
            return
        task = asyncio.get_running_loop().create_task(self._send_late(data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_late(self, data: bytes) -> None:
        try:
            await self._orig(data)
        except Exception as exc:  # transport closed meanwhile: the packet is just gone
            logger.debug("delayed packet not sent: %s", exc)

    def remove(self) -> None:
        """Restore the original ``_send`` and cancel packets still waiting."""
        self._removed = True
        for task in self._tasks:
            task.cancel()
        if getattr(self._transport, "_mediaserver_impairer", None) is self:
            self._transport._send = self._orig
            del self._transport._mediaserver_impairer


def impair_peer_connection(pc: Any, impairment: Any) -> list[TransportImpairer]:
    """Impair the outgoing media of an aiortc ``RTCPeerConnection``.

    Call it once the transceivers have transports (after the local and remote
    descriptions are set). Transports already wrapped are left alone, so it is safe to
    call again after renegotiation.
    """
    wrapped: list[TransportImpairer] = []
    seen: set[int] = set()
    has_transport = False
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is None:
            continue
        has_transport = True
        ice = dtls.transport
        if id(ice) in seen or getattr(ice, "_mediaserver_impairer", None) is not None:
            continue
        seen.add(id(ice))
        wrapped.append(TransportImpairer(ice, impairment))
    if not has_transport:
        raise RuntimeError("peer connection has no transport yet: call after setRemoteDescription")
    if wrapped:
        logger.info("impairing outgoing media: %s", impairment.config)
    return wrapped


class RtpHeaderRewriter:
    """Wraps one ``RTCDtlsTransport._send_rtp``: rewrites clear RTP headers before SRTP."""

    def __init__(self, dtls_transport: Any, rewriter: Any) -> None:
        self._transport = dtls_transport
        self._rewriter = rewriter
        self._orig: SendFn = dtls_transport._send_rtp
        dtls_transport._send_rtp = self._send_rtp
        dtls_transport._mediaserver_rewriter = self

    async def _send_rtp(self, data: bytes) -> None:
        if len(data) < 12 or is_rtcp(data):
            await self._orig(data)
            return
        seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
        out = self._rewriter.rewrite(seq=seq, ts=ts, ssrc=ssrc,
                                     now_s=asyncio.get_running_loop().time())
        if out.new_sequence:
            # Our own libsrtp stream would refuse indices it already used: start it afresh,
            # as a gateway restarting its numbering would.
            try:
                self._transport._tx_srtp.remove_stream(out.ssrc)
            except Exception as exc:  # no stream for that SSRC yet
                logger.debug("no SRTP stream to reset: %s", exc)
        header = struct.pack("!HII", out.seq, out.ts, out.ssrc)
        await self._orig(data[:2] + header + data[12:])


def rewrite_peer_connection(pc: Any, rewriter: Any) -> list[RtpHeaderRewriter]:
    """Rewrite the RTP headers an aiortc peer sends (``mediaserver.media.rtpfault``).

    Call after the descriptions are set; transports already wrapped are left alone.
    """
    wrapped: list[RtpHeaderRewriter] = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is None or getattr(dtls, "_mediaserver_rewriter", None) is not None:
            continue
        wrapped.append(RtpHeaderRewriter(dtls, rewriter))
    return wrapped
