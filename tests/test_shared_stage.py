"""The shared inference process (enhance/shared.py) and its worker client (enhance/shared_client.py).

Real processes: ``python -m mediaserver.enhance.shared`` on a Unix socket in tmp_path, and
SharedStage clients on the test's event loop (each one a worker-like connection).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mediaserver.enhance.shared_client import SharedStage, SharedStageError, SharedStageTimeout
from mediaserver.enhance.shared_process import InferenceProcess
from mediaserver.enhance.stage import FRAME, EnhancerStage
from test_enhance_common import espeak_speech
from waiting import poll, until

NO_HANG_S = 60.0  # client deadline where a test checks that something fails fast, not by timing out


def _start(tmp_path: Path, name: str, *args: str, slots: int = 64, window_ms: float = 5.0) -> InferenceProcess:
    log = open(tmp_path / f"{name}.log", "wb")
    proc = InferenceProcess(str(tmp_path / f"{name}.sock"), ["--enhancer-threads", "1", *args], slots=slots,
                            window_ms=window_ms, stderr=log)
    proc.start()
    return proc


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InferenceProcess]:
    proc = _start(tmp_path, "inference")
    yield proc
    proc.stop()


@pytest.fixture
def patient_server(tmp_path: Path) -> Iterator[InferenceProcess]:
    """A batch waits up to 30 s for every worker with streams (a bound, never reached when it works)."""
    proc = _start(tmp_path, "patient", window_ms=30_000.0)
    yield proc
    proc.stop()


def _frames(x: np.ndarray) -> list[np.ndarray]:
    x = np.concatenate([x, np.zeros(-len(x) % FRAME, np.float32)])
    return [x[i : i + FRAME] for i in range(0, len(x), FRAME)]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_stream_through_the_inference_process_equals_the_single_process_stage(tmp_path, server) -> None:
    speech = espeak_speech(tmp_path, lead_s=0.4, tail_s=0.4)
    rng = np.random.default_rng(3)
    x = (speech + 0.02 * rng.standard_normal(len(speech))).astype(np.float32)
    frames = _frames(x)
    local = EnhancerStage(threads=1)
    shared = await SharedStage.connect(server.socket_path, deadline_ms=10_000.0)
    try:
        lh, sh = local.open(), shared.open()
        got, want = [], []
        for i, f in enumerate(frames):
            if i == len(frames) // 2:  # settings change live and reach the inference process
                lh.atten_lim_db = sh.atten_lim_db = 12.0
            if i == len(frames) - 25:
                lh.enabled = sh.enabled = False
            want.append(local.process_sync([(lh, f, "normal")])[0])
            got.append((await shared.process([(sh, f, "normal")]))[0])
        for field in ("raw", "enhanced"):
            a = np.concatenate([getattr(o, field) for o in got])
            b = np.concatenate([getattr(o, field) for o in want])
            assert np.abs(a - b).max() <= 1e-4, field
        assert [o.speech for o in got] == [o.speech for o in want]
        assert any(o.speech for o in got) and not all(o.speech for o in got)
        enh = np.concatenate([o.enhanced for o in got])
        raw = np.concatenate([o.raw for o in got])
        assert not np.allclose(enh[: len(enh) // 2], raw[: len(raw) // 2], atol=1e-3)  # really enhanced
        assert sh.active_model == local.model_version and shared.handles(local.model_version) == [sh]
        assert shared.latency == local.latency
        snap = sh.telemetry.snapshot()  # sent about once a second: the stream ran ~3 s
        assert snap and snap["frames"] > 0
        assert shared.sli()[local.model_version].frames > 50  # the machine-wide canary input
    finally:
        await shared.aclose()
        local.shutdown()


async def test_two_workers_are_served_in_one_batched_call_per_tick(patient_server) -> None:
    w1 = await SharedStage.connect(patient_server.socket_path, deadline_ms=NO_HANG_S * 1000)
    w2 = await SharedStage.connect(patient_server.socket_path, deadline_ms=NO_HANG_S * 1000)
    try:
        h1, h2a, h2b = w1.open(), w2.open(), w2.open()
        await asyncio.gather(h1.opened, h2a.opened, h2b.opened)
        noise = np.random.default_rng(0).standard_normal((10, FRAME)).astype(np.float32) * 0.05
        before = (await w1.server_stats())["batches"]
        for t in range(5):
            first = asyncio.ensure_future(w1.process([(h1, noise[t], "normal")]))
            # worker 2 ticks only once worker 1's tick waits in the inference process
            await _until_stats(w2, lambda s: s["pending"] == 1 or first.done(), "worker 1's tick pending")
            out2 = await w2.process([(h2a, noise[t + 1], "normal"), (h2b, noise[t + 2], "normal")])
            out1 = await first
            assert len(out1) == 1 and len(out2) == 2
            assert w1.stats()["last_batch"] == 3 and w2.stats()["last_batch"] == 3
        stats = await w1.server_stats()
        assert stats["batches"] - before == 5  # one inference call per tick for both workers
        assert stats["last_batch"] == 3 and stats["max_batch"] == 3
        assert stats["workers"] == 2 and stats["streams"] == 3
    finally:
        await w1.aclose()
        await w2.aclose()


async def _until_stats(worker: SharedStage, condition: Callable[[dict], bool], what: str) -> dict:
    """Poll the inference process's stats until ``condition`` holds; AssertionError after NO_HANG_S."""
    async def poll() -> dict:
        while True:
            stats = await worker.server_stats()
            if condition(stats):
                return stats
            await asyncio.sleep(0.01)

    try:
        return await asyncio.wait_for(poll(), NO_HANG_S)
    except asyncio.TimeoutError:
        raise AssertionError(f"still waiting after {NO_HANG_S:g} s: {what}") from None


