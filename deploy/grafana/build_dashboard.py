"""Writes mediaserver.json (the Grafana dashboard) next to this file: ``python deploy/grafana/build_dashboard.py``.

Three rows: executive (rooms, streams, MOS proxy and distortion trend by model version),
on-call (tick lateness, late/concealed frames, loss, ASR drops, canary state) and debug
(per-worker CPU, batch sizes, step times). tests/test_deploy.py checks that every metric it
names exists in a live server's /metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "prometheus"}


def panel(pid: int, title: str, exprs: list[tuple[str, str]], x: int, y: int, *, unit: str = "short",
          kind: str = "timeseries", w: int = 8, h: int = 8) -> dict:
    return {"id": pid, "type": kind, "title": title, "datasource": DS,
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": e, "legendFormat": legend}
                        for i, (e, legend) in enumerate(exprs)]}


def row(pid: int, title: str, y: int) -> dict:
    return {"id": pid, "type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            "panels": []}


def dashboard() -> dict:
    p = []
    p.append(row(1, "Executive", 0))
    p.append(panel(2, "Rooms and participants", [("sum(mediaserver_rooms)", "rooms"),
                                                 ("sum(mediaserver_participants)", "participants"),
                                                 ("sum(mediaserver_publishers)", "publishers")], 0, 1))
    p.append(panel(3, "Enhanced streams by model", [("sum by (model_version) (mediaserver_enhancer_streams)",
                                                     "{{model_version}}")], 8, 1))
    p.append(panel(4, "MOS proxy (DNSMOS OVRL) by model", [
        ('sum by (model_version) (rate(mediaserver_enhancer_dnsmos_sum{score="ovrl",signal="enhanced"}[30m])) / '
         'sum by (model_version) (rate(mediaserver_enhancer_dnsmos_count{score="ovrl",signal="enhanced"}[30m]))',
         "{{model_version}} enhanced"),
        ('sum by (model_version) (rate(mediaserver_enhancer_dnsmos_sum{score="ovrl",signal="raw"}[30m])) / '
         'sum by (model_version) (rate(mediaserver_enhancer_dnsmos_count{score="ovrl",signal="raw"}[30m]))',
         "{{model_version}} raw")], 16, 1))
    p.append(panel(5, "Distortion: share of checked speech frames over-suppressed", [
        ("sum by (model_version) (rate(mediaserver_enhancer_distorted_frames_total[10m])) / "
         "sum by (model_version) (rate(mediaserver_enhancer_checked_frames_total[10m]))", "{{model_version}}")],
        0, 9, unit="percentunit"))
    p.append(panel(6, "Over-suppression events per minute", [
        ("60 * sum by (model_version) (rate(mediaserver_enhancer_distortion_events_total[10m]))",
         "{{model_version}}")], 8, 9))
    p.append(panel(7, "SNR before / after enhancement (median stream)", [
        ("histogram_quantile(0.5, sum by (le, model_version) (rate(mediaserver_enhancer_stream_snr_in_db_bucket[10m])))",
         "{{model_version}} in"),
        ("histogram_quantile(0.5, sum by (le, model_version) (rate(mediaserver_enhancer_stream_snr_out_db_bucket[10m])))",
         "{{model_version}} out")], 16, 9, unit="dB"))
    p.append(row(8, "On-call", 17))
    p.append(panel(9, "Media clock lag p95 / p99", [
        ("histogram_quantile(0.95, sum by (le, instance) (rate(mediaserver_clock_lag_seconds_bucket[5m])))", "p95 {{instance}}"),
        ("histogram_quantile(0.99, sum by (le, instance) (rate(mediaserver_clock_lag_seconds_bucket[5m])))", "p99 {{instance}}")],
        0, 18, unit="s"))
    p.append(panel(10, "Late, skipped and bypassed ticks per second", [
        ("sum by (instance) (rate(mediaserver_clock_late_ticks_total[5m]))", "late {{instance}}"),
        ("sum by (instance) (rate(mediaserver_clock_skipped_ticks_total[5m]))", "skipped {{instance}}"),
        ("sum by (instance) (rate(mediaserver_enhance_bypassed_ticks_total[5m]))", "bypassed {{instance}}")], 8, 18))
    p.append(panel(11, "Received frames by kind (loss shows as plc / cng)", [
        ("sum by (kind) (rate(mediaserver_frames_total[5m]))", "{{kind}}")], 16, 18))
    p.append(panel(12, "Concealed share and outbound drops", [
        ('sum(rate(mediaserver_frames_total{kind=~"plc|cng"}[5m])) / sum(rate(mediaserver_frames_total[5m]))', "concealed"),
        ("sum(rate(mediaserver_outbound_dropped_total[5m]))", "outbound drops/s")], 0, 26))
    p.append(panel(13, "ASR segments dropped per sink", [
        ("sum by (sink) (rate(mediaserver_asr_sink_dropped_total[5m]))", "{{sink}}")], 8, 26))
    p.append(panel(14, "Canary", [
        ("sum by (model_version) (mediaserver_canary_active)", "active {{model_version}}"),
        ("sum by (model_version) (mediaserver_canary_share)", "share {{model_version}}"),
        ("sum by (model_version, reason) (increase(mediaserver_canary_rollbacks_total[1h]))",
         "rollbacks {{model_version}} {{reason}}")], 16, 26))
    p.append(row(15, "Debug", 34))
    p.append(panel(16, "Enhancer worker CPU (cores)", [
        ("sum by (instance, worker) (rate(mediaserver_enhancer_cpu_seconds_total[1m]))", "{{worker}}"),
        ("sum by (instance, worker) (rate(mediaserver_enhancer_dnsmos_cpu_seconds_total[5m]))", "DNSMOS {{worker}}")],
        0, 35))
    p.append(panel(17, "Batch size (streams per tick) p50 / p95", [
        ("histogram_quantile(0.5, sum by (le, worker) (rate(mediaserver_enhancer_batch_streams_bucket[5m])))", "p50 {{worker}}"),
        ("histogram_quantile(0.95, sum by (le, worker) (rate(mediaserver_enhancer_batch_streams_bucket[5m])))", "p95 {{worker}}")],
        8, 35))
    p.append(panel(18, "Enhancer step and clock tick time p95", [
        ("histogram_quantile(0.95, sum by (le, worker) (rate(mediaserver_enhancer_tick_seconds_bucket[5m])))", "enhancer {{worker}}"),
        ("histogram_quantile(0.95, sum by (le, instance) (rate(mediaserver_clock_tick_seconds_bucket[5m])))", "clock tick {{instance}}")],
        16, 35, unit="s"))
    p.append(panel(19, "Network vs bypass frames by model", [
        ("sum by (model_version, path) (rate(mediaserver_enhancer_frames_total[5m]))", "{{model_version}} {{path}}")],
        0, 43))
    p.append(panel(20, "Suppression applied (median stream) and speech share", [
        ("histogram_quantile(0.5, sum by (le, model_version) (rate(mediaserver_enhancer_stream_suppression_db_bucket[10m])))",
         "suppression {{model_version}}"),
        ("sum by (model_version) (rate(mediaserver_enhancer_speech_frames_total[5m])) / "
         "sum by (model_version) (rate(mediaserver_enhancer_frames_total[5m]))", "speech share {{model_version}}")],
        8, 43))
    p.append(panel(21, "Clipped input frames per second", [
        ("sum by (model_version) (rate(mediaserver_enhancer_clipped_frames_total[5m]))", "{{model_version}}")], 16, 43))
    return {"uid": "mediaserver", "title": "mediaserver", "tags": ["mediaserver"], "timezone": "utc",
            "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": []}, "annotations": {"list": []}, "panels": p}


if __name__ == "__main__":
    out = Path(__file__).with_name("mediaserver.json")
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(out)
