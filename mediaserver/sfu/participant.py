"""One participant: its peer connection, its published stream and its subscription slots.

The server drives every renegotiation after the first offer. Offers go out one at a
time from a single negotiator task: a change (join, leave) marks the participant
dirty, and the negotiator sends one offer covering all changes since the last one,
waits for the answer, and repeats while dirty. Subscription slots are transceivers
that are reused (sendonly <-> inactive) so the SDP does not grow with churn.

A client may offer again (perfect negotiation): the server is the *impolite* peer. A client
offer that collides with a server offer in flight is refused (``Glare``; the client rolls
back and answers the server's offer), otherwise it is answered; one lock orders the two.
The DTLS handshake is bounded (``DtlsWatch``); any failure is reported once through
``on_failed(code, message)``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from ..media.opus import enable_opus_fec
from ..patches import tap_receiver
from .dtlswatch import DtlsWatch
from .mediaclock import ClockStream
from .metrics import SfuMetrics
from .outbound import PacketTrack, sent_codec
from .sdp import align_offer, announce_address, serve_only_supported_codecs

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 15.0
# Queues one message to the client's socket; never blocks; raises ConnectionError when the
# socket is closing (SignallingSession.send, backed by sfu/outbox.py).
Send = Callable[[dict], None]


class NegotiationError(RuntimeError):
    """The client did not answer a server offer in time, or answered with junk."""


class Glare(NegotiationError):
    """A client offer crossed a server offer (the server is the impolite peer: it keeps its own)."""


# on_failed(code, message): the media connection of this participant cannot go on
FailedCallback = Callable[[str, str], None]


@dataclass(eq=False)
class Slot:
    """A sendonly/inactive transceiver carrying one other participant's audio."""

    transceiver: RTCRtpTransceiver
    track: PacketTrack
    publisher: Optional[ClockStream] = None