async def test_a_batch_does_not_wait_past_the_window_for_a_silent_worker(tmp_path) -> None:
    proc = _start(tmp_path, "window", window_ms=200.0)
    w1 = await SharedStage.connect(proc.socket_path, deadline_ms=NO_HANG_S * 1000)
    w2 = await SharedStage.connect(proc.socket_path, deadline_ms=NO_HANG_S * 1000)
    try:
        h1, h2 = w1.open(), w2.open()
        await asyncio.gather(h1.opened, h2.opened)
        out = await w1.process([(h1, np.zeros(FRAME, np.float32), "normal")])  # worker 2 sends nothing
        assert len(out) == 1
        stats = w1.stats()
        assert stats["last_batch"] == 1 and stats["last_wait_ms"] >= 200.0 * 0.99
    finally:
        await w1.aclose()
        await w2.aclose()
        proc.stop()


async def test_slots_are_reused_across_100_opens_and_closes_with_flat_memory(tmp_path) -> None:
    proc = _start(tmp_path, "churn", slots=8)
    workers = [await SharedStage.connect(proc.socket_path, deadline_ms=NO_HANG_S * 1000) for _ in range(2)]
    try:
        stats0 = await workers[0].server_stats()
        slots: set[int] = set()
        rss: list[int] = []
        frame = np.random.default_rng(1).standard_normal(FRAME).astype(np.float32) * 0.05
        for i in range(100):
            w = workers[i % 2]
            h = w.open()
            out = await w.process([(h, frame, "normal")])
            assert out[0].raw.shape == (FRAME,)
            assert h.slot is not None and h.refused is None
            slots.add(h.slot)
            w.close(h)
            if i in (9, 99):
                rss.append(_rss_kb(proc.pid))
        stats = await _until_stats(workers[0], lambda s: s["slots_in_use"] == 0, "every slot free")
        assert len(slots) <= 2 and stats["slots_high_water"] <= 2  # the free list, not fresh slots
        assert stats["slots"] == stats0["slots"] == 8 and stats["shm_bytes"] == stats0["shm_bytes"]
        assert rss[1] - rss[0] < 30_000, rss  # kB: flat within a generous bound
    finally:
        for w in workers:
            await w.aclose()
        proc.stop()


