// Reduce RTCStatsReports to the few numbers a person (and the browser test) looks at.

/** Connection-wide numbers: RTT, loss and jitter of what we send, bytes each way. */
export function summariseConnection(report) {
  const out = { rttMs: null, sendLossPct: null, sendJitterMs: null, packetsSent: 0, bytesReceived: 0 };
  let selectedPair = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) selectedPair = report.get(s.selectedCandidatePairId);
  });
  report.forEach((s) => {
    if (!selectedPair && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") selectedPair = s;
    if (s.type === "outbound-rtp" && s.kind === "audio") out.packetsSent += s.packetsSent || 0;
    if (s.type === "remote-inbound-rtp" && s.kind === "audio") {
      if (typeof s.roundTripTime === "number") out.rttMs = s.roundTripTime * 1000;
      if (typeof s.fractionLost === "number") out.sendLossPct = s.fractionLost * 100;
      if (typeof s.jitter === "number") out.sendJitterMs = s.jitter * 1000;
    }
  });
  if (selectedPair) {
    out.bytesReceived = selectedPair.bytesReceived || 0;
    if (typeof selectedPair.currentRoundTripTime === "number") out.rttMs = selectedPair.currentRoundTripTime * 1000;
  }
  return out;
}

/** Numbers for one received track (the inbound-rtp entry of a receiver's report). */
export function summariseInbound(report) {
  let inbound = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
  });
  if (!inbound) return null;
  const emitted = inbound.jitterBufferEmittedCount || 0;
  const received = inbound.packetsReceived || 0;
  const lost = Math.max(0, inbound.packetsLost || 0);
  return {
    packetsReceived: received,
    packetsLost: lost,
    lossPct: received + lost > 0 ? (100 * lost) / (received + lost) : 0,
    jitterMs: typeof inbound.jitter === "number" ? inbound.jitter * 1000 : null,
    jitterBufferMs: emitted > 0 ? (1000 * inbound.jitterBufferDelay) / emitted : null,
    concealedSamples: inbound.concealedSamples || 0,
    totalSamplesReceived: inbound.totalSamplesReceived || 0,
    audioLevel: typeof inbound.audioLevel === "number" ? inbound.audioLevel : null,
    totalAudioEnergy: inbound.totalAudioEnergy || 0,
  };
}

// The server's per-participant entry (media/inbound.py stats) and its transport view of me.
const SERVER_FIELDS = [
  ["Jitter buffer delay", (e) => e.current_delay_ms, " ms"],
  ["Jitter buffer target", (e) => e.target_delay_ms, " ms"],
  // time scaling since the call started (README, connection panel): frames played faster to
  // give delay back, frames stretched to build it up, and decoded audio dropped as pure delay
  ["Sped up (accelerate)", (e) => e.accelerate, " frames"],
  ["Slowed down (expand)", (e) => e.expand, " frames"],
  ["Delay given back (trimmed)", (e) => e.trimmed_ms, " ms"],
  ["Packets received", (e) => e.packets_received, ""],
  ["Packets lost", (e) => e.packets_lost, ""],
  ["Late packets", (e) => e.packets_late, ""],
  ["Recovered by FEC", (e) => e.fec_recovered, ""],
  ["Concealed frames", (e) => e.concealed_frames, ""],
  ["Silent pauses (DTX)", (e) => e.dtx_ms, " ms"],
  ["Enhancement", (e) => (e.enhancement === undefined ? undefined : e.enhancement ? "on" : "off"), ""],
  ["Attenuation limit", (e) => e.atten_lim_db, " dB"],
  // quality telemetry of my stream (enhance/telemetry.py): before -> after enhancement
  ["Model", (e) => e.model, ""],
  ["Input level", (e) => q(e).level_dbfs, " dBFS"],
  ["Noise floor in / out", (e) => pair(q(e).noise_in_dbfs, q(e).noise_out_dbfs), " dBFS"],
  ["SNR in / out", (e) => pair(q(e).snr_in_db, q(e).snr_out_db), " dB"],
  ["Suppression applied", (e) => q(e).suppression_db, " dB"],
  ["Speech", (e) => q(e).speech_pct, " %"],
  ["Concealed / FEC / DTX", (e) => triple(q(e).concealed_pct, q(e).fec_pct, q(e).dtx_pct), " %"],
  ["Clipped frames", (e) => q(e).clipped_frames, ""],
  ["Over-suppression events", (e) => q(e).distortion_events, ""],
  ["Jitter seen by server", (e, r) => r.transport && r.transport.jitter_ms, " ms"],
  ["Round trip seen by server", (e, r) => r.transport && r.transport.rtt_ms, " ms"],
];

function q(e) {
  return (e && e.quality) || {};
}

function pair(a, b) {
  return a === undefined || b === undefined ? undefined : `${fmt(a)} / ${fmt(b)}`;
}

function triple(a, b, c) {
  return [a, b, c].every((v) => v === undefined) ? undefined : `${fmt(a, 0)} / ${fmt(b, 0)} / ${fmt(c, 0)}`;
}

/** The entry of the server's stats reply that describes `identity`. */
export function serverEntry(reply, identity) {
  const parts = reply && reply.participants;
  if (Array.isArray(parts)) return parts.find((p) => p && p.identity === identity) || {};
  if (parts && typeof parts === "object") return parts[identity] || {};
  return {};
}

/** [label, value, unit] rows of the server's view of my stream, only fields the server sent. */
export function serverStatsRows(reply, identity) {
  const entry = serverEntry(reply, identity);
  const rows = [];
  for (const [label, pick, unit] of SERVER_FIELDS) {
    const value = pick(entry, reply || {});
    if (value !== undefined && value !== null) rows.push([label, value, unit]);
  }
  return rows;
}

/** [label, text] cells of the server rows as the connection panel shows them (value and unit). */
export function serverStatsCells(reply, identity) {
  return serverStatsRows(reply, identity).map(([label, value, unit]) => [label, fmt(value, 1, unit)]);
}

/** A value with its unit; "–" when missing. Numbers get `digits` decimals unless whole; text
 * (a "a / b" pair of numbers, "on") keeps its own form and gets the unit after it. */
export function fmt(value, digits = 1, unit = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return `${value}${unit}`;
  return `${Number.isInteger(value) ? value : value.toFixed(digits)}${unit}`;
}