class Participant:
    """State of one WebSocket + RTCPeerConnection; the room wires publishers to slots."""

    def __init__(self, *, room: str, identity: str, send: Send, metrics: SfuMetrics,
                 config: RTCConfiguration, outbound_queue: int = 10,
                 public_ip: Optional[str] = None, dtls_timeout_s: float = 10.0) -> None:
        self.room = room
        self.identity = identity
        self.muted = False
        self.stream: Optional[ClockStream] = None
        self.pc: Optional[RTCPeerConnection] = None
        self.closed = False
        self._send = send
        self._metrics = metrics
        self._config = config
        self._outbound_queue = outbound_queue
        self._public_ip = public_ip
        self._slots: list[Slot] = []
        self._dirty = False
        self._negotiator: Optional[asyncio.Task] = None
        self._answer: Optional[asyncio.Future] = None
        self._published = asyncio.Event()
        self._negotiating = asyncio.Lock()   # one offer/answer round at a time, either side's
        self._dtls_timeout_s = dtls_timeout_s
        self._dtls_watch: Optional[DtlsWatch] = None
        self._failed = False
        self.on_failed: Optional[FailedCallback] = None

    def notify(self, message: dict) -> None:
        """Queue an event; a socket that is already gone is not an error here."""
        try:
            self._send(message)
        except Exception as exc:
            logger.debug("%s/%s: event not delivered: %s", self.room, self.identity, exc)

    # -- first offer (client -> server) -------------------------------------------------
    async def accept_offer(self, offer: RTCSessionDescription, make_stream: Callable[
            [RTCRtpTransceiver], ClockStream]) -> str:
        """Answer the client's first offer; its first audio m-line is the microphone."""
        if self.pc is not None:
            raise NegotiationError("first offer already received; answer server offers only")
        pc = self.pc = RTCPeerConnection(self._config)

        @pc.on("connectionstatechange")
        async def _state() -> None:
            logger.info("%s/%s connection %s", self.room, self.identity, pc.connectionState)
            if pc.connectionState == "failed":
                self._fail("connection-failed", "the media connection failed (ICE or DTLS)")

        # The first audio m-line binds to this transceiver: its codec preferences shape the answer.
        serve_only_supported_codecs(pc.addTransceiver("audio", direction="recvonly"), receive=True)
        await pc.setRemoteDescription(offer)
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        mic = audio[0]
        mic.direction = "recvonly"
        loop = asyncio.get_running_loop()
        self._dtls_watch = DtlsWatch(mic.receiver.transport, timeout_s=self._dtls_timeout_s,
                                     on_failure=self._dtls_failed, loop=loop)
        for extra in audio[1:]:
            extra.direction = "inactive"
        self.stream = make_stream(mic)
        inbound = self.stream.inbound
        packets_in = self._metrics.packets_in

        def on_packet(packet: Any, arrival_ms: float) -> None:
            packets_in.inc()
            inbound.push(packet.payload, seq=packet.sequence_number, timestamp=packet.timestamp,
                         ssrc=packet.ssrc, arrival_ms=arrival_ms,
                         audio_level=packet.extensions.audio_level,
                         codec=codec_of(packet.payload_type))

        unusable = self._metrics.rtp_unusable
        codec_of = tap_receiver(mic.receiver, on_packet, lambda: loop.time() * 1000.0,
                                lambda _packet, reason: unusable.labels(reason).inc())
        answer = await pc.createAnswer()
        await pc.setLocalDescription(RTCSessionDescription(
            sdp=enable_opus_fec(answer.sdp), type="answer"))
        self._published.set()
        return self._outgoing(pc.localDescription.sdp)

    def _dtls_failed(self, reason: str, message: str) -> None:
        self._metrics.dtls_failures.labels(reason).inc()
        self._fail("dtls-failed", message)

    def _fail(self, code: str, message: str) -> None:
        """Report that the media connection cannot go on (once; not after close)."""
        if self._failed or self.closed:
            return
        self._failed = True
        logger.warning("%s/%s media failed (%s): %s", self.room, self.identity, code, message)
        if self.on_failed is not None:
            self.on_failed(code, message)

    # -- later client offers (perfect negotiation, the server impolite) ---------------------
    async def accept_reoffer(self, offer: RTCSessionDescription) -> tuple[str, dict[str, str]]:
        """Answer a client offer made after the first; returns (answer SDP, mid -> identity).

        Raises ``Glare`` while a server offer is being made or awaits its answer (the client,
        the polite peer, rolls back and answers that offer first, then may offer again).
        """
        pc = self.pc
        if pc is None or not self._published.is_set():
            raise NegotiationError("offer before the first answer")
        if self._negotiating.locked() or pc.signalingState != "stable":
            raise Glare("the server's offer is waiting for your answer (the server is the "
                        "impolite peer: roll back, answer it, then offer again)")
        async with self._negotiating:
            try:
                await pc.setRemoteDescription(offer)
                mic = self._mic()
                for t in pc.getTransceivers():
                    if t is not mic and not any(s.transceiver is t for s in self._slots):
                        t.direction = "inactive"   # only the first audio m-line is published
                answer = await pc.createAnswer()
                await pc.setLocalDescription(RTCSessionDescription(
                    sdp=enable_opus_fec(answer.sdp), type="answer"))
            except Exception:
                if pc.signalingState != "stable":   # half-applied: this connection cannot go on
                    self._fail("negotiation-failed", "the server could not apply your offer")
                raise
            self._metrics.client_offers.inc()
            return self._outgoing(pc.localDescription.sdp), self._tracks()

    def _mic(self) -> RTCRtpTransceiver:
        assert self.pc is not None
        return next(t for t in self.pc.getTransceivers() if t.kind == "audio")

    def _tracks(self) -> dict[str, str]:
        return {s.transceiver.mid: s.publisher.identity for s in self._slots
                if s.publisher is not None and s.transceiver.mid is not None}

    def _outgoing(self, sdp: str) -> str:
        sdp = enable_opus_fec(sdp)
        return announce_address(sdp, self._public_ip) if self._public_ip else sdp

    async def discard_connection(self) -> None:
        """Undo a first offer that failed half-way, so the client may try again."""
        pc, self.pc = self.pc, None
        stream, self.stream = self.stream, None
        self._published.clear()
        if self._dtls_watch is not None:
            self._dtls_watch.stop()
            self._dtls_watch = None
        if stream is not None and stream.on_close is not None:
            stream.on_close()
        if pc is not None:
            await pc.close()

    @property
    def publishing(self) -> bool:
        """Its first offer was answered (it has a stream on the media clock), not closed."""
        return self._published.is_set() and not self.closed

    @property
    def sends_audio(self) -> bool:
        """A *publisher* in the load figures (``/healthz`` ``publishers``, placement): its
        microphone m-line, as last negotiated, sends to the server (``recvonly`` here). A
        participant that only joined (no offer yet) or offered its audio ``recvonly`` or
        ``inactive`` (a listener) is not one; a muted one is (the mute is a flag: its stream
        stays open and it may speak again at any moment)."""
        if not self.publishing or self.pc is None:
            return False
        return self._mic().currentDirection in ("recvonly", "sendrecv")

    # -- subscriptions ------------------------------------------------------------------
    def subscribe(self, publisher: ClockStream) -> None:
        """Give ``publisher`` a slot (reusing an inactive one) and renegotiate."""
        if (self.pc is None or self.closed or self.pc.signalingState == "closed"
                or any(s.publisher is publisher for s in self._slots)):
            return   # (a connection that failed or closed and awaits removal takes no slot)
        slot = next((s for s in self._slots if s.publisher is None), None)
        if slot is None:
            track = PacketTrack(max_packets=self._outbound_queue,
                                on_drop=self._metrics.dropped_out.inc)
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            serve_only_supported_codecs(transceiver, receive=False)
            slot = Slot(transceiver, track)
            self._slots.append(slot)
        slot.track.clear()
        slot.transceiver.direction = "sendonly"
        slot.publisher = publisher
        publisher.attach(slot.track)
        self.renegotiate()

    def unsubscribe(self, publisher: ClockStream) -> None:
        for slot in self._slots:
            if slot.publisher is publisher:
                publisher.detach(slot.track)
                slot.publisher = None
                slot.track.clear()
                slot.transceiver.direction = "inactive"
                self.renegotiate()

    def sent_streams(self) -> list[tuple[ClockStream, Any]]:
        """(publisher, RTCRtpSender) of every slot carrying someone (sfu/outbound.LossFeedback)."""
        return [(s.publisher, s.transceiver.sender) for s in self._slots if s.publisher is not None]

    def subscriptions(self) -> list[str]:
        return [s.publisher.identity for s in self._slots if s.publisher is not None]

    # -- server offers ------------------------------------------------------------------
    def renegotiate(self) -> None:
        """Mark dirty; the single negotiator task sends the next offer."""
        self._dirty = True
        if self.closed or self.pc is None:
            return
        if self._negotiator is None or self._negotiator.done():
            self._negotiator = asyncio.get_running_loop().create_task(
                self._negotiate(), name=f"negotiate-{self.room}-{self.identity}")

    async def _negotiate(self) -> None:
        assert self.pc is not None
        try:
            while self._dirty and not self.closed:
                async with self._negotiating:
                    await self._offer_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.closed or self.pc is None or self.pc.signalingState == "closed":
                # the connection was closed under the offer (a drain, the client hanging up):
                # its end is reported where it is closed, not as a failed negotiation
                logger.debug("%s/%s renegotiation ended by the connection's close: %s",
                             self.room, self.identity, exc)
                return
            logger.warning("%s/%s renegotiation failed: %s", self.room, self.identity, exc)
            self._fail("negotiation-failed", f"renegotiation failed: {exc}")

    async def _offer_once(self) -> None:
        """One server offer covering every change so far, and its answer (lock held)."""
        assert self.pc is not None
        self._dirty = False
        pc = self.pc
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        self._answer = asyncio.get_running_loop().create_future()
        self._metrics.renegotiations.inc()
        agreed = pc.remoteDescription.sdp if pc.remoteDescription else ""
        sdp = align_offer(pc.localDescription.sdp, agreed)
        self._send({"type": "offer", "sdp": self._outgoing(sdp), "tracks": self._tracks()})
        try:
            answer = await asyncio.wait_for(self._answer, ANSWER_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise NegotiationError("no answer to the server offer") from None
        finally:
            self._answer = None
        await pc.setRemoteDescription(answer)
        for slot in self._slots:  # Opus, or G.711 for a client that takes only that
            slot.track.set_codec(sent_codec(slot.transceiver))

    def accept_answer(self, answer: RTCSessionDescription) -> None:
        """Deliver the client's answer to the pending server offer."""
        if self._answer is None or self._answer.done():
            raise NegotiationError("no server offer is waiting for an answer")
        self._answer.set_result(answer)

    async def stats(self) -> dict:
        """aiortc's transport view: round trip time and loss the client reports."""
        out: dict[str, Any] = {}
        if self.pc is None:
            return out
        report = await self.pc.getStats()
        for s in report.values():
            if s.type == "remote-inbound-rtp" and getattr(s, "roundTripTime", None) is not None:
                rtt = round(s.roundTripTime * 1000, 1)
                out["rtt_ms"] = min(rtt, out.get("rtt_ms", rtt))
            elif s.type == "inbound-rtp":
                out["packets_received"] = s.packetsReceived
                out["packets_lost"] = s.packetsLost
                out["jitter_ms"] = round(s.jitter / 48.0, 2)
        return out

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._negotiator is not None:
            self._negotiator.cancel()
        if self._dtls_watch is not None:
            self._dtls_watch.stop()
        for slot in self._slots:
            if slot.publisher is not None:
                slot.publisher.detach(slot.track)
            slot.publisher = None
            slot.track.stop()
        if self.pc is not None:
            try:
                await self.pc.close()
            except Exception:
                logger.exception("closing peer connection of %s/%s", self.room, self.identity)