async def test_a_killed_inference_process_fails_the_worker_fast_with_a_clear_error(server) -> None:
    worker = await SharedStage.connect(server.socket_path, deadline_ms=NO_HANG_S * 1000)
    try:
        h = worker.open()
        await worker.process([(h, np.zeros(FRAME, np.float32), "normal")])
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait()
        with pytest.raises(SharedStageError, match="closed the connection") as failure:
            await worker.process([(h, np.zeros(FRAME, np.float32), "normal")])
        assert not isinstance(failure.value, SharedStageTimeout)  # told, not timed out
        with pytest.raises(SharedStageError, match="closed the connection"):  # and every tick after
            await worker.process([(worker.open(), np.zeros(FRAME, np.float32), "normal")])
        assert worker.errors == 2 and worker.deadline_misses == 0
    finally:
        await worker.aclose()
    with pytest.raises(SharedStageError, match="cannot connect"):
        await SharedStage.connect(server.socket_path, timeout_s=NO_HANG_S)


async def test_an_idle_worker_reconnects_to_a_restarted_inference_process_by_itself(tmp_path) -> None:
    """A worker with no streams never ticks. A fresh user's trial saw such a worker stay
    disconnected after the front restarted the inference process (``/healthz`` said ok) until
    a room was placed on it 16 s later, and its first ticks then failed. It reconnects by itself
    now, and its first stream is enhanced from its first tick."""
    first = _start(tmp_path, "restart")
    worker = await SharedStage.connect(first.socket_path, deadline_ms=NO_HANG_S * 1000)
    second = None
    try:
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait()
        await until(lambda: not worker.stats()["connected"], timeout=NO_HANG_S, what="the loss seen")
        second = _start(tmp_path, "restart")   # the front's restart: the same socket path
        await until(lambda: worker.stats()["connected"], timeout=NO_HANG_S,
                    what="an idle worker connected again without a tick")
        assert worker.reconnects == 1 and worker.server_pid == second.pid
        h = worker.open()
        speech = (0.1 * np.sin(2 * np.pi * 220 * np.arange(FRAME) / 48000)).astype(np.float32)
        for _ in range(3):
            (out,) = await worker.process([(h, speech, "normal")])
        assert worker.errors == 0 and worker.ticks == 3 and float(np.abs(out.enhanced).max()) > 0
    finally:
        await worker.aclose()
        if second is not None:
            second.stop()
    assert all(t.get_name() != "shared-stage-reconnect" for t in asyncio.all_tasks())   # owned, ended


async def test_a_tick_past_the_deadline_is_counted_and_the_next_ticks_recover(server) -> None:
    registry = CollectorRegistry()
    worker = await SharedStage.connect(server.socket_path, deadline_ms=500.0, registry=registry, worker="w7")
    misses = lambda: registry.get_sample_value(  # noqa: E731
        "mediaserver_enhancer_shared_deadline_misses_total", {"worker": "w7"})
    frame = np.zeros(FRAME, np.float32)
    try:
        h = worker.open()
        await h.opened
        await worker.process([(h, frame, "normal")])
        assert misses() == 0
        os.kill(server.pid, signal.SIGSTOP)  # the inference process cannot answer
        try:
            with pytest.raises(SharedStageTimeout):
                await worker.process([(h, frame, "normal")])
            # one tick in flight: the next one is refused at once, its slots are still the inference's
            with pytest.raises(SharedStageTimeout, match="previous tick is still with the inference process"):
                await worker.process([(h, frame, "normal")])
            assert misses() == 2
        finally:
            os.kill(server.pid, signal.SIGCONT)
        await until(lambda: not worker.busy, what="the late reply")
        out = await worker.process([(h, frame, "normal")])
        assert len(out) == 1 and misses() == 2
    finally:
        await worker.aclose()


