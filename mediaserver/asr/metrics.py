"""Prometheus metrics of the ASR path, in their own registry that the server appends to /metrics.

Module-level (one per process): sinks and the hub count into them wherever they run.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()
_R = {"registry": REGISTRY}

SEGMENTS = Counter("mediaserver_asr_segments_total", "Speech segments cut by the VAD segmenter", **_R)
SEGMENT_SECONDS = Counter("mediaserver_asr_segment_audio_seconds_total",
                          "Seconds of speech audio cut into segments", **_R)
SUBMITTED = Counter("mediaserver_asr_sink_items_total", "Items accepted into a sink queue",
                    ["sink"], **_R)
DROPPED = Counter("mediaserver_asr_sink_dropped_total",
                  "Items dropped because a sink queue was full", ["sink"], **_R)
ERRORS = Counter("mediaserver_asr_sink_errors_total", "Sink failures (connect, send, write, recognise)",
                 ["sink"], **_R)
QUEUE_DEPTH = Gauge("mediaserver_asr_sink_queue_depth", "Items waiting in a sink queue", ["sink"], **_R)
CONNECTED = Gauge("mediaserver_asr_sink_connected", "1 when a networked sink is connected",
                  ["sink"], **_R)
WS_SEGMENTS = Counter("mediaserver_asr_ws_segments_total",
                      "Segments the WebSocket sink finished sending ('sent'), that the recogniser "
                      "acknowledged ('acknowledged'), and that it did not acknowledge in time or "
                      "before the connection ended ('unacknowledged')", ["state"], **_R)
WS_PENDING = Gauge("mediaserver_asr_ws_segments_pending",
                   "Segments sent to the WebSocket recogniser and not yet acknowledged", **_R)
WS_BYTES = Counter("mediaserver_asr_ws_audio_bytes_total",
                   "Audio bytes written to the WebSocket recogniser", **_R)
TRANSCRIPTS = Counter("mediaserver_asr_transcripts_total", "Transcripts produced", ["source"], **_R)
RECOGNISE_SECONDS = Histogram("mediaserver_asr_recognise_seconds", "Wall time of one local recognition",
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16), **_R)
FRAME_ERRORS = Counter("mediaserver_asr_frame_errors_total", "Frames the hub rejected (bad shape)", **_R)


def render() -> bytes:
    return generate_latest(REGISTRY)

WORKERS = Gauge("mediaserver_asr_workers", "Local recogniser workers running", **_R)
WORKER_RESTARTS = Counter("mediaserver_asr_worker_restarts_total",
                          "Local recogniser workers replaced after their recogniser failed", **_R)
CAPTIONS = Counter("mediaserver_asr_captions_total",
                   "Captions of the local streaming recogniser: partial (stable prefix grew) "
                   "and final", ["kind"], **_R)
PARTIALS_SUPERSEDED = Counter("mediaserver_asr_partials_superseded_total",
                              "Partial decodes replaced by a newer one before a worker was free "
                              "(expected under load; not a loss)", **_R)
CAPTION_DELAY = Histogram("mediaserver_asr_caption_delay_seconds",
                          "Wall time from the arrival of the last audio a caption covers to the "
                          "caption", ["kind"],
                          buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10), **_R)
ABORTS = Counter("mediaserver_asr_decode_aborts_total",
                 "Decodes in flight the local recogniser asked to stop: 'stale' (superseded: "
                 "the result would be discarded, or the talker's own final waits) and "
                 "'preempted' (another talker's final took the worker of a partial)",
                 ["reason"], **_R)
