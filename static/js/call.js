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
      // the server keeps the extension ids and payload types of the first exchange (sdp.py)
      await this.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
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
