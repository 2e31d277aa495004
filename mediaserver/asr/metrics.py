"""Prometheus metrics of the ASR path (default registry, so the server's /metrics shows them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SEGMENTS = Counter("mediaserver_asr_segments_total", "Speech segments cut by the VAD segmenter")
SEGMENT_SECONDS = Counter("mediaserver_asr_segment_audio_seconds_total",
                          "Seconds of speech audio cut into segments")
SUBMITTED = Counter("mediaserver_asr_sink_items_total", "Items accepted into a sink queue", ["sink"])
DROPPED = Counter("mediaserver_asr_sink_dropped_total",
                  "Items dropped because a sink queue was full", ["sink"])
ERRORS = Counter("mediaserver_asr_sink_errors_total", "Sink failures (send, write, recognise)", ["sink"])
QUEUE_DEPTH = Gauge("mediaserver_asr_sink_queue_depth", "Items waiting in a sink queue", ["sink"])
CONNECTED = Gauge("mediaserver_asr_sink_connected", "1 when a networked sink is connected", ["sink"])
TRANSCRIPTS = Counter("mediaserver_asr_transcripts_total", "Transcripts produced", ["source"])
RECOGNISE_SECONDS = Histogram("mediaserver_asr_recognise_seconds",
                              "Wall time of one local recognition",
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16))
FRAME_ERRORS = Counter("mediaserver_asr_frame_errors_total", "Frames the hub rejected (bad shape)")
