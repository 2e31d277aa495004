"""SDP checks and munging the SFU needs on top of aiortc."""

from __future__ import annotations

import re
from typing import Optional

from aiortc import RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc.sdp import SessionDescription

MAX_SDP = 60_000


RECEIVED_AUDIO_CODECS = ("audio/opus", "audio/pcmu", "audio/pcma")  # media/inbound.py decodes
SENT_AUDIO_CODECS = RECEIVED_AUDIO_CODECS  # sfu/outbound.py encodes each once per publisher


class SdpError(ValueError):
    """An SDP the server cannot use."""


def serve_only_supported_codecs(transceiver: RTCRtpTransceiver, *, receive: bool) -> None:
    """Negotiate only codecs the media path serves on ``transceiver``, Opus first.

    ``receive``: a publisher's microphone (Opus or G.711 decoded); otherwise a subscriber
    slot (Opus or G.711 encoded, sfu/outbound.py). aiortc would answer every codec it can packetize in the offer's
    order. Call before the description that creates the media section is applied (for
    the first offer: on a transceiver added before ``setRemoteDescription``).
    """
    served = RECEIVED_AUDIO_CODECS if receive else SENT_AUDIO_CODECS
    capabilities = RTCRtpSender.getCapabilities("audio").codecs
    transceiver.setCodecPreferences(
        sorted((c for c in capabilities if c.mimeType.lower() in served),
               key=lambda c: served.index(c.mimeType.lower())))