def test_a_worker_connecting_to_the_shared_enhancer_never_imports_torch() -> None:
    code = ("import sys, mediaserver.enhance.shared_client, mediaserver.enhance.shared_process; "
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent).returncode == 0


# A stand-in for the front: it starts the inference process (which gets --parent-pid = this
# process), says both pids, and waits to be killed.
FRONT_STAND_IN = r"""
import sys, time
from mediaserver.enhance.shared_process import InferenceProcess
proc = InferenceProcess(sys.argv[1], ["--enhancer-threads", "1", "--log-level", "WARNING"])
proc.start()
print(proc.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pidfds_on(pid: int) -> list[int]:
    """The pids that ``pid``'s open pidfds name (``/proc/PID/fdinfo``: a pidfd has a ``Pid:`` line)."""
    named = []
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue
        named += [int(line.split()[1]) for line in text.splitlines() if line.startswith("Pid:")]
    return named


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfd_open is Linux 5.3+ only")
def test_the_inference_process_is_told_when_its_front_dies_not_by_polling(tmp_path: Path) -> None:
    """``kill -9`` of the front: its inference process stops by itself. It polled ``getppid()``
    once a second (a fresh user's trial 4 §9 named that second); it now holds a pidfd on the
    process that started it, which the kernel makes readable the moment that process exits,
    and its loop waits on it (the poll stays where there is no pidfd)."""
    sock = tmp_path / "e.sock"
    front = subprocess.Popen([sys.executable, "-c", FRONT_STAND_IN, str(sock)], cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                             stdout=subprocess.PIPE, text=True)
    try:
        assert front.stdout is not None
        line = front.stdout.readline()
        assert line.strip().isdigit(), line
        child = int(line)
        assert front.pid in _pidfds_on(child)   # waits on the front's exit, not on a timer
        front.kill()
        front.wait()
        poll(lambda: not _alive(child), timeout=60, interval=0.01,
             what="the inference process ending after its front was killed")
    finally:
        if front.poll() is None:
            front.kill()
            front.wait()


# ---- the sans-I/O parts: the tick batcher and the message framing, with explicit time ----------
def test_the_tick_batcher_runs_a_batch_once_every_worker_ticked_or_at_the_window() -> None:
    from mediaserver.enhance.shared import TickBatcher, _Tick, _Worker

    a, b = _Worker(1, None), _Worker(2, None)   # type: ignore[arg-type]  (no transport needed here)
    batcher = TickBatcher(window_s=0.005)
    assert batcher.deadline is None and not batcher.ready(0.0, [a, b])
    batcher.add(_Tick(a, 1, False, [(1, "normal")]), now=10.000)
    assert batcher.deadline == pytest.approx(10.005)
    assert not batcher.ready(10.001, [a, b])          # b has streams and has not ticked yet
    assert batcher.ready(10.005, [a, b])              # ... but the window is over
    assert batcher.ready(10.001, [a])                 # b without streams is not waited for
    batcher.add(_Tick(b, 7, False, []), now=10.002)
    assert batcher.ready(10.002, [a, b])
    batch, waited = batcher.take(10.002)
    assert [t.worker for t in batch] == [a, b] and waited == pytest.approx(0.002)
    assert batcher.deadline is None and batcher.pending == []
    # a worker that caught up sends two ticks: one per batch, the second opens the next one
    batcher.add(_Tick(a, 2, False, []), now=11.0)
    batcher.add(_Tick(a, 3, False, []), now=11.0)
    batcher.add(_Tick(b, 8, False, []), now=11.001)
    batch, _ = batcher.take(11.001)
    assert [(t.worker, t.seq) for t in batch] == [(a, 2), (b, 8)]
    assert [t.seq for t in batcher.pending] == [3] and batcher.deadline == pytest.approx(11.006)


