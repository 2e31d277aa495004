"""``mediaserver serve``: the aiohttp app (static client, /ws, /healthz, /metrics).

This is the composition root: it reads the flags, builds the enhancer stage, the
media clock and the room manager, and hands them to the signalling sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer

from ..config import (UsageError, add_option, check_ice_hosts, comma_list, comma_values, count_or_auto,
                      ip_address, name_sources, number_in, usable_cores)
from ..patches import pin_host_addresses, tolerate_consent_stalls
from .drain import Drain, add_drain_options, backstop, exit_now_on_second_signal, validate_drain_args
from .limits import Limits, add_limit_options
from .mediaclock import ClockStream, MediaClock
from .metrics import SfuMetrics
from .room import RoomManager, count_publishers
from .signalling import SFU_CONTEXT, SfuContext, websocket_handler
from .startup import StopSignals, remember_stop_signals, stop_requested
from .turn import IceServers, add_turn_options
from . import websec
from ..workers.cluster_client import FRONT_CLUSTER_ENV, LOST_PATH, FrontCluster, room_lost

logger = logging.getLogger(__name__)

MEDIA_CLOCK = web.AppKey("media_clock", MediaClock)
ROOM_MANAGER = web.AppKey("room_manager", RoomManager)
STAGE = web.AppKey("enhancer_stage", object)
MAX_WORKERS = 256   # serve --workers: media worker processes behind one front
ICE_HOST_ADVICE = ("pin one of them (127.0.0.1 for tests) or leave it out (all of them); a 1:1 NAT's public "
                   "address goes in --public-ip, announced beside each host candidate on the same port")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--host", default="127.0.0.1",
               help="address to listen on (default: this machine only; 0.0.0.0: every interface)")
    add_option(parser, "--port", type=int, default=8080, help="HTTP/WebSocket port")
    add_option(parser, "--workers", type=count_or_auto(MAX_WORKERS), default="auto",
               help="media worker processes behind one front process (mediaserver/workers): "
                    "each room lives on one worker, one enhancer process serves them all; "
                    "auto (the default): one per usable core; 1 runs everything in this process (the lowest "
                    "delay on a small machine: README, Several cores)")
    add_option(parser, "--ice-host", action="append", default=None, type=comma_list(ip_address),
               help="pin ICE host candidates to these addresses (comma list; 127.0.0.1 in tests)")
    add_option(parser, "--public-ip", default=None,
               help="public address to announce as an extra candidate (1:1 NAT)")
    add_option(parser, "--stun", action="append", default=None, type=comma_list(),
               help="STUN URL(s) handed to clients (repeatable; comma list), "
                    "e.g. stun:stun.example.org:3478")
    add_option(parser, "--turn", action="append", default=None, type=comma_list(),
               help="TURN URL(s) handed to clients (repeatable; comma list), "
                    "e.g. turn:turn.example.org:3478")
    add_option(parser, "--turn-username", default=None, help="TURN username for clients")
    add_option(parser, "--turn-credential", default=None, help="TURN credential for clients")
    add_turn_options(parser)
    websec.add_security_options(parser)
    add_option(parser, "--secret", default=None,
               help="HMAC secret for join tokens (without it anyone can join any room)")
    add_option(parser, "--no-enhance", action="store_true", default=False,
               help="forward audio without neural enhancement")
    add_option(parser, "--atten-lim-db", type=number_in(0), default=100.0,
               help="default attenuation limit of the enhancer in dB (100: no limit)")
    add_option(parser, "--opus-bitrate", type=number_in(6000, 510000, kind=int), default=32000,
               help="Opus bitrate of forwarded audio, b/s")
    add_option(parser, "--opus-complexity", type=int, default=8, choices=range(11),
               metavar="0..10", help="Opus encoder complexity (lower: cheaper per publisher; "
                                     "8 sounds as 10 for speech, 5 costs ~0.4 PESQ-WB)")
    add_option(parser, "--max-participants", type=int, default=16, help="per room")
    add_option(parser, "--rooms", default=None, type=comma_list(),
               help="comma list of allowed room names (default: any valid name)")
    add_option(parser, "--outbound-queue", type=int, default=10,
               help="packets buffered per subscriber before the oldest is dropped")
    add_limit_options(parser)
    add_drain_options(parser)
    from ..enhance.stage_options import add_stage_options  # flags only: no torch here

    add_stage_options(parser)
    from .cluster_link import add_cluster_options

    add_cluster_options(parser)   # (owns --redis-url, which the redis ASR sink shares)
    from ..asr.options import add_asr_options  # flags only; recognisers load at serve time

    add_asr_options(parser)


def build_stage(args: argparse.Namespace, metrics: Optional[SfuMetrics] = None) -> Any:
    """The enhancer stage, or None with --no-enhance (imports torch only when needed).

    With ``metrics``, the stage's ``mediaserver_enhancer_*`` series go into that registry,
    so the server's ``/metrics`` shows them (pass the same object to :func:`build_app`).
    """
    if args.no_enhance:
        return None
    from ..enhance.stage import stage_from_args

    return stage_from_args(args, metrics.registry if metrics is not None else None)


SHARED_ENHANCER_ENV = "MEDIASERVER_SHARED_ENHANCER"   # set by the front for its workers only


async def open_stage(args: argparse.Namespace, metrics: SfuMetrics) -> Any:
    """The enhancer stage: the machine's shared inference process when this process is a media
    worker of ``--workers N`` (``enhance/shared_client.py``, no torch here), else its own
    (:func:`build_stage`); None with ``--no-enhance``."""
    path = os.environ.get(SHARED_ENHANCER_ENV)
    if args.no_enhance:
        return None
    if path and websec.behind_front():
        from ..enhance.shared_client import SharedStage

        return await SharedStage.connect(path, registry=metrics.registry,
                                         worker=args.worker_id or socket.gethostname())
    try:
        return build_stage(args, metrics)
    except RuntimeError as exc:   # a --model file that is there but no checkpoint (a missing
        from ..enhance.weights import WeightsError   # one: check_args); torch is loaded by now

        if isinstance(exc, WeightsError):
            # one line (torch's reason runs over several), exit 2; nothing had started
            raise UsageError(f"--model: {str(exc).splitlines()[0]}") from None
        raise


def _encode(encoder: Any, pcm: Any, pts: int) -> Any:
    return encoder.encode_packet(pcm, pts)


def build_app(args: argparse.Namespace, *, stage: Any = None,
              metrics: Optional[SfuMetrics] = None) -> web.Application:
    """Wire everything; ``stage`` is the enhancer stage or None (no enhancement).

    ``metrics``: the registry the stage was built with (:func:`build_stage`), else a new one.
    """
    from ..media.inbound import InboundAudio
    from ..media.opus import OpusEncoder
    from .outbound import LossFeedback, PublisherEncoders

    metrics = metrics if metrics is not None else SfuMetrics()
    clock = MediaClock(stage=stage, metrics=metrics, encode_pts=_encode)
    allowed = set(comma_values(args.rooms)) if args.rooms else None
    limits = Limits.from_args(args)
    manager = RoomManager(clock=clock, metrics=metrics, max_participants=args.max_participants,
                          allowed_rooms=allowed, max_rooms=limits.max_rooms)
    OpusEncoder(bitrate=args.opus_bitrate).close()  # fail at start, not at first join
    asr_hub = _build_asr(args, stage)
    if asr_hub is not None:
        clock.sinks.append(asr_hub)

    def make_stream(room: str, identity: str) -> ClockStream:
        inbound = InboundAudio()
        encoder = PublisherEncoders(opus_bitrate=args.opus_bitrate,
                                    opus_complexity=args.opus_complexity)

        def open_handle() -> object:
            # only when the stream goes on the clock: a listener holds no enhancer state and,
            # with --workers N, none of the inference process's shared-memory slots
            assert stage is not None
            if shared:   # the shared inference process picks the room's model (its model admin)
                return stage.open(enabled=True, atten_lim_db=args.atten_lim_db, room=room)
            return stage.open(enabled=True, atten_lim_db=args.atten_lim_db, model=router.model_for(room))

        def close() -> None:
            # A tick in flight may still hold the stream; free its parts a bit later.
            handle = stream.handle

            def later() -> None:
                if handle is not None:
                    stage.close(handle)
                inbound.close()
                if asr_hub is not None:
                    asr_hub.participant_left(room, identity)
            asyncio.get_running_loop().call_later(0.2, later)

        stream = ClockStream(room=room, identity=identity, inbound=inbound, encoder=encoder,
                             open_handle=open_handle if stage is not None else None, on_close=close)
        return stream

    ice = IceServers(stun=comma_values(args.stun), turn=comma_values(args.turn),
                     secret=args.turn_secret, ttl_s=args.turn_ttl, username=args.turn_username,
                     credential=args.turn_credential)
    # the server's own peer connections: per-join TURN pairs are for clients only
    ice_servers = ice.for_server()

    def rtc_config() -> RTCConfiguration:
        # Never aiortc's default (a public Google STUN server): only what was configured.
        return RTCConfiguration(iceServers=[RTCIceServer(urls=s["urls"],
                                                         username=s.get("username"),
                                                         credential=s.get("credential"))
                                            for s in ice_servers])

    ctx = SfuContext(manager=manager, metrics=metrics, make_stream=make_stream,
                     rtc_config=rtc_config, ice_servers=ice_servers, secret=args.secret,
                     enhancement_available=stage is not None,
                     outbound_queue=args.outbound_queue, public_ip=args.public_ip, limits=limits,
                     origins=websec.origin_policy(args),
                     join_ice_servers=(lambda label: ice.for_join(now=time.time(), label=label))
                     if ice.per_join else None)

    app = web.Application(client_max_size=256 * 1024)
    websec.attach(app, args,   # CSP and other headers, /metrics guard, /client.json
                  peers=lambda: ctx.cluster.node_urls() if ctx.cluster is not None else [])
    app[SFU_CONTEXT] = ctx
    app[MEDIA_CLOCK] = clock
    app[ROOM_MANAGER] = manager
    app[STAGE] = stage
    shared = stage is not None and websec.behind_front()
    if shared:
        # a media worker on the shared enhancer: the model admin and the canary are the
        # inference process's (the front relays them there); /debug is this worker's rooms
        from .debug_view import attach_debug

        attach_debug(app, stage=stage, manager=manager, secret=args.secret)
    elif stage is not None:  # GET /models, live model switch, canary (sfu/models_admin.py)
        from .models_admin import attach_models

        router = attach_models(app, args, stage=stage, manager=manager, registry=metrics.registry)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    from .cluster_link import cluster_view

    app.router.add_get("/cluster", cluster_view)
    if websec.behind_front() and os.environ.get(FRONT_CLUSTER_ENV):   # the front is the node
        app.router.add_post(LOST_PATH, room_lost)
    add_static_routes(app)
    app.on_shutdown.append(_on_shutdown)
    feedback = LossFeedback(lambda: [p for r in list(manager.rooms.values())
                                     for p in list(r.participants.values())])

    async def loss_feedback(_app: web.Application) -> Any:
        feedback.start()   # subscribers' loss reports set each publisher's Opus FEC
        yield
        await feedback.stop()

    app.cleanup_ctx.append(loss_feedback)
    if asr_hub is not None:
        _attach_asr(app, asr_hub, manager, args.secret)
    # last: the recognisers load and warm up first, so start-up never makes the clock late
    app.on_startup.append(_on_startup)
    return app


def add_static_routes(app: web.Application) -> None:
    """The browser client at ``/`` (last: it matches every path)."""
    static = _static_dir()
    if static is not None:
        app.router.add_get("/", _index)
        app.router.add_static("/", static, show_index=False)
    else:
        logger.warning("no static/ folder found: the browser client is not served")


def _build_asr(args: argparse.Namespace, stage: Any) -> Any:
    """The ASR hub (a frame sink of the clock) or None when no --asr sink is set."""
    from ..asr.options import hub_from_args

    return hub_from_args(args, input_delay=getattr(stage, "latency", 0) if stage else 0)


def _attach_asr(app: web.Application, hub: Any, manager: RoomManager, secret: Optional[str]) -> None:
    """Captions to the room, GET /rooms/{room}/transcript (token-checked with --secret)."""
    from ..asr.web import attach
    from .tokens import verify

    async def broadcast(room_name: str, message: dict) -> None:
        room = manager.rooms.get(room_name)
        if room is not None:
            room.broadcast(message)

    def authorise(room: str, identity: Optional[str], token: Optional[str]) -> None:
        verify(secret or "", token, room=room, identity=identity or "")

    attach(app, hub, broadcast=broadcast, room_exists=lambda r: r in manager.rooms,
           authorise=authorise if secret else None)


def _static_dir() -> Optional[Path]:
    try:
        from ..resources import static_dir
    except ImportError:
        return None
    path = static_dir()
    return path if path.is_dir() else None


async def _index(request: web.Request) -> web.StreamResponse:
    static = _static_dir()
    if static is None or not (static / "index.html").exists():
        raise web.HTTPNotFound(text="browser client not installed")
    return web.FileResponse(static / "index.html")


async def _healthz(request: web.Request) -> web.Response:
    clock = request.app[MEDIA_CLOCK]
    manager = request.app[ROOM_MANAGER]
    from ..asr.web import ASR_HUB

    return web.json_response({
        "status": "ok", "rooms": len(manager.rooms),
        "participants": sum(len(r.participants) for r in manager.rooms.values()),
        # participants that send audio (listeners and unanswered joins are not): what
        # placement compares first, a --workers front's between its workers
        "publishers": count_publishers(manager.rooms.values()),
        "ticks": clock.ticks_run, "late_ticks": clock.late,   # not the periods it slept
        "enhancement": request.app[STAGE] is not None,
        "model_version": getattr(request.app[STAGE], "model_version", None),
        # batch and step time of its last call (the shared process's, seen from a worker)
        "enhancer": request.app[STAGE].stats() if request.app[STAGE] is not None else None,
        "asr": request.app[ASR_HUB].health() if ASR_HUB in request.app else None,
    })


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[SFU_CONTEXT].metrics.render()
    from ..asr.web import ASR_HUB

    if ASR_HUB in request.app:
        from ..asr.metrics import render

        body += render()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def _on_startup(app: web.Application) -> None:
    app[MEDIA_CLOCK].start()
    logger.info("media clock started")


async def _on_shutdown(app: web.Application) -> None:
    manager = app[ROOM_MANAGER]
    for room in list(manager.rooms.values()):
        for p in list(room.participants.values()):
            await manager.remove(p)
    await app[MEDIA_CLOCK].stop()
    stage = app[STAGE]
    if stage is not None:
        await asyncio.get_running_loop().run_in_executor(None, stage.shutdown)


def public_host(args: argparse.Namespace) -> str:
    """The host this server is reached at: ``--host``, or for a wildcard ``--public-ip`` or
    the host name (a cluster node's default URL)."""
    if args.host in ("0.0.0.0", "::", ""):
        return str(args.public_ip or socket.gethostname())
    return str(args.host)


def announce(args: argparse.Namespace, port: int) -> None:
    host = public_host(args)
    print(f"mediaserver listening: open http://{host}:{port}/  (signalling ws://{host}:{port}/ws)",
          flush=True)
    if websec.behind_front():
        return   # a media worker: its front says this once for the machine
    if not args.secret:
        logger.warning("no --secret set: the server is OPEN, anyone can join any room")
    websec.announce(args)


def make_runner(app: web.Application, args: argparse.Namespace) -> web.AppRunner:
    """The app's runner (not set up yet: :func:`start_site` does that)."""
    # handlers still running this long into the cleanup are cancelled (sfu/drain.py)
    return web.AppRunner(app, handle_signals=False, shutdown_timeout=args.drain_s / 4,
                         access_log_class=websec.RedactingAccessLogger)


async def start_site(runner: web.AppRunner, args: argparse.Namespace) -> int:
    """Start the app (``on_startup``) and listen on ``--host``/``--port``; returns the port (the
    real one for 0). A port taken or an address not on this machine is a :class:`UsageError`
    naming the flag (one line, exit 2), not an OSError traceback."""
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {args.port}: {args.host}:{args.port} is in use already") from None
        raise UsageError(f"--host {args.host}: cannot listen on {args.host}:{args.port}: "
                         f"{exc.strerror or exc}") from None
    port = args.port
    if port == 0 and site._server is not None and site._server.sockets:  # type: ignore[union-attr]
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return port


async def stop_unstarted(app: Optional[web.Application], runner: Optional[web.AppRunner]) -> None:
    """Undo a start-up cut short by a stop signal: ``on_shutdown`` (the stage, the ASR hub, the
    clock) and the cleanup contexts of whatever had started."""
    if runner is not None and runner.server is not None:
        await runner.cleanup()   # set up: its own shutdown runs on_shutdown
        return
    if app is not None:
        app.on_shutdown.freeze()
        await app.shutdown()
    if runner is not None:
        await runner.cleanup()


@dataclass
class _Started:
    """What :func:`_start` got to; ``drained``: the stop after a signal finished (backstop)."""

    stage: Any = None
    app: Optional[web.Application] = None
    runner: Optional[web.AppRunner] = None
    link: Any = None
    drained: bool = False


async def _start(args: argparse.Namespace, parts: _Started) -> bool:
    """Build and start everything, recording each part in ``parts`` as it exists; True."""
    metrics = SfuMetrics()   # one registry: the stage's series appear at /metrics too
    metrics.watch_loop(asyncio.get_running_loop())
    parts.stage = await open_stage(args, metrics)
    parts.app = build_app(args, stage=parts.stage, metrics=metrics)
    parts.runner = make_runner(parts.app, args)
    port = await start_site(parts.runner, args)
    announce(args, port)
    front_cluster = os.environ.get(FRONT_CLUSTER_ENV) if websec.behind_front() else None
    if args.redis_url and front_cluster:   # a media worker: its front is the machine's node
        ctx = parts.app[SFU_CONTEXT]
        parts.link = FrontCluster(front_cluster, os.environ.get(websec.FRONT_TOKEN_ENV, ""))
        await parts.link.start()
        ctx.cluster = parts.link
        client = parts.link
        ctx.origins.peers = lambda: list(client.peer_urls)
    elif args.redis_url:   # several nodes behind one Redis (sfu/cluster_link.py, mediaserver/cluster)
        from .cluster_link import ClusterLink

        parts.link = ClusterLink(args, parts.app[SFU_CONTEXT])
        await parts.link.start(public_host(args), port)
    return True


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    signals = StopSignals(loop)   # first: a stop signal during start-up is never lost
    parts = _Started()
    started = await signals.guard(_start(args, parts))
    if not started or signals.event.is_set():   # undo what had started, exit as after a stop
        exit_now_on_second_signal(loop)
        backstop(args.drain_s, parts)
        if parts.link is not None:
            await parts.link.stop()
        await stop_unstarted(parts.app, parts.runner)
        if parts.app is None and parts.stage is not None:
            await loop.run_in_executor(None, parts.stage.shutdown)
        parts.drained = True
        return
    app, runner, link = parts.app, parts.runner, parts.link
    assert app is not None and runner is not None
    orphan = loop.create_task(_stop_when_front_dies(signals.event)) if websec.behind_front() else None
    await signals.wait()
    if orphan is not None:
        orphan.cancel()
    exit_now_on_second_signal(loop)
    drain = Drain(app[SFU_CONTEXT], runner, drain_s=args.drain_s, retry_after_ms=args.retry_hint_ms)
    backstop(args.drain_s, drain)   # a thread that will not join must not outlive the budget
    if link is not None:
        await link.stop()   # deregistered first: the other nodes take this node's rooms over
    await drain.run()


async def _stop_when_front_dies(stop: asyncio.Event, period_s: float = 1.0) -> None:
    """A media worker of ``--workers N`` drains and exits when its front is gone (killed with
    SIGKILL, so it could not stop its workers): the process is re-parented then."""
    front = os.getppid()
    while os.getppid() == front:
        await asyncio.sleep(period_s)
    logger.warning("the front process %d is gone: this media worker stops", front)
    stop.set()


def check_args(args: argparse.Namespace) -> None:
    """Raises :class:`UsageError` naming the flag of the first bad setting; warns once per flag
    that has no effect (``asr/options.py``, ``enhance/stage_options.py``)."""
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be within 0..65535")
    if args.max_participants < 2:
        raise UsageError("--max-participants must be at least 2")
    # an address of no interface here gathers no host candidate: every call failed, no word
    check_ice_hosts(comma_values(args.ice_host, ip_address), ICE_HOST_ADVICE)
    from ..asr.options import asr_flags_without_effect, validate_asr_args
    from ..enhance.stage_options import enhancer_flags_without_effect, validate_stage_args

    problem = (validate_asr_args(args) or websec.validate_args(args)
               or Limits.from_args(args).problem() or validate_drain_args(args))
    if not problem and not 1 <= args.workers <= MAX_WORKERS:
        problem = f"--workers must be within 1..{MAX_WORKERS} (or auto: one per usable core)"
    worker = websec.behind_front()   # a media worker: its front checked and warned already
    problem = problem or validate_stage_args(args, probe_device=not worker)
    if problem:
        raise UsageError(problem)
    for warning in [] if worker else asr_flags_without_effect(args) + enhancer_flags_without_effect(args):
        logger.warning("%s", name_sources(warning, args))   # a variable's setting named as it
    cores = usable_cores()
    if not worker and args.workers > cores:
        logger.warning("%s", name_sources(
            f"--workers {args.workers} is more than the {cores} usable core(s): the media workers "
            "and the shared enhancer will share them (auto: one per core)", args))


def main(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM; 0 after a stop, also one that came while it
    started (``sfu/startup.py``)."""
    remember_stop_signals()   # (mediaserver's cli did already) until the loop's handlers are in
    check_args(args)
    from .. import patches

    try:
        patches.apply()   # aiortc internals this server changes, checked first (mediaserver/patches.py)
    except patches.PatchError as exc:
        raise UsageError(str(exc)) from None
    early = stop_requested()
    if early is not None:
        logger.info("%s before start-up: not starting", signal.Signals(early).name)
        return 0
    if args.workers > 1:   # a front process; the workers run this function with --workers 1
        from ..workers.front import serve_front

        asyncio.run(serve_front(args, list(getattr(args, "_argv", None) or ["serve"])))
        return 0
    pin_host_addresses(comma_values(args.ice_host, ip_address))
    tolerate_consent_stalls()
    asyncio.run(serve(args))
    from ..asr.pool import abandoned_loads, exit_leaving_loads

    if abandoned_loads():   # stopped while a recogniser loaded: its thread must not hold the exit
        exit_leaving_loads(0)
    return 0
