// The page controller: join form, call view, and the glue between signalling, the peer
// connection, WebAudio and the participant list. Everything a test needs to check is exposed
// read-only as window.mediaserver.state().

import { LevelMeter } from "./audio.js";
import { Call } from "./call.js";
import { ParticipantList } from "./participants.js";
import { Backoff, chooseSignallingUrl, RejoinPolicy, Signalling } from "./signalling.js";
import { fmt, serverStatsCells, serverStatsRows, summariseConnection, summariseInbound } from "./stats.js";

const $ = (id) => document.getElementById(id);
const METER_INTERVAL_MS = 100;
const STATS_INTERVAL_MS = 1000;
const SERVER_STATS_INTERVAL_MS = 2000;
const ENH_NOTE = "Strength limits how far noise is pushed down (dB); max removes as much as the model can.";
// A join refused for one of these may work on a later attempt; any other refusal ends the call.
const RETRYABLE = new Set(["server-full", "rate-limited", "offer-timeout"]);
const MAX_REDIRECTS = 3; // in a row (as mediaserver/client.py): a loop between nodes is an error

/** The ws:// and wss:// URLs among `list` (the server's joined.nodes / redirect.url), absolute. */
function signallingUrls(list) {
  const out = [];
  for (const item of Array.isArray(list) ? list : []) {
    try {
      const url = new URL(String(item));
      if (url.protocol === "ws:" || url.protocol === "wss:") out.push(url.href);
    } catch (err) {
      // not a URL: skipped
    }
  }
  return out;
}

class App {
  constructor() {
    this.params = new URLSearchParams(window.location.search);
    this.phase = "idle"; // idle -> joining -> joined (-> reconnecting -> joined) -> idle
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
    // Reconnection (server restart, dropped socket, failed media): same room and identity, with
    // the server's reconnect ticket (single-use join tokens cannot be reused), backoff between tries.
    this.url = null; // signalling URL chosen at join
    this.token = null;
    this.ticket = null; // latest reconnect ticket from the server (joined / reconnect-ticket)
    this.backoff = new Backoff();
    this.rejoin = new RejoinPolicy(); // a call lost soon after its join backs off further
    this.reconnect = null; // {reason, attempt, start, hintMs, timer, nextAt, url} while reconnecting
    this.reconnects = 0; // successful rejoins
    // Several servers (serve --redis-url): a join that reaches a node the room is not on gets a
    // `redirect` (the room's node and a ticket) and the socket closes; the page joins there.
    // `joined.nodes` lists the live nodes: when a node dies, the reconnect tries go round them.
    this.nodes = []; // signalling URLs of the cluster's live nodes (joined.nodes)
    this.redirectTo = null; // set by a redirect, used by the close that follows it
    this.redirects = 0; // redirects followed (at join or mid-call)
    this.redirectsInARow = 0; // with no joined nor unreachable node between: a loop, an error
    this.notices = []; // what the page told the user, in order (the browser test reads it)
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
    // Browsers start audio only after a click or key press on the page (autoplay rule): with
    // ?join=1 the call starts without one, so any click or key anywhere turns the sound on, and
    // the big "click to hear" bar says so.
    const enableAudio = () => this.enableAudio();
    $("enable-audio").addEventListener("click", enableAudio);
    for (const kind of ["pointerdown", "keydown"]) document.addEventListener(kind, enableAudio, { capture: true });
    window.addEventListener("beforeunload", () => this.leave());
  }

  async enableAudio() {
    if (!this.ctx || this.ctx.state === "running") return;
    try {
      await this.ctx.resume();
    } catch (err) {
      console.warn("audio context did not resume", err);
    }
    for (const card of this.list.cards.values()) {
      if (card.remote) card.remote.element.play().catch(() => {});
    }
    this.checkAudioContext();
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
    this.token = token || null;
    this.ticket = null;
    this.reconnects = 0;
    this.lastError = null;
    this.hideError();
    this.setStatus("connecting", "connecting…");
    $("join").disabled = true;
    try {
      this.ctx = new AudioContext(); // created inside the click, so browsers let it play
      // decided before the microphone opens: ?ws= may not name a server the operator did not allow
      this.url = await chooseSignallingUrl(this.params.get("ws"));
      this.mic = await navigator.mediaDevices.getUserMedia(this.micConstraints($("mic-join").value));
      this.micMeter = new LevelMeter(this.ctx, this.mic);
      await this.connect();
    } catch (err) {
      this.fail(err && err.name === "NotAllowedError" ? "Microphone access was refused." : String(err.message || err));
    }
  }

