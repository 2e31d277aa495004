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

/** Flatten the server's stats reply for the entry that describes `identity` into [label, value]. */
export function serverStatsRows(reply, identity) {
  let entry = reply;
  const parts = reply && reply.participants;
  if (Array.isArray(parts)) entry = parts.find((p) => p && p.identity === identity) || {};
  else if (parts && typeof parts === "object") entry = parts[identity] || {};
  const rows = [];
  const walk = (obj, prefix, depth) => {
    for (const [key, value] of Object.entries(obj || {})) {
      if (key === "type" || key === "identity") continue;
      const label = prefix ? `${prefix}.${key}` : key;
      if (typeof value === "number") rows.push([label, value]);
      else if (typeof value === "boolean" || typeof value === "string") rows.push([label, value]);
      else if (value && typeof value === "object" && !Array.isArray(value) && depth < 2) walk(value, label, depth + 1);
    }
  };
  walk(entry, "", 0);
  if (reply && reply.transport && typeof reply.transport === "object") walk(reply.transport, "transport", 1);
  return rows;
}

export function fmt(value, digits = 1, unit = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  return `${Number.isInteger(value) ? value : value.toFixed(digits)}${unit}`;
}
