"""Prometheus metrics of the SFU, one registry per server so tests can run several."""

from __future__ import annotations

import asyncio
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class SfuMetrics:
    """All ``mediaserver_*`` series the server exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rooms = Gauge("mediaserver_rooms", "rooms with at least one participant", registry=r)
        self.participants = Gauge("mediaserver_participants", "connected participants", registry=r)
        self.publishers = Gauge(
            "mediaserver_publishers",
            "participants that send audio (their microphone negotiated sending; not listeners "
            "or participants without an answered offer): /healthz publishers", registry=r)
        self.ticks = Counter("mediaserver_clock_ticks_total", "media clock ticks", registry=r)
        self.late_ticks = Counter("mediaserver_clock_late_ticks_total",
                                  "ticks that started more than 10 ms late", registry=r)
        self.skipped_ticks = Counter("mediaserver_clock_skipped_ticks_total",
                                     "ticks dropped because the clock fell a frame behind",
                                     registry=r)
        self.tick_lag = Histogram("mediaserver_clock_lag_seconds",
                                  "how late each tick started (event loop lag)", registry=r,
                                  buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16))
        self.tick_work = Histogram("mediaserver_clock_tick_seconds",
                                   "time from tick start to all packets queued", registry=r,
                                   buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.04, 0.08))
        self.jitter_wait = Histogram(
            "mediaserver_jitter_wait_seconds",
            "delay the jitter buffer added to each decoded packet: its arrival to the playout "
            "of its first sample at a clock tick (the tick's deadline, so tick lateness is not "
            "in it)", registry=r,
            buckets=(0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.08, 0.1,
                     0.15, 0.2, 0.4))
        self.jitter_target = Histogram(
            "mediaserver_jitter_target_seconds",
            "the jitter buffer's target level when it played each packet (97th percentile of "
            "the packets' relative delay plus a frame; at least a frame, two while packets go "
            "missing)", registry=r,
            buckets=(0.02, 0.021, 0.022, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15,
                     0.2, 0.4))
        self.enhance_delay = Histogram(
            "mediaserver_clock_enhance_seconds",
            "time from a tick's deadline to its enhanced packets handed to the subscribers "
            "(queue, stage step, loop hops; the stage's 10 ms algorithmic delay not included)",
            registry=r, buckets=(0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.1, 0.2))
        self.enhance_failed = Counter(
            "mediaserver_enhance_failed_ticks_total",
            "ticks forwarded unprocessed because the enhancer stage failed (e.g. the shared "
            "inference process is gone)", registry=r)
        self.enhance_bypassed = Counter(
            "mediaserver_enhance_bypassed_ticks_total",
            "ticks forwarded without enhancement because the stage was behind", registry=r)
        self.frames = Counter("mediaserver_frames_total", "frames pulled per kind",
                              ["kind"], registry=r)
        self.packets_in = Counter("mediaserver_rtp_packets_in_total",
                                  "RTP packets taken from publishers", registry=r)
        self.rtp_unusable = Counter(
            "mediaserver_rtp_unusable_total",
            "RTP packets from publishers the media path cannot use, per reason "
            "(payload-type: not negotiated; codec: negotiated but not decoded)", ["reason"],
            registry=r)
        self.packets_out = Counter("mediaserver_packets_out_total",
                                   "encoded packets queued to subscribers", registry=r)
        self.dropped_out = Counter("mediaserver_outbound_dropped_total",
                                   "packets dropped because a subscriber queue was full",
                                   registry=r)
        self.signalling_errors = Counter("mediaserver_signalling_errors_total",
                                         "error replies sent", ["code"], registry=r)
        self.renegotiations = Counter("mediaserver_renegotiations_total",
                                      "server offers sent", registry=r)
        self.client_offers = Counter("mediaserver_client_reoffers_total",
                                     "client offers after the first, answered", registry=r)
        self.dtls_failures = Counter(
            "mediaserver_dtls_failures_total",
            "DTLS handshakes that failed (reason: handshake) or did not complete within "
            "--dtls-timeout of ICE connecting (reason: timeout)", ["reason"], registry=r)
        # limits (sfu/limits.py) and per-socket send queues (sfu/outbox.py)
        self.ws_sockets = Gauge("mediaserver_ws_sockets", "open /ws connections", registry=r)
        self.ws_send_queued = Gauge("mediaserver_ws_send_queue_messages",
                                    "messages waiting in all sockets' send queues", registry=r)
        self.ws_slow_consumer_drops = Counter(
            "mediaserver_ws_slow_consumer_drops_total",
            "sockets dropped for not reading (reason: queue-full, stalled)", ["reason"], registry=r)
        self.ws_refused_messages = Counter(
            "mediaserver_ws_rate_limited_messages_total",
            "inbound messages refused because their socket exceeded --ws-rate/--ws-burst", registry=r)
        self.limit_refusals = Counter(
            "mediaserver_limit_refusals_total",
            "connections, joins and sockets refused or closed by a limit "
            "(limit: sockets, sockets_per_ip, rooms, offer_timeout, rate)", ["limit"], registry=r)
        self.limits = Gauge("mediaserver_limit", "configured limits (sfu/limits.py)", ["limit"],
                            registry=r)
        # leak watch (benchmarks/soak.py): must stay flat across churn
        self.tasks = Gauge("mediaserver_asyncio_tasks",
                           "asyncio tasks alive in the server's event loop", registry=r)

    def watch_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Report ``loop``'s live task count at every scrape."""
        self.tasks.set_function(lambda: len(asyncio.all_tasks(loop)))

    def watch_publishers(self, count: Callable[[], int]) -> None:
        """Report ``count()`` (the publishers now) as ``mediaserver_publishers`` at every scrape."""
        self.publishers.set_function(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
