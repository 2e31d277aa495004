"""``mediaserver serve --workers N``: the front process in front of N media worker processes.

The front owns the listening port: the browser client, ``/ws``, ``/healthz`` and ``/metrics``.
Each worker (:mod:`.process`) is a single-process server on 127.0.0.1 with its own event
loop, media clock and aiortc peer connections; media (ICE/DTLS/RTP) goes straight between
the client and the worker, only signalling passes through the front.

``/ws``: the front checks ``Origin`` and the per-address socket limits itself (for the whole
machine), reads the client's first message, and when it is a ``join`` relays the socket to
the worker of that room (:mod:`.placement`: a new room goes to the least loaded live worker).
Messages are relayed unchanged both ways, close codes included; the worker sees the
client's address and ``Origin`` (trusted with the front's token) and applies every other
rule (tokens, rates, sizes) as a single-process server does.

A worker that dies (a crash, ``kill -9``) takes down only its rooms: its relayed sockets get
``server-shutdown`` with a retry hint and close with 1012, the clients reconnect and are
placed on a live worker, and the worker is restarted. Other workers' calls never notice.

Other routes: ``/rooms/{room}/transcript`` goes to the room's worker (or asks each worker);
with enhancement, the model admin (``/models``, ``/admin/…``) goes to the shared inference
process that owns the models (:mod:`.admin_relay`) and ``/debug`` to the workers that own the
rooms, merged (:mod:`.debug_relay`), each checked here with the single process's rule.

With ``--redis-url`` the front is the machine's one cluster node (:mod:`.cluster_front`): it
registers, claims the rooms placed on its workers and renews their claims, and the workers'
signalling asks it (over loopback) where a new room belongs and whether a token was spent.

SIGTERM/SIGINT: new sockets are refused, every worker drains its calls (``server-shutdown``
to each participant, relayed) within ``--drain-s``, then the front exits. The front answers a
worker's close only after the client answered it, so a worker closes a participant's media
after its client read ``server-shutdown`` (``sfu/wsclose.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
from typing import Any, Optional

import aiohttp
from aiohttp import web

from ..config import UsageError
from ..enhance.shared_process import InferenceProcess
from ..enhance.stage_options import stage_argv
from ..sfu import websec
from ..sfu.server import SHARED_ENHANCER_ENV
from ..sfu.drain import CLOSE_SERVICE_RESTART, exit_now_on_second_signal, shutdown_message
from ..sfu.limits import ConnectionGate, Limits
from ..sfu.signalling import MAX_MESSAGE
from ..sfu.websec import FRONT_HEADER
from ..sfu.wsclose import Reader
from ..tasks import cancel_and_wait
from .admin_relay import ModelsRelay
from .cluster_client import FRONT_CLUSTER_ENV
from ..asr.local import MEDIA_WORKERS_ENV
from .cluster_front import FrontNode
from .debug_relay import DebugRelay
from .metrics import FrontMetrics, merge_worker_metrics
from .placement import NoWorker, Placement
from .process import WorkerProcess

logger = logging.getLogger(__name__)

FORWARDED_FOR = "X-Forwarded-For"
WAITED_HEADER = "X-Mediaserver-Waited-S"   # seconds the client's socket waited at the front
ROOM_NAMES_SHOWN = 50   # per worker in /healthz (guarded like the worker's own details)
POLL_S = 1.0   # the workers' /healthz poll (load for placement, lateness for /healthz)
RELAYS_END_S = 1.0   # on stop, once the workers exited: how long their relays may take to end
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
WORKER_LOST_MESSAGE = ("the media worker hosting this room stopped; reconnect after "
                       "retry_after_ms (the room moves to a running worker)")


def worker_name(index: int, prefix: Optional[str] = None) -> str:
    """Worker ``index``'s name, ``PREFIX-wN`` (``--worker-id``, default the host name): its
    ``worker`` label on every ``/metrics`` series about it, the front's own included."""
    return f"{prefix or socket.gethostname()}-w{index}"