def _hello_server(path: str, chunks: list[bytes]) -> threading.Thread:
    """A one-connection Unix socket at ``path`` that sends a memfd with ``chunks[0]``, then
    each further chunk in its own write (a short pause between: separate reads, mostly), then
    closes."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        fd = os.memfd_create("hello-test")
        try:
            socket.send_fds(conn, [chunks[0]], [fd])
            for chunk in chunks[1:]:
                time.sleep(0.02)
                conn.sendall(chunk)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)   # until the client closes
        finally:
            os.close(fd)
            conn.close()
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("split", ["whole", "byte-by-byte", "with-the-next-message"])
def test_the_hello_is_framed_as_every_other_message(tmp_path: Path, split: str) -> None:
    """``handshake`` reads the hello through the same sans-I/O FrameParser as every later
    message (it framed the hello by hand beside it): a hello in one read, split over many,
    or followed by the next message in the same read gives the hello; an oversized header
    is a SharedStageError naming the socket."""
    from mediaserver.enhance.shared_client import handshake
    from mediaserver.enhance.shared_wire import MAX_MESSAGE, encode

    hello = {"t": "hello", "capacity": 4, "model_version": "v1"}
    wire = encode(hello)
    chunks = {"whole": [wire], "byte-by-byte": [wire[i : i + 1] for i in range(len(wire))],
              "with-the-next-message": [wire + encode({"t": "done", "seq": 1})]}[split]
    path = str(tmp_path / "hello.sock")
    thread = _hello_server(path, chunks)
    sock, got, fd = handshake(path, NO_HANG_S)
    try:
        assert got == hello and os.fstat(fd).st_size == 0
    finally:
        sock.close()
        os.close(fd)
        thread.join(NO_HANG_S)
    bad = str(tmp_path / "bad.sock")
    thread = _hello_server(bad, [(MAX_MESSAGE + 1).to_bytes(4, "big")])
    with pytest.raises(SharedStageError, match="cannot connect to the inference process at .*bad.sock"):
        handshake(bad, NO_HANG_S)
    thread.join(NO_HANG_S)


@pytest.mark.parametrize("chunks", [[b"\x00\x00"], [(1 << 30).to_bytes(4, "big")]],
                         ids=["closed-during-hello", "oversized-header"])
def test_a_failed_handshake_leaks_neither_its_socket_nor_the_descriptor_it_got(tmp_path: Path, chunks) -> None:
    """A worker retries the handshake every RECONNECT_S while the inference process restarts:
    a hello cut short, or a bad one, after the shared block's descriptor arrived left the
    socket and the descriptor open at each try. Five failed tries leave no descriptor open."""
    from mediaserver.enhance.shared_client import handshake

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for k in range(5):
        path = str(tmp_path / f"cut{k}.sock")
        thread = _hello_server(path, chunks)
        with pytest.raises(SharedStageError):
            handshake(path, NO_HANG_S)
        thread.join(NO_HANG_S)
    assert open_fds() == before


def test_messages_are_framed_whatever_the_socket_reads_split_them_into() -> None:
    from mediaserver.enhance.shared_wire import MAX_MESSAGE, FrameParser, ProtocolError, encode

    wire = encode({"t": "done", "seq": 1}) + encode({"t": "opened", "id": 2, "slot": 0})
    byte_by_byte = FrameParser()
    assert [m for i in range(len(wire)) for m in byte_by_byte.feed(wire[i : i + 1])] == [
        {"t": "done", "seq": 1}, {"t": "opened", "id": 2, "slot": 0}]
    assert FrameParser().feed(wire + wire[:3]) == [{"t": "done", "seq": 1}, {"t": "opened", "id": 2, "slot": 0}]
    with pytest.raises(ProtocolError):
        FrameParser().feed((MAX_MESSAGE + 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        FrameParser().feed(len(b"[1]").to_bytes(4, "big") + b"[1]")   # not a message object
