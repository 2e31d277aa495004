"""The raw-vs-enhanced debug view: ``/debug.html`` and the JSON it polls.

* ``GET /debug/rooms``: per room, each participant's model and quality telemetry.
* ``GET /debug/spectra?room=R&identity=N&since=T``: the chosen participant's recent spectra,
  raw and enhanced (64 log-spaced bands, dB), 10 per second, plus telemetry and model.

Spectra are computed only for a participant someone is watching: each ``spectra`` call
(re)arms that stream for :data:`WATCH_S`; when nobody polls, the tap does nothing. Nothing is
stored beyond the last :data:`KEEP` columns in memory, and no audio at all (a snapshot needs
``--record-dir`` and the ``wav`` ASR sink, as before). With ``--secret`` both need
``Authorization: Bearer <secret>`` (the page passes ``?token=``); without it, loopback only.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import threading
import time
from collections import deque
from typing import Any, Callable, Optional, Sequence

import numpy as np
from aiohttp import web

from .websec import SERVER_SECRET, client_address, unauthorised

WATCH_S = 5.0
EVERY = 5  # one column per 5 frames (100 ms)
KEEP = 300  # columns kept per watched stream (30 s)
BANDS = 64
_EDGES = np.unique(np.round(np.geomspace(2, 481, BANDS + 1)).astype(int))


def band_db(frames: np.ndarray) -> np.ndarray:
    """[N, 960] → [N, len(_EDGES) - 1] mean bin power per band in dB re full scale (Hann window,
    log-spaced 100 Hz–24 kHz; white noise of RMS 0.05 reads about -54 dB)."""
    win = np.hanning(frames.shape[1])
    p = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2 / np.sum(win) ** 2  # a full-scale sine: -6 dB in its bin
    sums = np.add.reduceat(p, _EDGES[:-1], axis=1)[:, : len(_EDGES) - 1]
    return 10.0 * np.log10(sums / np.diff(_EDGES) + 1e-12)


class DebugTap:
    """Stage frame sink (worker thread): spectra of watched streams only."""

    def __init__(self) -> None:
        self._watch: dict[int, float] = {}  # handle id -> monotonic deadline (event loop writes)
        self._cols: dict[int, deque] = {}
        self._seq = itertools.count()
        self._n: dict[int, int] = {}  # frames seen per watched stream (worker thread)
        self._lock = threading.Lock()

    @property
    def watching(self) -> bool:
        """Someone polled a stream's spectra lately (until then a batch need not reach us)."""
        return bool(self._watch)

    def watch(self, handle_id: int) -> None:
        self._watch[handle_id] = time.monotonic() + WATCH_S

    def columns(self, handle_id: int, since: int) -> list[dict]:
        with self._lock:
            return [c for c in self._cols.get(handle_id, ()) if c["seq"] > since]

    def on_batch(self, handles: Sequence[Any], raw: np.ndarray, enhanced: np.ndarray, speech: np.ndarray) -> None:
        if not self._watch:
            return
        now = time.monotonic()
        for hid, until in list(self._watch.items()):
            if until < now:
                self._watch.pop(hid, None)
                with self._lock:
                    self._cols.pop(hid, None)
                self._n.pop(hid, None)
        rows = [i for i, h in enumerate(handles) if h.id in self._watch]
        if not rows:
            return
        with self._lock:
            for i in rows:
                h = handles[i]
                col = self._cols.setdefault(h.id, deque(maxlen=KEEP))
                n = self._n[h.id] = self._n.get(h.id, 0) + 1
                if n % EVERY:
                    continue
                r, e = band_db(np.stack([raw[i], enhanced[i]]))
                col.append({"seq": next(self._seq), "raw": np.round(r, 1).tolist(),
                            "enhanced": np.round(e, 1).tolist(), "speech": bool(speech[i])})


def authorise_debug(request: web.Request, *, secret: Optional[str]) -> None:
    """Raise the refusal of a ``/debug/…`` JSON request, or return: with ``--secret`` it needs
    ``Authorization: Bearer <secret>``, without it a loopback client (the one a front of
    ``--workers N`` forwards, :func:`~.websec.client_address`)."""
    if secret:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {secret}".encode()):
            raise unauthorised(request, [SERVER_SECRET])
        return
    try:
        ok = ipaddress.ip_address(client_address(request)).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise web.HTTPForbidden(text="the debug view without --secret is for loopback clients only")


async def debug_page(request: web.Request) -> web.StreamResponse:
    """``GET /debug``: the page (no secret in it; it asks for ``?token=``)."""
    from ..resources import static_dir

    return web.FileResponse(static_dir() / "debug.html")


def attach_debug(app: web.Application, *, stage: Any, manager: Any, secret: Optional[str]) -> DebugTap:
    """Serve ``/debug``, ``/debug/rooms`` and ``/debug/spectra`` over ``manager``'s rooms;
    ``stage`` (an ``EnhancerStage`` or a worker's ``SharedStage``) feeds the spectra."""
    tap = DebugTap()
    stage.frame_sinks.append(tap)

    def authorise(request: web.Request) -> None:
        authorise_debug(request, secret=secret)

    def handle_of(room: str, identity: str) -> Any:
        r = manager.rooms.get(room)
        p = r.participants.get(identity) if r else None
        if p is None or p.stream is None or p.stream.handle is None:
            raise web.HTTPNotFound(text="no such enhanced participant")
        return p.stream.handle

    async def rooms(request: web.Request) -> web.Response:
        authorise(request)
        out: dict[str, list] = {}
        for name, r in manager.rooms.items():
            out[name] = [{"identity": p.identity,
                          "model": p.stream.handle.active_model if p.stream and p.stream.handle else None,
                          "quality": p.stream.handle.telemetry.snapshot() if p.stream and p.stream.handle else {}}
                         for p in r.participants.values()]
        return web.json_response({"rooms": out})

    async def spectra(request: web.Request) -> web.Response:
        authorise(request)
        q = request.query
        h = handle_of(q.get("room", ""), q.get("identity", ""))
        try:
            since = int(q.get("since", "-1"))
        except ValueError:
            raise web.HTTPBadRequest(text="since must be an integer") from None
        tap.watch(h.id)
        return web.json_response({"model": h.active_model, "quality": h.telemetry.snapshot(),
                                  "bands": len(_EDGES) - 1, "columns": tap.columns(h.id, since)})

    app.router.add_get("/debug", debug_page)
    app.router.add_get("/debug/rooms", rooms)
    app.router.add_get("/debug/spectra", spectra)
    return tap