def worker_argv(argv: list[str], index: int, prefix: Optional[str] = None) -> list[str]:
    """The worker's ``serve`` arguments: the user's, then loopback, a free port, one process,
    and its ``worker`` label (:func:`worker_name`) as its ``--worker-id``.

    Later flags win in argparse, so the appended ones override the user's ``--host/--port``.
    """
    return [*argv, "--host", "127.0.0.1", "--port", "0", "--workers", "1",
            "--worker-id", worker_name(index, prefix)]


def _free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the inference process's /metrics)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def room_of(first: str) -> Optional[str]:
    """The ``room`` of a ``join`` message, or None (anything else goes to any worker, which
    answers with the proper error)."""
    try:
        message = json.loads(first)
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("type") == "join":
        room = message.get("room")
        if isinstance(room, str) and 0 < len(room) <= 256:
            return room
    return None


def per_worker(reports: list[Optional[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """Each worker's ``key`` section of its ``/healthz`` (``reports[N]``: worker N's, None when
    it did not answer) as the front's ``/healthz`` lists it: one entry per worker that has one,
    in index order, ``{"index": N, **section}``, the same ``index`` as in ``workers``."""
    return [{"index": index, **report[key]} for index, report in enumerate(reports)
            if report and isinstance(report.get(key), dict)]


# /healthz asr: settings every worker has alike (its args), not counts to add up
SAME_ON_EVERY_WORKER = frozenset({"name", "engine", "device", "threads_per_worker", "feed"})


def _added(a: Any, b: Any, key: str = "") -> Any:
    """``a`` and ``b`` (one key of two workers' sections) added up: numbers summed, dicts key by
    key; a setting (:data:`SAME_ON_EVERY_WORKER`), a flag or a text as ``a`` has it."""
    if key in SAME_ON_EVERY_WORKER or isinstance(a, bool) or isinstance(b, bool):
        return a
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + b
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _added(a[k], b[k], k) if k in a and k in b else a.get(k, b.get(k))
                for k in {**a, **b}}
    return a


def machine_asr(sections: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The machine's ASR state for the front's ``/healthz`` ``asr``, in the shape of one
    process's (``asr/hub.py`` ``health()``), from each worker's (``sections``: the ``asr`` of
    the workers that answered): counts summed (``segments``, ``frames``, ``queue_depth``,
    ``dropped``, each sink's drops and recogniser ``workers``), ``sinks`` one entry per sink
    name, settings (:data:`SAME_ON_EVERY_WORKER`) as every worker has them. None without any
    (no ``--asr``, or no worker answered). Each worker's own is in its ``workers`` entry."""
    if not sections:
        return None
    total: dict[str, Any] = {}
    sinks: dict[Any, dict[str, Any]] = {}
    for section in sections:
        for sink in section.get("sinks") or []:
            name = sink.get("name")
            sinks[name] = _added(sinks[name], sink) if name in sinks else dict(sink)
        rest = {k: v for k, v in section.items() if k != "sinks"}
        total = _added(total, rest) if total else rest
    return {"sinks": list(sinks.values()), **total}


class Front:
    """The front's state: the workers, the placement, the gate; see the module docstring."""

    def __init__(self, args: argparse.Namespace, worker_args: list[str]) -> None:
        self.args = args
        self.workers_n = args.workers
        self.token = secrets.token_urlsafe(24)
        self.placement = Placement(args.workers)
        limits = Limits.from_args(args)
        self.offer_timeout_s = limits.offer_timeout_s
        self.gate = ConnectionGate(max_total=limits.max_sockets,
                                   max_per_address=limits.max_sockets_per_ip)
        self.origins = websec.origin_policy(args)
        self.metrics = FrontMetrics()
        self.draining = False
        self.relays: dict[int, set[_Link]] = {i: set() for i in range(args.workers)}
        self._lost_rooms: dict[int, set[str]] = {}   # worker -> rooms whose sockets it broke
        self.reports: dict[int, dict[str, Any]] = {}
        self.label = args.worker_id or socket.gethostname()   # workers are LABEL-wN in /metrics
        self.enhancer: Optional[InferenceProcess] = None
        self._socket_dir: Optional[str] = None
        env: dict[str, str] = {MEDIA_WORKERS_ENV: str(args.workers)}   # (their ASR pools' share)
        if not args.no_enhance:   # one enhancer for the machine, shared by the workers
            self._socket_dir = tempfile.mkdtemp(prefix="mediaserver-")   # mode 0700: ours only
            path = os.path.join(self._socket_dir, "enhancer.sock")
            self.enhancer = InferenceProcess(path, [*stage_argv(args), "--worker-id", f"{self.label}-enhancer",
                                                    # the model admin's changes outlive a restart
                                                    "--admin-state", os.path.join(self._socket_dir, "models.json")],
                                             metrics_port=_free_port(),
                                             log_level=str(getattr(args, "log_level", None) or "INFO"))
            env[SHARED_ENHANCER_ENV] = path
        self.procs = [WorkerProcess(i, worker_argv(worker_args, i, self.label), token=self.token,
                                    on_up=self._worker_up, on_exit=self._worker_exit, env=env)
                      for i in range(args.workers)]
        # with --redis-url the front is this machine's cluster node (workers/cluster_front.py)
        self.cluster: Optional[FrontNode] = FrontNode(self, args) if args.redis_url else None
        self.session: Optional[aiohttp.ClientSession] = None
        self._poller: Optional[asyncio.Task[None]] = None
        self._enhancer_watch: Optional[asyncio.Task[None]] = None

    # ---- workers ------------------------------------------------------------------------
    def _worker_up(self, index: int, port: int) -> None:
        self.placement.report(index, publishers=0)
        name = self.worker_name(index)
        self.metrics.worker_up.labels(name).set(1)
        # a worker's counters exist from its start at 0, not from its first restart or relayed
        # socket: rate() and alerts on them see a series before it first moves
        self.metrics.worker_restarts.labels(name)
        self.metrics.relayed.labels(name)

    def _worker_exit(self, index: int, code: int) -> None:
        rooms = set(self.placement.lost(index)) | self._lost_rooms.pop(index, set())
        self.reports.pop(index, None)
        self.metrics.worker_up.labels(self.worker_name(index)).set(0)
        if not self.draining:
            self.metrics.worker_restarts.labels(self.worker_name(index)).inc()
            logger.warning("media worker %d lost %d room(s): %s", index, len(rooms),
                           ", ".join(sorted(rooms)[:20]) or "-")

    async def _watch_enhancer(self) -> None:
        """Restart the shared inference process when it dies (same socket: the workers
        reconnect and reopen their streams by themselves; meanwhile calls go on unenhanced)."""
        assert self.enhancer is not None
        backoff = 1.0
        while not self.draining:
            proc = self.enhancer.proc
            assert proc is not None
            code = await asyncio.to_thread(proc.wait)
            if self.draining:
                return
            self.metrics.enhancer_restarts.inc()
            logger.error("the shared enhancer (pid %d) exited with %s: calls go on unenhanced; "
                         "restarting it in %.0f s", proc.pid,
                         f"signal {-code}" if code < 0 else f"code {code}", backoff)
            await asyncio.sleep(backoff)
            try:
                await asyncio.to_thread(self.enhancer.start)
                logger.warning("shared enhancer restarted (pid %d)", self.enhancer.pid)
                backoff = 1.0
            except (RuntimeError, UsageError) as exc:   # (its model file changed since)
                logger.error("shared enhancer did not restart: %s", exc)
                backoff = min(30.0, backoff * 2)

    def worker_name(self, index: int) -> str:
        """Worker ``index``'s ``worker`` label (:func:`worker_name`)."""
        return worker_name(index, self.label)

    def url(self, index: int, path: str) -> Optional[str]:
        port = self.procs[index].state.port
        return f"http://127.0.0.1:{port}{path}" if port is not None else None

    def live(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p.state.alive]

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=_HTTP_TIMEOUT)
        if self.enhancer is not None:   # (blocking: loads the model) before any worker needs it
            await asyncio.to_thread(self.enhancer.start)
            logger.info("shared enhancer (pid %d) at %s", self.enhancer.pid, self.enhancer.socket_path)
            self._enhancer_watch = asyncio.get_running_loop().create_task(
                self._watch_enhancer(), name="front-enhancer-watch")
        if self.cluster is not None:   # the workers ask the node through it (joins, tokens)
            url = await self.cluster.open()
            for proc in self.procs:
                proc.env[FRONT_CLUSTER_ENV] = url
        for proc in self.procs:
            proc.start()
        await asyncio.gather(*(p.ready.wait() for p in self.procs))
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="front-poll")

    async def stop(self, drain_s: float) -> None:
        self.draining = True
        await cancel_and_wait(self._poller)
        if self.cluster is not None:   # deregistered first: the other nodes may take the rooms over
            await self.cluster.stop()
        # the workers drain their own calls (server-shutdown, relayed to the clients)
        await asyncio.gather(*(p.stop(timeout_s=max(0.5, drain_s - 0.5)) for p in self.procs))
        await self._end_relays()
        if self.enhancer is not None:   # after the workers: none of them is using it now
            await asyncio.to_thread(self.enhancer.stop, 2.0)
            if self._enhancer_watch is not None:
                await self._enhancer_watch   # (its wait ended with the process)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self.session is not None:
            await self.session.close()

    async def _end_relays(self) -> None:
        """Once every worker has exited: let each relay end (the worker's close relayed, or
        the client told that its worker is gone: a worker killed after its drain time has its
        sockets' ends noticed only now), then tell and close whatever socket is still open."""
        links = [link for links in self.relays.values() for link in links]
        downs = [link.down for link in links if link.down is not None]
        if downs:
            await asyncio.wait(downs, timeout=RELAYS_END_S)
        for link in links:
            if not link.ws.closed:
                try:
                    await link.tell_gone(b"server stopping")
                except (ConnectionError, RuntimeError):
                    pass

    async def worker_health(self, index: int) -> Optional[dict[str, Any]]:
        url = self.url(index, "/healthz")
        if url is None or self.session is None:
            return None
        try:
            async with self.session.get(url, headers={FRONT_HEADER: self.token}) as resp:
                return await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def _poll(self) -> None:
        while True:
            for index in self.live():
                report = await self.worker_health(index)
                if report is not None and self.procs[index].state.alive:
                    self.reports[index] = report
                    self.placement.report(index, publishers=int(report.get("publishers", 0)))
            await asyncio.sleep(POLL_S)

    # ---- /ws ----------------------------------------------------------------------------
    async def relay(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            raise web.HTTPServiceUnavailable(text="the server is shutting down; reconnect shortly",
                                             headers={"Retry-After": "1"})
        origin = request.headers.get("Origin")
        if not self.origins.allows(origin, request.host):
            raise web.HTTPForbidden(text="this page's origin may not use this server (--allowed-origins)")
        address = request.remote or "unknown"
        refused = self.gate.refusal(address)
        if refused is not None:
            self.metrics.refusals.labels(refused).inc()
            if refused == "sockets":
                raise web.HTTPServiceUnavailable(text="the server has its maximum of connections "
                                                      "(--max-sockets); try again later",
                                                 headers={"Retry-After": "10"})
            raise web.HTTPTooManyRequests(text="too many connections from one address "
                                               "(--max-sockets-per-ip)", headers={"Retry-After": "10"})
        self.gate.open(address)
        try:
            return await self._relay(request, address, origin)
        finally:
            self.gate.close(address)

    async def _relay(self, request: web.Request, address: str, origin: Optional[str]) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * MAX_MESSAGE, heartbeat=30.0)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            msg = await asyncio.wait_for(ws.receive(), self.offer_timeout_s)
        except asyncio.TimeoutError:   # as a worker answers a silent socket
            self.metrics.refusals.labels("offer_timeout").inc()
            await ws.send_json({"type": "error", "code": "offer-timeout",
                                "message": f"join and send an offer within {self.offer_timeout_s:g} s "
                                           "of connecting"})
            await ws.close(code=1008, message=b"offer-timeout")
            return ws
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return ws   # closed before saying anything
        link = _Link(self, ws, request, address, origin, started)
        try:
            await link.run(msg)
        finally:
            await link.finish()
        return ws

    async def connect(self, index: int, request: web.Request, address: str, origin: Optional[str],
                      waited_s: float) -> Optional[aiohttp.ClientWebSocketResponse]:
        """A WebSocket to worker ``index`` on behalf of a client (None: it is not there)."""
        url = self.url(index, "/ws")
        assert self.session is not None
        headers = {FRONT_HEADER: self.token, FORWARDED_FOR: address, "Host": request.host,
                   WAITED_HEADER: f"{waited_s:.3f}"}
        if origin is not None:
            headers["Origin"] = origin
        try:
            if url is None:
                raise aiohttp.ClientError("worker not listening")
            # autoclose off: the worker's close waits until the client has its close, so the
            # worker closes the peer connection only after the client read everything before
            # it (a server-shutdown, then the close), as without the front
            return await self.session.ws_connect(url, headers=headers, max_msg_size=0,
                                                 autoping=True, autoclose=False,
                                                 timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("worker %d refused a relayed socket: %s", index, exc)
            return None

    async def _down(self, upstream: aiohttp.ClientWebSocketResponse, ws: web.WebSocketResponse,
                    reader: Reader, index: int, room: Optional[str]) -> None:
        """Worker → client until the worker closes; then close the client with the same code,
        or tell it the worker is gone when the connection broke without a close frame (``room``
        is then among the rooms worker ``index`` lost, for its exit's log line). ``reader``
        reads the client's socket (:class:`_Link`)."""
        reason, code = "", None
        try:
            while True:
                msg = await upstream.receive()
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    await _send(ws, msg)
                    continue
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    code, reason = msg.data, msg.extra or ""
                break   # CLOSE, CLOSED, ERROR
        except (ConnectionError, RuntimeError):
            pass   # the client went away while we wrote to it
        if code is not None:   # the worker closed: the client first, then the worker's reply
            if not ws.closed:
                # the client's socket is read no more, so the close waits for the client's
                # own (sent once it has read all before it, a server-shutdown included): the
                # worker hears back, and closes the peer connection, only then (sfu/wsclose.py)
                await reader.stop()
                await ws.close(code=code, message=str(reason).encode()[:120])
            await upstream.close(code=code)
            return
        if ws.closed:
            return
        # no close frame: the worker died
        self.metrics.lost_sockets.inc()
        if room is not None:   # (its socket is released before the worker's exit is seen)
            self._lost_rooms.setdefault(index, set()).add(room)
        try:
            await ws.send_json({**shutdown_message(self.args.retry_hint_ms),
                                "message": WORKER_LOST_MESSAGE})
        except (ConnectionError, RuntimeError):
            pass
        await ws.close(code=CLOSE_SERVICE_RESTART, message=b"worker lost")

    # ---- HTTP ---------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        reports = await asyncio.gather(*(self.worker_health(i) for i in range(self.workers_n)))
        workers = []
        for proc, report in zip(self.procs, reports):
            st = proc.state
            rep = report or {}
            ticks, late = int(rep.get("ticks", 0)), int(rep.get("late_ticks", 0))
            workers.append({
                "index": st.index, "pid": st.pid, "port": st.port,
                "alive": st.alive and report is not None,
                "restarts": max(0, st.starts - 1), "last_exit": st.last_exit,
                "rooms": rep.get("rooms", 0), "participants": rep.get("participants", 0),
                "streams": rep.get("participants", 0),   # its first name (participants, not enhancer streams)
                "publishers": rep.get("publishers", 0),
                # what placement compares (workers/placement.py): publishers as last polled,
                # sockets relayed since, rooms placed there
                "load": self.placement.load_of(st.index),
                "room_names": sorted(self.placement.rooms_of(st.index))[:ROOM_NAMES_SHOWN],
                "ticks": ticks, "late_ticks": late,
                "late_tick_pct": round(100.0 * late / ticks, 2) if ticks else 0.0,
                # its ASR state, as one process's /healthz asr (None without --asr)
                "asr": rep.get("asr") if isinstance(rep.get("asr"), dict) else None,
            })
        alive = [w for w in workers if w["alive"]]
        first = next((r for r in reports if r), {})
        enhancer = None
        if self.enhancer is not None:
            proc = self.enhancer.proc
            enhancer = {"pid": self.enhancer.pid, "alive": proc is not None and proc.poll() is None,
                        # each worker's view of its last shared call (batch of all workers)
                        "last": per_worker(reports, "enhancer")}
        # one shape for asr with or without --workers: the machine's, one process's keys
        asr = machine_asr([w["asr"] for w in workers if w["asr"] is not None])
        healthy = len(alive) == len(workers) and (enhancer is None or enhancer["alive"])
        return web.json_response({
            "status": "ok" if healthy else ("degraded" if alive else "down"),
            "workers": workers, "shared_enhancer": enhancer,
            "rooms": sum(w["rooms"] for w in workers),
            "participants": sum(w["participants"] for w in workers),
            "publishers": sum(w["publishers"] for w in workers),
            "ticks": sum(w["ticks"] for w in workers), "late_ticks": sum(w["late_ticks"] for w in workers),
            "enhancement": first.get("enhancement"), "model_version": first.get("model_version"),
            "asr": asr,
        }, status=200 if alive else 503)

    async def metrics_text(self, request: web.Request) -> web.Response:
        sources = {self.worker_name(i): self.url(i, "/metrics") for i in self.live()}
        if self.enhancer is not None:   # the shared stage's mediaserver_enhancer_* series
            sources[f"{self.label}-enhancer"] = f"http://127.0.0.1:{self.enhancer.metrics_port}/metrics"
        texts: dict[str, str] = {}
        for name, url in sources.items():
            if url is None or self.session is None:
                continue
            try:
                async with self.session.get(url, headers={FRONT_HEADER: self.token}) as resp:
                    if resp.status == 200:
                        texts[name] = await resp.text()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue   # a process that just died: its series are missing from this scrape
        body = merge_worker_metrics(texts) + self.metrics.render()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """Room routes to the room's worker; other dynamic GETs to one live worker."""
        parts = request.path.strip("/").split("/")
        room = parts[1] if len(parts) >= 2 and parts[0] == "rooms" else None
        placed = self.placement.worker_of(room) if room is not None else None
        targets: list[int] = [placed] if placed is not None else self.live()
        if room is None:
            targets = targets[:1]
        if not targets:
            raise web.HTTPServiceUnavailable(text="no media worker is running", headers={"Retry-After": "2"})
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type", "accept")}
        headers[FRONT_HEADER] = self.token
        last: Optional[web.Response] = None
        assert self.session is not None
        for index in targets:
            url = self.url(index, request.path_qs)
            if url is None:
                continue
            try:
                async with self.session.request(request.method, url, data=body or None,
                                                headers=headers) as resp:
                    last = web.Response(body=await resp.read(), status=resp.status,
                                        content_type=resp.content_type)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue
            if room is not None and last.status == 404 and index != targets[-1]:
                continue   # a room's transcript: ask the next worker
            break
        if last is None:
            raise web.HTTPBadGateway(text="the media worker did not answer")
        return last


class _Link:
    """One client socket relayed to a worker.

    Until the client's ``join`` the socket may sit on any worker (the least loaded one answers
    its pre-join messages: errors, as a single process would); the ``join`` moves it to the
    room's worker, so a room never splits over two workers whatever came before the join."""

    def __init__(self, front: Front, ws: web.WebSocketResponse, request: web.Request,
                 address: str, origin: Optional[str], started: float) -> None:
        self.front, self.ws, self.request = front, ws, request
        self.address, self.origin, self.started = address, origin, started
        self.index: Optional[int] = None
        self.room: Optional[str] = None
        self.upstream: Optional[aiohttp.ClientWebSocketResponse] = None
        self.down: Optional[asyncio.Task[None]] = None
        self.reader = Reader(ws)   # the client's socket; _down stops it to relay a worker's close

    async def run(self, first: aiohttp.WSMessage) -> None:
        if not await self._forward(first):
            return
        try:
            async for msg in self.reader:   # client → worker
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    if not await self._forward(msg):
                        return
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    break
        except ConnectionError:
            pass   # the worker's side broke: _down tells the client

    async def _forward(self, msg: aiohttp.WSMessage) -> bool:
        """Send ``msg`` to the worker it belongs to (moving a not-yet-joined socket to the
        room's worker on its join); False when the socket had to be closed."""
        front = self.front
        target = self.index
        room = room_of(msg.data) if self.room is None and msg.type == aiohttp.WSMsgType.TEXT else None
        try:
            if room is not None:
                target = front.placement.acquire(room)
                self.room = room
            elif target is None:
                target = front.placement.least_loaded()
        except NoWorker:
            await self.tell_gone(b"no worker")
            return False
        if target != self.index or self.upstream is None:
            await self._detach()   # a pre-join socket on another worker: nothing lives there
            waited = asyncio.get_running_loop().time() - self.started
            upstream = await front.connect(target, self.request, self.address, self.origin, waited)
            if upstream is None:
                await self.tell_gone(b"worker unavailable")
                return False
            self.index, self.upstream = target, upstream
            front.relays[target].add(self)
            front.metrics.relayed.labels(front.worker_name(target)).inc()
            self.down = asyncio.ensure_future(front._down(upstream, self.ws, self.reader, target,
                                                          self.room))
        assert self.upstream is not None
        await _send(self.upstream, msg)
        return True

    async def _detach(self) -> None:
        if self.down is not None:
            self.down.cancel()   # (cancelled, it leaves the client alone)
            await asyncio.gather(self.down, return_exceptions=True)
            self.down = None
        if self.upstream is not None:
            if not self.upstream.closed:
                await self.upstream.close(code=1000)
            self.upstream = None
        if self.index is not None:
            self.front.relays[self.index].discard(self)

    async def tell_gone(self, why: bytes) -> None:
        await self.ws.send_json(shutdown_message(self.front.args.retry_hint_ms))
        await self.ws.close(code=CLOSE_SERVICE_RESTART, message=why)

    async def finish(self) -> None:
        try:
            if self.reader.stopped and self.down is not None:
                await self.down   # the worker closed: _down answers it after the client's close
            if self.upstream is not None and not self.upstream.closed:
                await self.upstream.close(code=self.ws.close_code or 1000)
            if self.down is not None:
                await self.down
        finally:
            if self.index is not None:
                self.front.relays[self.index].discard(self)
                if self.room is not None:
                    self.front.placement.release(self.room, self.index)


def build_front_app(front: Front, args: argparse.Namespace) -> web.Application:
    from ..sfu.server import add_static_routes

    app = web.Application(client_max_size=256 * 1024)
    cluster = front.cluster
    websec.attach(app, args, peers=cluster.node_urls if cluster is not None else lambda: [])
    app.router.add_get("/ws", front.relay)
    app.router.add_get("/healthz", front.healthz)
    app.router.add_get("/metrics", front.metrics_text)
    app.router.add_route("*", "/rooms/{tail:.*}", front.proxy)
    app.router.add_get("/cluster", cluster.view if cluster is not None else front.proxy)
    if front.enhancer is not None:   # (as a single process: no model admin or /debug without)
        ModelsRelay(front).attach(app)
        DebugRelay(front).attach(app)
    add_static_routes(app)
    return app


async def serve_front(args: argparse.Namespace, worker_args: list[str]) -> None:
    """Run the front until SIGTERM/SIGINT; ``worker_args``: the ``serve`` command line.

    A stop signal while the workers start stops those already started (``sfu/startup.py``)."""
    from ..sfu.server import announce, make_runner, public_host, start_site, stop_unstarted
    from ..sfu.startup import StopSignals

    loop = asyncio.get_running_loop()
    signals = StopSignals(loop)   # first: a stop signal during start-up is never lost
    front = Front(args, worker_args)
    app = build_front_app(front, args)
    runner = make_runner(app, args)

    async def start() -> int:
        await front.start()
        port = await start_site(runner, args)
        if front.cluster is not None:   # named by the port it listens on (as one process)
            await front.cluster.start(public_host(args), port)
        logger.info("front with %d media workers (pids %s)", args.workers,
                    ", ".join(str(p.state.pid) for p in front.procs))
        announce(args, port)
        return port

    try:
        started = await signals.guard(start())
    except BaseException:   # (a model the enhancer cannot load: a UsageError) nothing left running
        await front.stop(0.5)
        await stop_unstarted(app, runner)
        raise
    if started is None or signals.event.is_set():
        exit_now_on_second_signal(loop)
        await front.stop(args.drain_s)
        await stop_unstarted(app, runner)
        return
    await signals.wait()
    exit_now_on_second_signal(loop)
    await front.stop(args.drain_s)
    await runner.cleanup()


async def _send(ws: Any, msg: aiohttp.WSMessage) -> None:
    if msg.type == aiohttp.WSMsgType.TEXT:
        await ws.send_str(msg.data)
    else:
        await ws.send_bytes(msg.data)
