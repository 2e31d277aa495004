"""Mutation check: break one claim at a time and prove that the claim's own tests notice.

``python -m tests.mutations`` (from the repository root) copies the repository into a scratch
folder (``git archive HEAD``; ``--worktree`` copies the working tree's tracked and untracked
files instead), then for each curated breakage below:

1. runs the claim's tests on the unmutated copy (the baseline; they must pass, or a "catch"
   would prove nothing),
2. applies the breakage (exact text replacements; a replacement that no longer matches the
   code is reported as ``stale``, which fails the check too: the list must follow the code),
3. runs the same tests again: the breakage is ``caught`` only when at least one of them fails
   (pytest exit code 1; an import or collection error is ``broken``, not a catch),
4. restores the file.

The shared working tree is never touched. The result goes to
``benchmarks/results/mutations.json`` (``--json``) and a table to stdout; the exit code is 0
only if every breakage was caught. ``--only NAME`` runs a subset; ``--list`` prints the list.

Each entry names the tests written *for that claim*: a breakage caught only by some unrelated
unit table does not count. Add an entry for every claim an issue fixes (revert the fix).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (must occur exactly once) by ``new`` in ``path``."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutation:
    name: str
    claim: str
    source: str                       # where the claim comes from (issue and section)
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]            # pytest node ids or files: the claim's own tests
    timeout_s: int = 1500


MUTATIONS: tuple[Mutation, ...] = (
    # ---- issue 12: telemetry, model registry, live switch, canary, DNSMOS, deploy -------------
    Mutation(
        name="panel-quality-missing",
        claim="each participant sees their own quality telemetry in the connection panel",
        source="issue 12 telemetry",
        edits=(Edit("static/js/stats.js", "  return (e && e.quality) || {};\n", "  return {};  // mutation\n"),),
        tests=("tests/test_stats_panel.py::test_my_quality_telemetry_has_rows_in_the_connection_panel",),
    ),
    Mutation(
        name="over-suppression-never-flagged",
        claim="the over-suppression signal fires on an enhancer that removes speech (and not on ours)",
        source="issue 12 telemetry",
        edits=(Edit("mediaserver/enhance/telemetry.py",
                    "        distorted = checked & (b_enh < clean * 10.0 ** (-DISTORTION_DB / 10.0))\n",
                    "        distorted = checked & False  # mutation\n"),),
        tests=("tests/test_telemetry.py::test_over_suppression_fires_on_an_enhancer_that_removes_speech",),
    ),
    Mutation(
        name="over-suppression-flags-noise-removal",
        claim="removing noise under speech is not over-suppression (ours stays silent)",
        source="issue 12 telemetry",
        edits=(Edit("mediaserver/enhance/telemetry.py", "        clean = b_raw - st[:, N_BAND]\n",
                    "        clean = b_raw  # mutation: the noise's share not subtracted\n"),
               Edit("mediaserver/enhance/telemetry.py", "CHECK_SNR_DB = 10.0 ", "CHECK_SNR_DB = 0.0 ")),
        tests=("tests/test_telemetry.py::test_ours_distorts_almost_no_checked_frame",
               "tests/test_telemetry.py::test_snr_estimate_within_3_db_of_the_known_snr"),
    ),
    Mutation(
        name="noise-floor-frozen-in-speech",
        claim="the noise floor follows a noise rise under a VAD that never closes (no false over-suppression)",
        source="issue 17 CI (telemetry)",
        edits=(Edit("mediaserver/enhance/telemetry.py",
                    "            creep = audible & (weight == 0.0)\n",
                    "            creep = audible & False  # mutation: the floor never rises in speech\n"),),
        tests=("tests/test_telemetry.py::test_floor_follows_a_noise_rise_under_a_vad_that_never_closes",),
    ),
    Mutation(
        name="over-suppression-checked-on-a-climbing-floor",
        claim="frames are checked for over-suppression only against a confirmed noise floor",
        source="issue 17 CI (telemetry)",
        edits=(Edit("mediaserver/enhance/telemetry.py",
                    "        trusted = (st[:, STALE] <= STALE_FRAMES) & (st[:, HEARD] > WARMUP_FRAMES)",
                    "        trusted = st[:, STALE] >= 0  # mutation"),),
        tests=("tests/test_telemetry.py::test_floor_follows_a_noise_rise_under_a_vad_that_never_closes",),
    ),
    Mutation(
        name="snr-estimate-over-every-speech-frame",
        claim="an utterance with a known SNR gives an estimate within 3 dB",
        source="issue 12 telemetry",
        edits=(Edit("mediaserver/enhance/telemetry.py",
                    "            active = speech & (p > st[:, floor])",
                    "            active = p > 0  # mutation: noise frames count as speech"),),
        tests=("tests/test_telemetry.py::test_snr_estimate_within_3_db_of_the_known_snr",),
    ),
    Mutation(
        name="model-version-label-missing",
        claim="every enhancer metric carries model_version",
        source="issue 12 model registry",
        edits=(Edit("mediaserver/enhance/stage.py",
                    '            self.frames.labels(path, model, w)\n',
                    '            self.frames.labels(path, "", w)  # mutation\n'),
               Edit("mediaserver/enhance/stage.py",
                    '            self.frames.labels("bypass", model, w).inc(total - net)\n',
                    '            self.frames.labels("bypass", "", w).inc(total - net)  # mutation\n'),
               Edit("mediaserver/enhance/stage.py",
                    '            self.frames.labels("network", model, w).inc(net)\n',
                    '            self.frames.labels("network", "", w).inc(net)  # mutation\n')),
        tests=("tests/test_enhance_stage.py::test_stage_exports_metrics",),
    ),
    Mutation(
        name="telemetry-counted-under-default-model",
        claim="Prometheus gets the telemetry counters by the stream's own model version",
        source="issue 12 telemetry",
        edits=(Edit("mediaserver/enhance/stage.py", "                    counter.labels(model, w).inc(k)\n",
                    "                    counter.labels(default_model, w).inc(k)  # mutation\n"),),
        tests=("tests/test_telemetry.py::test_prometheus_gets_counters_by_model_and_worker_only",),
    ),
    Mutation(
        name="live-switch-drops-a-frame",
        claim="a live model switch drops no frame",
        source="issue 12 model registry",
        edits=(Edit("mediaserver/enhance/stage.py",
                    "                enhanced[i] = enhanced[i] * (1.0 - _FADE_IN) + new_out[j] * _FADE_IN\n",
                    "                enhanced[i] = 0.0  # mutation\n"),),
        tests=("tests/test_model_switch.py::test_live_switch_is_warmed_cross_faded_and_drops_no_frame",),
    ),
    Mutation(
        name="live-switch-not-cross-faded",
        claim="a live model switch is cross-faded, not a jump",
        source="issue 12 model registry",
        edits=(Edit("mediaserver/enhance/stage.py",
                    "                enhanced[i] = enhanced[i] * (1.0 - _FADE_IN) + new_out[j] * _FADE_IN\n",
                    "                enhanced[i] = new_out[j]  # mutation\n"),),
        tests=("tests/test_model_switch.py::test_live_switch_is_warmed_cross_faded_and_drops_no_frame",),
    ),
    Mutation(
        name="live-switch-cold-start",
        claim="the new model is warmed up on the same input before it is heard (state reset, no start-up gap)",
        source="issue 12 model registry",
        edits=(Edit("mediaserver/enhance/stage.py",
                    "SWITCH_WARM_FRAMES = 5 ", "SWITCH_WARM_FRAMES = 1 "),),
        tests=("tests/test_model_switch.py::test_live_switch_is_warmed_cross_faded_and_drops_no_frame",),
    ),
    Mutation(
        name="registry-verify-ignores-sha256",
        claim="mediaserver models verify recomputes each model's sha256",
        source="issue 12 model registry",
        edits=(Edit("mediaserver/enhance/registry.py", "            elif actual != entry.sha256:\n",
                    "            elif False:  # mutation\n"),),
        tests=("tests/test_model_switch.py::test_registry_resolves_names_and_verifies_sha256",
               "tests/test_model_switch.py::test_models_command_lists_shows_and_verifies"),
    ),
    Mutation(
        name="admin-open-without-secret",
        claim="the model admin endpoints need the server secret",
        source="issue 12 model registry",
        edits=(Edit("mediaserver/sfu/models_admin.py",
                    "    given = request.headers.get(\"Authorization\", \"\").encode()\n",
                    "    return  # mutation\n"),),
        tests=("tests/test_canary.py::test_admin_endpoints_switch_a_room_live_and_need_the_secret",
               "tests/test_workers_admin.py::test_the_model_admin_through_the_front_switches_rooms_on_both_workers"),
    ),
    Mutation(
        name="canary-never-rolls-back",
        claim="an over-suppressing canary is rolled back automatically during a real call",
        source="issue 12 canary",
        edits=(Edit("mediaserver/enhance/canary.py", "        reason = self._judge(delta, dmos)\n",
                    "        reason = self._judge(delta, dmos) and None  # mutation\n"),),
        tests=("tests/test_canary.py::test_canary_rules",
               "tests/test_canary.py::test_an_over_suppressing_canary_is_rolled_back_during_a_call",
               "tests/test_workers_admin.py::test_an_over_suppressing_canary_is_rolled_back_by_itself_on_both_workers"),
    ),
    Mutation(
        name="canary-rollback-leaves-rooms",
        claim="a rollback moves the canary's rooms back to the stable model without dropping the call",
        source="issue 12 canary",
        edits=(Edit("mediaserver/enhance/model_control.py", "            self.stage.switch(handle, canary.stable)\n",
                    "            pass  # mutation\n"),),
        tests=("tests/test_canary.py::test_an_over_suppressing_canary_is_rolled_back_during_a_call",
               "tests/test_workers_admin.py::test_a_canary_is_accepted_at_start_with_workers_and_rolled_back_on_both"),
    ),
    Mutation(
        name="dnsmos-on-by-default",
        claim="the sampled MOS proxy is off by default",
        source="issue 12 MOS proxy",
        edits=(Edit("mediaserver/enhance/stage_options.py",
                    'add_option(parser, "--dnsmos-sample-s", type=number_in(9, or_zero=True), default=0.0,',
                    'add_option(parser, "--dnsmos-sample-s", type=number_in(9, or_zero=True), default=60.0,'),),
        tests=("tests/test_mos.py::test_dnsmos_sampling_is_off_by_default",),
    ),
    Mutation(
        name="alert-uses-missing-metric",
        claim="every metric the alert rules and dashboard use exists in a live /metrics",
        source="issue 12 dashboards and alerts",
        edits=(Edit("deploy/prometheus/alerts.yml",
                    "expr: sum by (model_version) (increase(mediaserver_enhancer_distortion_events_total[10m])) > 20",
                    "expr: sum by (model_version) (increase(mediaserver_enhancer_distortion_total[10m])) > 20"),),
        tests=("tests/test_deploy.py::test_every_metric_in_rules_and_dashboard_exists_after_a_real_call",),
    ),
    Mutation(
        name="no-enhancement",
        claim="the server enhances each speaker (better than the same audio passed through)",
        source="issue 17 §1",
        edits=(Edit("mediaserver/enhance/streaming.py",
                    "            out_spec = apply_mask(spec, mask, lim)\n",
                    "            out_spec = 0.5 * spec  # mutation: the network's mask ignored\n"),),
        tests=("tests/test_sfu_enhance.py::"
               "test_enhanced_call_beats_a_pass_through_call_of_the_same_audio",),
    ),
    Mutation(
        name="jitter-min-delay-300ms",
        claim="the receive path adds a bounded delay (no ratchet to 300 ms)",
        source="issue 17 §2",
        edits=(Edit("mediaserver/media/jitter.py",
                    "    min_delay_ms: float = 20.0  #",
                    "    min_delay_ms: float = 300.0  # mutation;"),
               Edit("mediaserver/media/jitter.py",
                    "    loss_min_delay_ms: float = 40.0  #",
                    "    loss_min_delay_ms: float = 300.0  # mutation;")),
        tests=("tests/test_loss_e2e.py::test_delay_measured_from_content_stays_bounded",),
    ),
    Mutation(
        name="no-loss-repair",
        claim="lost packets are repaired (FEC, PLC) instead of played as silence",
        source="issue 17 §3",
        edits=(Edit("mediaserver/media/opus.py",
                    '            raise OpusError("opus_decode_float(fec)", n)\n'
                    "        return self._buf[:n]\n",
                    '            raise OpusError("opus_decode_float(fec)", n)\n'
                    "        return np.zeros(n, dtype=np.float32)  # mutation\n"),
               Edit("mediaserver/media/opus.py",
                    '            raise OpusError("opus_decode_float(plc)", n)\n'
                    "        return self._buf[:n]\n",
                    '            raise OpusError("opus_decode_float(plc)", n)\n'
                    "        return np.zeros(n, dtype=np.float32)  # mutation\n")),
        tests=("tests/test_loss_e2e.py::test_loss_is_repaired_better_than_a_no_repair_run",),
    ),
    Mutation(
        name="no-cross-fade",
        claim="a switch between the network and a skip path is cross-faded (no click)",
        source="issue 17 §4",
        edits=(Edit("mediaserver/enhance/streaming.py",
                    "                out[:, :hop] = ola_in + padded[:, :hop] * self._win_sq[:hop]\n",
                    "                pass  # mutation: no cross-fade from the previous path\n"),),
        tests=("tests/test_enhance_stage.py::test_switching_enhancement_does_not_click",
               "tests/test_enhance_stage.py::test_overloaded_frames_keep_delay_and_do_not_click"),
    ),
    Mutation(
        name="fec-is-plc",
        claim="a lost packet is recovered from the next packet's FEC (the audio, not the label)",
        source="issue 17 §5",
        edits=(Edit("mediaserver/media/inbound.py",
                    "                pcm = self._decoder.decode_fec(decision.packet.payload, decision.samples)\n",
                    "                pcm = self._decoder.conceal(decision.samples)  # mutation\n"),),
        tests=("tests/test_inbound.py::test_fec_recovers_the_lost_audio_itself",),
    ),
    Mutation(
        name="enhancer-metrics-missing",
        claim="the server's /metrics carries the enhancer's mediaserver_enhancer_* series",
        source="issue 17 §6",
        edits=(Edit("mediaserver/sfu/server.py",
                    "    return stage_from_args(args, metrics.registry if metrics is not None else None)\n",
                    "    return stage_from_args(args)  # mutation: private registry\n"),),
        tests=("tests/test_sfu_enhance.py::test_server_metrics_show_the_enhancer_at_work",),
    ),
    Mutation(
        name="slow-consumer-kept",
        claim="a client that stops reading is dropped and never holds up the others",
        source="issue 13 §1",
        edits=(Edit("mediaserver/sfu/outbox.py",
                    "        if len(self._queue) > self.max_messages or self._bytes > self.max_bytes:\n",
                    "        if False:  # mutation: the queue is unbounded\n"),
               Edit("mediaserver/sfu/outbox.py",
                    "            await asyncio.wait_for(write, self.stall_s)\n",
                    "            await write  # mutation: a stalled write is waited for forever\n")),
        tests=("tests/test_sfu_slow_consumer.py",),
    ),
    Mutation(
        name="gate-broadband-cut",
        claim="a closed VAD gate keeps the background as the network shapes it (no pumping)",
        source="issue 17 §4 / VAD gate",
        edits=(Edit("mediaserver/enhance/stage.py",
                    "        return h._noise.gain(lim)\n",
                    "        return np.full(self.enhancer.window // 2 + 1, 10.0 ** (-min(\n"
                    "            self.gate_config.atten_db, h.atten_lim_db) / 20.0),"
                    " dtype=np.float32)  # mutation\n"),),
        tests=("tests/test_enhance_gate.py::test_noise_floor_holds_across_every_gate_close",),
    ),
    Mutation(
        name="numbering-break-not-rebased",
        claim="after a sequence or timestamp break on one SSRC audio plays on within 60 ms "
              "and the delay is back at its target within 1 s",
        source="issue 15 §1",
        edits=(Edit("mediaserver/media/jitter.py",
                    "        if self._confirms_candidate(packet):\n"
                    "            return self._rebase_both(packet)\n",
                    "        return self._place(packet, ext_seq, ext_ts)  # mutation: no re-basing\n"),),
        tests=("tests/test_jitter.py::test_discontinuity_plays_on_within_60ms_at_the_same_delay",
               "tests/test_inbound.py::"
               "test_discontinuity_plays_real_audio_within_60ms_and_keeps_the_delay",
               "tests/test_rtp_discontinuity_e2e.py"),
    ),
    Mutation(
        name="duplicates-by-seq-alone",
        claim="duplicate detection does not rely on the sequence number alone",
        source="issue 15 §1",
        edits=(Edit("mediaserver/media/jitter.py",
                    "        key = (seq, timestamp)\n        digest = hash(payload)\n",
                    "        key = (seq, 0)  # mutation\n        digest = 0\n"),),
        tests=("tests/test_jitter.py::test_discontinuity_plays_on_within_60ms_at_the_same_delay",
               "tests/test_jitter.py::test_real_duplicates_are_still_dropped_across_a_discontinuity"),
    ),
    Mutation(
        name="srtp-blocks-seq-restart",
        claim="a sender restarting its sequence numbers on one SSRC is heard through SRTP",
        source="issue 15 §1",
        edits=(Edit("mediaserver/patches.py",
                    "    guard_srtp_restarts(receiver.transport)\n",
                    "    pass  # mutation: libsrtp's replay check drops the restarted numbers\n"),),
        tests=("tests/test_rtp_discontinuity_e2e.py",),
    ),
    Mutation(
        name="g711-not-decoded",
        claim="a G.711 (PCMU / PCMA) publisher is decoded, upsampled and heard",
        source="issue 15 §2",
        edits=(Edit("mediaserver/patches.py",
                    'DECODED = {"audio/opus": "opus", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}',
                    'DECODED = {"audio/opus": "opus"}  # mutation'),),
        tests=("tests/test_codecs_e2e.py",),
    ),
    Mutation(
        name="dtx-counted-as-concealment",
        claim="Opus DTX pauses are counted on their own, not as concealed frames",
        source="issue 15 §2",
        edits=(Edit("mediaserver/media/jitter.py",
                    "        if dtx:\n            self.stats.dtx_samples += samples\n",
                    "        if dtx and False:  # mutation\n            self.stats.dtx_samples += samples\n"),),
        tests=("tests/test_inbound.py::test_opus_dtx_pause_is_counted_as_dtx_not_concealment",),
    ),
    Mutation(
        name="enhancer-streams-stale",
        claim="mediaserver_enhancer_streams is back to 0 once everyone left",
        source="issue 17 (report)",
        edits=(Edit("mediaserver/enhance/stage.py",
                    "        if self._metrics is not None:  # at once: no tick may come after the last stream left\n"
                    "            self._metrics.streams.labels(handle.model, self._metrics.worker).dec()\n",
                    "        # mutation: the gauge is not updated on close\n"),),
        tests=("tests/test_enhance_stage.py::test_stage_exports_metrics",
               "tests/test_sfu_enhance.py::test_server_metrics_show_the_enhancer_at_work"),
    ),
    Mutation(
        name="eval-ours-misaligned",
        claim="the eval scores our enhancer on each mixture with its delay removed",
        source="issue 17",
        edits=(Edit("mediaserver/enhance/offline.py",
                    "    y48 = out[lat : lat + n]\n    y = resample(y48",
                    "    y48 = out[:n]  # mutation: delay kept\n    y = resample(y48"),),
        tests=("tests/test_enhance_eval.py",),
    ),
    Mutation(
        name="transcript-open-with-secret",
        claim="with --secret, /rooms/{room}/transcript needs a token for that room and identity",
        source="issue 17",
        edits=(Edit("mediaserver/sfu/server.py",
                    "           authorise=authorise if secret else None)",
                    "           authorise=None)  # mutation"),),
        tests=("tests/test_asr_server.py::test_transcript_needs_a_token_for_its_room_with_secret",),
    ),
    Mutation(
        name="clock-overload-not-bypassed",
        claim="a tick the enhancer gets late skips the network for that tick only",
        source="issue 17",
        edits=(Edit("mediaserver/sfu/mediaclock.py",
                    "                    overloaded=batch.overloaded)",
                    "                    overloaded=False)  # mutation"),),
        tests=("tests/test_mediaclock.py",),
    ),
    Mutation(
        name="clock-no-catch-up",
        claim="a clock a few frames behind catches up without dropping frames",
        source="issue 17",
        edits=(Edit("mediaserver/sfu/mediaclock.py", "MAX_CATCH_UP = 5", "MAX_CATCH_UP = 0  # mutation"),),
        tests=("tests/test_mediaclock.py", "tests/test_mediaclock_core.py"),
    ),
    Mutation(
        name="page-volume-ignored",
        claim="a person's volume slider sets that person's output gain in the page",
        source="issue 17",
        edits=(Edit("static/js/participants.js",
                    "        if (this.remote) this.remote.setVolume(this.volume);\n",
                    "        // mutation: the slider does not reach the audio\n"),),
        tests=("tests/test_browser.py::test_speaking_indicator_and_per_person_volume",),
    ),
    Mutation(
        name="answer-dtls-active",
        claim="the server answers a first offer as DTLS server (a=setup:passive)",
        source="issue 16 fault 2",
        edits=(Edit("mediaserver/patches.py", "    answer_as_dtls_server()\n    _applied = True",
                    "    _applied = True  # mutation: aiortc's a=setup:active"),),
        tests=("tests/test_negotiation.py::test_dtls_role_holds_whatever_a_reanswer_says",
               "tests/test_interop_gstreamer.py"),
    ),
    Mutation(
        name="dtls-role-last-section-wins",
        claim="a re-answer's bundled sections cannot flip the shared DTLS transport's role",
        source="issue 16 fault 1",
        edits=(Edit("mediaserver/patches.py", "    keep_dtls_role()\n",
                    "    pass  # mutation: every section's a=setup applied, the last wins\n"),),
        tests=("tests/test_negotiation.py::test_dtls_role_holds_whatever_a_reanswer_says",),
    ),
    Mutation(
        name="dtls-handshake-unbounded",
        claim="a DTLS handshake that never completes ends in dtls-failed and a counter",
        source="issue 16 fault 1",
        edits=(Edit("mediaserver/sfu/dtlswatch.py",
                    "            self._timer = self._loop.call_later(self._timeout_s, self._expired)",
                    "            pass  # mutation: no bound on the handshake"),),
        tests=("tests/test_negotiation.py::test_dtls_handshake_is_bounded",),
    ),
    Mutation(
        name="offer-without-bundle-accepted",
        claim="an offer without BUNDLE (or with m-lines outside it) is refused with bad-sdp",
        source="issue 16 fault 3",
        edits=(Edit("mediaserver/sfu/sdp.py", "    if bundle is None:\n",
                    "    if bundle is None and False:  # mutation\n"),
               Edit("mediaserver/sfu/sdp.py", "    outside = [m.rtp.muxId for m in live if m.rtp.muxId not in bundle.items]",
                    "    outside = []  # mutation"),
               Edit("mediaserver/sfu/sdp.py", "    tagged = next((m for m in live if m.rtp.muxId == bundle.items[0]), None)",
                    "    tagged = live[0]  # mutation")),
        tests=("tests/test_negotiation.py::test_unusable_offer_is_refused_with_a_reason",),
    ),
    Mutation(
        name="offer-without-candidates-accepted",
        claim="a first offer without ICE candidates is refused with a clear bad-sdp",
        source="issue 16 fault 5",
        edits=(Edit("mediaserver/sfu/sdp.py",
                    "    if first_offer and not any(m.ice_candidates for m in parsed.media):",
                    "    if False:  # mutation"),),
        tests=("tests/test_negotiation.py::test_unusable_offer_is_refused_with_a_reason",),
    ),
    Mutation(
        name="client-reoffer-refused",
        claim="a client offer after the first is answered (server impolite, glare refused)",
        source="issue 16 fault 4",
        edits=(Edit("mediaserver/sfu/signalling.py", "            await self._reoffer(p, offer)\n",
                    "            raise ClientError('bad-request', 'the server makes every offer')  # mutation\n"),),
        tests=("tests/test_negotiation.py::test_client_reoffers_are_answered_and_glare_does_not_wedge",),
    ),
    Mutation(
        name="closed-peer-breaks-newcomer",
        claim="a participant whose connection closed before its removal does not fail anyone "
              "else's join (found by benchmarks/soak.py)",
        source="issue 13 (soak)",
        edits=(Edit("mediaserver/sfu/participant.py",
                    'if (self.pc is None or self.closed or self.pc.signalingState == "closed"\n',
                    'if (self.pc is None or self.closed\n'),
               Edit("mediaserver/sfu/room.py",
                    "        try:\n"
                    "            subscriber.subscribe(stream)\n"
                    "        except Exception:\n",
                    "        try:\n"
                    "            subscriber.subscribe(stream)\n"
                    "        except KeyError:  # mutation\n")),
        tests=("tests/test_room_faults.py",),
    ),
    Mutation(
        name="cluster-claim-not-atomic",
        claim="concurrent first joins of a room on several nodes give it exactly one owner",
        source="issue 10 (placement)",
        edits=(Edit("mediaserver/cluster/registry.py",
                    "px=lease_ms, nx=True))", "px=lease_ms))  # mutation: no NX"),),
        tests=("tests/test_cluster_placement.py::"
               "test_concurrent_first_joins_give_every_room_exactly_one_owner",),
    ),
    Mutation(
        name="cluster-newer-claim-wins",
        claim="after a Redis outage a room claimed twice keeps the older claim",
        source="issue 10 (Redis trouble)",
        edits=(Edit("mediaserver/cluster/registry.py",
                    "if tonumber(mine.since_ms) < tonumber(cur.since_ms)",
                    "if tonumber(mine.since_ms) > tonumber(cur.since_ms)"),),
        tests=("tests/test_cluster_placement.py::"
               "test_redis_outage_serves_locally_then_older_claim_keeps_the_room",),
    ),
    Mutation(
        name="cluster-token-reusable-across-nodes",
        claim="a join token or reconnect ticket admits one join in the whole cluster",
        source="issue 10 (tokens valid on every node)",
        edits=(Edit("mediaserver/sfu/signalling.py",
                    "                and not await self.ctx.cluster.spend_once(grant.jti, grant.expires)):",
                    "                and False):  # mutation: per-node memory only"),),
        tests=("tests/test_cluster.py::test_a_token_or_ticket_admits_one_join_in_the_whole_cluster",),
    ),
    Mutation(
        name="page-ignores-redirect",
        claim="the page follows a cluster redirect to the room's node by itself",
        source="issue 10 (the browser client follows redirects)",
        edits=(Edit("static/js/app.js",
                    "      case \"redirect\":\n        this.onRedirect(msg);\n",
                    "      case \"redirect\":  // mutation: ignored\n"),),
        tests=("tests/test_browser_cluster.py",),
    ),
    Mutation(
        name="page-reconnects-only-to-its-node",
        claim="when its node dies the page rejoins through another node of joined.nodes",
        source="issue 10 (failover)",
        edits=(Edit("static/js/app.js",
                    "      const urls = [...new Set([r.url, ...this.nodes])];",
                    "      const urls = [r.url];  // mutation"),),
        tests=("tests/test_browser_cluster.py",),
    ),
    Mutation(
        name="cluster-csp-blocks-nodes",
        claim="the page's CSP lets it connect to the cluster's other nodes (redirect, failover)",
        source="issue 10 (the browser client follows redirects)",
        edits=(Edit("mediaserver/sfu/websec.py",
                    "        nodes = [u for u in peers() if u not in signalling]\n",
                    "        nodes = []  # mutation\n"),),
        tests=("tests/test_browser_cluster.py",),
    ),
    Mutation(
        name="cluster-peer-origins-refused",
        claim="a page served by one node may open /ws on the room's node (Origin check on)",
        source="issue 10 (the browser client follows redirects)",
        edits=(Edit("mediaserver/sfu/cluster_link.py",
                    "        self.ctx.origins.peers = lambda: [n.url for n in node.nodes]\n",
                    "        pass  # mutation\n"),),
        tests=("tests/test_browser_cluster.py",),
    ),
    Mutation(
        name="asr-partials-never-published",
        claim="the local recogniser publishes partial captions while a talker speaks",
        source="issue 11 (streaming local recogniser with partials)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    "if (not self.cfg.partials or self._seq < 0 or self._partial_in_flight",
                    "if (True or self._seq < 0 or self._partial_in_flight"),),
        tests=("tests/test_asr_streaming.py::test_partial_is_the_prefix_two_decodes_agree_on_and_never_shrinks",
               "tests/test_asr_streaming.py::test_realtime_partials_come_before_the_final"),
    ),
    Mutation(
        name="asr-partial-not-agreed",
        claim="a partial is the prefix two consecutive decodes agree on, not the latest guess",
        source="issue 11 (stable prefix)",
        edits=(Edit("mediaserver/asr/streaming.py", "n = agreed_prefix(prev[0], words)",
                    "n = len(words)"),),
        tests=("tests/test_asr_streaming.py::test_partial_is_the_prefix_two_decodes_agree_on_and_never_shrinks",),
    ),
    Mutation(
        name="asr-cut-without-overlap",
        claim="a length cut loses no word: the last word is carried into the next segment",
        source="issue 11 (no words lost at the cuts)",
        edits=(Edit("mediaserver/asr/streaming.py", "cut = max(cut, len(job.pcm) - keep)",
                    "cut = len(job.pcm)"),),
        tests=("tests/test_asr_streaming.py::test_length_cut_carries_its_last_word_into_the_next_segment",
               "tests/test_asr_streaming.py::test_monologue_without_pause_loses_no_word_at_its_cuts"),
    ),
    Mutation(
        name="asr-no-context",
        claim="each decode gets the talker's previous final text as context",
        source="issue 11 (carry the previous text as context)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    'return self._context if self.cfg.context_chars else ""', 'return ""'),),
        tests=("tests/test_asr_streaming.py::test_partial_is_the_prefix_two_decodes_agree_on_and_never_shrinks",
               "tests/test_asr_streaming.py::test_length_cut_carries_its_last_word_into_the_next_segment"),
    ),
    Mutation(
        name="asr-queue-drops-not-counted",
        claim="segments the local recogniser drops are counted in /metrics and its health",
        source="issue 11 (drops counted and visible)",
        edits=(Edit("mediaserver/asr/local.py",
                    "            self.dropped += 1\n            metrics.DROPPED.labels(self.name).inc()\n",
                    ""),),
        tests=("tests/test_asr_streaming.py::test_queue_drops_are_counted_in_metrics_and_health",),
    ),
    Mutation(
        name="asr-dead-worker-not-replaced",
        claim="a recogniser worker that fails is replaced (and counted) and its job kept",
        source="issue 11 (a dead recogniser worker is replaced and counted)",
        edits=(Edit("mediaserver/asr/pool.py", "await self._replace(index)", "break"),),
        tests=("tests/test_asr_streaming.py::test_failed_worker_is_replaced_and_counted",),
    ),
    Mutation(
        name="asr-queue-unfair",
        claim="one talker cannot hold several workers: jobs go round-robin, one per talker at a time",
        source="issue 11 (fair across talkers)",
        edits=(Edit("mediaserver/asr/pool.py",
                    "        for key in list(self._finals):\n            if key in self._busy:",
                    "        for key in list(self._finals):\n            if False:"),),
        tests=("tests/test_asr_streaming.py::test_fair_queue_round_robin_finals_first_bounded_one_job_per_talker",),
    ),
    Mutation(
        name="asr-partials-in-transcript",
        claim="partials reach the page but only finals reach the transcript",
        source="issue 11 (only finals go to transcripts, Redis and other sinks)",
        edits=(Edit("mediaserver/asr/hub.py", "        if transcript.final:  # partials",
                    "        if True:  # partials"),),
        tests=("tests/test_asr_browser.py",),
    ),
    Mutation(
        name="no-server-shutdown-event",
        claim="on SIGTERM/SIGINT every participant gets server-shutdown (retry hint) and its call is closed",
        source="issue 15 §4",
        edits=(Edit("mediaserver/sfu/drain.py",
                    "            session.shutdown(self.retry_after_ms, CLOSE_SERVICE_RESTART)\n",
                    "            pass  # mutation: nobody is told\n"),),
        tests=("tests/test_drain.py::test_stop_signal_tells_everyone_closes_calls_and_exits",),
    ),
    Mutation(
        name="stop-waits-for-sockets",
        claim="the server exits within --drain-s of SIGTERM instead of waiting for the WebSockets",
        source="issue 15 §4",
        edits=(Edit("mediaserver/sfu/server.py",
                    "    backstop(args.drain_s, drain)   # a thread that will not join must not outlive the budget\n"
                    "    if link is not None:\n"
                    "        await link.stop()   # deregistered first: the other nodes take this node's rooms over\n"
                    "    await drain.run()\n",
                    "    if link is not None:\n"
                    "        await link.stop()\n"
                    "    await runner.cleanup()  # mutation: the old stop\n"),
               Edit("mediaserver/sfu/server.py", "shutdown_timeout=args.drain_s / 4,",
                    "shutdown_timeout=60.0,")),
        tests=("tests/test_drain.py::test_stop_signal_tells_everyone_closes_calls_and_exits",),
    ),
    Mutation(
        name="client-does-not-reconnect",
        claim="mediaserver client rejoins by itself after a server restart and hears the other again",
        source="issue 15 §4",
        edits=(Edit("mediaserver/client.py",
                    "if not self.args.reconnect or not await self._rejoin(session, stop, deadline):",
                    "if True:  # mutation: no reconnection"),),
        tests=("tests/test_reconnect.py::test_server_restart_under_two_clients_audio_flows_again",),
    ),
    Mutation(
        name="page-does-not-reconnect",
        claim="the browser page rejoins by itself after a server restart and says so",
        source="issue 15 §4",
        edits=(Edit("static/js/app.js",
                    "      this.connect().catch(() => {\n"
                    "        this.redirectsInARow = 0; // a node that cannot be reached (it died): not a redirect loop\n"
                    "        this.startReconnect(null);\n"
                    "      });\n",
                    "      // mutation: never tries again\n"),),
        tests=("tests/test_browser_reconnect.py::test_page_rejoins_after_a_server_restart_and_hears_again",),
    ),
    Mutation(
        name="reconnect-ticket-refused",
        claim="a reconnect ticket rejoins the same room and identity where the single-use token is spent",
        source="issue 15 §4",
        edits=(Edit("mediaserver/sfu/signalling.py", '        if m.get("reconnect") is not None:\n',
                    "        if False:  # mutation: tickets ignored\n"),),
        tests=("tests/test_reconnect_signalling.py::test_ticket_rejoins_once_where_the_token_is_spent",
               "tests/test_reconnect.py::test_server_restart_under_two_clients_audio_flows_again"),
    ),
    Mutation(
        name="reconnect-ticket-reusable",
        claim="a reconnect ticket admits one rejoin",
        source="issue 15 §4",
        edits=(Edit("mediaserver/sfu/signalling.py",
                    "                grant = self.ctx.tickets.verify(m[\"reconnect\"], room=room, identity=identity, now=now)\n"
                    "                self.ctx.replay.use(grant, now=now)\n",
                    "                grant = self.ctx.tickets.verify(m[\"reconnect\"], room=room, identity=identity, now=now)\n"
                    "                # mutation: not single-use\n"),),
        tests=("tests/test_reconnect_signalling.py::test_ticket_rejoins_once_where_the_token_is_spent",),
    ),
    Mutation(
        name="stale-connection-kept",
        claim="a rejoin with the ticket replaces the same identity's stale connection",
        source="issue 15 §4",
        edits=(Edit("mediaserver/sfu/signalling.py",
                    "        if rejoin:\n            await self._replace_stale(room_name, identity)\n",
                    "        pass  # mutation\n"),),
        tests=("tests/test_reconnect_signalling.py::test_ticket_replaces_a_stale_connection_of_the_same_identity",),
    ),
    Mutation(
        name="speaking-not-in-joined",
        claim="a newcomer learns in joined who is speaking now",
        source="issue 15 §5",
        edits=(Edit("mediaserver/sfu/signalling.py",
                    '            "speaking": bool(speaking is not None and speaking.speaking),\n',
                    '            "speaking": False,  # mutation\n'),),
        tests=("tests/test_reconnect_signalling.py::test_newcomer_sees_who_is_speaking_now",),
    ),
    Mutation(
        name="stats-show-everyone",
        claim="a stats reply holds only what concerns the asker",
        source="issue 15 §5",
        edits=(Edit("mediaserver/sfu/signalling.py",
                    '"participants": {p.identity: entry},',
                    '"participants": {o: entry for o in (room.participants if room else [])},'
                    '  # mutation'),),
        tests=("tests/test_reconnect_signalling.py::test_stats_reply_holds_only_what_concerns_the_asker",),
    ),
    Mutation(
        name="autoplay-click-only-on-button",
        claim="with join=1 any click on the page turns the held-back sound on (and a big bar says so)",
        source="issue 15 §5",
        edits=(Edit("static/js/app.js",
                    '    for (const kind of ["pointerdown", "keydown"]) document.addEventListener(kind, enableAudio, { capture: true });\n',
                    "    // mutation: only the button\n"),),
        tests=("tests/test_browser_reconnect.py::test_join_link_makes_the_one_needed_click_obvious",),
    ),
    Mutation(
        name="client-no-heartbeat",
        claim="a client whose signalling socket died silently notices, rejoins with its ticket "
              "(replacing its stale connection) and is heard again",
        source="issue 15 §4 (dropped WebSocket)",
        edits=(Edit("mediaserver/client.py", "heartbeat=HEARTBEAT_S)", ")  # mutation: no heartbeat"),),
        tests=("tests/test_reconnect_drop.py::test_lost_signalling_socket_is_rejoined_and_audio_flows_again",),
    ),
    Mutation(
        name="page-ignores-joined-speaking",
        claim="the page lights up the card of someone already speaking when it joins",
        source="issue 15 §5",
        edits=(Edit("static/js/app.js", ".setSpeaking(Boolean(p.speaking), p.level);",
                    ";  // mutation: joined's speaking state ignored"),),
        tests=("tests/test_browser_reconnect.py::test_newcomer_page_shows_who_is_already_speaking",),
    ),
    Mutation(
        name="g711-subscriber-gets-opus",
        claim="a subscriber that accepts only G.711 gets G.711 (the slot packs the codec its answer agreed)",
        source="issue 15 §2",
        edits=(Edit("mediaserver/sfu/outbound.py",
                    "    return SENT_CODECS.get(codecs[0].mimeType.lower()) if codecs else None",
                    "    return \"opus\" if codecs else None  # mutation"),),
        tests=("tests/test_codecs_e2e.py::test_clients_publish_and_receive_with_their_codec",),
    ),
    Mutation(
        name="encode-per-subscriber",
        claim="each publisher is encoded once per codec per tick, however many subscribers share it",
        source="issue 15 §2",
        edits=(Edit("mediaserver/sfu/outbound.py",
                    "        if codec not in self._packets:\n",
                    "        if True:  # mutation\n"),),
        tests=("tests/test_outbound_codecs.py::test_each_codec_is_encoded_once_per_tick_and_shared",),
    ),
    Mutation(
        name="g711-encoder-aliases",
        claim="the 48 -> 8 kHz G.711 encode low-passes before decimating",
        source="issue 15 §2",
        edits=(Edit("mediaserver/media/g711.py",
                    "        y, self._zi = lfilter(self._taps, [1.0], np.asarray(x, dtype=np.float64), zi=self._zi)",
                    "        y = np.asarray(x, dtype=np.float64)  # mutation"),),
        tests=("tests/test_outbound_codecs.py::test_g711_encoder_band_limits_before_decimating",),
    ),
    Mutation(
        name="g711-only-offer-refused",
        claim="an offer with only PCMU/PCMA is accepted (not bad-sdp)",
        source="issue 15 §2",
        edits=(Edit("mediaserver/sfu/sdp.py",
                    "    if not any(c.mimeType.lower() in RECEIVED_AUDIO_CODECS for m in audio for c in m.rtp.codecs):",
                    "    if not any(c.mimeType.lower() == \"audio/opus\" for m in audio for c in m.rtp.codecs):"),),
        tests=("tests/test_sfu_units.py::test_opus_fec_is_advertised_and_bad_sdp_refused",),
    ),
    Mutation(
        name="dtx-not-in-panel",
        claim="the connection panel shows DTX pauses on their own row",
        source="issue 15 §2",
        edits=(Edit("static/js/stats.js",
                    "  [\"Silent pauses (DTX)\", (e) => e.dtx_ms, \" ms\"],\n", ""),),
        tests=("tests/test_stats_panel.py",),
    ),
    Mutation(
        name="clean-link-time-scaled",
        claim="a clean link is never time-scaled (steady band a frame wide)",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/jitter.py",
                    "        if filt > target + frame_ms / 2 + 2.0 and level > target + frame_ms + _START_CUSHION_MS + 1.0:",
                    "        if filt > target + 5.0 and level > target + 2.0:  # mutation"),),
        tests=("tests/test_jitter.py::test_clean_link_is_never_time_scaled_and_waits_an_extra_frame_only_inside_the_allowance",),
    ),
    Mutation(
        name="jitter-allowance-coarse",
        claim="the jitter allowance has 1 ms resolution: a clean link holds no frame it does not need",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/jitter.py",
                    "    bucket_ms: float = 1.0",
                    "    bucket_ms: float = 5.0  # mutation"),),
        tests=("tests/test_jitter.py::test_clean_link_is_never_time_scaled_and_waits_an_extra_frame_only_inside_the_allowance",),
    ),
    Mutation(
        name="asr-window-full",
        claim="a partial caption's Whisper decode encodes its audio plus the tail, not a 30 s window",
        source="issue 11 (caption latency)",
        edits=(Edit("mediaserver/asr/local.py",
                    "        with self._lock, whisper_window(None if fallback else self._tail_frames):",
                    "        with self._lock, whisper_window(None):  # mutation"),),
        tests=("tests/test_asr_window.py::test_a_partial_decode_encodes_the_speech_plus_its_tail_and_hears_it",),
    ),
    Mutation(
        name="asr-window-short-finals",
        claim="a final's Whisper decode keeps the 30 s window (the short one loses words)",
        source="issue 11 (transcripts that lose no words)",
        edits=(Edit("mediaserver/asr/local.py",
                    "        with self._lock, whisper_window(None if fallback else self._tail_frames):",
                    "        with self._lock, whisper_window(self._tail_frames):  # mutation"),),
        tests=("tests/test_asr_window.py::test_a_partial_decode_encodes_the_speech_plus_its_tail_and_hears_it",),
    ),
    Mutation(
        name="asr-window-not-per-thread",
        claim="the shorter Whisper window applies to the decoding thread only (other recognisers and the whole-file path keep 30 s)",
        source="issue 11 (caption latency)",
        edits=(Edit("mediaserver/patches.py",
                    "_whisper_tail = threading.local()",
                    "_whisper_tail = type('Shared', (), {})()  # mutation"),),
        tests=("tests/test_asr_window.py::test_the_window_is_the_segment_plus_the_tail_only_inside_the_block",),
    ),
    Mutation(
        name="asr-moonshine-cross-cache-fed-back",
        claim="Moonshine's greedy loop keeps the cross-attention cache of its first step (the cache branch returns dummies)",
        source="issue 11 (a larger English model bundled offline: Moonshine base)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    'if not use_cache or ".decoder." in name)',
                    'if True)  # mutation'),),
        tests=("tests/test_asr_moonshine.py::test_moonshine_hears_an_espeak_sentence",),
    ),
    Mutation(
        name="asr-moonshine-no-word-spaces",
        claim="Moonshine's tokens become words: the SentencePiece word mark is a space",
        source="issue 11 (a larger English model bundled offline: Moonshine base)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    'raw.replace(SPACE, b" ")',
                    'raw.replace(SPACE, b"")  # mutation'),),
        tests=("tests/test_asr_moonshine.py::test_moonshine_hears_an_espeak_sentence",),
    ),
    Mutation(
        name="asr-moonshine-unbounded",
        claim="a Moonshine decode stops at its token bound (from the audio length)",
        source="issue 11 (a larger English model bundled offline: Moonshine base)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    "        bound = self.max_tokens(len(audio))\n",
                    "        bound = 10_000  # mutation\n"),),
        tests=("tests/test_asr_moonshine.py::test_a_decode_stops_at_its_token_bound",),
    ),
    Mutation(
        name="asr-moonshine-engine-unwired",
        claim="--asr-engine moonshine runs Moonshine in the live sink (not silently the default engine)",
        source="issue 11 (a larger English model bundled offline: Moonshine base)",
        edits=(Edit("mediaserver/asr/local.py",
                    '    if engine == "whisper":\n        return WhisperRecogniser(**kwargs)',
                    '    if engine in ("whisper", "moonshine"):  # mutation\n        return WhisperRecogniser(**kwargs)'),),
        tests=("tests/test_asr_moonshine.py::test_partials_come_before_the_final_through_the_moonshine_sink",),
    ),
    Mutation(
        name="asr-early-final-never-used",
        claim="a final decoded at the start of a pause is the segment's final when the segmenter closes it with no new speech (no second decode)",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    "adopt = early is not None and not length_cut and (started or words is not None)",
                    "adopt = False  # mutation"),),
        tests=("tests/test_asr_early.py::test_early_final_is_the_final_when_the_pause_closes_the_segment",
               "tests/test_asr_early.py::test_live_sink_publishes_the_early_decode_as_the_final"),
    ),
    Mutation(
        name="asr-early-final-kept-when-speech-resumes",
        claim="an early final is discarded when speech resumes before the segment closes",
        source="issue 11 (finals <= 1.5 s after the end of the utterance; no words lost)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    "if chunk.silence_ms <= 0 and self._early is not None:",
                    "if False:  # mutation"),),
        tests=("tests/test_asr_early.py::test_early_final_is_discarded_when_speech_resumes",
               "tests/test_asr_early.py::test_live_sink_discards_the_early_decode_when_speech_resumes"),
    ),
    Mutation(
        name="asr-early-final-no-pause-signal",
        claim="the hub tells the streaming recogniser how long the open segment's trailing pause is",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/hub.py", "seg.feed, silence_ms=seg.live_silence_ms,",
                    "seg.feed,  # mutation"),),
        tests=("tests/test_asr_early.py::test_live_sink_publishes_the_early_decode_as_the_final",),
    ),
    Mutation(
        name="asr-early-final-lost-when-talker-leaves",
        claim="a talker who leaves while the early decode of their last segment runs still gets that final",
        source="issue 11 (no words lost)",
        edits=(Edit("mediaserver/asr/local.py",
                    'and (talker is None or talker.early_state != "adopted")):',
                    "):  # mutation"),),
        tests=("tests/test_asr_early.py::test_live_sink_discards_the_early_decode_when_speech_resumes",),
    ),
    Mutation(
        name="asr-early-final-lost-when-room-ends",
        claim="the room's end does not drop a talker whose last final is still being decoded early",
        source="issue 11 (no words lost)",
        edits=(Edit("mediaserver/asr/local.py",
                    "            self._leaving.add(key)\n            self._forget_if_done(key)\n",
                    "            self._forget(key)  # mutation\n"),),
        tests=("tests/test_asr_early.py::test_live_sink_discards_the_early_decode_when_speech_resumes",),
    ),
    Mutation(
        name="asr-partial-cadence-fixed",
        claim="the next partial decode starts as soon as the previous one ended and 300 ms of new audio came (not once a second)",
        source="issue 11 (partials p95 <= 1.5 s behind the audio)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    "if end_ms - self._asked_end_ms < self.cfg.partial_interval_ms:",
                    "if end_ms - self._asked_end_ms < max(1000, self.cfg.partial_interval_ms):  # mutation"),),
        tests=("tests/test_asr_early.py::test_partial_cadence_follows_the_decode_not_a_fixed_second",),
    ),
    Mutation(
        name="asr-partials-during-pause",
        claim="no partial decode starts once a pause is half way to the early final (the worker stays free for it)",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    "if self.cfg.early_final_ms and self._silence_ms >= self.early_after_ms / 2:",
                    "if False:  # mutation"),),
        tests=("tests/test_asr_early.py::test_early_final_is_the_final_when_the_pause_closes_the_segment",),
    ),
    Mutation(
        name="asr-partial-no-unstable-words",
        claim="a partial carries the newest decode's words after its stable prefix, marked unstable",
        source="issue 11 (partials p95 <= 1.5 s behind the audio; stable vs unstable text)",
        edits=(Edit("mediaserver/asr/streaming.py", "tail = join(words[len(self._shown):])",
                    'tail = ""  # mutation'),),
        tests=("tests/test_asr_early.py::test_partial_shows_the_newest_words_after_the_stable_prefix",
               "tests/test_asr_streaming.py::test_partial_is_the_prefix_two_decodes_agree_on_and_never_shrinks"),
    ),
    Mutation(
        name="asr-caption-event-without-unstable",
        claim="the caption event of a partial tells its unstable words from its stable text",
        source="issue 11 (the event and the page tell stable from unstable text)",
        edits=(Edit("mediaserver/asr/web.py", '            message["unstable"] = caption.unstable\n',
                    "            pass  # mutation\n"),),
        tests=("tests/test_asr_web.py::test_a_partial_caption_carries_its_unstable_words_and_a_final_none",),
    ),
    Mutation(
        name="asr-moonshine-prefix-not-forced",
        claim="a Moonshine partial decode feeds its stable prefix in one step and decodes only the rest",
        source="issue 11 (partials p95 <= 1.5 s behind the audio)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    "forced = self._prefix_ids(prefix.split()) if prefix else []",
                    "forced = []  # mutation"),),
        tests=("tests/test_asr_moonshine.py::test_a_partial_decode_starts_from_its_stable_prefix",),
    ),
    Mutation(
        name="asr-moonshine-prefix-unchecked",
        claim="Moonshine forces only a prefix that a recent decode spelled word for word",
        source="issue 11 (partials: stable prefix)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    "if detokenize(ids[:cut], self._tokens).split() == words:",
                    "if True:  # mutation"),),
        tests=("tests/test_asr_moonshine.py::test_a_partial_decode_starts_from_its_stable_prefix",),
    ),
    Mutation(
        name="asr-length-cut-needs-word-times",
        claim="an engine without word times (Moonshine, PocketSphinx) still gets its finals at a length cut (nothing carried)",
        source="issue 11 (no words lost at the cuts)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    "if job.word_times and words and words[-1].start_s is not None:",
                    "if job.word_times and words:  # mutation"),),
        tests=("tests/test_asr_moonshine.py::test_monologue_cut_without_word_times_loses_no_word",),
    ),
    Mutation(
        name="asr-moonshine-missing-weights-unclear",
        claim="missing Moonshine weights fail with an error naming the folder and the pip command",
        source="issue 11 (never download at run time)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    "        if missing:\n            raise RuntimeError(f\"no Moonshine base-en model",
                    "        if False:  # mutation\n            raise RuntimeError(f\"no Moonshine base-en model"),),
        tests=("tests/test_asr_moonshine.py::test_missing_weights_or_a_changed_layout_fail_clearly",),
    ),
    Mutation(
        name="asr-moonshine-graphs-unchecked",
        claim="Moonshine graphs without the inputs/outputs the decode loop feeds are refused at load",
        source="issue 11 (a larger English model bundled offline: Moonshine base)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    "        self._check_graphs()\n",
                    "        pass  # mutation\n"),),
        tests=("tests/test_asr_moonshine.py::test_missing_weights_or_a_changed_layout_fail_clearly",),
    ),
    Mutation(
        name="asr-moonshine-load-error-unclear",
        claim="a Moonshine graph onnxruntime cannot read fails with a RuntimeError naming the file",
        source="issue 11 (a larger English model bundled offline: Moonshine base)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    "            except Exception as exc:   # onnxruntime's own errors",
                    "            except ZeroDivisionError as exc:  # mutation"),),
        tests=("tests/test_asr_moonshine.py::test_missing_weights_or_a_changed_layout_fail_clearly",),
    ),
    Mutation(
        name="asr-moonshine-tokenizer-unchecked",
        claim="a truncated Moonshine tokenizer is refused at load",
        source="issue 11 (a larger English model bundled offline: Moonshine base)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    "        if i + 1 + n > len(data):",
                    "        if False:  # mutation"),),
        tests=("tests/test_asr_moonshine.py::test_missing_weights_or_a_changed_layout_fail_clearly",),
    ),
    Mutation(
        name="asr-moonshine-cuda-accepted",
        claim="serve refuses --asr-engine moonshine --asr-device cuda before it starts (Moonshine runs on the CPU only)",
        source="issue 11 (CUDA when --asr-device cuda)",
        edits=(Edit("mediaserver/asr/local.py",
                    '    if device != "cpu":\n        raise ValueError(f"the {engine} ASR engine runs on the CPU only',
                    '    if False:  # mutation\n        raise ValueError(f"the {engine} ASR engine runs on the CPU only'),),
        tests=("tests/test_asr_moonshine.py::test_serve_refuses_moonshine_on_cuda_before_it_starts",),
    ),
    Mutation(
        name="asr-load-holds-the-exit",
        claim="a start-up cut short by a stop signal does not wait for a recogniser still loading (Moonshine: 3-5 s, longer than a media worker's 4.5 s stop allowance)",
        source="issue 11 (Moonshine as the default engine)",
        edits=(Edit("mediaserver/asr/pool.py",
                    'worker.recogniser = await build_abandonable(build, f"{worker.name}-load")',
                    "worker.recogniser = await asyncio.get_running_loop().run_in_executor(worker.executor, build)  # mutation"),),
        tests=("tests/test_asr_load_abandon.py",),
    ),
    Mutation(
        name="serve-exit-waits-for-load",
        claim="serve stopped while its recognisers load exits without waiting for them (0, no abort)",
        source="issue 11 (Moonshine as the default engine)",
        edits=(Edit("mediaserver/sfu/server.py",
                    "    if abandoned_loads():   # stopped while a recogniser loaded",
                    "    if False:  # mutation"),),
        tests=("tests/test_serve_startup.py::test_a_stop_signal_while_the_recognisers_load_is_a_clean_stop",),
    ),
    Mutation(
        name="asr-early-final-at-the-soft-cut",
        claim="a segment past the soft maximum gets its early final started before the soft hangover closes it",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    "            return min(float(self.cfg.early_final_ms), self._hangover_ms / 2)",
                    "            return float(self.cfg.early_final_ms)  # mutation"),),
        tests=("tests/test_asr_early.py::test_early_final_starts_before_a_soft_cut",),
    ),
    Mutation(
        name="asr-no-hangover-signal",
        claim="a live chunk tells the hangover that will close its segment (the soft one once it is long)",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/hub.py", "hangover_ms=seg.live_hangover_ms)", ")  # mutation"),),
        tests=("tests/test_asr_pipeline.py::test_live_chunks_tell_the_hangover_and_segments_where_speech_ended",),
    ),
    Mutation(
        name="asr-segment-speech-end-missing",
        claim="a closed segment tells where its speech ended (the benchmark's final lag counts from there)",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/segmenter.py", '"speech_end_ms": end_ms - FRAME_MS * silent})',
                    '"speech_end_ms": end_ms})  # mutation'),),
        tests=("tests/test_asr_pipeline.py::test_live_chunks_tell_the_hangover_and_segments_where_speech_ended",),
    ),
    Mutation(
        name="asr-no-draft",
        claim="partials, early finals and finals carry the talker's newest partial hypothesis as a draft",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    'return join(self._prev[0]) if self._prev is not None and self.cfg.drafts else ""',
                    'return ""  # mutation'),),
        tests=("tests/test_asr_early.py::test_decodes_get_the_newest_partial_as_their_draft",),
    ),
    Mutation(
        name="asr-moonshine-draft-ignored",
        claim="Moonshine checks a draft in one decoder step instead of decoding it token by token",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/moonshine.py", "ids = self._decode(audio, forced, guess, abort)",
                    "ids = self._decode(audio, forced, (), abort)  # mutation"),),
        tests=("tests/test_asr_moonshine.py::test_a_draft_is_checked_in_one_step_and_never_changes_the_result",),
    ),
    Mutation(
        name="asr-superseded-decode-runs-on",
        claim="a decode in flight that its talker no longer wants (a partial of a closed segment, an early final whose pause ended in speech) is aborted: the final does not wait for it",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/local.py",
                    "        if self._pool is None or not self.stream_config.aborts:\n            return\n        talker = self._talkers.get(key)\n",
                    "        if True:  # mutation\n            return\n        talker = self._talkers.get(key)\n"),),
        tests=("tests/test_asr_abort.py::test_a_final_does_not_wait_for_its_talkers_partial_in_flight",
               "tests/test_asr_abort.py::test_an_early_final_stops_when_speech_resumes"),
    ),
    Mutation(
        name="asr-final-never-preempts",
        claim="a final queued while every worker decodes partials takes the worker of the partial that started last",
        source="issue 11 (finals <= 1.5 s after the end of the utterance; many talkers)",
        edits=(Edit("mediaserver/asr/pool.py",
                    "        if self.free_workers > 0 or any(s.requested for _, s, _ in self._running.values()):\n            return None\n",
                    "        if True:  # mutation\n            return None\n"),),
        tests=("tests/test_asr_abort.py::test_a_final_preempts_another_talkers_partial_when_no_worker_is_free",),
    ),
    Mutation(
        name="asr-partials-preempted-by-default",
        claim="by default a final waits for another talker's partial (still wanted); only superseded decodes are aborted",
        source="issue 11 (partials p95 <= 1.5 s; finals <= 1.5 s)",
        edits=(Edit("mediaserver/asr/streaming.py", "    preempt_partials: bool = False",
                    "    preempt_partials: bool = True  # mutation"),),
        tests=("tests/test_asr_abort.py::test_by_default_a_final_waits_for_another_talkers_partial",),
    ),
    Mutation(
        name="asr-unstoppable-partial-preempted",
        claim="a final never asks a Whisper partial (an engine that cannot stop mid-decode) to give its worker up: it would run on and its caption is still wanted",
        source="issue 11 (finals <= 1.5 s; Whisper stays selectable)",
        edits=(Edit("mediaserver/asr/pool.py",
                    'if not job.final and getattr(self._workers[index].recogniser, "abortable", False)]',
                    "if not job.final]  # mutation"),),
        tests=("tests/test_asr_abort.py::test_a_partial_of_an_engine_that_cannot_stop_is_not_preempted",),
    ),
    Mutation(
        name="asr-partial-kept-while-its-final-waits",
        claim="a partial in flight is superseded once its segment's early final is queued (the talker's final waits for its worker)",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    "return job.seq != self._seq or self._early is not None",
                    "return job.seq != self._seq  # mutation"),),
        tests=("tests/test_asr_abort.py::test_which_decodes_in_flight_a_talker_no_longer_wants",),
    ),
    Mutation(
        name="asr-aborted-partial-not-asked-again",
        claim="a talker whose partial was aborted gets the next partial at once (its audio counts as not decoded)",
        source="issue 11 (partials p95 <= 1.5 s behind the audio)",
        edits=(Edit("mediaserver/asr/streaming.py",
                    "        self._asked_end_ms = self._prev[1] if self._prev is not None else -1e18\n",
                    "        pass  # mutation\n"),),
        tests=("tests/test_asr_abort.py::test_which_decodes_in_flight_a_talker_no_longer_wants",
               "tests/test_asr_abort.py::test_a_final_preempts_another_talkers_partial_when_no_worker_is_free"),
    ),
    Mutation(
        name="asr-abort-counted-as-failure",
        claim="an aborted decode is no failure: its worker is not replaced and nothing is counted failed",
        source="issue 11 (a dead recogniser worker is replaced and counted)",
        edits=(Edit("mediaserver/asr/pool.py",
                    "                    except DecodeAborted:\n                        aborted = True\n                        self.aborted += 1\n                        break\n",
                    ""),),
        tests=("tests/test_asr_abort.py::test_a_final_does_not_wait_for_its_talkers_partial_in_flight",),
    ),
    Mutation(
        name="asr-moonshine-abort-not-checked",
        claim="a Moonshine decode stops at the next decoder step once its abort is requested",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    "        abort.check()\n        run_options = self._run_options()\n",
                    "        run_options = self._run_options()  # mutation\n"),),
        tests=("tests/test_asr_moonshine.py::test_a_decode_stops_on_its_abort_between_steps_and_inside_a_run",),
    ),
    Mutation(
        name="asr-moonshine-run-not-terminable",
        claim="a Moonshine encoder or decoder run stops inside onnxruntime once its abort is requested (RunOptions.terminate)",
        source="issue 11 (finals <= 1.5 s after the end of the utterance)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    "            return session.run(outputs, feed, run_options)\n",
                    "            return session.run(outputs, feed)  # mutation\n"),),
        tests=("tests/test_asr_moonshine.py::test_a_decode_stops_on_its_abort_between_steps_and_inside_a_run",),
    ),
    Mutation(
        name="asr-whisper-abort-ignored",
        claim="Whisper honours an abort requested before its decode starts",
        source="issue 11 (finals <= 1.5 s; Whisper stays selectable)",
        edits=(Edit("mediaserver/asr/local.py",
                    "                if abort is not None:\n                    abort.check()\n                segment = next(windows, None)\n",
                    "                segment = next(windows, None)  # mutation\n"),),
        tests=("tests/test_asr_abort.py::test_whisper_honours_an_abort_only_before_it_decodes",),
    ),
    Mutation(
        name="asr-moonshine-draft-unchecked",
        claim="a draft never changes Moonshine's result: its tokens are kept only while each is the greedy choice",
        source="issue 11 (WER of the live path)",
        edits=(Edit("mediaserver/asr/moonshine.py",
                    "while agree < len(draft) and int(choice[agree]) == draft[agree]:",
                    "while agree < len(draft):  # mutation"),),
        tests=("tests/test_asr_moonshine.py::test_a_draft_is_checked_in_one_step_and_never_changes_the_result",),
    ),
    Mutation(
        name="stage-gap-undelayed",
        claim="a tick the enhancer does not answer goes out delayed like the stage's outputs (no 10 ms skip and repeat)",
        source="issue 14 (one shared enhancer: a missed deadline gets the raw frame cross-faded)",
        edits=(Edit("mediaserver/sfu/mediaclock.py",
                    "                raw, clean, sp = delayed, gap.missing(delayed), None",
                    "                raw, clean, sp = batch.pcms[i], batch.pcms[i], None  # mutation"),),
        tests=("tests/test_mediaclock_core.py::test_a_tick_the_stage_does_not_answer_keeps_the_streams_timing_and_fades",),
    ),
    Mutation(
        name="stage-gap-no-fade-in",
        claim="the first unanswered tick fades up from the stage's last level (no level step)",
        source="issue 14 (one shared enhancer: a missed deadline gets the raw frame cross-faded)",
        edits=(Edit("mediaserver/sfu/stagegap.py",
                    "        out[:FADE] *= self._gain * _FALL + _RISE",
                    "        pass  # mutation"),),
        tests=("tests/test_mediaclock_core.py::test_a_tick_the_stage_does_not_answer_keeps_the_streams_timing_and_fades",),
    ),
    Mutation(
        name="stage-gap-no-cross-fade-back",
        claim="the first tick the enhancer answers again is cross-faded from the delayed input",
        source="issue 14 (one shared enhancer: a missed deadline gets the raw frame cross-faded)",
        edits=(Edit("mediaserver/sfu/stagegap.py",
                    "        out[:FADE] = delayed[:FADE] * _FALL + enhanced[:FADE] * _RISE",
                    "        pass  # mutation"),),
        tests=("tests/test_mediaclock_core.py::test_a_tick_the_stage_does_not_answer_keeps_the_streams_timing_and_fades",),
    ),
    Mutation(
        name="bench-delay-whole-frames",
        claim="the SFU benchmark's delay counts a relay's sub-frame sample delay, not the whole source frame a packet starts in",
        source="issue 15 §3",
        edits=(Edit("benchmarks/sfu.py",
                    "                delays[int(j)] = a - sent_at[i] + (FRAME - phi) / RATE",
                    "                delays[int(j)] = a - sent_at[i]  # mutation"),),
        tests=("tests/test_bench_delay.py",),
    ),
    Mutation(
        name="delay-spike-counted-as-loss",
        claim="a concealed packet that turns up late (a delay spike) is not loss: the two-frame loss floor stays off",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/jitter.py",
                    "                self._loss_rate = max(0.0, self._loss_rate - self._outage_loss)",
                    "                pass  # mutation"),),
        tests=("tests/test_jitter.py",),
    ),
    Mutation(
        name="jitter-residue-never-trimmed",
        claim="decoded samples left beyond whole packets (pure delay: pulls take whole frames) are trimmed",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/jitter.py",
                    "                trim = queued % self._frame_samples",
                    "                trim = 0  # mutation"),),
        tests=("tests/test_inbound.py", "tests/test_jitter.py"),
    ),
    Mutation(
        name="jitter-spare-frame-kept-in-speech",
        claim="a whole frame of spare margin is given back in speech too, not only in pauses",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/jitter.py",
                    "            # a talker who never pauses keeps 20 ms of delay that protects against nothing.\n"
                    "            return -1, False",
                    "            # a talker who never pauses keeps 20 ms of delay that protects against nothing.\n"
                    "            return -1, True  # mutation"),),
        tests=("tests/test_inbound.py",),
    ),
    Mutation(
        name="trim-skips-speech",
        claim="the residue is trimmed in speech as whole pitch periods, not only in pauses",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/inbound.py",
                    "        if c < 0.6 or p > n or 2 * p > len(x):",
                    "        if True:  # mutation"),),
        tests=("tests/test_inbound.py",),
    ),
    Mutation(
        name="trim-fights-stretch",
        claim="no residue is trimmed while the filtered level is short of the target (a stretch is building margin)",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/jitter.py",
                    "if scale == 0 and level >= target and self._level_filtered_ms >= target - 2.5:",
                    "if scale == 0 and level >= target:  # mutation"),),
        tests=("tests/test_jitter.py",),
    ),
    Mutation(
        name="control-on-phase-dependent-level",
        claim="the buffer steers on the next packet's margin, not on a level that swings with the arrival phase",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/jitter.py",
                    "            level = max(0.0, self._margin_ms(queued, now_ms) + frame_ms)",
                    "            level = level  # mutation"),),
        tests=("tests/test_jitter.py::test_clean_link_is_never_time_scaled_and_waits_an_extra_frame_only_inside_the_allowance",),
    ),
    Mutation(
        name="jitter-floor-40ms-on-clean-link",
        claim="on a clean link the buffer's floor is one frame, not 40 ms",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/jitter.py",
                    "    min_delay_ms: float = 20.0  # lowest target level on a clean link: one frame",
                    "    min_delay_ms: float = 40.0  # mutation"),),
        tests=("tests/test_jitter.py::test_clean_link_is_never_time_scaled_and_waits_an_extra_frame_only_inside_the_allowance",),
    ),
    Mutation(
        name="loss-floor-not-raised",
        claim="while frames go missing the floor is two frames, so the next packet's FEC is in time",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/jitter.py",
                    "        floor = cfg.loss_min_delay_ms if self._loss_rate > cfg.loss_floor_rate else cfg.min_delay_ms",
                    "        floor = cfg.min_delay_ms  # mutation"),),
        tests=("tests/test_jitter.py::test_loss_raises_the_floor_to_two_frames_so_fec_is_in_time_then_it_forgets",),
    ),
    Mutation(
        name="opus-old-defaults",
        claim="the default Opus encoder keeps clean speech quality (complexity 8, no FEC bits without loss)",
        source="issue 15 §3",
        edits=(Edit("mediaserver/media/opus.py",
                    "        packet_loss_perc: int = 0,\n        complexity: int = 8,",
                    "        packet_loss_perc: int = 10,\n        complexity: int = 5,  # mutation"),),
        tests=("tests/test_opus_quality.py",),
    ),
    Mutation(
        name="server-fec-ignores-reports",
        claim="each publisher's Opus FEC follows its subscribers' loss reports",
        source="issue 15 §3",
        edits=(Edit("mediaserver/sfu/outbound.py",
                    "                    entry[1].report(fraction, now_s=now_s)",
                    "                    pass  # mutation"),),
        tests=("tests/test_fec_feedback.py::test_publishers_encoders_expect_what_their_subscribers_report",),
    ),
    Mutation(
        name="client-fec-ignores-reports",
        claim="mediaserver client turns FEC on when the server reports loss",
        source="issue 15 §3",
        edits=(Edit("mediaserver/client.py",
                    "            source.expect_loss(expected.percent(now_s=loop.time()))",
                    "            pass  # mutation"),),
        tests=("tests/test_fec_feedback.py::test_client_turns_fec_on_when_the_server_reports_loss",),
    ),
    Mutation(
        name="asr-keeps-talkers-who-left",
        claim="the local recogniser forgets a talker's streaming state when they leave a room that goes on",
        source="issue 13 Soak",
        edits=(Edit("mediaserver/asr/hub.py",
                    "                forget(room, identity)",
                    "                pass  # mutation"),),
        tests=("tests/test_asr_forget.py",),
    ),
    Mutation(
        name="clock-feeds-sinks-after-leave",
        claim="a stream removed while its tick is in the enhancer reaches no frame sink (no ASR state reopened after leave)",
        source="issue 13 Soak",
        edits=(Edit("mediaserver/sfu/mediaclock.py",
                    "            if s not in self._streams:\n                continue\n            gap = self._gaps.get(s)",
                    "            gap = self._gaps.get(s)  # mutation"),),
        tests=("tests/test_mediaclock_leave.py",),
    ),
    Mutation(
        name="clock-unbounded-enhance-backlog",
        claim="a stage slower than real time cannot grow the clock's enhancer queue without bound",
        source="issue 13 Soak",
        edits=(Edit("mediaserver/sfu/mediaclock.py",
                    "        if len(self._backlog) >= self.max_backlog:",
                    "        if False:  # mutation"),),
        tests=("tests/test_mediaclock_backlog.py", "tests/test_mediaclock_core.py"),
    ),
    Mutation(
        name="clock-core-lateness-carried",
        claim="the clock's schedule is absolute: a late tick does not push the later deadlines",
        source="issue 14 (sans-I/O media clock)",
        edits=(Edit("mediaserver/sfu/mediaclock.py", "        self.next_deadline_ms = deadline + PERIOD_MS\n",
                    "        self.next_deadline_ms = now_ms + PERIOD_MS  # mutation\n"),),
        tests=("tests/test_mediaclock_core.py",),
    ),
    Mutation(
        name="clock-core-overload-ignored",
        claim="a queued tick older than the enhancer budget is marked overloaded (bypass) and counted",
        source="issue 14 (sans-I/O media clock)",
        edits=(Edit("mediaserver/sfu/mediaclock.py",
                    "            batch.overloaded = now_ms - batch.t_ms > self.enhance_budget_ms\n",
                    "            batch.overloaded = False  # mutation\n"),),
        tests=("tests/test_mediaclock_core.py", "tests/test_mediaclock.py"),
    ),
    Mutation(
        name="clock-pull-failure-kills-tick",
        claim="a publisher whose receive path raises costs only its own frame, not the tick",
        source="issue 14 (sans-I/O media clock)",
        edits=(Edit("mediaserver/sfu/mediaclock.py", "            return _Silent()\n",
                    "            raise  # mutation\n"),),
        tests=("tests/test_mediaclock_core.py::test_a_receive_path_that_raises_costs_only_its_own_frame",),
    ),
    Mutation(
        name="patches-not-checked",
        claim="serve and client refuse to start, naming it, when an aiortc internal they patch moved",
        source="issue 14 (patches in one place)",
        edits=(Edit("mediaserver/patches.py", "        return\n    check()\n", "        return\n"),),
        tests=("tests/test_patches.py::test_serve_and_client_refuse_to_start_when_an_internal_moved",),
    ),
    Mutation(
        name="tap-leaves-packets-to-aiortc",
        claim="the RTP tap takes every packet from a real aiortc receiver before its jitter buffer",
        source="issue 14 (patches in one place)",
        edits=(Edit("mediaserver/patches.py", "    receiver._handle_rtp_packet = handle",
                    "    pass  # mutation"),),
        tests=("tests/test_patches.py::test_tap_receiver_takes_every_packet_from_a_real_receiver",),
    ),
    Mutation(
        name="client-imports-server",
        claim="mediaserver client uses no server internals",
        source="issue 14 (client)",
        edits=(Edit("mediaserver/client.py", "        from .rtcp import fraction_lost\n",
                    "        from .sfu.outbound import fraction_lost  # mutation\n"),),
        tests=("tests/test_patches.py::test_the_client_uses_no_server_internals",),
    ),
    Mutation(
        name="workers-room-split",
        claim="a room lives on exactly one worker: its later sockets go where its first went",
        source="issue 14 (workers)",
        edits=(Edit("mediaserver/workers/placement.py",
                    "        index = self._room_worker.get(room)\n        if index is None:",
                    "        index = None  # mutation\n        if index is None:"),),
        tests=("tests/test_workers_units.py::test_a_room_lives_on_one_worker_and_new_rooms_go_to_the_least_loaded",),
    ),
    Mutation(
        name="workers-not-by-load",
        claim="a new room goes to the least loaded live worker",
        source="issue 14 (workers)",
        edits=(Edit("mediaserver/workers/placement.py",
                    "        return min(live, key=lambda i: load_rank(i, self.loads[i], rooms[i]))",
                    "        return min(live)  # mutation"),),
        tests=("tests/test_workers_units.py::test_a_room_lives_on_one_worker_and_new_rooms_go_to_the_least_loaded", "tests/test_workers.py::test_two_workers_host_two_rooms_and_a_killed_worker_stops_only_its_own"),
    ),
    Mutation(
        name="workers-dead-worker-placed",
        claim="a lost worker takes no new room until it is back",
        source="issue 14 (workers)",
        edits=(Edit("mediaserver/workers/placement.py",
                    "        self.loads[index] = WorkerLoad(alive=False)",
                    "        self.loads[index] = WorkerLoad(alive=True)  # mutation"),),
        tests=("tests/test_workers_units.py::test_a_lost_worker_loses_only_its_rooms_and_takes_no_new_ones",),
    ),
    Mutation(
        name="workers-crash-not-told",
        claim="participants of a worker that died are told (server-shutdown) and reconnect",
        source="issue 14 (workers)",
        edits=(Edit("mediaserver/workers/front.py",
                    "        # no close frame: the worker died\n",
                    "        return  # mutation\n"),),
        tests=("tests/test_workers.py::test_two_workers_host_two_rooms_and_a_killed_worker_stops_only_its_own",),
    ),
    Mutation(
        name="workers-no-restart",
        claim="a worker that died is restarted",
        source="issue 14 (workers)",
        edits=(Edit("mediaserver/workers/process.py",
                    "            if self._stopping:\n                break\n",
                    "            if True:  # mutation\n                break\n"),),
        tests=("tests/test_workers.py::test_two_workers_host_two_rooms_and_a_killed_worker_stops_only_its_own",),
    ),
    Mutation(
        name="workers-forged-address",
        claim="a worker believes X-Forwarded-For only from its front (token)",
        source="issue 14 (workers)",
        edits=(Edit("mediaserver/sfu/websec.py",
                    "    if from_front(request):\n        forwarded",
                    "    if True:  # mutation\n        forwarded"),),
        tests=("tests/test_workers_units.py::test_a_worker_believes_the_forwarded_address_only_with_the_front_token",),
    ),
    Mutation(
        name="workers-metrics-unlabelled",
        claim="the front's /metrics tells the workers' series apart by a worker label",
        source="issue 14 (workers)",
        edits=(Edit("mediaserver/workers/metrics.py",
                    "                labels.setdefault(\"worker\", worker)\n",
                    "                pass  # mutation\n"),),
        tests=("tests/test_workers_units.py::test_metrics_of_all_workers_merge_with_a_worker_label", "tests/test_workers.py::test_two_workers_host_two_rooms_and_a_killed_worker_stops_only_its_own"),
    ),
    Mutation(
        name="workers-orphaned-on-stop",
        claim="SIGTERM on the front drains every worker's calls and leaves no worker running",
        source="issue 14 (workers)",
        edits=(Edit("mediaserver/workers/front.py",
                    "        await asyncio.gather(*(p.stop(timeout_s=max(0.5, drain_s - 0.5)) for p in self.procs))",
                    "        pass  # mutation"),),
        tests=("tests/test_workers.py::test_sigterm_on_the_front_drains_every_workers_calls_and_leaves_no_worker",),
    ),
    Mutation(
        name="workers-outlive-front",
        claim="the workers of a front killed with SIGKILL stop by themselves",
        source="issue 14 (workers)",
        edits=(Edit("mediaserver/sfu/server.py",
                    "    while os.getppid() == front:",
                    "    while True:  # mutation"),),
        tests=("tests/test_workers.py::test_workers_of_a_front_killed_with_sigkill_stop_by_themselves",),
    ),
    Mutation(
        name="clock-off-grid",
        claim="every media clock ticks on the same 20 ms grid, so the workers' frames batch together",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/sfu/mediaclock.py",
                    "        self.next_deadline_ms = (math.floor(now_ms / PERIOD_MS) + 1) * PERIOD_MS",
                    "        self.next_deadline_ms = now_ms + PERIOD_MS  # mutation"),),
        tests=("tests/test_mediaclock_core.py::test_every_clock_ticks_on_the_same_20_ms_grid",),
    ),
    Mutation(
        name="workers-own-enhancer",
        claim="with --workers N the workers share one inference process (one batched call for all)",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/workers/front.py",
                    "            env[SHARED_ENHANCER_ENV] = path",
                    "            pass  # mutation"),),
        tests=("tests/test_workers.py::test_two_workers_share_one_enhancer_that_batches_both_rooms",),
    ),
    Mutation(
        name="stage-failure-log-flood",
        claim="a failing enhancer stage costs no frame and is logged once per interval, not every tick",
        source="issue 14 (one enhancer for the machine: a dead inference process)",
        edits=(Edit("mediaserver/sfu/mediaclock.py",
                    "        elif now - self._failure_logged >= STAGE_LOG_S:",
                    "        elif True:  # mutation"),),
        tests=("tests/test_mediaclock.py::test_a_failing_stage_forwards_every_tick_and_logs_once_per_interval",),
    ),
    Mutation(
        name="workers-split-after-prejoin",
        claim="a socket that sends anything before its join still joins the room's one worker",
        source="issue 14 (workers; fresh-user trial)",
        edits=(Edit("mediaserver/workers/front.py",
                    "        if target != self.index or self.upstream is None:",
                    "        if self.upstream is None:  # mutation"),),
        tests=("tests/test_workers.py::test_a_room_never_splits_whatever_a_socket_sends_before_its_join",),
    ),
    Mutation(
        name="workers-open-port",
        claim="a media worker answers its front only (its own port skips Origin, limits, placement)",
        source="issue 14 (workers; fresh-user trial)",
        edits=(Edit("mediaserver/sfu/websec.py",
                    "    if behind_front():\n        app.middlewares.append(front_only)",
                    "    if False:  # mutation\n        app.middlewares.append(front_only)"),),
        tests=("tests/test_workers.py::test_a_room_never_splits_whatever_a_socket_sends_before_its_join",),
    ),
    Mutation(
        name="shared-enhancer-outlives-front",
        claim="the shared inference process stops by itself when its front is killed",
        source="issue 14 (workers; fresh-user trial)",
        edits=(Edit("mediaserver/enhance/shared.py",
                    "    while os.getppid() == parent:",
                    "    while True:  # mutation"),),
        tests=("tests/test_workers.py::test_workers_of_a_front_killed_with_sigkill_stop_by_themselves",),
    ),
    Mutation(
        name="asr-at-server-priority",
        claim="local recognisers (and the engine threads they start) run below the media clock's CPU priority",
        source="issue 13 Soak",
        edits=(Edit("mediaserver/asr/pool.py",
                    "            lower_thread_priority(self.nice)",
                    "            lower_thread_priority(0)  # mutation"),),
        tests=("tests/test_asr_streaming.py::test_recognisers_and_their_engine_threads_run_below_the_servers_priority",),
    ),
    Mutation(
        name="soak-tone-ends",
        claim="a looped test source keeps sending after the end of its file",
        source="issue 13 Soak",
        edits=(Edit("mediaserver/client.py",
                    "            lo %= len(self._samples)",
                    "            pass  # mutation"),),
        tests=("tests/test_file_source.py::test_a_looped_source_plays_past_its_end",),
    ),
    # ---- issue 14: one shared enhancer for the machine (enhance/shared*.py) ---------------------
    Mutation(
        name="shared-enhanced-not-written",
        claim="the inference process's output for a stream equals the single-process EnhancerStage output (1e-4)",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/enhance/shared.py",
                    "            self.table.enh[slot] = out.enhanced\n",
                    "            self.table.enh[slot] = out.raw  # mutation\n"),),
        tests=("tests/test_shared_stage.py::test_a_stream_through_the_inference_process_equals_the_single_process_stage",),
    ),
    Mutation(
        name="shared-atten-not-forwarded",
        claim="a stream's attenuation limit, set live on the worker's handle, reaches the inference process",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/enhance/shared_client.py",
                    "            self.table.atten[h.slot] = h.atten_lim_db\n",
                    "            self.table.atten[h.slot] = 100.0  # mutation\n"),),
        tests=("tests/test_shared_stage.py::test_a_stream_through_the_inference_process_equals_the_single_process_stage",),
    ),
    Mutation(
        name="shared-telemetry-not-sent",
        claim="the worker's handle gets its stream's quality snapshot from the inference process",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/enhance/shared.py",
                    "            if stream is not None and (sid + self.batches) % TELEMETRY_EVERY == 0:\n",
                    "            if False:  # mutation\n"),),
        tests=("tests/test_shared_stage.py::test_a_stream_through_the_inference_process_equals_the_single_process_stage",),
    ),
    Mutation(
        name="shared-not-batched",
        claim="the ticks of all workers with streams go through ONE batched inference call",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/enhance/shared.py",
                    "        return all(w in waiting for w in expected)\n",
                    "        return True  # mutation\n"),),
        tests=("tests/test_shared_stage.py::test_two_workers_are_served_in_one_batched_call_per_tick",),
    ),
    Mutation(
        name="shared-batch-takes-two-ticks-of-one-worker",
        claim="a batch holds at most one tick per worker; a caught-up worker's second tick opens the next batch",
        source="issue 14 (one enhancer for the machine; the sans-I/O batcher)",
        edits=(Edit("mediaserver/enhance/shared.py",
                    "            (rest if tick.worker.number in seen else batch).append(tick)\n",
                    "            batch.append(tick)  # mutation\n"),),
        tests=("tests/test_shared_stage.py::test_the_tick_batcher_runs_a_batch_once_every_worker_ticked_or_at_the_window",),
    ),
    Mutation(
        name="shared-wire-drops-a-split-message",
        claim="a control message split over several socket reads is put back together",
        source="issue 14 (one enhancer for the machine; the protocol readers)",
        edits=(Edit("mediaserver/enhance/shared_wire.py",
                    "        del buf[:start]\n",
                    "        buf.clear()  # mutation\n"),),
        tests=("tests/test_shared_stage.py::test_messages_are_framed_whatever_the_socket_reads_split_them_into",),
    ),
    Mutation(
        name="listener-on-the-media-clock",
        claim="a listener (audio offered recvonly) has no stream on the media clock and no slot at the others until it sends",
        source="issue 14 (per-publisher CPU; placement by publishers)",
        edits=(Edit("mediaserver/sfu/room.py",
                    "        if participant.sends_audio and not self._on_clock(participant):",
                    "        if not self._on_clock(participant):  # mutation"),),
        tests=("tests/test_listeners.py::test_a_listener_takes_no_place_on_the_clock_until_it_sends",),
    ),
    Mutation(
        name="listener-that-stops-sending-stays-on-the-clock",
        claim="a participant that re-offers recvonly is taken off the media clock and out of the others' slots",
        source="issue 14 (per-publisher CPU; placement by publishers)",
        edits=(Edit("mediaserver/sfu/room.py",
                    "        elif not participant.sends_audio and self._on_clock(participant):",
                    "        elif False:  # mutation"),),
        tests=("tests/test_listeners.py::test_a_listener_takes_no_place_on_the_clock_until_it_sends",),
    ),
    Mutation(
        name="reoffer-not-rerouted",
        claim="a listener that re-offers sendrecv through signalling is put on the clock and heard by the room",
        source="issue 14 (per-publisher CPU; placement by publishers)",
        edits=(Edit("mediaserver/sfu/signalling.py",
                    "            self.ctx.manager.routed(p)   # its microphone may have started or stopped sending",
                    "            pass  # mutation"),),
        tests=("tests/test_listeners.py::test_a_listener_that_reoffers_sendrecv_is_heard_through_the_server",),
    ),
    Mutation(
        name="client-listen-only-still-sends",
        claim="mediaserver client --listen-only offers recvonly: it hears the room and is never counted as a publisher",
        source="issue 14 (fresh-user trial 7: the server's listener support was out of the CLI's reach)",
        edits=(Edit("mediaserver/client.py",
                    "            if self.args.listen_only:   # a listener",
                    "            if False:   # mutation"),),
        tests=("tests/test_listeners.py::test_the_headless_client_listens_without_sending_with_listen_only",),
    ),
    Mutation(
        name="closed-connection-renegotiation-is-a-failure",
        claim="a renegotiation cut by the connection's own close is no negotiation-failed (no WARNING, no failure event)",
        source="issue 14 (fresh-user trial 7: a WARNING during a clean SIGTERM drain)",
        edits=(Edit("mediaserver/sfu/participant.py",
                    '            if self.closed or self.pc is None or self.pc.signalingState == "closed":\n',
                    '            if False:  # mutation\n'),),
        tests=("tests/test_listeners.py::test_a_renegotiation_cut_by_the_connections_close_is_no_media_failure",),
    ),
    Mutation(
        name="media-clock-ticks-while-idle",
        claim="a media clock without publishers does not tick (no 50 wake-ups a second per idle worker)",
        source="issue 14 (per-publisher CPU of --workers N)",
        edits=(Edit("mediaserver/sfu/mediaclock.py",
                    "            if self.core.idle:   # nobody to pull",
                    "            if False:   # mutation"),),
        tests=("tests/test_mediaclock.py::test_an_idle_clock_does_not_tick_and_resumes_on_its_grid_when_a_stream_comes",),
    ),
    Mutation(
        name="media-clock-resume-loses-the-idle-time",
        claim="after an idle stretch the pts advance with the time that passed (pts and time agree)",
        source="issue 14 (per-publisher CPU of --workers N)",
        edits=(Edit("mediaserver/sfu/mediaclock.py",
                    "            self.index += missed\n",
                    "            pass  # mutation\n"),),
        tests=("tests/test_mediaclock.py::test_an_idle_clock_does_not_tick_and_resumes_on_its_grid_when_a_stream_comes",),
    ),
    Mutation(
        name="healthz-ticks-count-the-idle-periods",
        claim="/healthz ticks (and late_tick_pct's base) count the ticks the clock ran, not the periods it slept through idle (jumped by ~50 per idle second)",
        source="fresh-user trial 7 §5",
        edits=(Edit("mediaserver/sfu/mediaclock.py",
                    "            self.idle_periods += missed\n",
                    "            pass  # mutation\n"),),
        tests=("tests/test_mediaclock.py::test_the_ticks_an_idle_clock_slept_through_are_not_counted_as_ticks_run",),
    ),
    Mutation(
        name="shared-window-unbounded",
        claim="a batch waits for a silent worker at most the batch window",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/enhance/shared.py",
                    "        return None if self.opened_at is None else self.opened_at + self.window_s\n",
                    "        return None if self.opened_at is None else self.opened_at + 3600.0  # mutation\n"),),
        tests=("tests/test_shared_stage.py::test_a_batch_does_not_wait_past_the_window_for_a_silent_worker",),
    ),
    Mutation(
        name="shared-slots-leak",
        claim="a closed stream's shared-memory slot is reused (free list); the table never grows",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/enhance/shared_wire.py",
                    "            self._free.append(slot)\n",
                    "            pass  # mutation\n"),),
        tests=("tests/test_shared_stage.py::test_slots_are_reused_across_100_opens_and_closes_with_flat_memory",),
    ),
    Mutation(
        name="shared-dead-inference-hangs",
        claim="a killed inference process fails the worker's tick at once with a clear error, no hang",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/enhance/shared_client.py",
                    '                         reason, RECONNECT_S)\n            self._fail(reason)\n',
                    '                         reason, RECONNECT_S)  # mutation\n'),),
        tests=("tests/test_shared_stage.py::test_a_killed_inference_process_fails_the_worker_fast_with_a_clear_error",),
    ),
    Mutation(
        name="shared-miss-not-counted",
        claim="a tick past the deadline is counted in mediaserver_enhancer_shared_deadline_misses_total",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/enhance/shared_client.py",
                    "            self._metrics.misses.inc()\n",
                    "            pass  # mutation\n"),),
        tests=("tests/test_shared_stage.py::test_a_tick_past_the_deadline_is_counted_and_the_next_ticks_recover",),
    ),
    Mutation(
        name="shared-tick-over-inflight",
        claim="while a late tick is still with the inference process the next one is refused at once (its slots are not overwritten)",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/enhance/shared_client.py",
                    "        if self.busy:\n",
                    "        if False:  # mutation\n"),),
        tests=("tests/test_shared_stage.py::test_a_tick_past_the_deadline_is_counted_and_the_next_ticks_recover",),
    ),
    Mutation(
        name="shared-worker-imports-torch",
        claim="a media worker using the shared enhancer never imports torch",
        source="issue 14 (one enhancer for the machine)",
        edits=(Edit("mediaserver/enhance/shared_client.py",
                    "from .telemetry import Counts\n",
                    "from .stage import StageOutput  # noqa: F401  mutation\nfrom .telemetry import Counts\n"),),
        tests=("tests/test_shared_stage.py::test_a_worker_connecting_to_the_shared_enhancer_never_imports_torch",),
    ),
    # ---- issue 14: the model admin and /debug with --workers N (workers/*_relay.py) ----------
    Mutation(
        name="workers-room-switch-misses-streams",
        claim="a room's model switch through the front reaches the room's streams on whichever worker hosts it",
        source="issue 14 (workers: model admin)",
        edits=(Edit("mediaserver/enhance/shared.py",
                    "        worker.streams[sid] = _Stream(handle, slot, room)\n",
                    "        worker.streams[sid] = _Stream(handle, slot)  # mutation\n"),),
        tests=("tests/test_workers_admin.py::test_the_model_admin_through_the_front_switches_rooms_on_both_workers",),
    ),
    Mutation(
        name="workers-new-stream-ignores-room-model",
        claim="with --workers, a new stream gets its room's model (the canary's share, an override) from the inference process",
        source="issue 14 (workers: model admin)",
        edits=(Edit("mediaserver/enhance/shared.py",
                    "        model = msg.get(\"model\") or (self.admin.model_for(room) if self.admin is not None else None)\n",
                    "        model = msg.get(\"model\")  # mutation\n"),),
        tests=("tests/test_workers_admin.py::test_a_canary_is_accepted_at_start_with_workers_and_rolled_back_on_both",),
    ),
    Mutation(
        name="workers-canary-refused",
        claim="--canary-model is accepted at start with --workers > 1",
        source="issue 14 (workers: model admin)",
        edits=(Edit("mediaserver/sfu/server.py",
                    "    worker = websec.behind_front()   # a media worker: its front checked and warned already\n",
                    "    if not problem and args.workers > 1 and getattr(args, \"canary_model\", None):\n"
                    "        problem = \"--canary-model needs --workers 1\"  # mutation\n"
                    "    worker = websec.behind_front()   # a media worker: its front checked and warned already\n"),),
        tests=("tests/test_workers_admin.py::test_a_canary_is_accepted_at_start_with_workers_and_rolled_back_on_both",),
    ),
    Mutation(
        name="workers-admin-relay-unauthorised",
        claim="the front refuses a model switch without the secret, as a single process does",
        source="issue 14 (workers: model admin)",
        edits=(Edit("mediaserver/workers/admin_relay.py",
                    "        authorise_admin(request, secret=self._secret, metrics_token=self._token, read=False)\n"
                    "        room = request.match_info[\"room\"]\n",
                    "        room = request.match_info[\"room\"]\n"),),
        tests=("tests/test_workers_admin.py::test_the_model_admin_through_the_front_switches_rooms_on_both_workers",),
    ),
    Mutation(
        name="workers-admin-state-lost",
        claim="the model admin's changes (room overrides, a canary rollback) outlive a restart of the inference process",
        source="issue 14 (workers: model admin)",
        edits=(Edit("mediaserver/enhance/shared.py",
                    "    await asyncio.to_thread(server.admin.restore_saved, now=asyncio.get_running_loop().time())\n",
                    ""),),
        tests=("tests/test_workers_admin.py::test_the_model_admin_through_the_front_switches_rooms_on_both_workers", "tests/test_workers_admin.py::test_a_canary_is_accepted_at_start_with_workers_and_rolled_back_on_both"),
    ),
    Mutation(
        name="workers-restored-canary-active",
        claim="a canary rolled back before the inference process restarted stays rolled back",
        source="issue 14 (workers: model admin)",
        edits=(Edit("mediaserver/enhance/model_control.py",
                    "                canary.rollback(str(saved.get(\"reason\") or \"rolled back before a restart\"), now=now,\n"
                    "                                wall=float(at) if isinstance(at, (int, float)) else None)\n",
                    "                pass  # mutation\n"),),
        tests=("tests/test_model_control.py::test_the_state_comes_back_after_a_restart_and_a_rollback_stays_rolled_back",
               "tests/test_workers_admin.py::test_a_canary_is_accepted_at_start_with_workers_and_rolled_back_on_both"),
    ),
    Mutation(
        name="workers-debug-one-worker",
        claim="the front's /debug/rooms lists the rooms of every worker",
        source="issue 14 (workers: /debug)",
        edits=(Edit("mediaserver/workers/debug_relay.py",
                    "        live = self.front.live()\n",
                    "        live = self.front.live()[:1]  # mutation\n"),),
        tests=("tests/test_workers_admin.py::test_the_model_admin_through_the_front_switches_rooms_on_both_workers",),
    ),
    Mutation(
        name="workers-debug-unauthorised",
        claim="the front's /debug/rooms needs the secret, as a single process's does",
        source="issue 14 (workers: /debug)",
        edits=(Edit("mediaserver/workers/debug_relay.py",
                    "    async def rooms(self, request: web.Request) -> web.Response:\n"
                    "        authorise_debug(request, secret=self._secret)\n",
                    "    async def rooms(self, request: web.Request) -> web.Response:\n"),),
        tests=("tests/test_workers_admin.py::test_the_model_admin_through_the_front_switches_rooms_on_both_workers",),
    ),
    Mutation(
        name="workers-debug-no-spectra",
        claim="a worker's /debug spectra are fed by the shared stage's outputs",
        source="issue 14 (workers: /debug)",
        edits=(Edit("mediaserver/enhance/shared_client.py",
                    "        if self.frame_sinks:\n            self._to_sinks(items, outputs)\n",
                    ""),),
        tests=("tests/test_workers_admin.py::test_the_model_admin_through_the_front_switches_rooms_on_both_workers",),
    ),
    # ---- fresh-user gaps: CLI errors, start-up signals, devices, transcribe (task_cli) -------
    Mutation(
        name="startup-signal-handlers-after-start",
        claim="a SIGINT/SIGTERM while the server starts (recognisers loading) stops it cleanly: exit 0, no traceback, start-up undone",
        source="fresh-user gaps 1 (signals during start-up)",
        edits=(Edit("mediaserver/sfu/server.py",
                    "    signals = StopSignals(loop)   # first: a stop signal during start-up is never lost\n"
                    "    parts = _Started()\n"
                    "    started = await signals.guard(_start(args, parts))\n",
                    "    parts = _Started()\n"
                    "    started = await _start(args, parts)  # mutation: handlers only after start-up\n"
                    "    signals = StopSignals(loop)\n"),),
        tests=("tests/test_serve_startup.py::test_a_stop_signal_while_the_recognisers_load_is_a_clean_stop",),
    ),
    Mutation(
        name="startup-front-abort-leaves-workers",
        claim="a stop signal while the media workers of --workers N start stops them too (no worker left behind)",
        source="fresh-user gaps 1 (signals during start-up)",
        edits=(Edit("mediaserver/workers/front.py",
                    "        exit_now_on_second_signal(loop)\n        await front.stop(args.drain_s)\n"
                    "        await stop_unstarted(app, runner)\n",
                    "        exit_now_on_second_signal(loop)\n"
                    "        await stop_unstarted(app, runner)  # mutation: workers not stopped\n"),),
        tests=("tests/test_serve_startup.py::test_a_stop_signal_while_the_media_workers_start_stops_them_too",),
    ),
    Mutation(
        name="early-signal-default-action",
        claim="SIGINT/SIGTERM in the first seconds of serve (imports, flag checks) is a clean stop too: exit 0, no traceback",
        source="fresh-user gaps 1 (signals during start-up)",
        edits=(Edit("mediaserver/cli.py",
                    "        remember_stop_signals(exit_at_once=program)\n",
                    "        pass  # mutation\n"),
               Edit("mediaserver/sfu/server.py",
                    "    remember_stop_signals()   # (mediaserver's cli did already) until the loop's handlers are in\n",
                    "    pass  # mutation\n")),
        tests=("tests/test_serve_startup.py::test_a_stop_signal_in_the_first_seconds_is_a_clean_stop_too",),
    ),
    Mutation(
        name="early-signal-recorded-but-ignored",
        claim="a stop signal recorded before the loop's handlers existed is acted on (never lost)",
        source="fresh-user gaps 1 (signals during start-up)",
        edits=(Edit("mediaserver/sfu/startup.py",
                    "            self._received(early)\n",
                    "            pass  # mutation\n"),
               Edit("mediaserver/sfu/server.py",
                    "    early = stop_requested()\n    if early is not None:\n",
                    "    early = stop_requested()\n    if False:  # mutation\n")),
        tests=("tests/test_stop_fast.py::test_a_caller_running_serve_in_its_own_process_gets_its_early_signal_acted_on",),
    ),
    Mutation(
        name="clock-starts-before-asr-warm",
        claim="the media clock starts only after the local recognisers loaded and warmed up (no lateness from start-up)",
        source="fresh-user gaps 7 (clock late at start with --asr local)",
        edits=(Edit("mediaserver/sfu/server.py",
                    "    app.on_shutdown.append(_on_shutdown)\n",
                    "    app.on_startup.append(_on_startup)  # mutation: the clock first\n"
                    "    app.on_shutdown.append(_on_shutdown)\n"),
               Edit("mediaserver/sfu/server.py",
                    "    # last: the recognisers load and warm up first, so start-up never makes the clock late\n"
                    "    app.on_startup.append(_on_startup)\n",
                    "")),
        tests=("tests/test_serve_startup.py::test_the_media_clock_starts_after_the_recognisers_are_warm",),
    ),
    Mutation(
        name="usage-error-on-stdout",
        claim="a bad setting is one line on stderr, exit 2, naming the flag (not stdout)",
        source="fresh-user gaps 2 (config errors on stdout)",
        edits=(Edit("mediaserver/cli.py",
                    '        print(f"{args._parser.prog}: error: {name_sources(message, args)}", file=sys.stderr)\n',
                    '        print(f"{args._parser.prog}: error: {name_sources(message, args)}")  # mutation\n'),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",),
    ),
    Mutation(
        name="argparse-usage-dump",
        claim="argparse's own errors are one line too (not the 60-line usage)",
        source="fresh-user gaps 2 (config errors on stdout)",
        edits=(Edit("mediaserver/cli.py",
                    '        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\\n")\n',
                    "        super().error(message)  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",),
    ),
    Mutation(
        name="subcommand-error-printed-to-stdout",
        claim="no sub-command prints an error to stdout (the kind: every print of an error names stderr)",
        source="fresh-user gaps 2 (config errors on stdout)",
        edits=(Edit("mediaserver/cluster/view.py",
                    '        raise UsageError("--redis-url is required")\n',
                    '        print("error: --redis-url is required")  # mutation\n        return 2\n'),),
        tests=("tests/test_cli_errors.py::test_no_error_message_of_the_package_goes_to_stdout",
               "tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag"),
    ),
    Mutation(
        name="asr-gpu-not-probed",
        claim="--asr-device cuda without a usable GPU is one line naming the flag before anything starts (serve, transcribe)",
        source="fresh-user gaps 3 (cuda traceback)",
        edits=(Edit("mediaserver/asr/options.py",
                    "        problem = ctranslate2_device_problem(device)\n",
                    "        problem = None  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_an_unusable_gpu_is_one_line_naming_the_flag_not_a_traceback",),
    ),
    Mutation(
        name="enhancer-gpu-not-probed",
        claim="--enhancer-device cuda (or a bad device) without a usable GPU is one line naming the flag",
        source="fresh-user gaps 3 (cuda traceback)",
        edits=(Edit("mediaserver/enhance/stage_options.py",
                    "    problem = torch_device_problem(args.enhancer_device)\n",
                    "    problem = None  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_an_unusable_gpu_is_one_line_naming_the_flag_not_a_traceback",),
    ),
    Mutation(
        name="enhance-device-not-probed",
        claim="enhance --device cuda without a usable GPU is one line naming the flag",
        source="fresh-user gaps 3 (cuda traceback)",
        edits=(Edit("mediaserver/enhance/offline.py",
                    "    problem = torch_device_problem(args.device)   # before anything loads: one line, not a traceback\n",
                    "    problem = None  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_an_unusable_gpu_is_one_line_naming_the_flag_not_a_traceback",),
    ),
    Mutation(
        name="cpu-engine-on-cuda-accepted",
        claim="--asr-engine moonshine (or pocketsphinx) with --asr-device cuda is refused naming the flag",
        source="fresh-user gaps 4 (contradictory flags)",
        edits=(Edit("mediaserver/asr/options.py",
                    '        return f"--asr-device {device}: {exc} (--asr-engine {engine})"\n',
                    "        pass  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",),
    ),
    Mutation(
        name="flags-without-effect-silent",
        claim="flags that have no effect (ASR flags without their sink, enhancer flags with --no-enhance) are warned once each",
        source="fresh-user gaps 4 (flags without effect)",
        edits=(Edit("mediaserver/asr/options.py",
                    "        idle = [f for f in flags if f in changed and f not in warned and not active(args, names)]\n",
                    "        idle = []  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_flags_without_effect_are_warned_once_each",),
    ),
    Mutation(
        name="enhanced-feed-without-enhancer-silent",
        claim="an enhanced or mixed ASR feed with --no-enhance is warned (the sinks get raw audio)",
        source="fresh-user trial (session 8)",
        edits=(Edit("mediaserver/asr/options.py",
                    'lambda a, names: a.asr_feed == "raw" or not getattr(a, "no_enhance", False)',
                    "lambda a, names: True  # mutation"),),
        tests=("tests/test_cli_errors.py::test_flags_without_effect_are_warned_once_each",),
    ),
    Mutation(
        name="transcribe-flags-without-effect-silent",
        claim="transcribe names a flag the other settings make useless (--model with the raw feed, ...)",
        source="fresh-user gaps 4 (flags without effect)",
        edits=(Edit("mediaserver/asr/transcribe.py",
                    "    return asr_flags_without_effect(args, rules, names=[\"local\"])\n",
                    "    return []  # mutation\n"),),
        tests=("tests/test_asr_transcribe.py::test_transcribe_warns_about_flags_without_effect",),
    ),
    Mutation(
        name="transcribe-env-names-differ-from-serve",
        claim="transcribe's shared settings have serve's flag names, so one MEDIASERVER_ASR_* variable sets both",
        source="fresh-user gaps 5 (transcribe env names)",
        edits=(Edit("mediaserver/asr/transcribe.py",
                    '    add_option(parser, "--asr-feed", "--feed", choices=FEEDS, default=DEFAULT_FEED,\n',
                    '    add_option(parser, "--feed", "--asr-feed", choices=FEEDS, default=DEFAULT_FEED,  # mutation\n'),),
        tests=("tests/test_asr_transcribe.py::test_transcribe_flags_are_named_as_serves_so_one_variable_sets_both",),
    ),
    Mutation(
        name="realtime-audio-end-past-the-file",
        claim="transcribe --realtime's audio times never pass the file's end (the appended silence)",
        source="fresh-user gaps 6 (audio_end_s past the end)",
        edits=(Edit("mediaserver/asr/transcribe.py",
                    "        return round(min(ms / 1000.0, duration_s) if duration_s is not None else ms / 1000.0, 3)\n",
                    "        return round(ms / 1000.0, 3)  # mutation\n"),),
        tests=("tests/test_asr_transcribe.py::test_realtime_audio_times_never_pass_the_end_of_the_file",),
    ),
    # ---- fresh-user trial 2: input files, variables, empty values, client log --------------------
    Mutation(
        name="unreadable-input-unprefixed",
        claim="an unreadable input file is one 'mediaserver CMD: error:' line naming it (transcribe, enhance)",
        source="fresh-user trial 2 §1 (input errors)",
        edits=(Edit("mediaserver/audio.py", "            print_problem(args, str(exc))\n",
                    "            print(f\"error: {exc}\", file=__import__(\"sys\").stderr)  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_an_unreadable_input_file_is_one_line_naming_it_exit_2",
               "tests/test_cli_errors.py::test_every_error_line_of_the_package_names_its_command"),
    ),
    Mutation(
        name="transcribe-unreadable-input-exit-1",
        claim="transcribe exits 2 (an input error, as a bad flag) when an input is unreadable, the others transcribed",
        source="fresh-user trial 2 §1 (input errors)",
        edits=(Edit("mediaserver/asr/transcribe.py", "    return 2 if failed else 0",
                    "    return 1 if failed else 0  # mutation"),),
        tests=("tests/test_asr_transcribe.py::test_cli_prints_text_and_writes_json",),
    ),
    Mutation(
        name="client-send-unreadable-unprefixed",
        claim="client --send of an unreadable file is one 'mediaserver client: error:' line, exit 2",
        source="fresh-user trial 2 §1 (input errors)",
        edits=(Edit("mediaserver/client.py", '            raise UsageError(f"--send: {exc}") from None\n',
                    '            print(f"{exc}", file=__import__("sys").stderr)  # mutation\n'
                    '            return 1\n'),),
        tests=("tests/test_cli_errors.py::test_an_unreadable_input_file_is_one_line_naming_it_exit_2",),
    ),
    Mutation(
        name="variable-named-as-its-flag",
        claim="an error in a value that came from MEDIASERVER_X names the variable, not the flag",
        source="fresh-user trial 2 §2 (variables)",
        edits=(Edit("mediaserver/cli.py", "error: {name_sources(message, args)}\", file=sys.stderr)",
                    "error: {exc}\", file=sys.stderr)  # mutation"),),
        tests=("tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable",
               "tests/test_cli_errors.py::test_a_bad_variable_is_named_in_a_real_process_too"),
    ),
    Mutation(
        name="variable-value-unchecked",
        claim="a variable's value is checked as the flag's (type, choices, yes/no): MEDIASERVER_OPUS_COMPLEXITY=99 is refused",
        source="fresh-user trial 2 §2 (variables)",
        edits=(Edit("mediaserver/cli.py", "        check_env(args._parser, args)   #",
                    "        pass  # mutation #"),),
        tests=("tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable",),
    ),
    Mutation(
        name="repeated-flag-adds-to-its-variable",
        claim="a repeatable flag replaces its variable's list (the flag wins), not adds to it",
        source="fresh-user trial 2 §2 (variables)",
        edits=(Edit("mediaserver/config.py", "                    setattr(namespace, self.dest, None)\n",
                    "                    pass  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_the_flag_wins_over_its_variable_bad_or_repeated",),
    ),
    Mutation(
        name="empty-flag-value-accepted",
        claim="an empty flag value (--asr '', --secret '', --rooms ,) is refused, not silently off",
        source="fresh-user trial 2 §3 (empty values)",
        edits=(Edit("mediaserver/config.py", "                    if isinstance(value, str) and is_blank(value) and \\\n",
                    "                    if False and \\\n"),),
        tests=("tests/test_cli_errors.py::test_an_empty_value_is_refused_naming_where_it_came_from",),
    ),
    Mutation(
        name="empty-variable-accepted",
        claim="an empty variable (MEDIASERVER_ASR=) is refused naming it, not silently off",
        source="fresh-user trial 2 §3 (empty values)",
        edits=(Edit("mediaserver/config.py", "    if is_blank(raw):\n", "    if False:  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_an_empty_value_is_refused_naming_where_it_came_from",),
    ),
    Mutation(
        name="client-rejoin-log-repr",
        claim="the client's join and rejoin failures are one line with the cause in words, not an exception repr",
        source="fresh-user trial 2 §4 (client log)",
        edits=(Edit("mediaserver/client.py", "    if isinstance(exc, aiohttp.ClientConnectorError):\n",
                    "    return repr(exc)  # mutation\n    if isinstance(exc, aiohttp.ClientConnectorError):\n"),),
        tests=("tests/test_client_rejoin_log.py",),
    ),
    Mutation(
        name="client-rejoin-log-no-next-try",
        claim="a failed rejoin attempt says when the next one comes (retry in N s)",
        source="fresh-user trial 2 §4 (client log)",
        edits=(Edit("mediaserver/client.py", '"rejoin attempt %d through %s %s; retry in %.1f s%s"',
                    '"rejoin attempt %d through %s %s%.0s%s"'),),
        tests=("tests/test_client_rejoin_log.py::test_rejoin_attempts_log_one_line_each_with_cause_and_next_try",),
    ),
    Mutation(
        name="compose-asr-empty",
        claim="docker-compose.yml's default settings are accepted (MEDIASERVER_ASR defaults to none, not empty)",
        source="fresh-user trial 2 §3 (empty values)",
        edits=(Edit("docker-compose.yml", "    MEDIASERVER_ASR: ${ASR:-none}\n", "    MEDIASERVER_ASR: ${ASR:-}\n"),),
        tests=("tests/test_cli_errors.py::test_docker_compose_defaults_are_accepted_settings",),
    ),
    Mutation(
        name="panel-accelerate-missing",
        claim="the connection panel shows the jitter buffer's accelerate (and expand) counts of my stream",
        source="fresh-user trial 2 §5 (connection panel)",
        edits=(Edit("static/js/stats.js", '  ["Sped up (accelerate)", (e) => e.accelerate, " frames"],\n', ""),),
        tests=("tests/test_stats_panel.py::test_time_scaling_of_my_stream_has_rows_in_the_connection_panel",),
    ),
    Mutation(
        name="panel-trimmed-missing",
        claim="the connection panel shows the jitter buffer's trimmed_ms of my stream",
        source="fresh-user trial 2 §5 (connection panel)",
        edits=(Edit("static/js/stats.js", '(e) => e.trimmed_ms, " ms"]', '(e) => undefined, " ms"]  // mutation'),),
        tests=("tests/test_stats_panel.py::test_time_scaling_of_my_stream_has_rows_in_the_connection_panel",),
    ),
    Mutation(
        name="panel-text-drops-unit",
        claim="a paired row of the connection panel (noise floor, SNR, concealed/FEC/DTX) shows its unit",
        source="fresh-user trial 3 §5 (connection panel units)",
        edits=(Edit("static/js/stats.js", 'return `${value}${unit}`;', 'return String(value);  // mutation'),),
        tests=("tests/test_stats_panel.py::test_paired_rows_show_their_unit_and_a_missing_part_as_a_dash",),
    ),
    Mutation(
        name="panel-triple-hidden-by-first",
        claim="a concealed/FEC/DTX row shows each missing share as a dash, whichever is missing",
        source="fresh-user trial 3 §5 (connection panel units)",
        edits=(Edit("static/js/stats.js", "[a, b, c].every((v) => v === undefined)", "a === undefined  /* mutation */"),),
        tests=("tests/test_stats_panel.py::test_paired_rows_show_their_unit_and_a_missing_part_as_a_dash",),
    ),
    Mutation(
        name="idle-worker-never-reconnects",
        claim="a worker with no streams reconnects by itself to a restarted inference process",
        source="fresh-user trial 3 §6 (--workers: an idle worker stayed disconnected after the enhancer's restart)",
        edits=(Edit("mediaserver/enhance/shared_client.py",
                    "            self._error = reason\n            self._start_reconnecting()\n",
                    "            self._error = reason  # mutation: reconnect only when a tick asks\n"),
               Edit("mediaserver/enhance/shared_client.py",
                    "        if self._error is not None:\n            self._count_error()\n",
                    "        if self._error is not None:\n            self._start_reconnecting()\n            self._count_error()\n")),
        tests=("tests/test_shared_stage.py::test_an_idle_worker_reconnects_to_a_restarted_inference_process_by_itself",),
    ),
    Mutation(
        name="weights-error-passes-unsafe-advice",
        claim="a weights file the safe unpickler refuses is reported with its reason only, without torch's advice to load it unsafely",
        source="fresh-user trial 3 (corrupt-model line repeated torch's weights_only=False advice)",
        edits=(Edit("mediaserver/enhance/weights.py", "corrupt: {_load_failure(exc)}", "corrupt: {exc}"),),
        tests=("tests/test_enhance_weights.py::test_a_file_the_safe_unpickler_refuses_is_one_short_reason_without_unsafe_advice",),
    ),
    Mutation(
        name="early-stop-signal-runs-the-start-up-on",
        claim="a stop signal while serve imports ends the program at once (exit 0), not after the rest of its start-up",
        source="fresh-user trial 2 §6 (slow idle stops)",
        edits=(Edit("mediaserver/cli.py", "        remember_stop_signals(exit_at_once=program)\n",
                    "        remember_stop_signals()  # mutation\n"),),
        tests=("tests/test_stop_fast.py::test_a_signal_while_serve_imports_ends_it_at_once",),
    ),
    Mutation(
        name="shutdown-collects-every-object",
        claim="the program freezes its objects as it ends, so the interpreter's shutdown does not collect them all again",
        source="fresh-user trial 2 §6 (slow idle stops)",
        edits=(Edit("mediaserver/cli.py", "    gc.freeze()\n", "    pass  # mutation\n"),),
        tests=("tests/test_stop_fast.py::test_the_program_freezes_its_objects_before_the_interpreter_shuts_down",),
    ),
    Mutation(
        name="stopped-server-tears-the-interpreter-down",
        claim="a stopped serve runs its atexit handlers and exits with its code without the interpreter's teardown",
        source="fresh-user trial 2 §6 (slow idle stops)",
        edits=(Edit("mediaserver/cli.py", "        atexit._run_exitfuncs()\n        _exit_now(code)\n",
                    "        pass  # mutation\n"),),
        tests=("tests/test_stop_fast.py::test_a_stopped_server_runs_its_atexit_handlers_and_skips_the_teardown",),
    ),
    Mutation(
        name="serve-missing-model-traceback",
        claim="serve --model / --canary-model naming no weights file is one line naming the flag, exit 2, before anything starts",
        source="fresh-user trial 2 §1 (input errors: model files)",
        edits=(Edit("mediaserver/enhance/stage_options.py", "    problem = model_problem(args)\n",
                    "    problem = None  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_missing_model_file_is_one_line_naming_the_flag",),
    ),
    Mutation(
        name="bench-missing-model-traceback",
        claim="bench --model naming no weights file is one line naming the flag, exit 2",
        source="fresh-user trial 2 §1 (input errors: model files)",
        edits=(Edit("mediaserver/enhance/bench.py", '            raise UsageError(f"--model: {exc}") from None\n',
                    "            raise  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_missing_model_file_is_one_line_naming_the_flag",),
    ),
    Mutation(
        name="serve-corrupt-model-traceback",
        claim="serve --model naming a file that is no checkpoint is one line naming the flag, exit 2, not a traceback",
        source="fresh-user trial 2 §1 (input errors: model files)",
        edits=(Edit("mediaserver/sfu/server.py", "        if isinstance(exc, WeightsError):\n",
                    "        if False:  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_missing_model_file_is_one_line_naming_the_flag",),
    ),
    Mutation(
        name="workers-cluster-front-never-redirects",
        claim="serve --workers N --redis-url: a join on a machine that does not own the room is redirected (4307) to the owner, where the client ends in the room and hears it",
        source="issue 14 follow-up (--workers with --redis-url)",
        edits=(Edit("mediaserver/workers/cluster_front.py",
                    "        placement = await self.node.place(room)\n",
                    "        placement = await self.node.place(room)\n"
                    "        placement = type(placement)(outcome=\"degraded\")  # mutation: always served here\n"),),
        tests=("tests/test_workers_cluster.py::test_a_join_on_the_other_machine_is_redirected_to_the_owner_and_hears_the_room",),
    ),
    Mutation(
        name="workers-cluster-token-per-machine",
        claim="serve --workers N --redis-url: a token spent on one machine is refused on the other (spent in Redis by the front)",
        source="issue 14 follow-up (--workers with --redis-url)",
        edits=(Edit("mediaserver/workers/cluster_front.py",
                    "        first = await self.node.spend_once(jti, expires)\n",
                    "        first = True  # mutation: the machine's memory only\n"),),
        tests=("tests/test_workers_cluster.py::test_a_token_spent_on_one_machine_is_refused_on_the_other",),
    ),
    Mutation(
        name="workers-cluster-empty-room-kept",
        claim="serve --workers N --redis-url: a room's claim is no longer renewed once its last participant left, so another machine can own it",
        source="issue 14 follow-up (--workers with --redis-url)",
        edits=(Edit("mediaserver/workers/cluster_front.py",
                    "local_rooms=lambda: set(self.front.placement.rooms()),",
                    "local_rooms=lambda: (lambda kept: kept.update(self.front.placement.rooms()) or set(kept))"
                    "(self.__dict__.setdefault(\"_kept\", set())),  # mutation: rooms never forgotten"),),
        tests=("tests/test_workers_cluster.py::test_the_rooms_claim_goes_with_its_last_participant_and_another_machine_takes_it",),
    ),
    Mutation(
        name="workers-cluster-worker-own-node",
        claim="serve --workers N --redis-url: the front is the machine's one node; after kill -9 of a room's worker the participants come back on the same machine, placed by the front's node",
        source="issue 14 follow-up (--workers with --redis-url)",
        edits=(Edit("mediaserver/sfu/server.py",
                    "    front_cluster = os.environ.get(FRONT_CLUSTER_ENV) if websec.behind_front() else None\n",
                    "    front_cluster = None  # mutation: every worker its own cluster node\n"),),
        tests=("tests/test_workers_cluster.py::test_kill_9_of_a_rooms_worker_its_participants_come_back_on_the_same_machine",),
    ),
    Mutation(
        name="workers-cluster-degraded-token-per-worker",
        claim="serve --workers N --redis-url with Redis away: a token admits one join on the whole machine, not one per worker",
        source="issue 14 follow-up (--workers with --redis-url)",
        edits=(Edit("mediaserver/workers/cluster_front.py",
                    "            self.machine.use(Grant(room=\"\", identity=\"\", expires=expires, jti=jti), now=time.time())\n",
                    "            pass  # mutation: no machine-wide memory\n"),),
        tests=("tests/test_workers_cluster.py::test_redis_away_keeps_the_call_serves_new_rooms_and_a_token_stays_single_use_on_the_machine",),
    ),
    Mutation(
        name="workers-cluster-lost-room-stays",
        claim="serve --workers N --redis-url: a room lost to another node's older claim after a Redis outage has its participants redirected to the winner by their worker",
        source="issue 14 follow-up (--workers with --redis-url)",
        edits=(Edit("mediaserver/workers/cluster_front.py",
                    "        index = self.front.placement.worker_of(room)\n",
                    "        index = None  # mutation: the room's worker is never told\n"),),
        tests=("tests/test_workers_cluster.py::test_a_room_lost_to_an_older_claim_after_an_outage_moves_its_participants",),
    ),
    Mutation(
        name="workers-corrupt-model-traceback",
        claim="serve --workers N --model/--canary-model naming a file that is no checkpoint is one line naming the flag, exit 2, with nothing left running (was a 90-line traceback, exit 1)",
        source="fresh-user trial 3 §1 (serve --workers: model files)",
        edits=(Edit("mediaserver/enhance/shared_process.py", "                if code == USAGE_EXIT and usage:\n",
                    "                if False:  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_workers_a_corrupt_model_is_one_line_naming_the_flag_and_nothing_runs",),
    ),
    Mutation(
        name="workers-failed-start-leaves-front-open",
        claim="serve --workers N: a front whose start-up fails (a taken port, an unusable model) stops the workers it started, then says the one-line error",
        source="fresh-user trial 3 §1 (serve --workers: model files)",
        edits=(Edit("mediaserver/workers/front.py",
                    "        await front.stop(0.5)\n        await stop_unstarted(app, runner)\n        raise\n",
                    "        raise  # mutation: nothing stopped\n"),),
        tests=("tests/test_cli_errors.py::test_a_taken_port_is_one_line_naming_the_flag_after_the_workers_stopped",),
    ),
    Mutation(
        name="serve-port-taken-traceback",
        claim="serve --port P with P taken is one line naming --port, exit 2 (was an OSError traceback, exit 1)",
        source="fresh-user trial 3 §1-2 follow-up (found while checking a front's failed start)",
        edits=(Edit("mediaserver/sfu/server.py", "    except OSError as exc:\n        if exc.errno == errno.EADDRINUSE:\n",
                    "    except ImportError as exc:  # mutation\n        if exc.errno == errno.EADDRINUSE:\n"),),
        tests=("tests/test_cli_errors.py::test_a_taken_port_is_one_line_naming_the_flag_after_the_workers_stopped",),
    ),
    Mutation(
        name="serve-corrupt-canary-traceback",
        claim="serve --canary-model naming a file that is no checkpoint is one line naming the flag, exit 2 (was a traceback)",
        source="fresh-user trial 3 §1 (serve --workers: model files)",
        edits=(Edit("mediaserver/sfu/models_admin.py",
                    "        if not isinstance(exc, (WeightsError, RegistryError)):\n",
                    "        if True:  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_workers_a_corrupt_model_is_one_line_naming_the_flag_and_nothing_runs",),
    ),
    Mutation(
        name="redis-url-scheme-unchecked",
        claim="serve --redis-url foo://x (or MEDIASERVER_REDIS_URL) is one line naming it, exit 2, at parse time (was 'listening', then a ValueError traceback)",
        source="fresh-user trial 3 §2 (--redis-url)",
        edits=(Edit("mediaserver/config.py",
                    "    if not text.startswith(REDIS_SCHEMES) or text in REDIS_SCHEMES:\n",
                    "    if False:  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable",),
    ),
    Mutation(
        name="workers-outlive-killed-front",
        claim="serve --workers N: kill -9 of the front ends its workers at once, also while they start (were orphaned for ~10 s, then a BrokenPipeError traceback)",
        source="fresh-user trial 3 §2 (orphaned workers)",
        edits=(Edit("mediaserver/workers/process.py",
                    "        env[FRONT_PID_ENV] = str(os.getpid())",
                    "        pass  # mutation"),),
        tests=("tests/test_cli_errors.py::test_workers_end_with_a_killed_front",),
    ),
    Mutation(
        name="canary-share-range-late",
        claim="--canary-share out of 0..1 is refused at parse time naming the flag or its variable, exit 2 (was a 49-line ValueError traceback)",
        source="fresh-user trial 3 §3 (option ranges)",
        edits=(Edit("mediaserver/enhance/canary.py",
                    'add_option(parser, "--canary-share", type=number_in(0, 1),',
                    'add_option(parser, "--canary-share", type=float,'),),
        tests=("tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable",),
    ),
    Mutation(
        name="option-ranges-unchecked",
        claim="numeric options with a range (--vad-mode, --opus-bitrate, --dnsmos-sample-s, --atten-lim-db, ...) are refused out of it at parse time, one line naming the flag",
        source="fresh-user trial 3 §3 (option ranges)",
        edits=(Edit("mediaserver/config.py",
                    "        if not math.isfinite(value) or (not (or_zero and value == 0) and (\n",
                    "        if False and (not (or_zero and value == 0) and (  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable",),
    ),
    Mutation(
        name="required-flag-ignores-variable",
        claim="a required option (enhance --out-dir, eval --data) is satisfied by its MEDIASERVER_* variable; an empty one is an error naming it",
        source="fresh-user trial 3 §4 (required options)",
        edits=(Edit("mediaserver/config.py", '        kwargs["required"] = False\n', ""),),
        tests=("tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable",
               "tests/test_cli_errors.py::test_an_empty_value_is_refused_naming_where_it_came_from"),
    ),
    Mutation(
        name="unknown-flag-names-mediaserver",
        claim="serve --bogus names 'mediaserver serve' and 'mediaserver serve --help' (was 'mediaserver: error: ... (see mediaserver --help)')",
        source="fresh-user trial 3 §5 (unknown flags)",
        edits=(Edit("mediaserver/cli.py", "    args, extra = parser.parse_known_args(argv)\n",
                    "    args, extra = parser.parse_args(argv), []  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_an_unknown_flag_names_the_sub_command_and_its_help",),
    ),
    Mutation(
        name="model-root-unchecked",
        claim="serve --model-root naming no folder is one line naming the flag, exit 2 (was accepted silently)",
        source="fresh-user trial 3 §6 (--model-root)",
        edits=(Edit("mediaserver/enhance/stage_options.py", "    problem = roots_problem(args)\n",
                    "    problem = None  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_missing_model_root_is_refused_naming_the_flag",),
    ),
    # ---- fresh-user trial 4: the last session's gaps (model admin, canary, workers' stop) ------
    Mutation(
        name="inference-process-teardown",
        claim="a stopped inference process (--workers N) runs its atexit handlers and exits at once, without the interpreter's teardown (0.55 s with torch)",
        source="fresh-user trial 4 §9 (stopping --workers 2 took 1.4-1.6 s)",
        edits=(Edit("mediaserver/enhance/shared.py", "if __name__ == \"__main__\":\n    _exit_stopped(main())\n",
                    "if __name__ == \"__main__\":\n    sys.exit(main())  # mutation\n"),),
        tests=("tests/test_stop_fast.py::test_a_stopped_inference_process_runs_its_atexit_handlers_and_skips_the_teardown",),
    ),
    Mutation(
        name="inference-process-logs-at-info",
        claim="the inference process of --workers N logs at the front's --log-level from its first line (INFO lines came before a start-up error whatever --log-level said)",
        source="fresh-user trial 4 §8 (--log-level)",
        edits=(Edit("mediaserver/enhance/shared.py", "    configure_logging(args.log_level, ",
                    "    configure_logging(\"INFO\",  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_workers_children_honour_the_log_level_from_their_first_line",),
    ),
    Mutation(
        name="shared-outage-traceback",
        claim="the shared enhancer out of reach (an expected restart, a missed deadline) is one WARNING line per interval in a worker, no traceback; other stage failures keep theirs",
        source="fresh-user trial 4 §7 (SharedStageTimeout traceback)",
        edits=(Edit("mediaserver/sfu/mediaclock.py", "        expected = isinstance(exc, SharedStageError)\n",
                    "        expected = False  # mutation\n"),),
        tests=("tests/test_mediaclock.py::test_an_enhancer_out_of_reach_is_one_warning_line_without_a_traceback",),
    ),
    Mutation(
        name="client-url-named-twice",
        claim="mediaserver client --url foo://x names the flag once, as it is parsed (was '--url: --url must be ...')",
        source="fresh-user trial 4 §6 (client --url)",
        edits=(Edit("mediaserver/client.py", "        raise ValueError(f\"must be http(s):// or ws(s)://host:port, got {url!r}\")",
                    "        raise ValueError(f\"--url must be http(s):// or ws(s)://host:port, got {url!r}\")  # mutation"),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",),
    ),
    Mutation(
        name="canary-window-unchecked",
        claim="the canary's thresholds are range-checked as their flags or variables are parsed, naming them (--canary-window-s 0 never compared anything)",
        source="fresh-user trial 4 §5 (canary thresholds)",
        edits=(Edit("mediaserver/enhance/canary.py", "    add_option(parser, \"--canary-window-s\", type=number_in(2), default=d.window_s,",
                    "    add_option(parser, \"--canary-window-s\", type=float, default=d.window_s,  # mutation"),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",
               "tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable"),
    ),
    Mutation(
        name="models-401-names-secret-only",
        claim="every 401 says all its route accepts: GET /models names the server secret and the metrics token",
        source="fresh-user trial 4 §3 (401 texts)",
        edits=(Edit("mediaserver/sfu/models_admin.py",
                    "        keys_named = [SERVER_SECRET] + ([METRICS_TOKEN] if read and metrics_token else [])\n",
                    "        keys_named = [SERVER_SECRET]  # mutation\n"),),
        tests=("tests/test_unauthorised.py",),
    ),
    Mutation(
        name="rolled-back-at-monotonic",
        claim="the canary's rolled_back_at is the wall-clock time in ISO 8601 UTC (was the loop's monotonic time), kept across an inference process restart",
        source="fresh-user trial 4 §2 (rolled_back_at)",
        edits=(Edit("mediaserver/enhance/canary.py",
                    "        self.state, self.reason, self.rolled_back_at = \"rolled-back\", reason, wall\n        return True\n",
                    "        self.state, self.reason, self.rolled_back_at = \"rolled-back\", reason, now  # mutation\n        return True\n"),),
        tests=("tests/test_model_control.py::test_rolled_back_at_is_the_wall_clock_time_in_iso_8601",
               "tests/test_model_control.py::test_the_state_comes_back_after_a_restart_and_a_rollback_stays_rolled_back"),
    ),
    Mutation(
        name="room-switch-of-no-room-accepted",
        claim="POST /admin/rooms/{room}/model for a room with no participant is 404 (nothing loaded, no override) unless the body says preset (was 200 {streams: 0} and a lasting override)",
        source="fresh-user trial 4 §1 (room switch of a room that does not exist)",
        edits=(Edit("mediaserver/enhance/model_control.py", "        if not live and not preset:\n",
                    "        if False:  # mutation\n"),),
        tests=("tests/test_model_control.py::test_a_room_that_is_not_live_is_404_unless_the_switch_is_a_preset",
               "tests/test_canary.py::test_admin_endpoints_switch_a_room_live_and_need_the_secret"),
    ),
    Mutation(
        name="workers-room-switch-liveness-unknown",
        claim="serve --workers N: a room switch is 404 for a room no worker hosts, as in one process (the front says whether its placement has the room)",
        source="fresh-user trial 4 §1 (single process and --workers the same)",
        edits=(Edit("mediaserver/workers/admin_relay.py",
                    "                                 live=self.front.placement.worker_of(room) is not None)",
                    "                                 live=True)  # mutation"),),
        tests=("tests/test_workers_admin.py::test_the_model_admin_through_the_front_switches_rooms_on_both_workers",),
    ),
    Mutation(
        name="rollback-moves-rooms-switched-by-hand",
        claim="a canary rollback moves back the streams its share placed and keeps rooms switched to the candidate by hand (override and streams)",
        source="fresh-user trial 4 §4 (rollback and manual switches)",
        edits=(Edit("mediaserver/enhance/model_control.py", "            if id(handle) not in kept:\n",
                    "            if True:  # mutation\n"),),
        tests=("tests/test_model_control.py::test_a_rollback_moves_back_what_the_canary_placed_and_keeps_rooms_switched_to_it_by_hand",),
    ),
    Mutation(
        name="log-level-unchecked",
        claim="mediaserver --log-level foo is one line naming the flag, exit 2 (was logging's ValueError traceback)",
        source="fresh-user trial 4 §8 follow-up (--log-level)",
        edits=(Edit("mediaserver/cli.py", "    parser.add_argument(\"--log-level\", type=log_level, default=\"INFO\",",
                    "    parser.add_argument(\"--log-level\", default=\"INFO\",  # mutation"),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",),
    ),
    Mutation(
        name="workers-default-one-process",
        claim="serve with no --workers runs one media worker per usable core (issue 14: default the number of cores)",
        source="issue 14 (Build: --workers N, default the number of cores)",
        edits=(Edit("mediaserver/sfu/server.py", "    add_option(parser, \"--workers\", type=count_or_auto(MAX_WORKERS), default=\"auto\",",
                    "    add_option(parser, \"--workers\", type=count_or_auto(MAX_WORKERS), default=\"1\",  # mutation"),),
        tests=("tests/test_workers_default.py::test_serve_without_workers_runs_one_media_worker_per_usable_core",
               "tests/test_workers_default.py::test_workers_accepts_auto_and_refuses_counts_out_of_range"),
    ),
    Mutation(
        name="workers-auto-not-a-count",
        claim="--workers auto / MEDIASERVER_WORKERS=auto is one per usable core, capped at 256",
        source="issue 14 (Build: --workers N, default the number of cores)",
        edits=(Edit("mediaserver/config.py", "        if text.strip().lower() == \"auto\":\n            return min(cap, usable_cores())",
                    "        if text.strip().lower() == \"auto\":\n            return usable_cores()  # mutation"),),
        tests=("tests/test_workers_default.py::test_workers_accepts_auto_and_refuses_counts_out_of_range",),
    ),
    Mutation(
        name="asr-pool-per-worker-is-the-machines",
        claim="each media worker's recogniser pool is its share of the machine's (was: every worker sized itself to all cores)",
        source="issue 14 (default --workers = cores) with issue 11 (a pool of recogniser workers sized to the machine)",
        edits=(Edit("mediaserver/asr/local.py", "    return max(1, (usable_cores() - 1) // max(1, threads) // media_workers)",
                    "    return max(1, (usable_cores() - 1) // max(1, threads))  # mutation"),),
        tests=("tests/test_workers_default.py::test_a_media_workers_recogniser_pool_is_its_share_of_the_machine",),
    ),
    Mutation(
        name="front-hides-the-worker-count",
        claim="the front tells each media worker how many they are (MEDIASERVER_MEDIA_WORKERS), which sizes its recognisers",
        source="issue 14 (default --workers = cores) with issue 11 (recogniser pool sized to the machine)",
        edits=(Edit("mediaserver/workers/front.py", "        env: dict[str, str] = {MEDIA_WORKERS_ENV: str(args.workers)}",
                    "        env: dict[str, str] = {}  # mutation"),),
        tests=("tests/test_workers_default.py::test_serve_without_workers_runs_one_media_worker_per_usable_core",),
    ),
    Mutation(
        name="workers-auto-ignores-the-cpu-quota",
        claim="auto workers follow a container's CPU quota (docker --cpus 2 on a 64-core host: 2, not 64)",
        source="issue 14 (default the number of cores), containers",
        edits=(Edit("mediaserver/config.py", "    if quota is not None:\n        cores = min(cores, math.ceil(quota))",
                    "    if quota is not None and False:  # mutation\n        cores = min(cores, math.ceil(quota))"),),
        tests=("tests/test_workers_default.py::test_usable_cores_is_the_affinity_lowered_to_the_quota",),
    ),
    Mutation(
        name="cgroup-v1-quota-unread",
        claim="the CPU quota is read from cgroup v1 as well as v2",
        source="issue 14 (default the number of cores), containers",
        edits=(Edit("mediaserver/config.py", "    for folder in _up_from(root / \"cpu\", v1_path):",
                    "    for folder in _up_from(root, v1_path):  # mutation"),),
        tests=("tests/test_workers_default.py::test_the_cgroup_cpu_quota_is_read_from_v2_or_v1",),
    ),
    Mutation(
        name="inference-polls-for-its-front",
        claim="the inference process of --workers N learns of its front's death from a pidfd the moment it happens (it polled getppid once a second)",
        source="fresh-user trial 4 §9 (the inference process noticing the front's death)",
        edits=(Edit("mediaserver/enhance/shared.py",
                    "    if not hasattr(os, \"pidfd_open\") or os.getppid() != parent:\n        return None\n",
                    "    if True:  # mutation\n        return None\n"),),
        tests=("tests/test_shared_stage.py::test_the_inference_process_is_told_when_its_front_dies_not_by_polling",),
    ),
    Mutation(
        name="override-not-taken-back",
        claim="DELETE /admin/rooms/{room}/model takes a room's override (switch or preset) back: its streams and later joins get the router's pick again",
        source="fresh-user trial 4 §1 follow-up (an override kept for good)",
        edits=(Edit("mediaserver/enhance/model_control.py", "        del self.router.overrides[room]\n        version = self.router.model_for(room)",
                    "        version = self.router.model_for(room)  # mutation: the override stays"),),
        tests=("tests/test_model_control.py::test_an_override_is_taken_back_and_the_room_gets_the_routers_pick_again",
               "tests/test_canary.py::test_admin_endpoints_switch_a_room_live_and_need_the_secret"),
    ),
    # ---- the stop with --workers: every client told before its media closes (sfu/wsclose.py) ---
    Mutation(
        name="drain-closes-media-before-the-clients-answer",
        claim="on SIGTERM a media worker closes a participant's peer connection only after the client answered the close that follows server-shutdown (or its drain time ran out)",
        source="last session's finding 1 (media-failed instead of server-shutdown, 2 of 8 stops under load)",
        edits=(Edit("mediaserver/sfu/signalling.py",
                    'self.outbox.close(code, b"server shutdown", before=self._reader.stop)',
                    'self.outbox.close(code, b"server shutdown")  # mutation'),),
        tests=("tests/test_workers.py::test_a_worker_closes_a_clients_media_only_after_the_client_has_its_server_shutdown",
               "tests/test_drain.py::test_drain_does_not_wait_for_a_client_that_stopped_reading"),
    ),
    Mutation(
        name="front-answers-a-workers-close-for-the-client",
        claim="the front answers a worker's close only after the client answered it (so the worker closes the media after the client read server-shutdown)",
        source="last session's finding 1 (media-failed instead of server-shutdown, 2 of 8 stops under load)",
        edits=(Edit("mediaserver/workers/front.py",
                    "                await reader.stop()\n                await ws.close(code=code",
                    "                await ws.close(code=code"),),
        tests=("tests/test_workers.py::test_a_worker_closes_a_clients_media_only_after_the_client_has_its_server_shutdown",),
    ),
    # ---- issue 9: the msenh-v3 training snapshot shipped opt-in (models/msenh-v3-s8250) -------
    Mutation(
        name="v3-snapshot-checksum-mismatch",
        claim="the shipped msenh-v3-s8250 weights have the sha256 its model.json and card quote",
        source="issue 9 (msenh-v3 packaged as an opt-in registry model)",
        edits=(Edit("models/msenh-v3-s8250/model.json", '"sha256": "6f0a8ae6', '"sha256": "00000000'),),
        tests=("tests/test_shipped_models.py::test_shipped_registry_lists_the_v3_snapshot_opt_in_with_its_checksum",),
    ),
    Mutation(
        name="v3-snapshot-made-default",
        claim="msenh-v3-s8250 is opt-in (canary, room switch, --model): the default model stays msenh-v2",
        source="issue 9 (msenh-v3 packaged as an opt-in registry model)",
        edits=(Edit("mediaserver/enhance/registry.py", 'DEFAULT_MODEL = "msenh-v2"\n',
                    'DEFAULT_MODEL = "msenh-v3-s8250"  # mutation\n'),),
        tests=("tests/test_shipped_models.py::test_shipped_registry_lists_the_v3_snapshot_opt_in_with_its_checksum",
               "tests/test_shipped_models.py::test_a_stream_switched_to_the_v3_snapshot_is_enhanced_by_it"),
    ),
    Mutation(
        name="v3-band-state-dropped-between-hops",
        claim="msenh-v3-s8250 streams hop by hop exactly as it runs offline (its per-band GRU state is carried)",
        source="issue 9 (streaming = offline for the shipped v3 snapshot)",
        edits=(Edit("mediaserver/enhance/model.py", "            new_state.append(hi)\n",
                    "            new_state.append(torch.zeros_like(hi))  # mutation\n"),),
        tests=("tests/test_shipped_models.py::test_the_v3_snapshot_streams_as_it_runs_offline_with_the_stages_delay",),
    ),
    Mutation(
        name="switched-stream-not-on-the-v3-snapshot",
        claim="a stream switched to msenh-v3-s8250 is enhanced by those weights (not the default's)",
        source="issue 9 (msenh-v3 packaged as an opt-in registry model)",
        edits=(Edit("mediaserver/enhance/stage.py", "            model = load_model(path, device=self._device)\n",
                    "            model = load_model(self.models.resolve(None)[1], device=self._device)  # mutation\n"),),
        tests=("tests/test_shipped_models.py::test_a_stream_switched_to_the_v3_snapshot_is_enhanced_by_it",),
    ),
    # ---- fresh-user trial 5 (today's changes from README alone) ---------------------------------
    Mutation(
        name="weights-registry-name-ignored",
        claim="bench and transcribe take a shipped model's name for --model (msenh-v3-s8250), as serve and enhance do",
        source="fresh-user trial 5 (bench/transcribe --model msenh-v3-s8250: weights not found)",
        edits=(Edit("mediaserver/enhance/weights.py", "        if path.name in registry:\n",
                    "        if False:  # mutation\n"),),
        tests=("tests/test_enhance_weights.py::test_a_shipped_models_name_is_its_weights_from_any_folder",),
    ),
    Mutation(
        name="enhance-unknown-model-traceback",
        claim="enhance --model with an unknown name is one line naming the flag and the known names, exit 2",
        source="fresh-user trial 5 (enhance --model msenh-v9: RegistryError traceback, exit 1)",
        edits=(Edit("mediaserver/enhance/offline.py",
                    "    except RegistryError as exc:   # an unknown name: its text starts \"--model NAME: ...\"\n"
                    "        raise UsageError(str(exc)) from None\n", ""),),
        tests=("tests/test_cli_errors.py::test_enhance_an_unknown_model_name_is_one_line_listing_the_names",),
    ),
    Mutation(
        name="cpu-quota-root-cgroup-only",
        claim="--workers auto honours the CPU quota of the server's own cgroup (systemd CPUQuota=), not only the root's",
        source="fresh-user trial 5 (a systemd service's quota was never read)",
        edits=(Edit("mediaserver/config.py", "    return v2, v1\n", "    return \"/\", \"/\"  # mutation\n"),),
        tests=("tests/test_workers_default.py::test_the_cpu_quota_of_this_processs_own_cgroup_counts",),
    ),    Mutation(
        name="canary-of-the-stable-model-traceback",
        claim="serve --canary-model naming the stable model is one line naming the flag, exit 2, before anything starts",
        source="fresh-user trial 5 (--canary-model msenh-v2: a ValueError traceback, 82 lines with workers)",
        edits=(Edit("mediaserver/enhance/stage_options.py",
                    "        if stable == candidate:   # by name, as the canary tells its two models apart\n",
                    "        if False:  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_canary_of_the_stable_model_is_one_line_naming_the_flag",),
    ),    Mutation(
        name="env-word-said-twice",
        claim="a variable's word that is no value is said once (MEDIASERVER_WORKERS='many' is not a whole number or auto)",
        source="fresh-user trial 5 (MEDIASERVER_WORKERS='many' 'many' is not a whole number or auto)",
        edits=(Edit("mediaserver/config.py", "        raise ValueError(str(exc).removeprefix(f\"{raw!r} \")) from None\n",
                    "        raise ValueError(str(exc)) from None  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable",),
    ),
    Mutation(
        name="workers-beyond-cores-silent",
        claim="serve warns once when --workers is more than the usable cores (fresh-user trial 5 §4)",
        source="issue 14 (default the number of cores), fresh-user trial 5",
        edits=(Edit("mediaserver/sfu/server.py", "    if not worker and args.workers > cores:",
                    "    if not worker and args.workers > cores and False:  # mutation"),),
        tests=("tests/test_workers_default.py::test_more_workers_than_usable_cores_is_warned_once",),
    ),
    Mutation(
        name="canary-settings-without-canary-silent",
        claim="the canary's settings given without --canary-model are warned about once (fresh-user trial 5)",
        source="fresh-user trial 5 (issue 14 follow-up)",
        edits=(Edit("mediaserver/enhance/stage_options.py", "        if idle and not getattr(args, \"canary_model\", None):",
                    "        if idle and not getattr(args, \"canary_model\", None) and False:  # mutation"),),
        tests=("tests/test_cli_errors.py::test_flags_without_effect_are_warned_once_each",),
    ),
    Mutation(
        name="worker-exit-forgets-its-rooms",
        claim="a dead worker's exit log names the rooms it took down (was 'lost 0 room(s)': its relayed sockets released them first)",
        source="fresh-user trial 5 (issue 14: a worker that crashes takes down only its rooms; the front notices)",
        edits=(Edit("mediaserver/workers/front.py",
                    "        rooms = set(self.placement.lost(index)) | self._lost_rooms.pop(index, set())",
                    "        rooms = set(self.placement.lost(index))  # mutation"),),
        tests=("tests/test_workers.py::test_two_workers_host_two_rooms_and_a_killed_worker_stops_only_its_own",),
    ),
    # ---- fresh-user trial 6: one name for a worker; the client's captions and --url ----------
    Mutation(
        name="healthz-asr-without-worker-index",
        claim="with --workers, /healthz gives each worker's recogniser state in its own workers entry, with its index (was a bare list)",
        source="fresh-user trial 6 §1",
        edits=(Edit("mediaserver/workers/front.py",
                    "                \"asr\": rep.get(\"asr\") if isinstance(rep.get(\"asr\"), dict) else None,\n",
                    "                \"asr\": None,  # mutation\n"),),
        tests=("tests/test_workers_healthz.py::test_healthz_and_metrics_name_each_worker_by_its_index_and_worker_label",),
    ),
    Mutation(
        name="healthz-asr-list-with-workers",
        claim="/healthz asr has one process's shape with --workers N too (the machine's counts), not a per-worker list",
        source="/healthz asr was a list of per-worker entries with --workers N, one object in one process",
        edits=(Edit("mediaserver/workers/front.py",
                    "        asr = machine_asr([w[\"asr\"] for w in workers if w[\"asr\"] is not None])\n",
                    "        asr = per_worker(reports, \"asr\") or None  # mutation\n"),),
        tests=("tests/test_workers_healthz.py::test_healthz_and_metrics_name_each_worker_by_its_index_and_worker_label",),
    ),
    Mutation(
        name="healthz-asr-counts-not-summed",
        claim="the front's /healthz asr adds up the workers' counts (segments, drops, each sink's), settings as each has them",
        source="/healthz asr was a list of per-worker entries with --workers N, one object in one process",
        edits=(Edit("mediaserver/workers/front.py",
                    "        return a + b\n",
                    "        return a  # mutation\n"),),
        tests=("tests/test_workers_healthz.py::test_the_machines_asr_adds_up_each_workers_counts_in_one_process_shape",),
    ),
    Mutation(
        name="healthz-enhancer-last-keyed-by-string",
        claim="with --workers, /healthz's shared_enhancer.last is a list of each worker's view with its index (was keyed \"0\", \"1\")",
        source="fresh-user trial 6 §1",
        edits=(Edit("mediaserver/workers/front.py", "\"last\": per_worker(reports, \"enhancer\")}",
                    "\"last\": {str(i): (r or {}).get(\"enhancer\") for i, r in enumerate(reports)}}  # mutation"),),
        tests=("tests/test_workers_healthz.py::test_healthz_and_metrics_name_each_worker_by_its_index_and_worker_label",),
    ),
    Mutation(
        name="front-metrics-worker-index-label",
        claim="the front's per-worker series carry worker=\"LABEL-wN\" as the workers' own do (was worker_index)",
        source="fresh-user trial 6 §1",
        edits=(Edit("mediaserver/workers/metrics.py",
                    "\"1 while the media worker runs\",\n                               [\"worker\"]",
                    "\"1 while the media worker runs\",\n                               [\"worker_index\"]"),),
        tests=("tests/test_workers_healthz.py::test_healthz_and_metrics_name_each_worker_by_its_index_and_worker_label",),
    ),
    Mutation(
        name="front-relayed-labelled-by-number",
        claim="mediaserver_front_relayed_sockets_total names the worker a socket went to as LABEL-wN (was its bare index)",
        source="fresh-user trial 6 §1",
        edits=(Edit("mediaserver/workers/front.py", "front.metrics.relayed.labels(front.worker_name(target)).inc()",
                    "front.metrics.relayed.labels(str(target)).inc()  # mutation"),),
        tests=("tests/test_workers_healthz.py::test_healthz_and_metrics_name_each_worker_by_its_index_and_worker_label",),
    ),
    Mutation(
        name="client-summary-drops-captions",
        claim="mediaserver client's JSON summary lists the caption events it got",
        source="fresh-user trial 6 §2",
        edits=(Edit("mediaserver/client.py", "            \"captions\": self.captions.items(),",
                    "            \"captions\": [],  # mutation\n           "),),
        tests=("tests/test_asr_server.py::test_the_headless_client_keeps_the_captions_it_receives",),
    ),
    Mutation(
        name="client-final-caption-not-logged",
        claim="mediaserver client logs each final caption on stderr, one line",
        source="fresh-user trial 6 §2",
        edits=(Edit("mediaserver/client.py", "            logger.info(\"caption %s %s: %s\"",
                    "            logger.debug(\"caption %s %s: %s\""),),
        tests=("tests/test_asr_server.py::test_the_headless_client_keeps_the_captions_it_receives",),
    ),
    Mutation(
        name="client-url-empty-entry-skipped",
        claim="mediaserver client --url refuses an empty entry of its comma list at parse time, naming the flag (was skipped)",
        source="fresh-user trial 6 §3",
        edits=(Edit("mediaserver/client.py", "    return [ws_url(u) for u in comma_entries(urls)]\n",
                    "    return [ws_url(u.strip()) for u in urls.split(\",\") if u.strip()]  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",
               "tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable"),
    ),
    # ---- placement compares publishers (participants that send audio), not participants ------
    Mutation(
        name="publishers-count-listeners",
        claim="a participant that offered its audio recvonly (a listener) or has no answered offer is no publisher",
        source="placement by publishers (listeners counted as publishers)",
        edits=(Edit("mediaserver/sfu/participant.py",
                    '        return self._mic().currentDirection in ("recvonly", "sendrecv")\n',
                    "        return True  # mutation: every answered offer\n"),),
        tests=("tests/test_load_publishers.py::test_only_participants_that_send_audio_are_publishers",
               "tests/test_cluster_publishers.py"),
    ),
    Mutation(
        name="healthz-publishers-are-participants",
        claim="/healthz publishers counts the participants that send audio (a worker's tells its front's placement)",
        source="placement by publishers (/healthz had no publishers)",
        edits=(Edit("mediaserver/sfu/server.py",
                    '        "publishers": count_publishers(manager.rooms.values()),\n',
                    '        "publishers": sum(len(r.participants) for r in manager.rooms.values()),  # mutation\n'),),
        tests=("tests/test_workers_placement.py", "tests/test_cluster_publishers.py"),
    ),
    Mutation(
        name="front-places-workers-by-participants",
        claim="serve --workers N places a new room on the worker with the fewest publishers, not participants",
        source="placement by publishers (the front ranked its workers by participants)",
        edits=(Edit("mediaserver/workers/front.py",
                    '                    self.placement.report(index, publishers=int(report.get("publishers", 0)))',
                    '                    self.placement.report(index, publishers=int(report.get("participants", 0)))  # mutation'),),
        tests=("tests/test_workers_placement.py",),
    ),
    Mutation(
        name="workers-rank-ignores-publishers",
        claim="the front's worker ranking compares publishers (plus pending sockets) before rooms",
        source="placement by publishers (the front ranked its workers by participants)",
        edits=(Edit("mediaserver/workers/placement.py",
                    "    return (load.publishers + load.pending, rooms, index)\n",
                    "    return (load.pending, rooms, index)  # mutation\n"),),
        tests=("tests/test_workers_units.py::test_new_rooms_go_by_publishers_and_pending_sockets_then_rooms_then_index",),
    ),
    Mutation(
        name="workers-rooms-from-late-reports",
        claim="the front ranks a worker by the rooms it placed there, so a poll that has not seen a new room's join yet does not hide it",
        source="placement by publishers (rooms tie-breaker from the workers' reports lagged the front's own placement)",
        edits=(Edit("mediaserver/workers/placement.py",
                    "        for w in self._room_worker.values():\n            rooms[w] += 1\n",
                    "        # mutation: no room counted\n"),),
        tests=("tests/test_workers_units.py::test_a_report_that_does_not_count_a_new_room_yet_leaves_it_counted",),
    ),
    Mutation(
        name="front-node-publishers-are-participants",
        claim="a --workers front's cluster load reports its workers' publishers, not their participants",
        source="placement by publishers (cluster_front summed participants as publishers)",
        edits=(Edit("mediaserver/workers/cluster_front.py",
                    '                "publishers": float(sum(int(r.get("publishers", 0)) for r in reports)),',
                    '                "publishers": float(sum(int(r.get("participants", 0)) for r in reports)),  # mutation'),),
        tests=("tests/test_load_publishers.py::test_a_front_node_sums_its_workers_publishers_not_their_participants",
               "tests/test_cluster_publishers.py"),
    ),
    Mutation(
        name="cluster-ranks-by-participants",
        claim="cluster placement compares publishers first: a node full of listeners is not loaded",
        source="placement by publishers",
        edits=(Edit("mediaserver/cluster/placement.py",
                    '    return (load.get("publishers", 0.0), load.get("rooms", 0.0),',
                    '    return (load.get("participants", 0.0), load.get("rooms", 0.0),  # mutation'),),
        tests=("tests/test_load_publishers.py::test_a_node_full_of_listeners_is_less_loaded_than_one_with_a_publisher",),
    ),
    Mutation(
        name="debug-rooms-worker-not-worker-index",
        claim="the front's /debug/rooms names each participant's worker worker_index N, the index /healthz gives it",
        source="one name per worker (/debug/rooms said worker)",
        edits=(Edit("mediaserver/workers/debug_relay.py", '{**p, "worker_index": index}',
                    '{**p, "worker": index}'),),
        tests=("tests/test_model_control.py::test_the_fronts_debug_view_merges_the_workers_rooms_with_their_worker_index",
               "tests/test_workers_healthz.py"),
    ),
    # ---- the client's summary keeps every server event, bounded; one comma-list parser ---------
    Mutation(
        name="client-events-lifecycle-only",
        claim="mediaserver client's summary lists every server event in order (speaking, muted, redirect...), not only joins, leaves and server-shutdown",
        source="client events gap (dispatch console harness)",
        edits=(Edit("mediaserver/client.py", '            "events": self.events.items(),',
                    '            "events": [e for e in self.events.items() if e["type"] in (  # mutation\n'
                    '                "participant-joined", "participant-left", "server-shutdown")],'),),
        tests=("tests/test_client_events.py::test_the_summary_keeps_every_server_event_in_order_within_its_bound",),
    ),
    Mutation(
        name="client-keep-events-ignored",
        claim="mediaserver client --keep-events N keeps the last N server events in its summary",
        source="client events gap (dispatch console harness)",
        edits=(Edit("mediaserver/client.py", "        self.events = EventLog(args.keep_events)\n",
                    "        self.events = EventLog(DEFAULT_KEEP_EVENTS)  # mutation\n"),),
        tests=("tests/test_client_events.py::test_the_summary_keeps_every_server_event_in_order_within_its_bound",),
    ),
    Mutation(
        name="client-events-dropped-not-counted",
        claim="mediaserver client's summary counts the events its bound dropped (events_dropped)",
        source="client events gap (dispatch console harness)",
        edits=(Edit("mediaserver/client.py", "            self.dropped += 1\n",
                    "            pass  # mutation\n"),),
        tests=("tests/test_client_events.py",),
    ),
    Mutation(
        name="client-event-keeps-the-ticket",
        claim="a redirect (or reconnect-ticket) in mediaserver client's summary leaves out the reconnect ticket, a credential",
        source="client events gap (dispatch console harness)",
        edits=(Edit("mediaserver/client.py",
                    '        out["reconnect"] = {k: v for k, v in out["reconnect"].items() if k != "ticket"}\n',
                    '        out["reconnect"] = dict(out["reconnect"])  # mutation\n'),),
        tests=("tests/test_client_events.py::test_an_event_is_kept_as_sent_with_its_time_and_without_a_ticket",
               "tests/test_cluster.py::test_a_join_through_another_node_is_redirected_and_hears_the_room"),
    ),
    Mutation(
        name="client-join-time-event-without-time",
        claim="an event the client gets while it joins (a cluster redirect) is in its summary with its time t",
        source="client events gap (dispatch console harness)",
        edits=(Edit("mediaserver/client.py", "            self._event(data)\n            if data.get(\"type\") == \"error\":",
                    "            self.events.append(data)  # mutation: no t\n            if data.get(\"type\") == \"error\":"),),
        tests=("tests/test_cluster.py::test_a_join_through_another_node_is_redirected_and_hears_the_room",),
    ),
    Mutation(
        name="comma-list-empty-entry-skipped",
        claim="every comma-list flag and variable refuses an empty entry as it is parsed, naming it (was skipped)",
        source="comma-list gap (after fresh-user trial 6 §3)",
        edits=(Edit("mediaserver/config.py", '    entries = [x.strip() for x in text.split(",")]\n',
                    '    entries = [x.strip() for x in text.split(",") if x.strip()]  # mutation\n'),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",
               "tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable"),
    ),
    Mutation(
        name="serve-ice-host-without-the-comma-parser",
        claim="serve --ice-host (and MEDIASERVER_ICE_HOST) refuses an empty entry as it is parsed",
        source="comma-list gap (after fresh-user trial 6 §3)",
        edits=(Edit("mediaserver/sfu/server.py",
                    '    add_option(parser, "--ice-host", action="append", default=None, type=comma_list(ip_address),\n',
                    '    add_option(parser, "--ice-host", action="append", default=None,  # mutation\n'),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",
               "tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable",
               "tests/test_cli_errors.py::test_every_comma_list_is_read_by_the_one_parser"),
    ),
    Mutation(
        name="ice-host-takes-any-text",
        claim="serve and client --ice-host (and MEDIASERVER_ICE_HOST) refuse an entry that is no IP address as it is parsed (was pinned as given: calls that never connected)",
        source="fresh-user trial 7 §2",
        edits=(Edit("mediaserver/config.py", "        ipaddress.ip_address(text)\n",
                    "        pass  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",
               "tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable"),
    ),
    Mutation(
        name="client-ice-host-takes-any-text",
        claim="client --ice-host refuses an entry that is no IP address as it is parsed (was the server's bad-sdp about browsers)",
        source="fresh-user trial 7 §2",
        edits=(Edit("mediaserver/client.py",
                    'type=comma_list(ip_address),\n               help="pin ICE host candidates (comma list; 127.0.0.1 in tests)")',
                    'type=comma_list(),  # mutation\n               help="pin ICE host candidates (comma list; 127.0.0.1 in tests)")'),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",
               "tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable"),
    ),
    Mutation(
        name="front-worker-restarts-without-a-sample-until-the-first",
        claim="/metrics has mediaserver_front_worker_restarts_total for every worker at 0 from its start (was HELP/TYPE only until a first restart)",
        source="fresh-user trial 7 §1",
        edits=(Edit("mediaserver/workers/front.py",
                    "        self.metrics.worker_restarts.labels(name)\n",
                    "        pass  # mutation\n"),),
        tests=("tests/test_workers_healthz.py::test_healthz_and_metrics_name_each_worker_by_its_index_and_worker_label",),
    ),
    Mutation(
        name="bench-streams-entry-unchecked",
        claim="bench --streams refuses an entry that is no whole number >= 1 as it is parsed (was a traceback)",
        source="comma-list gap (after fresh-user trial 6 §3)",
        edits=(Edit("mediaserver/enhance/bench.py", "type=comma_list(STREAMS),", "type=comma_list(),  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_bad_setting_is_one_line_on_stderr_naming_the_flag",
               "tests/test_cli_errors.py::test_a_bad_value_from_a_variable_is_named_as_the_variable"),
    ),
    Mutation(
        name="model-root-own-comma-split",
        claim="every comma list is read by the one parser (config.comma_values), no module splits one itself",
        source="comma-list gap (after fresh-user trial 6 §3)",
        edits=(Edit("mediaserver/enhance/registry.py", '    return comma_values(getattr(args, "model_root", None))\n',
                    '    return [x.strip() for v in getattr(args, "model_root", None) or [] '
                    'for x in v.split(",") if x.strip()]  # mutation\n'),),
        tests=("tests/test_cli_errors.py::test_every_comma_list_is_read_by_the_one_parser",),
    ),
    # ---- model registry gaps: the default/snapshot in models list, per-model latency -----------
    Mutation(
        name="models-list-hides-the-default",
        claim="mediaserver models list shows which model is the default (msenh-v2)",
        source="registry gaps (models list did not say which model is the default, which opt-in)",
        edits=(Edit("mediaserver/enhance/registry.py", '            return "default"\n',
                    '            return "opt-in"  # mutation\n'),),
        tests=("tests/test_shipped_models.py::test_models_list_shows_the_default_and_the_opt_in_snapshot",),
    ),
    Mutation(
        name="models-list-hides-the-snapshot-status",
        claim="mediaserver models list shows msenh-v3-s8250 as an opt-in snapshot (its model.json status)",
        source="registry gaps (models list did not say which model is the default, which opt-in)",
        edits=(Edit("mediaserver/enhance/registry.py",
                    '        return f"opt-in {status}" if isinstance(status, str) and status else "opt-in"\n',
                    '        return "opt-in"  # mutation\n'),),
        tests=("tests/test_shipped_models.py::test_models_list_shows_the_default_and_the_opt_in_snapshot",),
    ),
    Mutation(
        name="stage-ignores-a-models-declared-latency",
        claim="the stage refuses a model whose model.json algorithmic_latency_ms differs from its own 20 ms",
        source="registry gaps (one algorithmic delay for every model, never checked)",
        edits=(Edit("mediaserver/enhance/stage.py",
                    "            check_latency(name, self.models.entry_for(spec), self.algorithmic_latency_ms)\n", ""),),
        tests=("tests/test_model_switch.py::test_a_model_declaring_another_algorithmic_latency_is_refused_by_the_stage",),
    ),
    Mutation(
        name="registry-accepts-any-declared-latency",
        claim="the registry skips a model.json whose algorithmic_latency_ms is not a positive number, naming the field",
        source="registry gaps (one algorithmic delay for every model, never checked)",
        edits=(Edit("mediaserver/enhance/registry.py",
                    "    if latency is not None and (isinstance(latency, bool) or",
                    "    if False and (isinstance(latency, bool) or"),),
        tests=("tests/test_model_switch.py::test_the_registry_validates_the_declared_latency",),
    ),
    Mutation(
        name="shipped-model-latency-undeclared",
        claim="every shipped model.json declares its 20 ms algorithmic latency",
        source="registry gaps (one algorithmic delay for every model, never checked)",
        edits=(Edit("models/msenh-v3-s8250/model.json", '  "algorithmic_latency_ms": 20,\n', ""),),
        tests=("tests/test_shipped_models.py::test_every_shipped_model_declares_the_stages_algorithmic_latency",),
    ),
    Mutation(
        name="cluster-node-cpu-over-host-cores",
        claim="one process reports its CPU share of the cores it may use (usable_cores), not of the host's",
        source="registry gaps (os.cpu_count() in cluster_link.py)",
        edits=(Edit("mediaserver/sfu/cluster_link.py", "        self._cores = usable_cores()\n",
                    "        self._cores = __import__(\"os\").cpu_count() or 1  # mutation\n"),),
        tests=("tests/test_cluster_load.py::test_one_process_reports_its_cpu_over_its_usable_cores",),
    ),
    Mutation(
        name="cluster-front-load-over-host-cores",
        claim="a --workers front reports the load average per usable core (usable_cores), not per host core",
        source="registry gaps (os.cpu_count() in workers/cluster_front.py)",
        edits=(Edit("mediaserver/workers/cluster_front.py", "        self._cores = usable_cores()\n",
                    "        self._cores = os.cpu_count() or 1  # mutation\n"),),
        tests=("tests/test_cluster_load.py::test_a_front_reports_the_load_average_over_its_usable_cores",),
    ),
    Mutation(
        name="eval-weights-unrecorded",
        claim="eval --json names the weights 'ours' ran (model name, file, sha256)",
        source="registry gaps (eval JSON did not say which weights it scored)",
        edits=(Edit("mediaserver/enhance/evaluate.py",
                    '    weights = weights_record(args.model) if "ours" in systems else None\n',
                    "    weights = None  # mutation\n"),),
        tests=("tests/test_enhance_eval.py::test_eval_json_records_the_weights_and_the_reused_rows",),
    ),
    Mutation(
        name="eval-reused-rows-untagged",
        claim="eval --json tags each row merged from an earlier run (--reuse) with the file it came from",
        source="registry gaps (eval JSON did not say which rows were reused)",
        edits=(Edit("mediaserver/enhance/evaluate.py",
                    '        rows.extend({**r, "reused_from": p} for r in run["rows"])\n',
                    '        rows.extend(run["rows"])  # mutation\n'),),
        tests=("tests/test_enhance_eval.py::test_eval_json_records_the_weights_and_the_reused_rows",),
    ),
    Mutation(
        name="bench-writes-under-the-current-folder",
        claim="bench writes JSON only with --json (it wrote benchmarks/results/ under any folder it ran from)",
        source="registry gaps (bench's default output path)",
        edits=(Edit("mediaserver/enhance/bench.py",
                    '    if not args.json:\n        print("no JSON written (--json PATH writes the rows)")\n'
                    '        return 0\n    path = Path(args.json).resolve()\n',
                    '    path = Path(args.json or "benchmarks/results/enhancer_bench.json")  # mutation\n'),),
        tests=("tests/test_enhance_offline.py::test_bench_writes_json_only_where_json_says_and_prints_the_path",),
    ),
    Mutation(
        name="bench-json-path-printed-relative",
        claim="bench prints the absolute path of the JSON it wrote",
        source="registry gaps (bench's default output path)",
        edits=(Edit("mediaserver/enhance/bench.py", "    path = Path(args.json).resolve()\n",
                    "    path = Path(args.json)  # mutation\n"),),
        tests=("tests/test_enhance_offline.py::test_bench_writes_json_only_where_json_says_and_prints_the_path",),
    ),
    Mutation(
        name="bench-recorder-drops-codec",
        claim="benchmarks/loss.py's StreamRecorder subclass takes every argument the client's RTP tap passes (codec since G.711)",
        source="benchmark drift check (695d638)",
        edits=(Edit("benchmarks/loss.py",
                    "        def add(self, payload: bytes, ssrc: int, timestamp: int, arrival: float, codec: str = \"opus\") -> None:",
                    "        def add(self, payload: bytes, ssrc: int, timestamp: int, arrival: float) -> None:  # mutation"),),
        tests=("tests/test_benchmark_scripts.py::test_loss_recorder_takes_every_argument_the_clients_recorder_takes",),
    ),
    Mutation(
        name="bench-imports-an-installed-copy",
        claim="benchmarks/cluster.py starts from any folder with this checkout's mediaserver (not an installed copy)",
        source="benchmark drift check (cluster.py --help: ModuleNotFoundError)",
        edits=(Edit("benchmarks/cluster.py",
                    'sys.path.insert(0, str(ROOT))\nsys.path.insert(0, str(ROOT / "tests"))\n',
                    'sys.path.insert(0, str(ROOT / "tests"))  # mutation\n'),),
        tests=("tests/test_benchmark_scripts.py::test_help_runs_from_anywhere_with_this_checkouts_code[cluster.py]",),
    ),
    Mutation(
        name="valid-models-claims-languages-without-extra",
        claim="benchmarks/valid_models.py's JSON names the held-out languages (el/ca) only when --extra brought them",
        source="benchmark drift check (valid_models.py without --extra)",
        edits=(Edit("benchmarks/valid_models.py",
                    "    languages = (f\", {'/'.join(data.VALID_LANGUAGES)}\" if extra is not None\n",
                    "    languages = (f\", {'/'.join(data.VALID_LANGUAGES)}\" if True  # mutation\n"),),
        tests=("tests/test_benchmark_scripts.py::test_valid_models_names_the_held_out_languages_only_when_extra_brought_them",),
    ),
    Mutation(
        name="loss-only-typo-runs-nothing",
        claim="benchmarks/loss.py --only refuses a name that is no scenario (it ran zero scenarios and exited 0)",
        source="benchmark drift check (loss.py --only cleen)",
        edits=(Edit("benchmarks/loss.py",
                    '    add_option(parser, "--only", type=comma_list(scenario_name), default="",\n',
                    '    add_option(parser, "--only", default="",  # mutation\n'),),
        tests=("tests/test_benchmark_scripts.py::test_loss_only_refuses_a_name_that_is_no_scenario",),
    ),
    Mutation(
        name="loss-ignores-bad-variables",
        claim="benchmarks/loss.py refuses a MEDIASERVER_* variable that is no value for its flag (it was ignored)",
        source="benchmark drift check (MEDIASERVER_ONLY='clean,,' ran the whole grid)",
        edits=(Edit("benchmarks/loss.py",
                    "        check_env(parser, args)   # a MEDIASERVER_* text that is no value for its flag (else ignored)\n",
                    "        pass  # mutation\n"),),
        tests=("tests/test_benchmark_scripts.py::test_loss_refuses_a_variable_that_is_no_value_for_its_flag",),
    ),
    # ---- fresh-user gaps of 2026-12-02: serve --workers N's logs and metrics, CLI errors ----------
    Mutation(
        name="worker-log-lines-unnamed",
        claim="with --workers N every log line of a media worker carries [LABEL-wN] and the inference process's [LABEL-enhancer]",
        source="fresh-user gaps of 2026-12-02 §1 (merged stderr: which worker wrote a line)",
        edits=(Edit("mediaserver/cli.py",
                    "configure_logging(args.log_level, process_name=worker_process_name(getattr(args, \"worker_id\", None)))",
                    "configure_logging(args.log_level, process_name=None)  # mutation"),
               Edit("mediaserver/enhance/shared.py",
                    "process_name=args.worker_id or \"enhancer\")", "process_name=None)  # mutation")),
        tests=("tests/test_workers_healthz.py::test_healthz_and_metrics_name_each_worker_by_its_index_and_worker_label",),
    ),
    Mutation(
        name="publishers-gauge-missing",
        claim="/metrics has mediaserver_publishers (the /healthz publishers), per worker label with --workers N",
        source="fresh-user gaps of 2026-12-02 §2 (no publisher gauge)",
        edits=(Edit("mediaserver/sfu/room.py",
                    "        metrics.watch_publishers(lambda: count_publishers(self.rooms.values()))\n",
                    "        pass  # mutation\n"),),
        tests=("tests/test_listeners.py::test_a_listener_takes_no_place_on_the_clock_until_it_sends",
               "tests/test_workers_healthz.py::test_healthz_and_metrics_name_each_worker_by_its_index_and_worker_label"),
    ),
    Mutation(
        name="listener-opens-enhancer-stream",
        claim="a listener holds no enhancer stream (no model state; no shared-memory slot with --workers N) until its microphone goes on the clock",
        source="issue 14 closing note s11, gaps: a listener still opens a shared-enhancer slot",
        edits=(Edit("mediaserver/sfu/server.py",
                    "                             open_handle=open_handle if stage is not None else None, on_close=close)\n"
                    "        return stream\n",
                    "                             open_handle=open_handle if stage is not None else None, on_close=close)\n"
                    "        stream.ready()  # mutation: opened at join, as before\n"
                    "        return stream\n"),),
        tests=("tests/test_listener_enhancer.py",),
    ),
    Mutation(
        name="listener-stats-show-an-empty-stream",
        claim="a listener's stats reply says sends_audio false and carries no jitter-buffer figures of a stream it does not have",
        source="fresh-user trial of 2026-12-02 08:07 (a listen-only console's server_view read as a broken stream)",
        edits=(Edit("mediaserver/sfu/signalling.py",
                    "        if p.stream is not None and p.sends_audio:   # a listener has no stream to report\n",
                    "        if p.stream is not None:  # mutation\n"),),
        tests=("tests/test_listener_enhancer.py::test_a_listener_asking_for_enhancement_is_told_its_audio_is_receive_only",),
    ),
    Mutation(
        name="ice-host-unspecified-accepted",
        claim="--ice-host 0.0.0.0 / :: / a multicast address is refused up front by client and serve (it binds, but no interface's)",
        source="fresh-user trial of 2026-12-02 08:07, B (client --ice-host 0.0.0.0 failed every rejoin with dtls-failed)",
        edits=(Edit("mediaserver/config.py",
                    "    if ip.is_unspecified:\n",
                    "    if False:  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_an_ice_host_that_binds_but_is_no_interfaces_is_refused",),
    ),
    Mutation(
        name="front-stop-waits-on-a-frozen-worker",
        claim="on SIGTERM, a worker that cannot drain (SIGSTOPped) is killed within --drain-s, the front exits 0 and its clients are told server-shutdown by the front",
        source="issue 14 closing note s11, gaps: the front's stop with a worker that cannot drain was untested",
        edits=(Edit("mediaserver/workers/process.py",
                    "                proc.kill()\n",
                    "                pass  # mutation: a worker that did not stop is waited on\n"),),
        tests=("tests/test_workers.py::test_sigterm_on_the_front_drains_every_workers_calls_and_leaves_no_worker",),
    ),
    Mutation(
        name="command-as-argument-unnamed",
        claim="mediaserver enhance eval --help is one error line naming mediaserver eval (it printed enhance's help)",
        source="fresh-user gaps of 2026-12-02 §3 (enhance eval --help)",
        edits=(Edit("mediaserver/cli.py",
                    "    if after and after[0] in COMMANDS and not os.path.exists(after[0]):\n",
                    "    if False:  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_a_command_written_as_another_commands_argument_is_named",),
    ),
    Mutation(
        name="client-refusal-json-on-stdout",
        claim="mediaserver client that never got into the call prints nothing on stdout (a summary only when a call ran), one line on stderr",
        source="fresh-user gaps of 2026-12-02 §4 (refused: {\"error\"} on stdout; usage error: nothing)",
        edits=(Edit("mediaserver/client.py",
                    "        # no call ran: stdout stays empty (it carries a summary only), as for a usage error\n",
                    "        print(json.dumps({\"error\": describe_failure(exc)}), flush=True)  # mutation\n"),),
        tests=("tests/test_client_rejoin_log.py::test_a_first_join_through_a_dead_url_is_one_line_and_exit_1",),
    ),
    Mutation(
        name="client-finals-share-partials-bound",
        claim="mediaserver client keeps final captions within their own --keep-finals bound: partials (~12,000 an hour of speech, bounded by --keep-events) never push them out",
        source="client captions shared --keep-events with events: an hour of speech dropped the oldest finals too",
        edits=(Edit("mediaserver/client.py",
                    '        kept = self._finals if caption.get("final") else self._partials\n',
                    "        kept = self._partials  # mutation\n"),),
        tests=("tests/test_client_events.py::test_final_captions_outlive_the_partials_bound",),
    ),
    Mutation(
        name="client-ice-host-not-local-accepted",
        claim="mediaserver client --ice-host with an address of no interface of this machine is refused up front, one line, exit 2",
        source="fresh-user gaps of 2026-12-02 §5 (the server's bad-sdp text instead)",
        edits=(Edit("mediaserver/client.py",
                    '    check_ice_hosts(hosts, "pin one of them (127.0.0.1 for a server on this machine)")\n',
                    "    pass  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_the_client_refuses_an_ice_host_that_is_no_address_of_this_machine",),
    ),
    Mutation(
        name="serve-ice-host-not-local-accepted",
        claim="mediaserver serve --ice-host (or MEDIASERVER_ICE_HOST) with an address of no interface of this machine is refused at start, one line naming it and --public-ip, exit 2",
        source="serve --ice-host 192.0.2.1 started, gathered no host candidate, every call failed silently",
        edits=(Edit("mediaserver/sfu/server.py",
                    "    check_ice_hosts(comma_values(args.ice_host, ip_address), ICE_HOST_ADVICE)\n",
                    "    pass  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_serve_refuses_an_ice_host_that_is_no_address_of_this_machine",),
    ),
    Mutation(
        name="ice-host-bind-check-always-local",
        claim="the one --ice-host check serve and client share (config.not_on_this_machine) finds an address of no interface here",
        source="serve --ice-host 192.0.2.1 started, gathered no host candidate, every call failed silently",
        edits=(Edit("mediaserver/config.py",
                    "            sock.bind((address, 0))\n",
                    "            pass  # mutation\n"),),
        tests=("tests/test_cli_errors.py::test_serve_refuses_an_ice_host_that_is_no_address_of_this_machine",
               "tests/test_cli_errors.py::test_the_client_refuses_an_ice_host_that_is_no_address_of_this_machine"),
    ),
    # ---- the network rule: in-process ICE on 127.0.0.1 only (tests/loopback_guard.py) ----------
    Mutation(
        name="room-faults-ice-unpinned",
        claim="a test whose in-process peers gather ICE off 127.0.0.1 fails, naming the addresses (test_room_faults.py ran on the machine's own interfaces unseen)",
        source="network rule: every test talks to 127.0.0.1 only (closing note s11, not met)",
        edits=(Edit("tests/test_room_faults.py",
                    'pytestmark = pytest.mark.usefixtures("ice_on_loopback")   # the peers\' ICE on 127.0.0.1 only\n',
                    "pytestmark = []  # mutation\n"),),
        tests=("tests/test_room_faults.py",),
    ),
    Mutation(
        name="loopback-guard-leaked-pin-unseen",
        claim="a test that leaves ICE pinned errors and the pin is undone (a leaked pin made test_load_publishers.py look pinned after test_impair.py)",
        source="network rule: every test talks to 127.0.0.1 only (closing note s11, not met)",
        edits=(Edit("tests/loopback_guard.py",
                    '        leaked = patches.describe()["pin_host_addresses"]\n',
                    "        leaked = False  # mutation\n"),),
        tests=("tests/test_loopback_guard.py::test_unpinned_ice_fails_the_test_and_a_leaked_pin_errors",),
    ),
    Mutation(
        name="loopback-guard-no-teardown-collection",
        claim="a test that gathered ICE has its cyclic garbage collected at its teardown (CPython 3.11: a finalizer run inside pytest's ast.parse raised SystemError at the session's end)",
        source="network rule: every test talks to 127.0.0.1 only (closing note s11: the reverted fixture's SystemError)",
        edits=(Edit("tests/loopback_guard.py",
                    "            gc.collect()   # this test's peer garbage finalized now, not inside a later ast.parse\n",
                    "            pass  # mutation\n"),),
        tests=("tests/test_loopback_guard.py::test_unpinned_ice_fails_the_test_and_a_leaked_pin_errors",),
    ),
)


@dataclass
class Run:
    rc: int
    seconds: float
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tail: str = ""


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def make_scratch(folder: Path, *, worktree: bool, commit: str = "HEAD") -> None:
    """A copy of the repository (``commit``, or the working tree's files) in ``folder``."""
    if worktree:
        names = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
        for name in filter(None, names):
            src = ROOT / name
            if src.is_file():
                dst = folder / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        return
    archive = folder / "head.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), commit], cwd=ROOT,
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    archive.unlink()


def run_tests(scratch: Path, tests: tuple[str, ...], timeout_s: int) -> Run:
    """pytest on ``tests`` inside the scratch copy; results read from its JUnit XML."""
    report = scratch / ".mutation-junit.xml"
    report.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
             f"--junitxml={report}", *tests],
            cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout_s)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = 124, f"timed out after {timeout_s} s\n{exc.stdout or ''}"
    run = Run(rc=rc, seconds=round(time.monotonic() - t0, 1), tail=out[-3000:])
    if report.is_file():
        for case in ET.parse(report).getroot().iter("testcase"):
            nodeid = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
            if case.find("failure") is not None:
                run.failed.append(nodeid)
            elif case.find("error") is not None:
                run.errors.append(nodeid)
            elif case.find("skipped") is None:
                run.passed += 1
    return run


