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