def parse_description(sdp: object, kind: str) -> RTCSessionDescription:
    """Validate a client SDP string: parseable, audio with Opus or G.711, no video-only junk."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise SdpError("sdp must be a non-empty string")
    if len(sdp) > MAX_SDP:
        raise SdpError("sdp is too long")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises ValueError, KeyError, IndexError...
        raise SdpError(f"sdp does not parse: {exc!r}") from None
    audio = [m for m in parsed.media if m.kind == "audio"]
    if not audio:
        raise SdpError("sdp has no audio section")
    if not any(c.mimeType.lower() in RECEIVED_AUDIO_CODECS for m in audio for c in m.rtp.codecs):
        raise SdpError("sdp offers no codec the server decodes (Opus, PCMU, PCMA)")
    if not parsed.media[0].ice.usernameFragment and not any(m.ice.usernameFragment for m in audio):
        raise SdpError("sdp has no ICE credentials")
    return RTCSessionDescription(sdp=sdp, type=kind)


def announce_address(sdp: str, public_ip: str) -> str:
    """Add a copy of every host candidate with ``public_ip`` (1:1 NAT, same port).

    aiortc has no NAT mapping setting; the far end's checks to the public address
    reach the same socket through the NAT and ICE accepts them.
    """
    out: list[str] = []
    for line in sdp.split("\r\n"):
        out.append(line)
        if line.startswith("a=candidate:") and " typ host" in line:
            parts = line.split(" ")
            if len(parts) > 5 and parts[4] != public_ip:
                parts[0] = parts[0] + "p"
                parts[3] = str(max(1, int(parts[3]) - 1)) if parts[3].isdigit() else parts[3]
                parts[4] = public_ip
                out.append(" ".join(parts))
    return "\r\n".join(out)


_EXTMAP = re.compile(r"^a=extmap:(\d+)(/\w+)? (\S+)(.*)$")
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) (\S+)$")
_PT_LINE = re.compile(r"^a=(rtpmap|fmtp|rtcp-fb):(\d+)( .*)$")


def align_offer(offer: str, agreed: str) -> str:
    """Renumber a re-offer's header-extension ids and payload types to those already agreed.

    aiortc writes its default numbers (mid=1, ssrc-audio-level=2, opus=96) into every offer it
    creates, while the first exchange settled on the client's. Chrome rejects an offer that
    reassigns an active extension id, and aiortc's receiver keeps routing by the payload types
    of its first negotiation and drops every packet after a switch. The client answers with the
    numbers it is offered, and aiortc takes its send parameters from that answer, so rewriting
    the offer text is enough to keep both sides on the first numbers.
    """
    if not agreed:
        return offer
    return _align_payload_types(_align_extmap_ids(offer, agreed), agreed)


def _align_extmap_ids(offer: str, agreed: str) -> str:
    assigned: dict[str, int] = {}  # uri -> id, one mapping for the whole BUNDLE
    for line in agreed.split("\r\n"):
        m = _EXTMAP.match(line)
        if m and m.group(3) not in assigned:
            assigned[m.group(3)] = int(m.group(1))
    if not assigned:
        return offer
    used = set(assigned.values())
    out = []
    for line in offer.split("\r\n"):
        m = _EXTMAP.match(line)
        if m:
            uri = m.group(3)
            if uri not in assigned:  # an extension not in use yet: the lowest free id
                assigned[uri] = next(i for i in range(1, 256) if i not in used)
                used.add(assigned[uri])
            line = f"a=extmap:{assigned[uri]}{m.group(2) or ''} {uri}{m.group(4)}"
        out.append(line)
    return "\r\n".join(out)


def _align_payload_types(offer: str, agreed: str) -> str:
    known: dict[str, int] = {}  # "opus/48000/2" -> payload type, first seen
    for line in agreed.split("\r\n"):
        m = _RTPMAP.match(line)
        if m:
            known.setdefault(m.group(2).lower(), int(m.group(1)))
    if not known:
        return offer
    sections: list[list[str]] = [[]]
    for line in offer.split("\r\n"):
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    out = sections[0]
    for section in sections[1:]:
        codecs = [(int(m.group(1)), known.get(m.group(2).lower()))
                  for m in map(_RTPMAP.match, section) if m]
        remap = {int(pt): int(pt) for pt in section[0].split(" ")[3:] if pt.isdigit()}
        moved = True
        while moved:  # repeat, so a codec can take a number another one has just vacated
            moved = False
            used = set(remap.values())
            for original, want in codecs:
                if want is not None and remap.get(original) != want and want not in used:
                    used.discard(remap.get(original))
                    remap[original] = want
                    used.add(want)
                    moved = True
        out.extend(_remap_section(section, remap))
    return "\r\n".join(out)


def _remap_section(lines: list[str], remap: dict[int, int]) -> list[str]:
    def pt(n: str) -> str:
        return str(remap.get(int(n), n)) if n.isdigit() else n

    out = []
    for line in lines:
        if line.startswith("m="):
            parts = line.split(" ")
            line = " ".join(parts[:3] + [pt(p) for p in parts[3:]])
        else:
            m = _PT_LINE.match(line)
            if m:
                line = f"a={m.group(1)}:{pt(m.group(2))}{m.group(3)}"
        out.append(line)
    return out


BUNDLE_HINT = ("offer BUNDLE over every m-line (RTCPeerConnection bundlePolicy 'balanced' or "
               "'max-bundle'; GStreamer webrtcbin bundle-policy=max-bundle)")


def check_transport(sdp: str, *, first_offer: bool) -> str:
    """Check what this server needs of a client offer's transport; return the SDP to apply.

    The server carries every participant's audio on the one ICE/DTLS transport of the first
    exchange, so an offer must bundle all its m-lines (``a=group:BUNDLE`` naming every mid
    whose port is not 0): without BUNDLE, aiortc answers with a group the offer did not have
    and the client expects later tracks on transports that never exist. The first offer must
    also carry ICE candidates (the server takes no trickled ones): it is sent once gathering
    is complete. Candidates in any one section will do (RFC 8843 lets bundled sections after
    the tagged one carry none; the client, as ICE controlling side, checks the server's).

    Raises ``SdpError`` with the reason and what the client should do.
    """
    parsed = SessionDescription.parse(sdp)
    live = [m for m in parsed.media if m.port != 0]
    missing_mid = [i for i, m in enumerate(parsed.media) if m.port != 0 and not m.rtp.muxId]
    if missing_mid:
        raise SdpError(f"m-line(s) {missing_mid} have no a=mid; {BUNDLE_HINT}")
    bundle = next((g for g in parsed.group if g.semantic == "BUNDLE"), None)
    if bundle is None:
        raise SdpError("the offer has no a=group:BUNDLE: this server sends every participant's "
                       f"audio over one transport; {BUNDLE_HINT}")
    outside = [m.rtp.muxId for m in live if m.rtp.muxId not in bundle.items]
    if outside:
        raise SdpError(f"m-line(s) with mid {', '.join(outside)} are outside a=group:BUNDLE; "
                       f"{BUNDLE_HINT}")
    tagged = next((m for m in live if m.rtp.muxId == bundle.items[0]), None)
    if tagged is None:
        raise SdpError(f"the BUNDLE group's first mid {bundle.items[0]!r} names no m-line")
    if first_offer and not any(m.ice_candidates for m in parsed.media):
        raise SdpError("the offer carries no ICE candidates: send it once ICE gathering is "
                       "complete (this server takes no trickled candidates). A browser may "
                       "gather none without microphone permission (Firefox) or when a candidate "
                       "filter (?ice=) removed them all")
    return sdp


def ice_restarted(offer: str, current: Optional[RTCSessionDescription]) -> bool:
    """Whether ``offer`` changes the ICE credentials of the current remote description."""
    if current is None:
        return False
    old = SessionDescription.parse(current.sdp)
    new = SessionDescription.parse(offer)
    ufrags = lambda d: {m.ice.usernameFragment for m in d.media if m.port != 0 and m.ice}  # noqa: E731
    return bool(ufrags(new) - ufrags(old))