def apply(scratch: Path, edits: tuple[Edit, ...]) -> Optional[str]:
    """Apply all edits (in memory first); returns a reason when one does not match once."""
    new_text: dict[Path, str] = {}
    for e in edits:
        path = scratch / e.path
        if not path.is_file():
            return f"{e.path} does not exist"
        text = new_text.get(path, path.read_text())
        if text.count(e.old) != 1:
            return f"{e.path}: text to replace found {text.count(e.old)} times: {e.old.strip()[:80]!r}"
        new_text[path] = text.replace(e.old, e.new)
    for path, text in new_text.items():
        path.write_text(text)
    return None


def check_imports_from(scratch: Path) -> None:
    """The scratch copy's package must be the one the tests import (not the editable install)."""
    out = subprocess.run([sys.executable, "-c", "import mediaserver; print(mediaserver.__file__)"],
                         cwd=scratch, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(scratch.resolve()):
        raise SystemExit(f"the scratch copy imports mediaserver from {out}, not from {scratch}")


def _meta(worktree: bool, commit: str) -> dict:
    return {
        "command": "python -m tests.mutations" + (" --worktree" if worktree else ""),
        "source": "working tree" if worktree else f"HEAD {commit}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": platform.python_version(),
        "host": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "rule": "caught = at least one of the claim's own tests fails (pytest rc 1) "
                "with the breakage and all of them pass without it",
    }


def check(mutations: tuple[Mutation, ...], *, worktree: bool, keep: bool,
          on_row: Optional[Callable[[dict, dict], None]] = None) -> dict:
    """Run ``mutations``; ``on_row(row, meta)`` gets each finished row at once (so a run that is
    stopped keeps what it finished)."""
    scratch = Path(tempfile.mkdtemp(prefix="mediaserver-mutations-"))
    results: list[dict] = []
    commit = _git("rev-parse", "HEAD").strip()   # the commit copied: HEAD may move during the run

    def finished(row: dict) -> None:
        results.append(row)
        if on_row is not None:
            on_row(row, _meta(worktree, commit))
    try:
        make_scratch(scratch, worktree=worktree, commit=commit)
        check_imports_from(scratch)
        baselines: dict[tuple[str, ...], Run] = {}
        for m in mutations:
            print(f"[{m.name}] {m.claim}", flush=True)
            row: dict = {"name": m.name, "claim": m.claim, "source": m.source,
                         "tests": list(m.tests),
                         "files": sorted({e.path for e in m.edits})}
            missing = [t for t in m.tests if not (scratch / t.split("::")[0]).is_file()]
            if missing:
                row.update(outcome="stale", reason=f"test file missing: {', '.join(missing)}")
                finished(row)
                print(f"  stale: {row['reason']}", flush=True)
                continue
            base = baselines.get(m.tests)
            if base is None:
                base = baselines[m.tests] = run_tests(scratch, m.tests, m.timeout_s)
            row["baseline"] = {"rc": base.rc, "passed": base.passed, "failed": base.failed,
                               "errors": base.errors, "seconds": base.seconds}
            if base.rc != 0:
                row.update(outcome="baseline-failed", tail=base.tail[-1500:])
                finished(row)
                print(f"  baseline failed (rc {base.rc}): the claim's tests fail unmutated", flush=True)
                continue
            originals = {e.path: (scratch / e.path).read_text() for e in m.edits
                         if (scratch / e.path).is_file()}
            reason = apply(scratch, m.edits)
            if reason is not None:
                row.update(outcome="stale", reason=reason)
                finished(row)
                print(f"  stale: {reason}", flush=True)
                continue
            try:
                run = run_tests(scratch, m.tests, m.timeout_s)
            finally:
                for path, text in originals.items():
                    (scratch / path).write_text(text)
            row["mutated"] = {"rc": run.rc, "passed": run.passed, "failed": run.failed,
                              "errors": run.errors, "seconds": run.seconds}
            if run.rc == 1 and run.failed:
                row["outcome"] = "caught"
            elif run.rc == 0:
                row["outcome"] = "missed"
            else:
                row.update(outcome="broken", tail=run.tail[-1500:])
            finished(row)
            print(f"  {row['outcome']}: {len(run.failed)} failed, {run.passed} passed "
                  f"({run.seconds} s)", flush=True)
    finally:
        if keep:
            print(f"scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "meta": _meta(worktree, commit),
        "all_caught": all(r["outcome"] == "caught" for r in results),
        "results": results,
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutations", description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="run only these mutations (repeatable)")
    parser.add_argument("--worktree", action="store_true",
                        help="copy the working tree (tracked and untracked files), not HEAD")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/mutations.json"),
                        help="where to write the result ('' for nowhere)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    args = parser.parse_args(argv)
    chosen = MUTATIONS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTATIONS}
        if unknown:
            parser.error(f"unknown mutation(s): {', '.join(sorted(unknown))}")
        chosen = tuple(m for m in MUTATIONS if m.name in args.only)
    if args.list:
        for m in chosen:
            print(f"{m.name:26} {m.source:22} {', '.join(m.tests)}")
        return 0
    on_row = None
    if args.json:
        path = Path(args.json)
        on_row = lambda row, meta: write_merged(path, {"meta": meta, "results": [row]})  # noqa: E731
    result = check(chosen, worktree=args.worktree, keep=args.keep, on_row=on_row)
    print("\n| mutation | claim's tests | outcome |\n|---|---|---|")
    for r in result["results"]:
        print(f"| {r['name']} | {', '.join(t.split('/')[-1] for t in r['tests'])} | {r['outcome']} |")
    return 0 if result["all_caught"] else 1


def write_merged(path: Path, result: dict) -> None:
    """Update ``path`` row by row: a run of some mutations (``--only``) replaces their rows and
    keeps the others' latest results; each row carries the meta of the run that produced it."""
    rows: dict[str, dict] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            for row in old.get("results", []):
                rows[row["name"]] = {**row, **({"run": old["meta"]} if "run" not in row else {})}
        except (ValueError, KeyError, TypeError):
            rows = {}
    for row in result["results"]:
        rows[row["name"]] = {**row, "run": result["meta"]}
    order = [m.name for m in MUTATIONS]
    merged = [rows[n] for n in order if n in rows] + [r for n, r in rows.items() if n not in order]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "meta": {**result["meta"], "note": "rows keep the meta ('run') of the run that produced them"},
        "all_caught": all(r["outcome"] == "caught" for r in merged)
        and {r["name"] for r in merged} >= set(order),
        "not_run": [n for n in order if n not in rows],
        "results": merged,
    }, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
