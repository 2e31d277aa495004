#!/usr/bin/python3
"""A GStreamer webrtcbin participant, driven over stdin/stdout (JSON, one message a line).

Runs under the *system* Python (``/usr/bin/python3``, which has ``python3-gi`` and the GStreamer
typelibs from Debian), not the project's virtual environment: the test
(``tests/test_interop_gstreamer.py``) starts it as a subprocess and relays its SDP to and from
the server's ``/ws``. Nothing here knows the server's protocol.

- Sends a live sine tone (``--tone`` Hz, 0.6 s on, 0.2 s off: a steady tone would be faded
  by the server's denoiser as noise) as Opus on one sendrecv transceiver; bundle policy
  ``max-bundle``; ICE host candidates only on ``--ice-host`` (libnice's local addresses).
- stdout: ``{"type": "offer", "sdp"}`` (the first offer, after ICE gathering), ``{"type":
  "answer", "sdp"}`` (to a relayed offer), ``{"type": "track", "mid", "path"}`` (a received
  stream decoded to float32 48 kHz mono raw samples in ``path``), ``{"type": "state", ...}``,
  ``{"type": "error", "message"}``.
- stdin: ``{"type": "answer", "sdp"}``, ``{"type": "offer", "sdp"}``, ``{"type": "quit"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402


def note(text: str) -> None:
    """A line on stderr (the test keeps it in gst.log)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def failed(promise: Gst.Promise, what: str) -> bool:
    """True (and an ``error`` message out) when ``promise`` ended with an error."""
    reply = promise.get_reply()
    if reply is not None and reply.has_field("error"):
        emit({"type": "error", "message": f"{what}: {reply.get_value('error')}"})
        return True
    return False


def emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class GstPeer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = GLib.MainLoop()
        self.pipe = Gst.parse_launch(
            f"webrtcbin name=webrtc bundle-policy=max-bundle latency=100 "
            f"audiotestsrc is-live=true wave=ticks freq={args.tone} volume=0.3 "
            f"sine-periods-per-tick={int(args.tone * 0.6)} tick-interval=800000000 ! audioconvert ! "
            f"audioresample ! audio/x-raw,rate=48000,channels=1 ! opusenc ! rtpopuspay pt=111 ! "
            f"application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! queue ! webrtc.")
        self.webrtc = self.pipe.get_by_name("webrtc")
        # keep the wrapper for the process's life: PyGObject sinks webrtcbin's floating ICE
        # object when it wraps it and would destroy it with a temporary wrapper
        self._ice = self.webrtc.get_property("ice-agent")
        agent = self._ice.get_property("agent")
        for host in args.ice_host:
            address = Nice.Address.new()
            address.set_from_string(host)
            agent.add_local_address(address)
        self.webrtc.connect("on-negotiation-needed", self._negotiation_needed)
        self.webrtc.connect("pad-added", self._pad_added)
        self.webrtc.connect("notify::ice-gathering-state", self._gathering)
        self.webrtc.connect("notify::connection-state", self._state)
        self._pending_local: str | None = None   # "offer" or "answer" awaiting gathering
        self._offered = False
        self._tracks = 0
        self._inbox = b""
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._bus_error)
        GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_IN | GLib.IO_HUP, self._stdin)

    def run(self) -> None:
        self.pipe.set_state(Gst.State.PLAYING)
        self.loop.run()
        self.pipe.set_state(Gst.State.NULL)

    # -- negotiation --------------------------------------------------------------------------
    def _negotiation_needed(self, element: Gst.Element) -> None:
        if self._offered:   # later needs are the server's to offer (it offers every change)
            return
        self._offered = True
        promise = Gst.Promise.new_with_change_func(self._offer_created, element, None)
        element.emit("create-offer", None, promise)

    def _offer_created(self, promise: Gst.Promise, element: Gst.Element, _: object) -> None:
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None:
            emit({"type": "error", "message": f"create-offer failed: {reply and reply.to_string()}"})
            return
        self._set_local("offer", offer)

    def _set_local(self, kind: str, description: GstWebRTC.WebRTCSessionDescription) -> None:
        """Apply our offer/answer; send it once applied and ICE gathering is complete."""
        def applied(promise: Gst.Promise, _element: Gst.Element, _: object) -> None:
            if failed(promise, f"set-local-description ({kind})"):
                return
            note(f"local {kind} applied; gathering "
                 f"{self.webrtc.get_property('ice-gathering-state').value_nick}")
            self._pending_local = kind
            self._maybe_send()

        promise = Gst.Promise.new_with_change_func(applied, self.webrtc, None)
        self.webrtc.emit("set-local-description", description, promise)

    def _gathering(self, element: Gst.Element, _pspec: object) -> None:
        note(f"gathering {element.get_property('ice-gathering-state').value_nick}")
        self._maybe_send()

    def _maybe_send(self) -> None:
        state = self.webrtc.get_property("ice-gathering-state")
        if self._pending_local and state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            kind, self._pending_local = self._pending_local, None
            sdp = self.webrtc.get_property("local-description").sdp.as_text()
            emit({"type": kind, "sdp": sdp})

    def _remote(self, kind: str, text: str) -> None:
        ok, sdp = GstSdp.SDPMessage.new_from_text(text)
        if ok != GstSdp.SDPResult.OK:
            emit({"type": "error", "message": f"unparseable {kind}"})
            return
        sdp_type = (GstWebRTC.WebRTCSDPType.OFFER if kind == "offer"
                    else GstWebRTC.WebRTCSDPType.ANSWER)
        description = GstWebRTC.WebRTCSessionDescription.new(sdp_type, sdp)
        if kind == "answer":
            self.webrtc.emit("set-remote-description", description, Gst.Promise.new())
            return
        promise = Gst.Promise.new_with_change_func(self._remote_offer_set, self.webrtc, None)
        self.webrtc.emit("set-remote-description", description, promise)

    def _remote_offer_set(self, promise: Gst.Promise, element: Gst.Element, _: object) -> None:
        if failed(promise, "set-remote-description (offer)"):
            return
        note("remote offer applied")
        promise = Gst.Promise.new_with_change_func(self._answer_created, element, None)
        element.emit("create-answer", None, promise)

    def _answer_created(self, promise: Gst.Promise, element: Gst.Element, _: object) -> None:
        promise.wait()
        reply = promise.get_reply()
        answer = reply.get_value("answer") if reply is not None and reply.has_field("answer") else None
        if answer is None:
            emit({"type": "error", "message": f"create-answer failed: {reply and reply.to_string()}"})
            return
        self._set_local("answer", answer)

    # -- media and state ------------------------------------------------------------------------
    def _pad_added(self, element: Gst.Element, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        mid = pad.get_property("transceiver").get_property("mid")
        self._tracks += 1
        path = os.path.join(self.args.outdir, f"track-{self._tracks}-{mid}.f32")
        sink = Gst.parse_bin_from_description(
            "queue ! rtpopusdepay ! opusdec ! audioconvert ! audioresample ! "
            f"audio/x-raw,format=F32LE,rate=48000,channels=1 ! filesink location={path} "
            "buffer-mode=unbuffered", True)
        self.pipe.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        emit({"type": "track", "mid": mid, "path": path})

    def _state(self, element: Gst.Element, _pspec: object) -> None:
        state = element.get_property("connection-state")
        emit({"type": "state", "connection": state.value_nick})

    def _bus_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        error, debug = message.parse_error()
        emit({"type": "error", "message": f"{error.message} ({debug})"})

    def _stdin(self, fd: int, condition: int) -> bool:
        # os.read, not sys.stdin.readline: lines left in Python's buffer would never wake
        # this watch again (two messages arriving together, e.g. an answer and an offer)
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            self.loop.quit()
            return False
        self._inbox += chunk
        while b"\n" in self._inbox:
            line, self._inbox = self._inbox.split(b"\n", 1)
            message = json.loads(line)
            if message.get("type") in ("offer", "answer"):
                self._remote(message["type"], message["sdp"])
            elif message.get("type") == "quit":
                self.loop.quit()
                return False
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tone", type=float, default=880.0, help="sine frequency sent, Hz")
    parser.add_argument("--ice-host", action="append", default=[],
                        help="local address for ICE host candidates (repeatable)")
    parser.add_argument("--outdir", required=True, help="folder for received audio")
    args = parser.parse_args()
    Gst.init(None)
    GstPeer(args).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
