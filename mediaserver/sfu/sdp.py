"""SDP checks and munging the SFU needs on top of aiortc."""

from __future__ import annotations

import re

from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription

MAX_SDP = 60_000
_OPUS = re.compile(r"^a=rtpmap:(\d+) opus/48000", re.IGNORECASE | re.MULTILINE)


class SdpError(ValueError):
    """An SDP the server cannot use."""


def parse_description(sdp: object, kind: str) -> RTCSessionDescription:
    """Validate a client SDP string: parseable, audio with Opus, no video-only junk."""
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
    if not any(c.mimeType.lower() == "audio/opus" for m in audio for c in m.rtp.codecs):
        raise SdpError("sdp offers no Opus codec")
    if not parsed.media[0].ice.usernameFragment and not any(m.ice.usernameFragment for m in audio):
        raise SdpError("sdp has no ICE credentials")
    return RTCSessionDescription(sdp=sdp, type=kind)


def enable_opus_fec(sdp: str) -> str:
    """Advertise ``useinbandfec=1`` (and mono) for every Opus payload type.

    aiortc never does, and a browser only sends in-band FEC when the far end asks.
    """
    lines = sdp.split("\r\n")
    pts = set(_OPUS.findall(sdp))
    out: list[str] = []
    seen: set[str] = set()
    for i, line in enumerate(lines):
        m = re.match(r"^a=fmtp:(\d+) (.*)$", line)
        if m and m.group(1) in pts:
            seen.add(m.group(1))
            params = m.group(2)
            if "useinbandfec" not in params:
                params += ";useinbandfec=1"
            line = f"a=fmtp:{m.group(1)} {params}"
        out.append(line)
        r = re.match(r"^a=rtpmap:(\d+) opus/48000", line, re.IGNORECASE)
        if r and r.group(1) in pts and not any(
                ln.startswith(f"a=fmtp:{r.group(1)} ") for ln in lines):
            out.append(f"a=fmtp:{r.group(1)} minptime=10;useinbandfec=1")
            seen.add(r.group(1))
    return "\r\n".join(out)


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
