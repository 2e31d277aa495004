"""Every change this project makes to a library's internals, in one place, checked at start-up.

aiortc and aioice are used as they come, except for the behaviours below, which they get
wrong for an SFU or for interoperation with other WebRTC stacks. Each patch names the
private attributes it relies on in ``INTERNALS``; :func:`check` verifies them all, and
:func:`apply` (called by ``mediaserver serve`` and ``mediaserver client`` before the first
peer connection exists) refuses to start with :class:`PatchError` naming what moved, so a new
aiortc release fails loudly at start-up instead of silently in a call.

Patches defined here (process-wide, idempotent):

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

Patches that still live next to their users, listed here so :func:`check` covers them:
``mediaserver/ice.py`` (aioice host addresses and loopback-only datagrams),
``mediaserver/sfu/rtptap.py`` (receiver packet hook, RTP router, SRTP replay guard, ICE
consent tolerance).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.sdp import SessionDescription

logger = logging.getLogger(__name__)


class PatchError(RuntimeError):
    """A library internal a patch relies on is missing (a new release moved it)."""


# (object, attribute) pairs that must exist for the patches to do what they say.
INTERNALS: list[tuple[str, object, str]] = [
    ("answer_as_dtls_server / keep_dtls_role", RTCDtlsTransport, "_set_role"),
    ("answer_as_dtls_server", RTCPeerConnection, "createAnswer"),
    ("rtptap.tap_receiver", RTCRtpReceiver, "_handle_rtp_packet"),
    ("rtptap._rx_policy", RTCDtlsTransport, "_setup_srtp"),
    ("ice.pin_host_addresses", aioice.ice, "get_host_addresses"),
    ("ice.pin_host_addresses", aioice.ice.StunProtocol, "datagram_received"),
    ("rtptap.tolerate_consent_stalls", aioice.ice, "CONSENT_FAILURES"),
]
# Instance attributes (set in __init__, so looked up on a fresh object).
INSTANCE_INTERNALS = {
    "RTCDtlsTransport": ("_role", "_state", "_rx_srtp", "_srtp_profiles", "_rtp_router"),
    "RTCRtpReceiver": ("_RTCRtpReceiver__remote_streams", "_RTCRtpReceiver__codecs", "_enabled"),
}


def check() -> None:
    """Raise :class:`PatchError` naming every patched internal that is missing."""
    missing = [f"{owner.__name__ if hasattr(owner, '__name__') else owner}.{name} ({user})"
               for user, owner, name in INTERNALS if not hasattr(owner, name)]
    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("audio")
        objects = {"RTCDtlsTransport": transceiver.receiver.transport,
                   "RTCRtpReceiver": transceiver.receiver}
        for kind, names in INSTANCE_INTERNALS.items():
            missing += [f"{kind}.{n}" for n in names if not hasattr(objects[kind], n)]
    finally:
        # never started: closing would need a loop; drop the references instead
        del pc
    if missing:
        raise PatchError("aiortc/aioice internals this server patches are missing: "
                         + ", ".join(missing) + " (pin aiortc to the version in pyproject.toml)")


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
    """Which patches are in force (for logs and tests)."""
    return {"keep_dtls_role": RTCDtlsTransport._set_role is _sticky_set_role,
            "answer_as_dtls_server": RTCPeerConnection.createAnswer is _answer_passive}
