// The page controller: join form, call view, and the glue between signalling, the peer
// connection, WebAudio and the participant list. Everything a test needs to check is exposed
// read-only as window.mediaserver.state().

import { LevelMeter } from "./audio.js";
import { Call } from "./call.js";
import { ParticipantList } from "./participants.js";
import { chooseSignallingUrl, Signalling } from "./signalling.js";
import { fmt, serverStatsRows, summariseConnection, summariseInbound } from "./stats.js";

const $ = (id) => document.getElementById(id);
const METER_INTERVAL_MS = 100;
const STATS_INTERVAL_MS = 1000;
const SERVER_STATS_INTERVAL_MS = 2000;
const ENH_NOTE = "Strength limits how far noise is pushed down (dB); max removes as much as the model can.";

class App {
  constructor() {
    this.params = new URLSearchParams(window.location.search);
    this.phase = "idle"; // idle -> joining -> joined -> idle
    this.room = null;
    this.identity = null;
    this.lastError = null;
    this.signalling = null;
    this.call = null;
    this.ctx = null;
    this.mic = null; // MediaStream
    this.micMeter = null;
    this.muted = false;
    this.published = false; // the server answered our offer: enhancement can be set
    this.enhancement = null; // what the server confirmed it applies
    this.enhancementPending = false; // an enhancement message awaits its confirmation
    this.connection = null;
    this.serverStats = null;
    this.timers = [];
    this.departed = new Set(); // left the room: a stale track mapping must not bring them back
    this.list = new ParticipantList($("participants"), $("participant-template"));
    this.bindUi();
    this.prefill();
  }

