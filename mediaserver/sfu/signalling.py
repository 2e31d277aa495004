"""WebSocket signalling at ``/ws`` (protocol in docs/ARCHITECTURE.md).

One ``SignallingSession`` per socket: parse and validate each JSON message, call
the room manager, reply. A bad message gets an ``error`` reply naming what was
wrong; only oversized messages, refused joins, floods and a missing offer close the
socket, and nothing a client sends can touch another participant's call.

Everything sent to a client goes through its ``Outbox`` (bounded queue, one writer
task): no handler and no broadcast ever waits on another client's socket, and a client
that stops reading is dropped (sfu/outbox.py). Limits (sfu/limits.py): connections in
all and per address, inbound message rate, and a deadline for the first offer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCRtpTransceiver

from ..jsonsafe import loads_bounded
from .mediaclock import ClockStream
from .limits import ConnectionGate, Limits, RateLimiter, Verdict
from .metrics import SfuMetrics
from . import websec
from .origin import OriginPolicy
from .outbox import Outbox
from .wsclose import Reader
from .participant import Glare, NegotiationError, Participant
from .room import RoomError, RoomManager
from .names import identity_key
from .sdp import SdpError, check_transport, ice_restarted, parse_description
from .tickets import Tickets
from .tokens import Grant, ReplayGuard, TokenError, verify

if TYPE_CHECKING:
    from ..cluster.node import ClusterAccess

logger = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024
# Kernel send buffer of each /ws connection. Linux otherwise grows it up to tcp_wmem's maximum
# (4 MiB) for a client that does not read: memory held per stuck client, and megabytes the
# outbox cannot see before it notices. Signalling needs far less.
SOCKET_SEND_BUFFER = 256 * 1024
MAX_JSON_DEPTH = 16   # the protocol nests 3 deep; anything far deeper is refused as bad-json


@dataclass
class SfuContext:
    """What a signalling session needs from the server (built once in server.py)."""

    manager: RoomManager
    metrics: SfuMetrics
    make_stream: Callable[[str, str], ClockStream]   # (room, identity) -> stream
    rtc_config: Callable[[], RTCConfiguration]
    ice_servers: list[dict] = field(default_factory=list)
    secret: Optional[str] = None
    enhancement_available: bool = True
    outbound_queue: int = 10
    public_ip: Optional[str] = None
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    replay: ReplayGuard = field(default_factory=ReplayGuard)   # one join per token
    join_ice_servers: Optional[Callable[[str], list[dict]]] = None   # per-join TURN credentials
    limits: Limits = field(default_factory=Limits)
    node_urls: list[str] = field(default_factory=list)   # signalling URLs of every node ([]: own)
    gate: ConnectionGate = field(init=False)
    sessions: set["SignallingSession"] = field(init=False, default_factory=set)
    tickets: Tickets = field(init=False)   # reconnect tickets (sfu/tickets.py)
    draining: bool = False   # stopping (sfu/drain.py): new sockets are refused
    # with --redis-url: this node (sfu/cluster_link.py), or a --workers front's (workers/cluster_client.py)
    cluster: Optional["ClusterAccess"] = None

    def __post_init__(self) -> None:
        self.tickets = Tickets(self.secret)
        self.gate = ConnectionGate(max_total=self.limits.max_sockets,
                                   max_per_address=self.limits.max_sockets_per_ip)
        self.metrics.ws_send_queued.set_function(lambda: sum(len(s.outbox) for s in self.sessions))
        for name, value in vars(self.limits).items():
            self.metrics.limits.labels(name).set(value)


class ClientError(Exception):
    def __init__(self, code: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.close = close


class SignallingSession:
    """The state machine of one socket: new -> joined -> published -> gone."""

    def __init__(self, ws: web.WebSocketResponse, ctx: SfuContext, *,
                 abort: Callable[[], None], own_url: str = "") -> None:
        """``abort`` drops the connection at once (the request's ``transport.abort``);
        ``own_url``: this server's signalling URL as the client reached it (``joined.nodes``)."""
        self.ws = ws
        self.ctx = ctx
        self.own_url = own_url
        self.participant: Optional[Participant] = None
        self.task: Optional[asyncio.Task] = None   # the task running ``run`` (drain waits on it)
        self._ticket_timer: Optional[asyncio.TimerHandle] = None
        self._shutting_down = False   # the server said server-shutdown (sfu/drain.py)
        self.waited_s = 0.0   # how long the socket was open before it reached us (a --workers front)
        limits = ctx.limits
        self.outbox = Outbox(ws, abort=abort, on_slow=self._on_slow,
                             max_messages=limits.ws_send_queue, stall_s=limits.ws_send_timeout_s)
        self._loop = asyncio.get_running_loop()
        self._reader = Reader(ws)   # what run() reads; stopped before the close of a shutdown
        self._rate = RateLimiter(rate=limits.ws_rate, burst=limits.ws_burst, now=self._loop.time())
        self._label = ""   # room/identity once joined, kept for log lines after leaving

    def send(self, message: dict) -> None:
        """Queue ``message`` for this client; raises ``ConnectionError`` once closing."""
        self.outbox.post(message)

    def error(self, code: str, message: str) -> None:
        self.ctx.metrics.signalling_errors.labels(code).inc()
        logger.info("signalling error %s: %s", code, message)
        try:
            self.send({"type": "error", "code": code, "message": message})
        except ConnectionError:
            pass

    def close(self, code: int, reason: str) -> None:
        """Close after what is queued (an error reply first, typically)."""
        self.outbox.close(code, reason.encode()[:120])

    def _who(self) -> str:
        return self._label or "(not joined)"

    def shutdown(self, retry_after_ms: int, code: int) -> None:
        """The server is stopping: say so (with a retry hint), then close (sfu/drain.py)."""
        from .drain import shutdown_message

        self._shutting_down = True
        try:
            self.send(shutdown_message(retry_after_ms))
        except ConnectionError:
            pass
        # run() stops reading before the close, so the close waits for the client's answer
        # (sent once it has read the message): only then does run() close the peer
        # connection (sfu/wsclose.py)
        self.outbox.close(code, b"server shutdown", before=self._reader.stop)

    async def run(self) -> None:
        self.task = asyncio.current_task()
        self.outbox.start()
        deadline = self._loop.call_later(max(0.0, self.ctx.limits.offer_timeout_s - self.waited_s),
                                         self._offer_overdue)
        try:
            async for msg in self._reader:
                if not self.outbox.accepting:   # closing, or dropped as a slow consumer
                    break
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and not self._within_rate():
                    if not self.outbox.accepting:
                        break
                    continue
                if msg.type == WSMsgType.TEXT:
                    if len(msg.data) > MAX_MESSAGE:
                        self.error("too-large", f"message over {MAX_MESSAGE} bytes")
                        self.close(1009, "message too large")
                        break
                    try:
                        await self.handle_text(msg.data)
                    except ConnectionError:   # our own socket is closing (or was dropped)
                        break
                    except ClientError as exc:
                        self.error(exc.code, str(exc))
                        if exc.close:
                            self.close(1008, exc.code)
                            break
                elif msg.type == WSMsgType.BINARY:
                    self.error("bad-request", "binary messages are not part of the protocol")
                elif msg.type == WSMsgType.ERROR:
                    logger.info("socket error: %s", self.ws.exception())
                    break
        finally:
            deadline.cancel()
            if self._ticket_timer is not None:
                self._ticket_timer.cancel()
            if self._shutting_down:
                # tell first, then cut: the close handshake (through a --workers front too)
                # completes before the peer connection closes, so the client reads
                # server-shutdown before it sees its media fail
                await self.outbox.finish()
                await self.leave()
            else:
                await self.leave()
                await self.outbox.finish()

    def _within_rate(self) -> bool:
        """Token bucket on inbound messages; over it: warn once, then drop, then close."""
        verdict = self._rate.check(now=self._loop.time())
        if verdict is Verdict.PROCESS:
            return True
        self.ctx.metrics.ws_refused_messages.inc()
        limits = self.ctx.limits
        if verdict is Verdict.WARN:
            self.error("rate-limited", f"over {limits.ws_rate:g} messages/s (burst {limits.ws_burst}): "
                                       "message dropped; the socket is closed if this goes on")
        elif verdict is Verdict.CLOSE:
            self.ctx.metrics.limit_refusals.labels("rate").inc()
            logger.warning("%s: closing a socket that kept sending over %g messages/s",
                           self._who(), limits.ws_rate)
            self.error("rate-limited", "closing: messages kept coming over the rate")
            self.close(1008, "rate-limited")
        return False

    def _offer_overdue(self) -> None:
        p = self.participant
        if p is not None and p.pc is not None:
            return
        self.ctx.metrics.limit_refusals.labels("offer_timeout").inc()
        timeout = self.ctx.limits.offer_timeout_s
        logger.info("%s: no offer within %g s of connecting: closing", self._who(), timeout)
        self.error("offer-timeout", f"join and send an offer within {timeout:g} s of connecting")
        self.close(1008, "offer-timeout")

    def _on_slow(self, reason: str) -> None:
        self.ctx.metrics.ws_slow_consumer_drops.labels(reason).inc()
        logger.warning("%s: slow consumer dropped (%s: over %d queued messages or %g s on one)",
                       self._who(), reason, self.outbox.max_messages, self.outbox.stall_s)

    async def handle_text(self, text: str) -> None:
        try:
            message = loads_bounded(text, MAX_JSON_DEPTH)
        except ValueError:
            raise ClientError("bad-json", "message is not valid JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ClientError("bad-request", "message must be an object with a string 'type'")
        kind = message["type"]
        handler = getattr(self, "on_" + kind.replace("-", "_"), None)
        if handler is None or kind.startswith("_"):
            raise ClientError("bad-request", f"unknown message type {kind[:40]!r}")
        if kind != "join" and self.participant is None:
            raise ClientError("bad-request", f"'{kind}' before 'join'")
        await handler(message)

    # -- handlers -------------------------------------------------------------------------
    async def on_join(self, m: dict) -> None:
        if self.participant is not None:
            raise ClientError("bad-request", "already joined")
        room_name = m.get("room")
        try:
            identity = RoomManager.check_names(room_name, m.get("identity"))  # normal form
        except RoomError as exc:
            raise ClientError(exc.code, str(exc), close=True) from None
        grant, rejoin = self._admission(m, room_name, identity)
        if (self.ctx.cluster is not None and grant is not None
                and not await self.ctx.cluster.spend_once(grant.jti, grant.expires)):
            # one join per token or ticket in the whole cluster, not per node
            raise ClientError("bad-token", "token was already used to join (on a node of this "
                              "cluster; a token admits one join)", close=True)
        if self.ctx.cluster is not None and room_name not in self.ctx.manager.rooms:
            placement = await self.ctx.cluster.place(room_name)
            if placement.node is not None:   # the room lives on another node: send the client there
                # the token is spent in Redis: the redirect's ticket is the client's way in now
                if grant is not None:
                    self.ctx.replay.release(grant)
                from .cluster_link import REDIRECT_CLOSE_CODE, redirect_message

                logger.info("%s/%s: room is on node %s, redirected", room_name, identity,
                            placement.node.id)
                self.send(redirect_message(self.ctx, placement.node, room_name, identity))
                self.close(REDIRECT_CLOSE_CODE, "redirect")
                return
        if rejoin:
            await self._replace_stale(room_name, identity)
        p = Participant(room=room_name, identity=identity, send=self.send,
                        metrics=self.ctx.metrics, config=self.ctx.rtc_config(),
                        outbound_queue=self.ctx.outbound_queue, public_ip=self.ctx.public_ip,
                        dtls_timeout_s=self.ctx.limits.dtls_timeout_s)
        try:
            room = self.ctx.manager.admit(p)
        except RoomError as exc:
            if grant is not None:  # not admitted: the token was not spent
                self.ctx.replay.release(grant)
                if self.ctx.cluster is not None:
                    await self.ctx.cluster.unspend(grant.jti)
            raise ClientError(exc.code, str(exc), close=True) from None
        self.participant = p
        self._label = f"{room_name}/{identity}"
        p.on_failed = self._on_peer_failed
        self.send({
            "type": "joined", "room": room_name, "identity": identity,
            "participants": [_presence(o) for o in room.others(p)],
            "iceServers": (self.ctx.join_ice_servers(f"{room_name}/{identity}")
                           if self.ctx.join_ice_servers else self.ctx.ice_servers),
            "reconnect": self._ticket(),
            "nodes": (self.ctx.cluster.node_urls() if self.ctx.cluster is not None else
                      list(self.ctx.node_urls) or ([self.own_url] if self.own_url else [])),
        })
        self._ticket_timer = self._loop.call_later(self.ctx.tickets.ttl_s / 2, self._refresh_ticket)
        room.broadcast({"type": "participant-joined", "identity": identity}, exclude=p)
        if self.ctx.cluster is not None:   # room events on Redis: consumers need no node affinity
            self.ctx.cluster.publish_event(room_name, {"type": "participant-joined",
                                                       "identity": identity})

    def _admission(self, m: dict, room: str, identity: str) -> tuple[Optional[Grant], bool]:
        """(grant spent, whether this is a rejoin with a valid reconnect ticket).

        A valid ``reconnect`` ticket admits without a token; with ``--secret`` and no valid
        ticket, the token must be valid and unused. Raises ``ClientError`` (bad-token)."""
        now = time.time()
        problem: Optional[TokenError] = None
        if m.get("reconnect") is not None:
            try:
                grant = self.ctx.tickets.verify(m["reconnect"], room=room, identity=identity, now=now)
                self.ctx.replay.use(grant, now=now)
                return grant, True
            except TokenError as exc:
                problem = exc
        if not self.ctx.secret:
            return None, False   # an open server: the ticket only adds the right to replace
        if problem is not None and m.get("token") is None:
            raise ClientError("bad-token", str(problem), close=True)
        try:
            grant = verify(self.ctx.secret, m.get("token"), room=room, identity=identity)
            self.ctx.replay.use(grant, now=now)
        except TokenError as exc:
            raise ClientError("bad-token", str(exc), close=True) from None
        return grant, False

    async def _replace_stale(self, room_name: str, identity: str) -> None:
        """A rejoin: the same person's old connection, not yet seen dead, makes way."""
        room = self.ctx.manager.rooms.get(room_name)
        key = identity_key(identity)
        old = next((o for o in (room.participants.values() if room else [])
                    if identity_key(o.identity) == key), None)
        if old is None:
            return
        logger.info("%s/%s rejoined with a reconnect ticket: replacing its old connection",
                    room_name, identity)
        for session in list(self.ctx.sessions):
            if session is not self and session.participant is old:
                session.participant = None
                session.error("replaced", "this identity rejoined from another connection")
                session.close(4000, "replaced")
        await self.ctx.manager.remove(old)

    def _ticket(self) -> dict:
        p = self._me()
        return {"ticket": self.ctx.tickets.mint(room=p.room, identity=p.identity),
                "expires_in_s": self.ctx.tickets.ttl_s}

    def _refresh_ticket(self) -> None:
        if self.participant is None or not self.outbox.accepting:
            return
        try:
            self.send({"type": "reconnect-ticket", **self._ticket()})
        except ConnectionError:
            return
        self._ticket_timer = self._loop.call_later(self.ctx.tickets.ttl_s / 2, self._refresh_ticket)

    async def on_offer(self, m: dict) -> None:
        p = self._me()
        try:
            offer = parse_description(m.get("sdp"), "offer")
            offer.sdp = check_transport(offer.sdp, first_offer=p.pc is None)
            if p.pc is not None and ice_restarted(offer.sdp, p.pc.remoteDescription):
                raise SdpError("ICE restart (new ice-ufrag) is not supported: leave and join again")
        except SdpError as exc:
            raise ClientError("bad-sdp", str(exc)) from None
        if p.pc is not None:
            await self._reoffer(p, offer)
            return
        room = self.ctx.manager.rooms[p.room]

        def make_stream(_mic: RTCRtpTransceiver) -> ClockStream:
            stream = self.ctx.make_stream(p.room, p.identity)
            stream.muted = p.muted
            identity = p.identity   # not ``p``: a stream kept after leave must not keep the pc
            stream.on_speaking = lambda speaking, level: room.broadcast(
                {"type": "speaking", "identity": identity, "speaking": speaking,
                 "level": round(level, 3)})
            return stream

        try:
            answer = await p.accept_offer(offer, make_stream)
        except Exception as exc:
            # aiortc refuses descriptions it cannot use; drop the half-made connection
            await p.discard_connection()
            raise ClientError("bad-sdp", f"offer rejected: {exc}") from None
        self.send({"type": "answer", "sdp": answer})
        if not p.closed:
            self.ctx.manager.published(p)

    async def _reoffer(self, p: Participant, offer: Any) -> None:
        """A client offer after the first: answered unless it collides with a server offer."""
        try:
            answer, tracks = await p.accept_reoffer(offer)
        except Glare as exc:
            raise ClientError("glare", str(exc)) from None
        except NegotiationError as exc:
            raise ClientError("bad-request", str(exc)) from None
        except Exception as exc:   # aiortc refused the description
            raise ClientError("bad-sdp", f"offer rejected: {exc}") from None
        self.send({"type": "answer", "sdp": answer, "tracks": tracks})
        if not p.closed:
            self.ctx.manager.routed(p)   # its microphone may have started or stopped sending

    async def on_answer(self, m: dict) -> None:
        p = self._me()
        try:
            answer = parse_description(m.get("sdp"), "answer")
            answer.sdp = check_transport(answer.sdp, first_offer=False)
            p.accept_answer(answer)
        except SdpError as exc:
            raise ClientError("bad-sdp", str(exc)) from None
        except NegotiationError as exc:
            raise ClientError("bad-request", str(exc)) from None

    async def on_candidate(self, m: dict) -> None:
        cand = m.get("candidate")
        if cand is not None and not isinstance(cand, (str, dict)):
            raise ClientError("bad-request", "candidate must be a string, an object or null")
        # Accepted and ignored: clients send complete SDP (ICE gathered before the offer).

    async def on_mute(self, m: dict) -> None:
        p = self._me()
        if not isinstance(m.get("muted"), bool):
            raise ClientError("bad-request", "'muted' must be true or false")
        changed = p.muted != m["muted"]
        p.muted = m["muted"]
        if p.stream is not None:
            p.stream.muted = p.muted
        room = self.ctx.manager.rooms.get(p.room)
        if changed and room is not None:  # the others show it on the speaker's card
            room.broadcast({"type": "muted", "identity": p.identity, "muted": p.muted}, exclude=p)

    async def on_enhancement(self, m: dict) -> None:
        p = self._me()
        enabled, atten = m.get("enabled"), m.get("atten_lim_db")
        if enabled is not None and not isinstance(enabled, bool):
            raise ClientError("bad-request", "'enabled' must be true or false")
        if atten is not None and (isinstance(atten, bool) or not isinstance(atten, (int, float))
                                  or not math.isfinite(atten) or not 0 <= atten <= 100):
            raise ClientError("bad-request", "'atten_lim_db' must be a number within 0..100")
        if not self.ctx.enhancement_available:
            raise ClientError("bad-request", "enhancement is off on this server (--no-enhance)")
        if p.stream is None:
            raise ClientError("bad-request", "publish (offer) before setting enhancement")
        handle = p.stream.handle
        if handle is None and not p.sends_audio:   # (ClockStream.ready: opened on the clock)
            raise ClientError("bad-request", "your audio is receive-only (offered recvonly): there is "
                                             "nothing to enhance until you offer it sendrecv")
        if handle is None:
            raise ClientError("bad-request", "the enhancer could not open your stream (see the server "
                                             "log); it is forwarded unenhanced")
        if enabled is not None:
            handle.enabled = enabled
        if atten is not None:
            handle.atten_lim_db = float(atten)
        self.send({"type": "enhancement", "enabled": bool(handle.enabled),
                         "atten_lim_db": float(handle.atten_lim_db)})

    async def on_stats(self, m: dict) -> None:
        """Only what concerns the asker: the server's view of its own stream and transport,
        and of each stream it receives only the delay the server adds and whether it is
        enhanced (never another person's loss, jitter, settings or subscriptions)."""
        p = self._me()
        entry: dict[str, Any] = {"muted": p.muted, "subscriptions": p.subscriptions(),
                                 "sends_audio": p.sends_audio}
        if p.stream is not None and p.sends_audio:   # a listener has no stream to report
            entry.update(p.stream.inbound.stats())
            entry["frames"] = p.stream.frames
            entry["speaking"] = p.stream.speaking.speaking
            if p.stream.handle is not None:
                entry["enhancement"] = bool(p.stream.handle.enabled)
                entry["atten_lim_db"] = float(p.stream.handle.atten_lim_db)
                entry["model"] = p.stream.handle.active_model
                entry["quality"] = p.stream.handle.telemetry.snapshot()  # enhance/telemetry.py
        room = self.ctx.manager.rooms.get(p.room)
        receiving: dict[str, Any] = {}
        for identity in p.subscriptions():
            o = room.participants.get(identity) if room else None
            if o is not None and o.stream is not None:
                receiving[identity] = {
                    "current_delay_ms": o.stream.inbound.stats().get("current_delay_ms"),
                    "enhancement": bool(o.stream.handle is not None and o.stream.handle.enabled)}
        clock = self.ctx.manager.clock
        self.send({"type": "stats", "identity": p.identity, "room": p.room,
                   "transport": await p.stats(), "participants": {p.identity: entry},
                   "receiving": receiving,
                   "clock": {"ticks": clock.tick, "late": clock.late, "skipped": clock.skipped}})

    async def on_leave(self, m: dict) -> None:
        await self.leave()
        self.close(1000, "")

    # -- helpers --------------------------------------------------------------------------
    def _me(self) -> Participant:
        assert self.participant is not None
        return self.participant

    def _on_peer_failed(self, code: str, message: str) -> None:
        logger.info("peer connection of %s failed (%s): closing its socket", self._who(), code)
        self.error(code, message)
        self.close(1011, code)

    async def leave(self) -> None:
        p, self.participant = self.participant, None
        if p is not None:
            await self.ctx.manager.remove(p)
            if self.ctx.cluster is not None:
                self.ctx.cluster.publish_event(p.room, {"type": "participant-left",
                                                        "identity": p.identity})


def _presence(o: Participant) -> dict[str, Any]:
    """What a newcomer learns of someone already in the room: mute and speaking state now."""
    speaking = o.stream.speaking if o.stream is not None else None
    return {"identity": o.identity, "muted": o.muted,
            "speaking": bool(speaking is not None and speaking.speaking),
            "level": round(float(speaking.level), 3) if speaking is not None else 0.0}


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    ctx: SfuContext = request.app[SFU_CONTEXT]
    if ctx.draining:
        raise web.HTTPServiceUnavailable(text="the server is shutting down; reconnect shortly",
                                         headers={"Retry-After": "1"})
    origin = request.headers.get("Origin")
    if not ctx.origins.allows(origin, request.host):
        ctx.metrics.signalling_errors.labels("bad-origin").inc()
        logger.warning("refused /ws from a page at %r (not this server's origin nor in "
                       "--allowed-origins)", origin[:200] if origin else origin)
        raise web.HTTPForbidden(text="this page's origin may not use this server (--allowed-origins)")
    address = websec.client_address(request)   # the client's, also behind --workers' front
    refused = ctx.gate.refusal(address)
    if refused is not None:
        ctx.metrics.limit_refusals.labels(refused).inc()
        logger.warning("refused /ws from %s: %s limit reached (%d open)", address, refused,
                       ctx.gate.open_count)
        if refused == "sockets":
            raise web.HTTPServiceUnavailable(
                text=f"the server has its maximum of {ctx.limits.max_sockets} connections "
                     "(--max-sockets); try again later", headers={"Retry-After": "10"})
        raise web.HTTPTooManyRequests(
            text=f"at most {ctx.limits.max_sockets_per_ip} connections from one address "
                 "(--max-sockets-per-ip)", headers={"Retry-After": "10"})
    ctx.gate.open(address)
    ctx.metrics.ws_sockets.set(ctx.gate.open_count)
    try:
        # heartbeat 30 s (pong due within 15 s): a dead socket is noticed, a busy client is not cut
        ws = web.WebSocketResponse(max_msg_size=4 * MAX_MESSAGE, heartbeat=30.0)
        await ws.prepare(request)
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)

        def abort() -> None:
            if transport is not None:
                transport.abort()

        scheme = "wss" if request.secure else "ws"
        session = SignallingSession(ws, ctx, abort=abort, own_url=f"{scheme}://{request.host}/ws")
        session.waited_s = websec.front_waited_s(request)   # one offer timeout, front included
        ctx.sessions.add(session)
        try:
            await session.run()
        finally:
            ctx.sessions.discard(session)
    finally:
        ctx.gate.close(address)
        ctx.metrics.ws_sockets.set(ctx.gate.open_count)
    return ws


SFU_CONTEXT = web.AppKey("sfu_context", SfuContext)
