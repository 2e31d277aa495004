// The peer connection to the server. One job: SDP exchange and "which received track is whom".
//
// The client makes the first offer (microphone, sendrecv) once ICE gathering is complete, so the
// SDP carries every candidate; after that the server starts each renegotiation and we only
// answer. Server offers carry {"tracks": {mid: identity}}, which is the only way to tell the
// received tracks apart, so the map is rebuilt after every offer.

const GATHER_TIMEOUT_MS = 5000;

/** Resolve when ICE gathering is complete (or after a timeout: trickle-less SDP is then partial). */
function gatheringComplete(pc, timeoutMs = GATHER_TIMEOUT_MS) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(() => {
      console.warn("ICE gathering did not complete in time; sending what we have");
      done();
    }, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** Drop a=candidate lines whose address is not listed (none listed: keep all). */
export function keepCandidates(sdp, addresses) {
  if (!addresses || !addresses.length) return sdp;
  return sdp
    .split("\r\n")
    .filter((line) => !line.startsWith("a=candidate:") || addresses.includes(line.split(" ")[4]))
    .join("\r\n");
}

const EXTMAP = /^a=extmap:(\d+)(\/\w+)? (\S+)(.*)$/;

/**
 * Rewrite the header-extension ids of a server offer to the ids this connection already uses.
 *
 * aiortc writes its default ids (mid=1, ssrc-audio-level=2) into every offer it makes, while
 * the first exchange settled on the browser's ids; Chrome refuses an offer that renumbers an
 * active extension ("RTP extension ID reassignment not supported"). The answer we send back
 * carries the aligned ids and the server adopts them from it, so both sides stay consistent.
 * Extensions the connection does not use yet get ids that are still free.
 */
export function alignExtmapIds(offerSdp, knownSdp) {
  const assigned = new Map(); // uri -> id, one mapping for the whole BUNDLE
  for (const line of (knownSdp || "").split("\r\n")) {
    const m = line.match(EXTMAP);
    if (m && !assigned.has(m[3])) assigned.set(m[3], Number(m[1]));
  }
  if (!assigned.size) return offerSdp;
  const used = new Set(assigned.values());
  return offerSdp
    .split("\r\n")
    .map((line) => {
      const m = line.match(EXTMAP);
      if (!m) return line;
      let id = assigned.get(m[3]);
      if (id === undefined) {
        id = 1;
        while (used.has(id)) id++;
        assigned.set(m[3], id);
        used.add(id);
      }
      return `a=extmap:${id}${m[2] || ""} ${m[3]}${m[4]}`;
    })
    .join("\r\n");
}

const RTPMAP = /^a=rtpmap:(\d+) (\S+)$/;

/** "opus/48000/2" -> payload type, first one seen, from the known SDP. */
function knownPayloadTypes(sdp) {
  const byCodec = new Map();
  for (const line of (sdp || "").split("\r\n")) {
    const m = line.match(RTPMAP);
    if (m && !byCodec.has(m[2].toLowerCase())) byCodec.set(m[2].toLowerCase(), Number(m[1]));
  }
  return byCodec;
}

/** Renumber one m-section's payload types with `remap` (old -> new). */
function remapSection(lines, remap) {
  if (!remap.size) return lines;
  const pt = (n) => String(remap.has(Number(n)) ? remap.get(Number(n)) : n);
  return lines.map((line) => {
    if (line.startsWith("m=")) {
      const parts = line.split(" ");
      return [...parts.slice(0, 3), ...parts.slice(3).map(pt)].join(" ");
    }
    const m = line.match(/^a=(rtpmap|fmtp|rtcp-fb):(\d+)( .*)$/);
    if (m) return `a=${m[1]}:${pt(m[2])}${m[3]}`;
    return line;
  });
}

/**
 * Renumber the payload types of a server offer to the ones this connection already uses.
 *
 * Like the extension ids, aiortc writes its own payload types into every offer (opus = 96)
 * while the first exchange used the browser's (Chrome 111, Firefox 109). The browser would
 * follow the new number, but aiortc's receiver keeps routing by the payload types of its
 * first negotiation and drops every packet after the switch: the speaker goes silent for
 * the server. Keeping the first numbers keeps both sides on the same ones.
 */
export function alignPayloadTypes(offerSdp, knownSdp) {
  const known = knownPayloadTypes(knownSdp);
  if (!known.size) return offerSdp;
  const sections = [[]];
  for (const line of offerSdp.split("\r\n")) {
    if (line.startsWith("m=")) sections.push([]);
    sections[sections.length - 1].push(line);
  }
  const out = [sections[0]];
  for (const section of sections.slice(1)) {
    // original payload type -> where it goes; moves repeat until none is possible, so a codec
    // can take a number another codec has just vacated
    const codecs = [];
    for (const line of section) {
      const m = line.match(RTPMAP);
      if (m) codecs.push([Number(m[1]), known.get(m[2].toLowerCase())]);
    }
    const remap = new Map(section[0].split(" ").slice(3).map((pt) => [Number(pt), Number(pt)]));
    for (let moved = true; moved; ) {
      moved = false;
      const used = new Set(remap.values());
      for (const [original, want] of codecs) {
        if (want !== undefined && remap.get(original) !== want && !used.has(want)) {
          used.delete(remap.get(original));
          remap.set(original, want);
          used.add(want);
          moved = true;
        }
      }
    }
    out.push(remapSection(section, remap));
  }
  return out.flat().join("\r\n");
}

export class Call extends EventTarget {
  /**
   * @param {import("./signalling.js").Signalling} signalling
   * @param {{iceServers?: RTCIceServer[], micTrack: MediaStreamTrack, micStream: MediaStream,
   *          onlyAddresses?: string[]}} opts  onlyAddresses: announce only these candidate addresses
   */
  constructor(signalling, { iceServers = [], micTrack, micStream, onlyAddresses = [] }) {
    super();
    this.signalling = signalling;
    this.onlyAddresses = onlyAddresses;
    this.pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    this.micSender = this.pc.addTrack(micTrack, micStream);
    /** @type {Map<string, RTCRtpReceiver>} identity -> receiver */
    this.receivers = new Map();
    this._queue = Promise.resolve();
    this.pc.addEventListener("connectionstatechange", () => {
      this.dispatchEvent(new CustomEvent("state", { detail: this.pc.connectionState }));
    });
  }

  /** Send the first offer with complete SDP. */
  async start() {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    await gatheringComplete(this.pc);
    this.signalling.send({ type: "offer", sdp: keepCandidates(this.pc.localDescription.sdp, this.onlyAddresses) });
  }

  /** Handle one signalling message that concerns the peer connection, in arrival order. */
  handle(msg) {
    this._queue = this._queue
      .then(() => this._handle(msg))
      .catch((err) => {
        console.error("signalling step failed", msg.type, err);
        this.dispatchEvent(new CustomEvent("failure", { detail: String(err && err.message || err) }));
      });
    return this._queue;
  }

  async _handle(msg) {
    if (msg.type === "answer") {
      await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      if (msg.tracks) this._remap(msg.tracks);
      this.dispatchEvent(new CustomEvent("published"));
    } else if (msg.type === "offer") {
      const known = this.pc.localDescription ? this.pc.localDescription.sdp : "";
      const offer = alignPayloadTypes(alignExtmapIds(msg.sdp, known), known);
      await this.pc.setRemoteDescription({ type: "offer", sdp: offer });
      const answer = await this.pc.createAnswer();
      await this.pc.setLocalDescription(answer);
      await gatheringComplete(this.pc);
      this.signalling.send({ type: "answer", sdp: keepCandidates(this.pc.localDescription.sdp, this.onlyAddresses) });
      this._remap(msg.tracks || {});
    } else if (msg.type === "candidate" && msg.candidate) {
      await this.pc.addIceCandidate(msg.candidate);
    }
  }

  /** Rebuild identity -> receiver from the server's mid -> identity map. */
  _remap(tracks) {
    const next = new Map();
    for (const t of this.pc.getTransceivers()) {
      const identity = t.mid != null ? tracks[t.mid] : undefined;
      if (identity && t.receiver && t.receiver.track) next.set(identity, t.receiver);
    }
    this.receivers = next;
    this.dispatchEvent(new CustomEvent("tracks", { detail: next }));
  }

  /** Switch microphones without renegotiation. */
  async replaceMic(track) {
    await this.micSender.replaceTrack(track);
  }

  /** Raw stats of the whole connection (transport, outbound, remote-inbound). */
  getStats() {
    return this.pc.getStats();
  }

  close() {
    try {
      this.pc.close();
    } catch (err) {
      console.warn(err);
    }
  }
}
