// WebSocket signalling: JSON messages on /ws (docs/ARCHITECTURE.md, "Signalling protocol").
// One job: turn the socket into typed events and a send() that refuses to write to a dead socket.

export class Signalling extends EventTarget {
  /** @param {string} url ws:// or wss:// address of the server's /ws endpoint */
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
  }

  /** Open the socket; resolves once it is open, rejects if it cannot be opened. */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`cannot reach ${this.url}`));
      ws.onclose = (ev) => {
        this.dispatchEvent(new CustomEvent("close", { detail: { code: ev.code, reason: ev.reason } }));
      };
      ws.onmessage = (ev) => {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (err) {
          console.warn("ignoring non-JSON signalling message", err);
          return;
        }
        if (msg && typeof msg.type === "string") {
          this.dispatchEvent(new CustomEvent("message", { detail: msg }));
        }
      };
    });
  }

  /** Send one JSON message; returns false when the socket is not open. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  close() {
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
      this.ws = null;
    }
  }
}

/** The /ws address on the server that served this page. */
export function defaultSignallingUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

/**
 * The signalling URL a join may use: this server's /ws, or the page's ?ws= parameter when it
 * names this same server or one that this server's operator listed (--page-signalling, served
 * as client.json). Anything else throws before the microphone is opened: a link must never
 * send someone's voice to a server the operator did not choose.
 */
export async function chooseSignallingUrl(requested, loc = window.location) {
  const own = defaultSignallingUrl(loc);
  if (!requested) return own;
  let url;
  try {
    url = new URL(requested, own);
  } catch (err) {
    throw new Error(`?ws= is not a URL: ${requested}`);
  }
  if (url.protocol !== "ws:" && url.protocol !== "wss:") throw new Error(`?ws= must be a ws:// or wss:// URL`);
  if (url.host === loc.host) return url.href;
  let allowed = [];
  try {
    const resp = await fetch("client.json", { cache: "no-store" });
    if (resp.ok) allowed = ((await resp.json()).signalling || []).map((u) => new URL(u).href);
  } catch (err) {
    allowed = [];
  }
  if (allowed.includes(url.href)) return url.href;
  throw new Error(`This page talks only to its own server; ${url.host} is not one its operator allowed.`);
}

/**
 * Which attempt of the backoff a loss starts at (mediaserver/reconnect.py's healthy-call rule;
 * time passed in, ms). A call that stayed up `healthyMs` (10 s, twice the longest wait) or
 * longer starts afresh: attempt 0, the server's hint. One lost sooner (its signalling got in,
 * its media failed right after) is one more failure in a row after the attempts that failed
 * before it got in, so a call that keeps failing waits longer each time, up to the schedule's
 * longest wait, instead of rejoining twice a second.
 */
export class RejoinPolicy {
  constructor({ healthyMs = 10000 } = {}) {
    this.healthyMs = healthyMs;
    this.failures = 0; // since the last healthy call: failed attempts plus short calls
    this.upSince = null;
  }

  /** In the call at `nowMs`, after `failedAttempts` attempts of this reconnection failed. */
  joined(nowMs, failedAttempts = 0) {
    this.failures += failedAttempts;
    this.upSince = nowMs;
  }

  /** The call was lost at `nowMs`: the attempt to start the backoff at (0: afresh). */
  lost(nowMs) {
    const healthy = this.upSince === null || nowMs - this.upSince >= this.healthyMs;
    this.failures = healthy ? 0 : this.failures + 1;
    this.upSince = null;
    return this.failures;
  }

  /** A redirect moved the call: the loss is planned, neither a failure nor a healthy call. */
  moved() {
    this.upSince = null;
  }
}

/**
 * When to try again after losing the server (the same schedule as mediaserver/reconnect.py):
 * the first attempt waits the server's hint (server-shutdown's retry_after_ms) or initialMs,
 * each further one initialMs * factor^(attempt - 1), at most maxMs, every wait scaled by a
 * random factor in [1 - jitter, 1 + jitter] so a restarted server's callers spread out.
 */
export class Backoff {
  constructor({ initialMs = 500, factor = 1.5, maxMs = 5000, jitter = 0.3, random = Math.random } = {}) {
    Object.assign(this, { initialMs, factor, maxMs, jitter, random });
  }

  /** Milliseconds to wait before attempt `attempt` (0 = the first after the loss). */
  delay(attempt, hintMs = null) {
    const base = attempt === 0
      ? (hintMs == null ? this.initialMs : Math.max(0, hintMs))
      : this.initialMs * this.factor ** Math.min(attempt - 1, 64);
    return Math.min(this.maxMs, base) * (1 - this.jitter + 2 * this.jitter * this.random());
  }

  /**
   * Milliseconds before a reconnection's first try, which starts at `attempt`
   * (RejoinPolicy.lost): 0, a fresh schedule, waits the hint or initialMs; later (a call lost
   * before it proved healthy) the schedule's wait, at least the hint. Its further tries wait
   * `delay(attempt)`, as mediaserver/reconnect.py's do.
   */
  firstDelay(attempt, hintMs = null) {
    if (attempt === 0) return this.delay(0, hintMs);
    const wait = this.delay(attempt);
    return hintMs == null ? wait : Math.max(wait, hintMs);
  }
}