  /** Open a socket to this.url and ask to join (with the reconnect ticket when rejoining). */
  async connect() {
    const signalling = new Signalling(this.url);
    this.signalling = signalling;
    signalling.addEventListener("message", (ev) => {
      if (this.signalling === signalling) this.onMessage(ev.detail);
    });
    signalling.addEventListener("close", () => {
      if (this.signalling === signalling) this.onSocketClosed();
    });
    await signalling.open();
    const msg = { type: "join", room: this.room, identity: this.identity };
    if (this.token) msg.token = this.token;
    if (this.ticket) msg.reconnect = this.ticket;
    signalling.send(msg);
  }

  onMessage(msg) {
    switch (msg.type) {
      case "joined":
        this.onJoined(msg);
        break;
      case "reconnect-ticket":
        if (typeof msg.ticket === "string") this.ticket = msg.ticket;
        break;
      case "redirect":
        this.onRedirect(msg);
        break;
      case "server-shutdown":
        this.startReconnect("The server is restarting", msg.retry_after_ms);
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
        if (card && (msg.text || msg.unstable)) card.addCaption(msg.text || "", msg.final !== false, msg.unstable || "");
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
    const rejoined = this.phase === "reconnecting";
    this.rejoin.joined(Date.now(), rejoined && this.reconnect ? this.reconnect.attempt - this.reconnect.start : 0);
    this.phase = "joined";
    this.room = msg.room || this.room;
    this.identity = msg.identity || this.identity;
    if (msg.reconnect && typeof msg.reconnect.ticket === "string") this.ticket = msg.reconnect.ticket;
    this.nodes = signallingUrls(msg.nodes);
    this.redirectsInARow = 0;
    if (rejoined) {
      this.reconnects += 1;
      this.reconnect = null;
      this.notice(`Reconnected (${this.reconnects === 1 ? "once" : `${this.reconnects} times`}).`);
      setTimeout(() => { if (this.phase === "joined" && !this.reconnect) this.hideError(); }, 4000);
    }
    $("room-name").textContent = this.room;
    $("join-view").hidden = true;
    $("call-view").hidden = false;
    this.list.clear();
    this.departed.clear();
    this.list.ensure(this.identity, { self: true });
    for (const p of msg.participants || []) {
      // their state now: a newcomer sees who is already speaking
      if (p.identity !== this.identity) this.list.ensure(p.identity, { muted: Boolean(p.muted) }).setSpeaking(Boolean(p.speaking), p.level);
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
    this.micMuteState();
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
      // (when it keeps failing, a firewall may block UDP, or the server may need TURN)
      this.startReconnect("The media connection failed");
    } else this.setStatus("connecting", state);
  }

  onServerError(msg) {
    if (msg.code === "replaced") {
      // this name rejoined from another tab or device: coming back here would push it out again
      this.fail("You joined from another window or device; this one has left the call.");
      return;
    }
    if (this.enhancementPending && /enhancement/i.test(msg.message || "")) {
      // e.g. a server started with --no-enhance: grey the controls out instead of alarming
      this.enhancementPending = false;
      this.enhancementUnavailable(msg.message);
      return;
    }
    const text = `${msg.code || "error"}: ${msg.message || "the server refused the request"}`;
    if (this.phase === "reconnecting" && RETRYABLE.has(msg.code)) return; // the close that follows retries
    if (this.phase === "joined") this.showError(text);
    else this.fail(text);
  }

  /** The room lives on another node: remember where, with its ticket; the socket closes next. */
  onRedirect(msg) {
    const [url] = signallingUrls([msg.url]);
    if (!url) return; // not a ws:// or wss:// URL: the close that follows is handled as a loss
    this.redirectTo = url;
    if (msg.reconnect && typeof msg.reconnect.ticket === "string") this.ticket = msg.reconnect.ticket;
  }

  onSocketClosed() {
    if (this.phase === "idle") return;
    if (this.redirectTo) {
      const url = this.redirectTo;
      this.redirectTo = null;
      this.redirects += 1;
      this.redirectsInARow += 1;
      if (this.redirectsInARow > MAX_REDIRECTS) {
        this.teardown();
        this.showError(`More than ${MAX_REDIRECTS} redirects between the servers; try again later.`);
        return;
      }
      if (this.phase === "joining") {
        this.url = url;
        this.connect().catch((err) => this.fail(String(err.message || err)));
      } else {
        this.startReconnect("The room moved to another server", 0, url);
      }
      return;
    }
    if (this.phase === "joined" || this.phase === "reconnecting") {
      this.startReconnect(this.phase === "joined" ? "The connection to the server was lost" : null);
      return;
    }
    this.teardown();
    this.showError("The server closed the connection.");
  }

  /**
   * Drop this connection and come back as the same person: keep the microphone, the audio
   * context and the settings; a new socket, join (with the ticket) and peer connection after a
   * backoff. `reason` starts a new reconnection (null: the attempt in progress failed); `url`
   * (a redirect) starts a new one there even while reconnecting.
   */
  startReconnect(reason, hintMs = null, url = null) {
    if (this.phase === "joined" || (url && this.phase === "reconnecting")) {
      if (this.reconnect && this.reconnect.timer) clearTimeout(this.reconnect.timer);
      let attempt = 0;
      if (url) this.rejoin.moved(); // a redirect: planned, no failure
      else attempt = this.rejoin.lost(Date.now()); // > 0: lost before it proved healthy
      this.reconnect = { reason: reason || "The connection was lost", attempt, start: attempt, hintMs,
                         timer: null, url: url || this.url };
    } else if (this.phase === "reconnecting" && this.reconnect) {
      if (this.reconnect.timer) return; // already waiting for the next try
      this.reconnect.attempt += 1; // the try in progress failed
    } else {
      return;
    }
    this.phase = "reconnecting";
    this.dropConnection();
    const r = this.reconnect;
    const wait = r.attempt === r.start ? this.backoff.firstDelay(r.attempt, r.hintMs) : this.backoff.delay(r.attempt);
    r.nextAt = Date.now() + wait;
    this.setStatus("connecting", "reconnecting…");
    this.notice(`${r.reason}: reconnecting in ${(wait / 1000).toFixed(1)} s` + (r.attempt ? ` (attempt ${r.attempt + 1})` : "") + "…");
    r.timer = setTimeout(() => {
      r.timer = null;
      if (this.phase !== "reconnecting" || this.reconnect !== r) return;
      // first the server we were on (or were sent to), then round the cluster's live nodes
      const urls = [...new Set([r.url, ...this.nodes])];
      this.url = urls[(r.attempt - r.start) % urls.length];
      this.connect().catch(() => {
        this.redirectsInARow = 0; // a node that cannot be reached (it died): not a redirect loop
        this.startReconnect(null);
      });
    }, wait);
  }

  /** The socket and the peer connection of the call, not the microphone or the audio context. */
  dropConnection() {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const card of this.list.cards.values()) card.detach();
    if (this.call) this.call.close();
    this.call = null;
    const signalling = this.signalling;
    this.signalling = null;
    if (signalling) signalling.close();
    this.published = false;
    this.enhancementPending = false;
  }

  micMuteState() {
    // a rejoin starts unmuted on the server: tell it again
    if (this.muted && this.signalling) this.signalling.send({ type: "mute", muted: true });
  }

  notice(text) {
    this.notices.push(text);
    if (this.notices.length > 50) this.notices.shift();
    $("banner").textContent = text;
    $("banner").dataset.kind = "notice";
    $("banner").hidden = false;
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
    for (const [label, text] of serverStatsCells(this.serverStats, this.identity)) {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      const td = document.createElement("td");
      th.textContent = label;
      td.textContent = text;
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
    if (this.reconnect && this.reconnect.timer) clearTimeout(this.reconnect.timer);
    this.reconnect = null;
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
    $("banner").dataset.kind = "error";
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
      audioGate: !$("enable-audio").hidden,
      reconnects: this.reconnects,
      url: this.url,
      nodes: [...this.nodes],
      redirects: this.redirects,
      reconnecting: this.reconnect ? { reason: this.reconnect.reason, attempt: this.reconnect.attempt } : null,
      notices: [...this.notices],
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