  bindUi() {
    $("join-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.join($("room").value.trim(), $("name").value.trim(), $("token").value.trim());
    });
    $("mute").addEventListener("click", () => this.setMuted(!this.muted));
    $("leave").addEventListener("click", () => this.leave());
    $("mic").addEventListener("change", () => this.switchMic($("mic").value));
    $("enh-on").addEventListener("change", () => this.sendEnhancement());
    $("enh-strength").addEventListener("input", () => this.showStrength());
    $("enh-strength").addEventListener("change", () => this.sendEnhancement());
    $("enable-audio").addEventListener("click", async () => {
      if (this.ctx) await this.ctx.resume();
      for (const card of this.list.cards.values()) {
        if (card.remote) card.remote.element.play().catch(() => {});
      }
      this.checkAudioContext();
    });
    window.addEventListener("beforeunload", () => this.leave());
  }

  /** ?room=&name=&token= fill the form; ?join=1 joins at once (used by the browser test). */
  prefill() {
    for (const key of ["room", "name", "token"]) {
      const value = this.params.get(key);
      if (value) $(key).value = value;
    }
    this.listMicrophones($("mic-join")).catch(() => {});
    if (this.params.get("join") === "1" && $("room").value && $("name").value) {
      this.join($("room").value.trim(), $("name").value.trim(), $("token").value.trim());
    }
  }

  micConstraints(deviceId) {
    // The server suppresses noise, so the browser's own suppression stays off; echo cancellation
    // stays on for people without headphones unless ?aec=0 (tests want the raw file).
    const aec = this.params.get("aec") !== "0";
    return {
      audio: {
        deviceId: deviceId ? { exact: deviceId } : undefined,
        echoCancellation: aec,
        noiseSuppression: false,
        autoGainControl: false,
        channelCount: 1,
      },
    };
  }

  async listMicrophones(select) {
    const current = select.value;
    const devices = await navigator.mediaDevices.enumerateDevices();
    const mics = devices.filter((d) => d.kind === "audioinput");
    const options = mics.map((d, i) => {
      const o = document.createElement("option");
      o.value = d.deviceId;
      o.textContent = d.label || `microphone ${i + 1}`;
      return o;
    });
    if (!options.length) {
      const o = document.createElement("option");
      o.value = "";
      o.textContent = "default microphone";
      options.push(o);
    }
    select.replaceChildren(...options);
    if (current && mics.some((d) => d.deviceId === current)) select.value = current;
  }

  async join(room, identity, token) {
    if (this.phase !== "idle") return;
    if (!room || !identity) {
      this.showError("Enter a room and a name.");
      return;
    }
    this.phase = "joining";
    this.room = room;
    this.identity = identity;
    this.lastError = null;
    this.hideError();
    this.setStatus("connecting", "connecting…");
    $("join").disabled = true;
    try {
      this.ctx = new AudioContext(); // created inside the click, so browsers let it play
      // decided before the microphone opens: ?ws= may not name a server the operator did not allow
      const url = await chooseSignallingUrl(this.params.get("ws"));
      this.mic = await navigator.mediaDevices.getUserMedia(this.micConstraints($("mic-join").value));
      this.micMeter = new LevelMeter(this.ctx, this.mic);
      this.signalling = new Signalling(url);
      this.signalling.addEventListener("message", (ev) => this.onMessage(ev.detail));
      this.signalling.addEventListener("close", () => this.onSocketClosed());
      await this.signalling.open();
      const msg = { type: "join", room, identity };
      if (token) msg.token = token;
      this.signalling.send(msg);
    } catch (err) {
      this.fail(err && err.name === "NotAllowedError" ? "Microphone access was refused." : String(err.message || err));
    }
  }

  onMessage(msg) {
    switch (msg.type) {
      case "joined":
        this.onJoined(msg);
        break;
      case "offer":
      case "answer":
      case "candidate":
        if (this.call) this.call.handle(msg);
        break;
      case "participant-joined":
        this.departed.delete(msg.identity);
        if (msg.identity && msg.identity !== this.identity) this.list.ensure(msg.identity, { muted: Boolean(msg.muted) });
        break;
      case "participant-left":
        this.departed.add(msg.identity);
        this.list.remove(msg.identity);
        break;
      case "muted": {
        const card = this.list.get(msg.identity);
        if (card) card.setMuted(Boolean(msg.muted));
        break;
      }
      case "speaking": {
        const card = this.list.get(msg.identity);
        if (card) card.setSpeaking(msg.speaking, msg.level);
        break;
      }
      case "caption": {
        const card = this.list.get(msg.identity);
        if (card && msg.text) card.addCaption(msg.text, msg.final !== false);
        break;
      }
      case "enhancement":
        this.enhancementPending = false;
        // the server's confirmation of what it applies to my voice
        if (typeof msg.enabled === "boolean") $("enh-on").checked = msg.enabled;
        if (typeof msg.atten_lim_db === "number") $("enh-strength").value = String(Math.round(msg.atten_lim_db));
        this.enhancement = { enabled: msg.enabled, atten_lim_db: msg.atten_lim_db };
        this.showStrength();
        break;
      case "stats":
        this.serverStats = msg;
        this.renderServerStats();
        break;
      case "error":
        this.onServerError(msg);
        break;
      default:
        break; // newer servers may send more; ignoring keeps old pages working
    }
  }

  onJoined(msg) {
    this.phase = "joined";
    this.room = msg.room || this.room;
    this.identity = msg.identity || this.identity;
    $("room-name").textContent = this.room;
    $("join-view").hidden = true;
    $("call-view").hidden = false;
    this.list.clear();
    this.departed.clear();
    this.list.ensure(this.identity, { self: true });
    for (const p of msg.participants || []) {
      if (p.identity !== this.identity) this.list.ensure(p.identity, { muted: Boolean(p.muted) });
    }
    this.call = new Call(this.signalling, {
      iceServers: msg.iceServers || [],
      micTrack: this.mic.getAudioTracks()[0],
      micStream: this.mic,
      // ?ice=127.0.0.1 keeps the browser's candidates on loopback (the tests' network rule)
      onlyAddresses: (this.params.get("ice") || "").split(",").filter(Boolean),
    });
    this.call.addEventListener("tracks", (ev) => this.onTracks(ev.detail));
    this.call.addEventListener("state", (ev) => this.onConnectionState(ev.detail));
    this.call.addEventListener("published", () => {
      this.published = true;
      this.sendEnhancement();
    });
    this.call.addEventListener("failure", (ev) => this.showError(`Negotiation failed: ${ev.detail}`));
    this.call.start().catch((err) => this.fail(`Could not start the call: ${err.message || err}`));
    this.listMicrophones($("mic")).then(() => {
      const track = this.mic.getAudioTracks()[0];
      const id = track && track.getSettings().deviceId;
      if (id) $("mic").value = id;
    });
    this.showStrength();
    this.checkAudioContext();
    this.timers.push(setInterval(() => this.drawMeters(), METER_INTERVAL_MS));
    this.timers.push(setInterval(() => this.pollStats(), STATS_INTERVAL_MS));
    this.timers.push(setInterval(() => this.signalling.send({ type: "stats" }), SERVER_STATS_INTERVAL_MS));
  }

  onTracks(receivers) {
    for (const [identity, receiver] of receivers) {
      if (identity === this.identity || this.departed.has(identity)) continue;
      this.list.ensure(identity).attach(this.ctx, receiver.track);
    }
    for (const [identity, card] of this.list.cards) {
      if (!card.self && !receivers.has(identity)) card.detach();
    }
  }

  onConnectionState(state) {
    $("c-state").textContent = state;
    if (state === "connected") this.setStatus("connected", `connected as ${this.identity}`);
    else if (state === "failed") {
      this.setStatus("failed", "media failed");
      this.showError("The media connection failed (a firewall may block UDP; the server may need TURN).");
    } else this.setStatus("connecting", state);
  }

  onServerError(msg) {
    if (this.enhancementPending && /enhancement/i.test(msg.message || "")) {
      // e.g. a server started with --no-enhance: grey the controls out instead of alarming
      this.enhancementPending = false;
      this.enhancementUnavailable(msg.message);
      return;
    }
    const text = `${msg.code || "error"}: ${msg.message || "the server refused the request"}`;
    if (this.phase === "joined") this.showError(text);
    else this.fail(text);
  }

  onSocketClosed() {
    if (this.phase === "idle") return;
    const wasJoined = this.phase === "joined";
    this.teardown();
    this.showError(wasJoined ? "The connection to the server was lost." : "The server closed the connection.");
  }

  setMuted(muted) {
    this.muted = muted;
    for (const track of this.mic ? this.mic.getAudioTracks() : []) track.enabled = !muted;
    if (this.signalling) this.signalling.send({ type: "mute", muted });
    $("mute").textContent = muted ? "Unmute" : "Mute";
    $("mute").setAttribute("aria-pressed", String(muted));
    const me = this.list.get(this.identity);
    if (me) me.setMuted(muted);
  }

  async switchMic(deviceId) {
    if (!this.call) return;
    try {
      const stream = await navigator.mediaDevices.getUserMedia(this.micConstraints(deviceId));
      const track = stream.getAudioTracks()[0];
      track.enabled = !this.muted;
      await this.call.replaceMic(track);
      for (const old of this.mic.getTracks()) old.stop();
      if (this.micMeter) this.micMeter.disconnect();
      this.mic = stream;
      this.micMeter = new LevelMeter(this.ctx, stream);
    } catch (err) {
      this.showError(`Could not switch microphone: ${err.message || err}`);
    }
  }

  strengthDb() {
    return Number($("enh-strength").value);
  }

  showStrength() {
    const db = this.strengthDb();
    $("enh-value").textContent = db >= 100 ? "max" : `${db} dB`;
  }

  sendEnhancement() {
    if (!this.signalling || !this.published) return;
    this.enhancementPending = true;
    this.signalling.send({ type: "enhancement", enabled: $("enh-on").checked, atten_lim_db: this.strengthDb() });
  }

  enhancementUnavailable(reason) {
    $("enh-on").checked = false;
    $("enh-on").disabled = true;
    $("enh-strength").disabled = true;
    $("enh-note").textContent = `Not available: ${reason}`;
    this.enhancement = { enabled: false, unavailable: true };
  }

  checkAudioContext() {
    $("enable-audio").hidden = !this.ctx || this.ctx.state === "running";
  }

  drawMeters() {
    const running = Boolean(this.ctx) && this.ctx.state === "running";
    for (const card of this.list.cards.values()) {
      if (card.remote) card.remote.setContextRunning(running);
      if (card.self) card.draw(this.micMeter && !this.muted ? this.micMeter.rms() : 0);
      else card.draw(card.remote ? card.remote.meter.rms() : undefined);
    }
    this.checkAudioContext();
  }

  async pollStats() {
    if (!this.call) return;
    try {
      const conn = summariseConnection(await this.call.getStats());
      let lost = 0;
      let got = 0;
      let jitter = null;
      for (const [identity, receiver] of this.call.receivers) {
        const card = this.list.get(identity);
        const inbound = summariseInbound(await receiver.getStats());
        if (card) card.showInbound(inbound);
        if (inbound) {
          lost += inbound.packetsLost;
          got += inbound.packetsReceived;
          if (inbound.jitterMs !== null) jitter = Math.max(jitter ?? 0, inbound.jitterMs);
        }
      }
      conn.recvLossPct = got + lost > 0 ? (100 * lost) / (got + lost) : null;
      conn.recvJitterMs = jitter;
      this.connection = conn;
      $("c-rtt").textContent = fmt(conn.rttMs, 0, " ms");
      $("c-loss-up").textContent = fmt(conn.sendLossPct, 1, "%");
      $("c-jitter-up").textContent = fmt(conn.sendJitterMs, 0, " ms");
      $("c-loss-down").textContent = fmt(conn.recvLossPct, 1, "%");
      $("c-jitter-down").textContent = fmt(conn.recvJitterMs, 0, " ms");
    } catch (err) {
      console.warn("getStats failed", err);
    }
  }

  renderServerStats() {
    const rows = serverStatsRows(this.serverStats, this.identity);
    const body = document.createElement("tbody");
    for (const [label, value, unit] of rows) {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      const td = document.createElement("td");
      th.textContent = label;
      td.textContent = fmt(value, 1, unit);
      tr.append(th, td);
      body.append(tr);
    }
    $("server-stats").replaceChildren(body);
    const jb = rows.find(([label]) => label === "Jitter buffer delay");
    if (jb) $("c-jb").textContent = fmt(jb[1], 0, " ms");
  }

  leave() {
    if (this.phase === "idle") return;
    if (this.signalling) this.signalling.send({ type: "leave" });
    this.teardown();
  }

  teardown() {
    this.phase = "idle";
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.list.clear();
    if (this.call) this.call.close();
    this.call = null;
    if (this.signalling) this.signalling.close();
    this.signalling = null;
    if (this.mic) for (const track of this.mic.getTracks()) track.stop();
    this.mic = null;
    if (this.micMeter) this.micMeter.disconnect();
    this.micMeter = null;
    if (this.ctx) this.ctx.close().catch(() => {});
    this.ctx = null;
    this.muted = false;
    this.published = false;
    this.enhancement = null;
    this.enhancementPending = false;
    $("enh-on").disabled = false;
    $("enh-strength").disabled = false;
    $("enh-note").textContent = ENH_NOTE;
    $("mute").textContent = "Mute";
    $("mute").setAttribute("aria-pressed", "false");
    $("call-view").hidden = true;
    $("join-view").hidden = false;
    $("join").disabled = false;
    this.setStatus("idle", "not connected");
  }

  fail(text) {
    this.teardown();
    this.showError(text);
  }

  showError(text) {
    this.lastError = text;
    $("banner").textContent = text;
    $("banner").hidden = false;
  }

  hideError() {
    $("banner").hidden = true;
  }

  setStatus(state, text) {
    $("status").dataset.state = state;
    $("status").textContent = text;
  }

  state() {
    return {
      phase: this.phase,
      room: this.room,
      identity: this.identity,
      error: this.lastError,
      connectionState: this.call ? this.call.pc.connectionState : null,
      audioContext: this.ctx ? this.ctx.state : null,
      muted: this.muted,
      published: this.published,
      enhancement: this.enhancement,
      micRms: this.micMeter ? this.micMeter.peakRms : 0,
      connection: this.connection,
      server: this.serverStats,
      participants: this.list.snapshot(),
    };
  }
}

const app = new App();
window.mediaserver = { app, state: () => app.state() };
